"""Fixtures shared by every test suite: exported artifacts, a local GCS emulator, the study
payload, and every discovered strategy as a real process pulling its model from it."""

import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from benchmark.processes import GcsEmulator, RunningService, free_port, start_service
from serving_common.strategy import discover_strategies
from weather_model.contract import LABELS
from weather_model.demo import demo_state_dict
from weather_model.network import load_network
from weather_model.reference import decode_rgb, reference_probabilities

ROOT = Path(__file__).parent
REFERENCE = ROOT.parent / "shared" / "reference"
# Every strategy folder with a strategy.toml (and $MODEL_SERVING_STRATEGY_DIRS).
STRATEGIES = discover_strategies()
# Limits of the process-level services: small enough to test over HTTP cheaply (a few
# stalled clients overload a worker, a short body times out in seconds), large enough for
# every sample image and the study payload.
TEST_LIMITS = {
    "MAX_BODY_BYTES": "2000000",
    "MAX_IMAGE_PIXELS": "4000000",
    "MAX_PENDING_REQUESTS": "4",
    "BODY_TIMEOUT_SECONDS": "3",
}


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
def study_payload() -> bytes:
    """The original study's request body (JSON + base64), read in place from ../shared."""
    payload = REFERENCE / "rime_5868.json"
    if not payload.exists():
        pytest.skip(f"the original study's payload is not at {payload}")
    return payload.read_bytes()


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


@pytest.fixture(scope="session", params=sorted(STRATEGIES))
def service(request, gcs_emulator, gcs_model) -> Iterator[RunningService]:
    """Each strategy as a process with WORKERS=2, its model pulled from gs:// at startup."""
    strategy = STRATEGIES[request.param]
    env = gcs_emulator.env(MODEL_URI=gcs_model[strategy.model_file], WORKERS="2", **TEST_LIMITS)
    running = start_service(strategy, env)
    try:
        yield running
    finally:
        running.kill()


@functools.cache
def reference_answer(image: bytes) -> dict[str, float]:
    """The PyTorch reference's probabilities for encoded image bytes, on the demo model."""
    probabilities = reference_probabilities(_reference_model(), decode_rgb(image))
    return dict(zip(LABELS, map(float, probabilities), strict=True))


@functools.cache
def _reference_model() -> torch.nn.Module:
    return load_network(demo_state_dict())


__all__ = ["STRATEGIES", "GcsEmulator", "RunningService", "free_port", "start_service"]
