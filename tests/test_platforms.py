"""The platforms besides this machine's (Linux arm64, macOS on Apple Silicon), checked here
without one: scripts/install-system-packages.sh run on a PATH built for each case (no real
package manager on it), the Rust Dockerfile's NASM branch run with a fake dpkg,
docker/build-images.sh's choice of base images, and uv.lock's wheels for every platform."""

import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from fake_commands import UNAME, calls, fake_commands, write_command
from helpers import ROOT
from packaging import tags
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from serving_common.strategy import discover_strategies

INSTALL_SYSTEM_PACKAGES = ROOT / "scripts" / "install-system-packages.sh"
BUILD_IMAGES = ROOT / "docker" / "build-images.sh"


def install_system_packages(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALL_SYSTEM_PACKAGES)],
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- scripts/install-system-packages.sh ------------------------------------------------


@pytest.mark.parametrize(
    ("system", "machine", "present"),
    [
        ("Linux", "x86_64", ["ab", "cmake", "nasm", "debootstrap", "chromium", "valgrind"]),
        ("Linux", "aarch64", ["ab", "cmake", "debootstrap", "chromium", "valgrind"]),  # no NASM
        ("Darwin", "arm64", ["ab", "cmake"]),  # nor debootstrap, chromium, valgrind off Linux
    ],
)
def test_nothing_is_installed_when_every_command_is_there(tmp_path, system, machine, present):
    path = fake_commands(tmp_path, system, machine, present, recorded=["apt-get", "brew"])
    result = install_system_packages(path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert calls(tmp_path) == []


def test_apt_get_installs_the_debian_packages_of_what_is_missing(tmp_path):
    path = fake_commands(tmp_path, "Linux", "aarch64", ["cmake"], recorded=["apt-get", "brew"])
    result = install_system_packages(path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == [
        "apt-get update -qq",
        "apt-get install -y -qq apache2-utils debootstrap chromium valgrind",
    ]


@pytest.mark.parametrize(
    ("machine", "present", "formulae"),
    [("arm64", [], "httpd cmake"), ("x86_64", ["ab"], "cmake nasm")],
)
def test_homebrew_installs_the_formulae_where_apt_get_is_absent(
    tmp_path, machine, present, formulae
):
    path = fake_commands(tmp_path, "Darwin", machine, present, recorded=["brew"])
    result = install_system_packages(path)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path) == [f"brew install --quiet {formulae}"]


@pytest.mark.parametrize(
    ("system", "machine", "present", "recorded", "named"),
    [
        ("Darwin", "arm64", ["ab"], [], "cmake"),
        ("Linux", "x86_64", ["ab", "cmake"], [], "nasm debootstrap chromium valgrind"),
        # Homebrew has no debootstrap (nor chromium, valgrind: asked for on Linux only).
        ("Linux", "x86_64", ["ab", "cmake", "nasm"], ["brew"], "debootstrap chromium valgrind"),
    ],
)
def test_without_a_package_manager_one_line_says_what_to_install(
    tmp_path, system, machine, present, recorded, named
):
    path = fake_commands(tmp_path, system, machine, present, recorded)
    result = install_system_packages(path)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert f"missing commands: {named};" in line
    assert calls(tmp_path) == []


# --- docker/build-images.sh: local or public base images --------------------------------


def build_args(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUILD_IMAGES), "--print-build-args"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in ("BASE_IMAGES", "BUILD_IMAGE")} | env,
    )


def with_uname(tmp_path: Path, system: str) -> dict[str, str]:
    """PATH with a fake uname saying `system` ahead of the real commands."""
    folder = tmp_path / "uname"
    folder.mkdir()
    write_command(folder, "uname", UNAME.format(machine="arm64", system=system))
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def keys(output: str) -> list[str]:
    return [arg.split("=", 1)[0] for arg in output.split()]


def test_public_base_images_print_only_the_build_image():
    result = build_args({"BASE_IMAGES": "public"})
    assert (result.returncode, result.stdout.split()) == (
        0,
        ["BUILD_IMAGE=model-serving/python-build"],
    )


def test_base_images_are_public_by_default_off_linux(tmp_path):
    result = build_args(with_uname(tmp_path, "Darwin"))
    assert (result.returncode, keys(result.stdout)) == (0, ["BUILD_IMAGE"])


def test_base_images_are_built_locally_by_default_on_linux(tmp_path):
    result = build_args(with_uname(tmp_path, "Linux"))
    assert result.returncode == 0, result.stderr
    assert keys(result.stdout) == ["PYTHON_IMAGE", "RUST_IMAGE", "RUNTIME_IMAGE", "BUILD_IMAGE"]


def test_an_unknown_base_images_value_is_refused_in_one_line():
    result = build_args({"BASE_IMAGES": "registry"})
    assert (result.returncode, result.stdout) == (2, "")
    [line] = result.stderr.splitlines()
    assert "BASE_IMAGES=registry" in line


