"""Adding a strategy is adding a folder. A real strategy of this repository (its own
pyproject.toml, tests and image), copied under a new name and port into a temporary checkout
of the working tree, goes through what a contributor runs — `make render`, `uv lock`, the
Python lint, the contract suite, its image build — with no edit outside its folder. And a
folder outside the repository ($MODEL_SERVING_STRATEGY_DIRS) is measured by the harness."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from benchmark.compose import build_environment, compose_command, docker_unavailable
from helpers import ROOT, plain_hosts
from serving_common.strategy import EXTRA_DIRS_ENV, Strategy, discover_strategies

NAME = "copied_serving"


def copyable(strategy: Strategy) -> bool:
    """A Python strategy with its own package, tests and image: all a folder can hold."""
    return (
        strategy.python_package is not None
        and (strategy.folder / "tests").is_dir()
        and strategy.docker is not None
    )


OWN = discover_strategies([ROOT])
# The copy names none, so any would do: the first plain host of the shared predictor (no
# framework to install: the quickest image to build and service to start), else the first
# such strategy in name order.
SOURCE = next(
    OWN[name]
    for name in [*(s.name for s in plain_hosts()), *OWN]
    if name in OWN and copyable(OWN[name])
)
# A port no strategy here takes.
PORT = 1 + max(s.port for s in OWN.values())


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900):
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def working_tree(destination: Path) -> None:
    """The repository's files as they are now (tracked, and new ones not ignored)."""
    listed = run(["git", "ls-files", "-z", "-co", "--exclude-standard"], ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def copy_strategy(checkout: Path, source: Strategy, name: str, port: int) -> Path:
    """`source`'s folder as `name`: its package folder renamed, every mention of its name
    (the package, the distribution, the image) replaced, and a port of its own."""
    folder = checkout / name
    shutil.copytree(source.folder, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / source.name).rename(folder / name)
    old_dist, new_dist = source.name.replace("_", "-"), name.replace("_", "-")
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".toml", ".yaml", ".yml", ".md"}:
            text = path.read_text().replace(source.name, name).replace(old_dist, new_dist)
            path.write_text(text)
    manifest = folder / "strategy.toml"
    text = re.sub(r"(?m)^port = \d+$", f"port = {port}", manifest.read_text())
    manifest.write_text(re.sub(r'(?m)^env_prefix = ".*"$', 'env_prefix = "COPIED"', text))
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The temporary checkout, the copy added, rendered and locked: what its image needs.
    The copy's tests come along: they run wherever `make test` runs (pytest's testpaths are
    globs)."""
    checkout = tmp_path_factory.mktemp("checkout")
    working_tree(checkout)
    # mypy's cache of this tree, where lint made one: unchanged files are not checked again.
    if (ROOT / ".mypy_cache").is_dir():
        shutil.copytree(ROOT / ".mypy_cache", checkout / ".mypy_cache")
    copy_strategy(checkout, SOURCE, NAME, PORT)
    run(["make", "--no-print-directory", "render"], checkout)
    run(["uv", "lock", "--quiet"], checkout)
    return checkout


@pytest.fixture(scope="module")
def checkout(rendered) -> Path:
    """The rendered checkout, set up (its own venv: uv links the packages from its cache,
    seconds)."""
    run(["make", "--no-print-directory", "setup-python"], rendered)
    return rendered


# Tiers (conftest.py) by what each test starts: the image build is a Docker test, run with
# the images it builds on (`make test` runs it once they are built).
@pytest.mark.service
def test_render_and_lock_take_it_in(rendered):
    pyproject = (rendered / "pyproject.toml").read_text()
    assert f'    "{NAME}",' in pyproject
    compose = (rendered / "docker-compose.yml").read_text()
    assert f"\n  {NAME}:\n" in compose
    for overlay in ("docker-compose.gcp.yml", "docker-compose.gcp-token.yml"):
        assert f"\n  {NAME}:" in (rendered / overlay).read_text(), overlay
    lock = (rendered / "uv.lock").read_text()
    assert f'name = "{NAME.replace("_", "-")}"' in lock
    # Only the copy differs from this repository's own render and lock.
    assert (ROOT / "uv.lock").read_text() != lock


@pytest.mark.service
def test_lint_passes(checkout):
    run(["make", "--no-print-directory", "lint-python"], checkout)


@pytest.mark.service
def test_the_contract_suite_passes(checkout):
    command = [".venv/bin/pytest", "tests/test_contract.py", "-k", NAME, "-q", "-rA"]
    result = run([*command, "-p", "no:cacheprovider"], checkout)
    passed = [line for line in result.stdout.splitlines() if line.startswith("PASSED")]
    assert len(passed) >= 25 and all(NAME in line for line in passed), result.stdout[-3000:]


@pytest.mark.docker
def test_its_image_builds(rendered):
    if (reason := docker_unavailable()) is not None:
        pytest.skip(reason)
    env = {**build_environment(), "BUILD_IMAGE": f"model-serving-test/{NAME}-build"}
    base = env.get("PYTHON_IMAGE")
    image = f"model-serving/{NAME}"
    try:
        run(
            ["docker", "build", "--network", "host", "-q", "-t", env["BUILD_IMAGE"],
             *(["--build-arg", f"PYTHON_IMAGE={base}"] if base else []),
             "-f", "docker/python-build.Dockerfile", "."],
            rendered, env, timeout=1200,
        )  # fmt: skip
        run([*compose_command(), "-p", f"{NAME}-test", "build", NAME], rendered, env, 1800)
        inspected = run(["docker", "image", "inspect", image, "--format", "{{json .Config}}"], ROOT)
        config = json.loads(inspected.stdout)
        assert list(config["ExposedPorts"]) == [f"{PORT}/tcp"]
        # The copy's own package, installed as a wheel with its manifest inside.
        manifest = f"importlib.resources.files('{NAME}') / 'strategy.toml'"
        probe = f"import importlib.resources; print(({manifest}).read_text())"
        shown = run(["docker", "run", "--rm", "--entrypoint", "python3", image, "-c", probe], ROOT)
        assert f'name = "{NAME}"' in shown.stdout and f"port = {PORT}" in shown.stdout
    finally:
        subprocess.run(["docker", "image", "rm", "-f", image, env["BUILD_IMAGE"]],
                       capture_output=True, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def outside_dir(tmp_path_factory) -> Path:
    """`outside_serving/`, outside the repository: a Python strategy of two files hosting
    the shared ONNX predictor under another name and port."""
    base = tmp_path_factory.mktemp("strategies")
    name = "outside_serving"
    folder = base / name
    (folder / name).mkdir(parents=True)
    predictor = SOURCE.predictor
    (folder / "strategy.toml").write_text(
        textwrap.dedent(f"""\
            name = "{name}"
            title = "A strategy kept outside the repository"
            stack = "FastAPI + {predictor}"
            port = 8099
            model = "OPTIMIZED_ONNX_FILE"
            run = ["python", "-m", "{name}"]
            predictor = "{predictor}"
            """)
    )
    (folder / name / "__init__.py").write_text("")
    (folder / name / "__main__.py").write_text(
        textwrap.dedent("""\
            from pathlib import Path

            from serving_common.serve import run_service

            run_service(Path(__file__).resolve().parents[1])
            """)
    )
    return base


@pytest.mark.service  # it runs the harness
@pytest.mark.alone  # it loads every core
def test_the_harness_measures_a_folder_outside_the_repository(outside_dir, artifacts, tmp_path):
    name = "outside_serving"
    env = {**os.environ, EXTRA_DIRS_ENV: str(outside_dir)}
    command = [sys.executable, "-m", "benchmark.runner", "--plan", "quick", "--services", name]
    run([*command, "--out", str(tmp_path), "--artifacts", str(artifacts)], ROOT, env)
    record = json.loads((tmp_path / "native-quick.json").read_text())
    assert list(record["services"]) == [name]
    assert record["strategies"][name]["port"] == 8099
    service = record["services"][name]
    assert service["main"]["ab"]["non_2xx"] == 0 and service["main"]["ab"]["complete_requests"] > 0
    assert service["runtime"]["runtime"] == "onnxruntime"
