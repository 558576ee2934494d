"""The Rust service's build files against their one source: its Dockerfile's NASM branch run
as amd64 and arm64 would run it (a fake dpkg and apt-get), and the default port compiled
into the binary against its manifest. Python tests beside the crate: cargo reads only
tests/*.rs here."""

import re
import subprocess
from pathlib import Path

import pytest
from fake_commands import calls, fake_commands, write_command
from serving_common.strategy import load_strategy

FOLDER = Path(__file__).resolve().parents[1]
STRATEGY = load_strategy(FOLDER)


def dockerfile_run(dockerfile: Path, needle: str) -> str:
    """The shell command of the one RUN instruction that contains `needle`."""
    joined = dockerfile.read_text().replace("\\\n", " ")
    [command] = [
        line.removeprefix("RUN ")
        for line in joined.splitlines()
        if line.startswith("RUN ") and needle in line
    ]
    return command


@pytest.mark.parametrize(
    ("architecture", "packages"), [("amd64", "cmake make nasm"), ("arm64", "cmake make")]
)
def test_the_build_stage_installs_nasm_on_amd64_only(tmp_path, architecture, packages):
    """The RUN line itself, run by sh with a fake dpkg and apt-get (and rm: PATH holds only
    the fakes, so nothing of this machine's is removed)."""
    assert STRATEGY.docker is not None
    command = dockerfile_run(STRATEGY.docker.dockerfile, "apt-get install")
    path = fake_commands(tmp_path, "Linux", "x86_64", [], recorded=["apt-get", "rm"])
    write_command(path, "dpkg", f'[ "$1" = --print-architecture ] && echo {architecture}')
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [c for c in calls(tmp_path) if c.startswith("apt-get")] == [
        "apt-get update -qq",
        f"apt-get install -y -qq --no-install-recommends {packages}",
    ]


def test_the_default_port_is_the_manifest_port():
    config = (FOLDER / "src" / "config.rs").read_text()
    assert re.findall(r"DEFAULT_PORT: u16 = (\d+);", config) == [str(STRATEGY.port)]