def test_public_base_images_are_the_same_in_compose_and_the_dockerfiles():
    """With public base images, Compose passes its defaults to the services while
    docker/build-images.sh builds python-build from its Dockerfile's: the venv it makes is
    copied into the services, so the two must name the same images."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-build-args"]
    dockerfiles = [*ROOT.glob("*/Dockerfile"), *ROOT.glob("docker/*.Dockerfile")]
    checked = set()
    for dockerfile in dockerfiles:
        for name, default in re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", dockerfile.read_text(), re.M):
            assert compose[name] == f"${{{name}:-{default}}}", dockerfile
            checked.add(name)
    assert checked == {"PYTHON_IMAGE", "BUILD_IMAGE", "RUST_IMAGE", "RUNTIME_IMAGE"}


# --- uv.lock: a wheel for every platform ------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """CPython 3.11 on one platform: the wheel tags it installs, its marker environment."""

    name: str
    tags: frozenset[tags.Tag]
    environment: dict[str, str]


def platform(name: str, system: str, machine: str, platforms: list[str]) -> Platform:
    wheel_tags = [
        *tags.cpython_tags((3, 11), ["cp311"], platforms),
        *tags.compatible_tags((3, 11), "cp311", platforms),
    ]
    environment = {
        "sys_platform": system.lower(),
        "platform_system": system,
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": "3.11",
        "python_full_version": "3.11.0",
    }
    return Platform(name, frozenset(wheel_tags), environment)


def manylinux(machine: str) -> list[str]:
    """Wheels for glibc 2.28 and older: the Debian images have 2.36 (bookworm) and newer."""
    legacy = [f"manylinux{alias}_{machine}" for alias in ("2014", "2010", "1")]
    return [f"manylinux_2_{minor}_{machine}" for minor in range(28, 4, -1)] + legacy


PLATFORMS = [
    platform("linux x86_64", "Linux", "x86_64", manylinux("x86_64")),
    platform("linux aarch64", "Linux", "aarch64", manylinux("aarch64")),
    platform("macOS 14 arm64", "Darwin", "arm64", list(tags.mac_platforms((14, 0), "arm64"))),
]
STRATEGIES = discover_strategies([ROOT])
# `uv export` arguments of what each image installs (docker/install-locked.sh): each Python
# strategy's workspace package (its manifest's folder), the exporter and the emulator; and of
# `make setup` (`uv sync --all-packages`, dev tools included), where a strategy without a
# Python package (the Rust service) finds its wheels.
SETUP = "make setup"
SELECTIONS = {
    **{
        s.name: ["--no-dev", "--package", s.python_package]
        for s in STRATEGIES.values()
        if s.python_package is not None
    },
    "exporter": ["--no-dev", "--package", "weather-model", "--extra", "export"],
    "gcs emulator": ["--only-group", "emulator"],
    SETUP: ["--all-packages"],
}
# Compiled, and the point of a strategy (each manifest's `wheels`): never built from an sdist
# on any platform, in the selection that installs the strategy.
NEED_WHEELS = [
    (s.name, wheel, s.name if s.name in SELECTIONS else SETUP)
    for s in STRATEGIES.values()
    for wheel in s.wheels
]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())


def locked(name: str, version: str) -> dict:
    [package] = [
        p
        for p in LOCK["package"]
        if canonicalize_name(p["name"]) == canonicalize_name(name) and p.get("version") == version
    ]
    return package


def wheel_tags(package: dict) -> list[frozenset[tags.Tag]]:
    return [
        parse_wheel_filename(Path(urlparse(wheel["url"]).path).name)[3]
        for wheel in package.get("wheels", [])
    ]


def has_wheel(package: dict, target: Platform) -> bool:
    return any(wheel & target.tags for wheel in wheel_tags(package))


def installable(package: dict, target: Platform) -> bool:
    """A wheel for the platform, or an sdist of a pure-Python package. NOTE: the lock cannot
    say whether an sdist is pure Python; one with no wheel at all is taken as such, while a
    package with wheels for other platforms only is compiled and would be built here."""
    return has_wheel(package, target) or ("sdist" in package and not package.get("wheels"))


@functools.cache
def exported(selection: str) -> list[Requirement]:
    """`uv export` of the selection: what uv would install, each with its marker."""
    uv = shutil.which("uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert uv, "uv is not installed: run make setup-python"
    result = subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--quiet",
            "--no-emit-workspace",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            *SELECTIONS[selection],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [line.strip() for line in result.stdout.splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]


def applies(requirement: Requirement, target: Platform) -> bool:
    """Whether uv installs the requirement there: its marker (nvidia-* and triton: Linux
    only; every one: the lock's supported platforms) holds on the platform."""
    return requirement.marker is None or requirement.marker.evaluate(target.environment)


def test_the_lock_is_resolved_for_every_platform():
    for target in PLATFORMS:
        supported = [Marker(marker) for marker in LOCK["supported-markers"]]
        assert any(marker.evaluate(target.environment) for marker in supported), target.name


@pytest.mark.parametrize("selection", SELECTIONS)
def test_every_locked_package_installs_on_every_platform(selection):
    """Each requirement uv installs on a platform has a wheel for it, or is a pure-Python
    sdist."""
    missing = []
    for target in PLATFORMS:
        requirements = [r for r in exported(selection) if applies(r, target)]
        assert requirements, f"{selection} installs nothing on {target.name}"
        for requirement in requirements:
            [version] = [spec.version for spec in requirement.specifier]
            if not installable(locked(requirement.name, version), target):
                missing.append(f"{requirement.name}=={version} on {target.name}")
    assert missing == []


def test_every_strategy_declares_its_compiled_wheels():
    assert NEED_WHEELS, "no manifest declares `wheels`"
    for strategy in STRATEGIES.values():
        assert strategy.wheels, f"{strategy.folder}/strategy.toml: `wheels` is not set"


@pytest.mark.parametrize(("strategy", "name", "selection"), NEED_WHEELS)
def test_the_runtimes_have_a_wheel_for_every_platform(strategy, name, selection):
    [requirement] = {
        str(requirement): requirement
        for requirement in exported(selection)
        if canonicalize_name(requirement.name) == canonicalize_name(name)
    }.values()
    [version] = [spec.version for spec in requirement.specifier]
    package = locked(name, version)
    for target in PLATFORMS:
        assert applies(requirement, target), target.name
        assert has_wheel(package, target), target.name
