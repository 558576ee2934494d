"""Fixtures shared by every test suite: exported artifacts, a local GCS emulator, and every
service as a real process pulling its model from it."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmark.processes import (
    SERVICES,
    GcsEmulator,
    RunningService,
    ServiceSpec,
    free_port,
    start_service,
)

ROOT = Path(__file__).parent
REFERENCE = ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model exported once per test session."""
    out = tmp_path_factory.mktemp("artifacts")
    subprocess.run(
        [sys.executable, "-m", "weather_model.export", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A real GCS emulator process on a free port, its data in a temporary folder."""
    emulator = GcsEmulator.start(tmp_path_factory.mktemp("gcs"))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def gcs_model(gcs_emulator: GcsEmulator, artifacts: Path) -> dict[str, str]:
    """The exported artifacts uploaded to gs://models/weather/; file name -> URI."""
    return {
        path.name: gcs_emulator.upload("models", f"weather/{path.name}", path.read_bytes())
        for path in sorted(artifacts.iterdir())
        if path.is_file()
    }


def emulator_env(gcs_emulator: GcsEmulator, **extra: str) -> dict[str, str]:
    return gcs_emulator.env(**extra)


def run_to_exit(spec: ServiceSpec, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(spec.command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session", params=sorted(SERVICES))
def service(request, gcs_emulator, gcs_model) -> Iterator[RunningService]:
    """Each service as a process with WORKERS=2, its model pulled from gs:// at startup."""
    spec = SERVICES[request.param]
    env = emulator_env(gcs_emulator, MODEL_URI=gcs_model[spec.model_file], WORKERS="2")
    running = start_service(spec, env)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()


__all__ = ["GcsEmulator", "RunningService", "free_port", "run_to_exit", "start_service"]
