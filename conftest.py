"""Fixtures shared by every test suite: exported artifacts, a local GCS emulator, the study
payload, and every discovered strategy as a real process pulling its model from it."""

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
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


# The strategies' own host tests (<strategy>/tests/test_*_host.py): one service of a
# strategy, from a local model file and with settings of the test's, driven over HTTP.


def image_media_type(path: Path) -> str:
    """The Content-Type of a sample image file."""
    return "image/png" if path.suffix == ".png" else "image/jpeg"


def predict_with_probabilities(
    service: RunningService, body: bytes, content_type: str
) -> httpx.Response:
    """`POST /predict/?probabilities=true` with `body`."""
    return httpx.post(
        f"{service.url}/predict/?probabilities=true",
        content=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )


def metric_samples(service: RunningService) -> dict[str, float]:
    """`GET /metrics` as each sample's name (with its labels) -> its value."""
    text = httpx.get(service.url + "/metrics", timeout=10).text
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1].isalpha())
    }


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (an exited orphan not yet reaped is a zombie, not running)."""
    running = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def local_env(artifacts: Path, name: str, **env: str) -> dict[str, str]:
    """This process's environment, MODEL_URI the strategy's model file in `artifacts`, and
    `env` on top."""
    return {**os.environ, "MODEL_URI": str(artifacts / STRATEGIES[name].model_file), **env}


def local_service(artifacts: Path, name: str, **env: str) -> Iterator[RunningService]:
    """The strategy `name` running from its model file in `artifacts` with `env` (settings),
    killed when the generator is closed: for a fixture to `yield from`."""
    service = start_service(STRATEGIES[name], local_env(artifacts, name, **env))
    try:
        yield service
    finally:
        service.kill()


__all__ = ["STRATEGIES", "GcsEmulator", "RunningService", "free_port", "start_service"]
