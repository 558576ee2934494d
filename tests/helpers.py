"""What the test suites share besides fixtures: the repository's paths and strategies, the
test services' limits, the PyTorch reference's answers, and small clients of a running
service. A plain module (pytest puts tests/ on sys.path: `pythonpath` in pyproject.toml),
imported as `helpers` like `clients` and `hostile`, so no test imports conftest."""

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import torch
from benchmark.processes import RunningService, start_service
from serving_common.strategy import Strategy, discover_strategies
from weather_model.contract import LABELS
from weather_model.demo import demo_state_dict
from weather_model.network import load_network
from weather_model.reference import decode_rgb, reference_probabilities

ROOT = Path(__file__).parent.parent
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


@functools.cache
def reference_answer(image: bytes) -> dict[str, float]:
    """The PyTorch reference's probabilities for encoded image bytes, on the demo model."""
    probabilities = reference_probabilities(_reference_model(), decode_rgb(image))
    return dict(zip(LABELS, map(float, probabilities), strict=True))


@functools.cache
def _reference_model() -> torch.nn.Module:
    return load_network(demo_state_dict())


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


# The strategies' own host tests (<strategy>/tests/test_*_host.py, tests/test_batching.py):
# one service of a strategy, from a local model file and with settings of the test's.


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


# Strategies picked by what their manifests declare, never by name: a suite that needs "a
# Python host" or "a compiled service" takes the first one of these.


def plain_hosts() -> list[Strategy]:
    """The strategies serving_common hosts without a framework (a `predictor`, no
    `framework`), the baseline aside: the plain Python services of a shared predictor."""
    return [s for s in STRATEGIES.values() if s.predictor and not s.framework and not s.baseline]


def compiled() -> list[Strategy]:
    """The strategies without a Python package: a native binary, not the interpreter."""
    return [s for s in STRATEGIES.values() if s.python_package is None]


def fast_selection() -> str:
    """`make test-fast`'s `pytest -k`: the first plain Python host's tests only. -k matches
    substrings of test ids, so the strategies whose names contain its name are left out."""
    name = plain_hosts()[0].name
    longer = sorted(other for other in STRATEGIES if name in other and other != name)
    return f"{name} and not ({' or '.join(longer)})" if longer else name
