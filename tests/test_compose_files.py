"""The Compose files and .env.example are rendered from the manifests (docker/compose_files.py,
`make render`): the committed ones are a fresh render, and `--check` names a file that is
not. No Docker needed."""

import importlib.util
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT
from serving_common.strategy import (
    PYTHON_SERVICE_DOCKERFILE,
    DockerSpec,
    ManifestError,
    discover_strategies,
    load_strategy,
)

SCRIPT = ROOT / "docker" / "compose_files.py"
_spec = importlib.util.spec_from_file_location("compose_files", SCRIPT)
assert _spec is not None and _spec.loader is not None
compose_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compose_files)


def test_committed_files_are_a_fresh_render():
    assert compose_files.stale(ROOT) == [], "run `make render` and commit the result"


def test_check_names_the_file_that_differs(tmp_path):
    # A checkout of just what the render reads: each strategy's manifest and pyproject.toml.
    for manifest in ROOT.glob("*/strategy.toml"):
        folder = tmp_path / manifest.parent.name
        folder.mkdir()
        for name in ("strategy.toml", "pyproject.toml"):
            if (manifest.parent / name).is_file():
                shutil.copy(manifest.parent / name, folder / name)
    command = [sys.executable, str(SCRIPT), "--root", str(tmp_path)]
    subprocess.run(command, check=True)
    assert subprocess.run([*command, "--check"]).returncode == 0
    env = tmp_path / ".env.example"
    env.write_text(env.read_text().replace("ONNX_MEMORY_LIMIT=3g", "ONNX_MEMORY_LIMIT=4g"))
    check = subprocess.run([*command, "--check"], capture_output=True, text=True)
    assert check.returncode == 1
    assert check.stderr == ".env.example differs from its render: run `make render`\n"


def test_a_python_service_is_built_from_its_manifest():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    shared = [
        s
        for s in discover_strategies([ROOT]).values()
        if s.docker and s.docker.dockerfile == PYTHON_SERVICE_DOCKERFILE
    ]
    # Every Python strategy (a workspace package) with an image.
    python = {s.name for s in discover_strategies([ROOT]).values() if s.docker and s.python_package}
    assert python and {s.name for s in shared} == python
    for strategy in shared:
        assert strategy.docker is not None
        build = services[strategy.name]["build"]
        assert build["dockerfile"] == "docker/python-service.Dockerfile"
        args = build["args"]
        assert args["STRATEGY"] == strategy.name
        assert args["PORT"] == str(strategy.port)
        assert args["COMMAND"].split() == list(strategy.run)
        assert args["HOME_DIR"] == strategy.docker.home
        # The Compose-wide build arguments are merged in (the base images, torch's index).
        assert args["BUILD_IMAGE"] == "${BUILD_IMAGE:-model-serving/python-build}"
        start_period = services[strategy.name]["healthcheck"]["start_period"]
        assert start_period == f"{strategy.docker.start_period}s"
        # The manifest's extras: a larger /dev/shm, bytecode compiled into the image.
        assert services[strategy.name].get("shm_size") == strategy.docker.shm_size
        compile_bytecode = "1" if strategy.docker.compile_bytecode else "0"
        assert args["COMPILE_BYTECODE"] == compile_bytecode
    # Each extra is set by some manifest, so the render of each is checked.
    assert any(s.docker and s.docker.shm_size for s in shared)
    assert any(s.docker and s.docker.compile_bytecode for s in shared)


def test_each_overlay_reaches_every_service():
    """A service missing from a GCP overlay would keep reading the emulator."""
    services = set(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])
    for name in ("docker-compose.gcp.yml", "docker-compose.gcp-token.yml"):
        overlay = yaml.safe_load((ROOT / name).read_text())["services"]
        assert set(overlay) == services - {"gcs", "model"}, name
        assert all(s["environment"]["STORAGE_EMULATOR_HOST"] == "" for s in overlay.values())


def test_a_bad_docker_table_is_refused_with_the_fix(tmp_path):
    folder = tmp_path / "boxed_serving"
    folder.mkdir()
    head = 'name = "boxed_serving"\ntitle = "t"\nstack = "s"\nport = 8090\n'
    head += 'model = "FIXED_ONNX_FILE"\nrun = ["python", "-m", "boxed_serving"]\n[docker]\n'

    def load(table: str) -> DockerSpec | None:
        (folder / "strategy.toml").write_text(head + table)
        return load_strategy(folder).docker

    docker = load('image = "i"\n')
    assert docker is not None
    assert docker.dockerfile == PYTHON_SERVICE_DOCKERFILE and docker.env_prefix == "BOXED"
    assert (docker.memory_limit, docker.start_period, docker.home) == ("2g", 60, "/")
    for table, fix in [
        ('image = "i"\nmemory_limit = "3 GB"\n', "memory_limit must be a size"),
        ('image = "i"\nstart_period = "60s"\n', "start_period must be a whole number"),
        ('image = "i"\ncompile_bytecode = "yes"\n', "compile_bytecode must be true or false"),
        ('image = "i"\nexporter_base = 1\n', "exporter_base must be true or false"),
        ('image = "i"\nshm = "1g"\n', r"unknown keys \['shm'\]"),
        ('dockerfile = "Dockerfile"\n', "needs `image`"),
    ]:
        with pytest.raises(ManifestError, match=fix):
            load(table)
