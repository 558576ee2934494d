"""What the test suites share besides fixtures: the repository's paths and strategies, the
test services' limits, exported models and the PyTorch reference's answers on them, and
small clients of a running service. A plain module (pytest puts tests/ on sys.path:
`pythonpath` in pyproject.toml), imported as `helpers` like `clients` and `hostile`, so no
test imports conftest."""

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import httpx
import psutil
import torch
from benchmark.processes import GcsEmulator, RunningService, start_service
from serving_common.strategy import Strategy, discover_strategies
from weather_model.contract import STATE_DICT_FILE
from weather_model.metadata import ModelContract, load_contract
from weather_model.network import load_network, state_dict_from_bytes
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


# A model of one's own, as `weather-export` takes one: labels and sizes other than the demo's
# (the demo weights, calibrated for them). The contract suite runs against it too
# (tests/test_contract_other_models.py).
OWN_MODEL_LABELS = ("calm", "breeze", "gale", "storm", "squall", "haze")
OWN_MODEL_OPTIONS = (
    *("--labels", ",".join(OWN_MODEL_LABELS)),
    *("--resize-size", "180", "--crop-size", "160"),
)


def export_model(out: Path, *options: str) -> Path:
    """`weather-export --out out [options]` as a command (the demo weights unless `options`
    say otherwise); the folder."""
    command = [sys.executable, "-m", "weather_model.export", "--out", str(out), *options]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"weather-export {' '.join(options)}: {result.stderr.strip()}")
    return out


@dataclass(frozen=True)
class ServedModel:
    """An exported model as the tests see it: its contract, from its own metadata.json, and
    the PyTorch reference's answers with its own weights (model.pt)."""

    artifacts: Path
    _answers: dict[bytes, dict[str, float]] = field(default_factory=dict, compare=False)

    @cached_property
    def contract(self) -> ModelContract:
        return load_contract(self.artifacts)

    @property
    def labels(self) -> list[str]:
        return list(self.contract.labels)

    @cached_property
    def network(self) -> torch.nn.Module:
        state_dict = state_dict_from_bytes((self.artifacts / STATE_DICT_FILE).read_bytes())
        return load_network(state_dict, self.contract)

    def reference_answer(self, image: bytes) -> dict[str, float]:
        """The reference's probabilities for encoded image bytes, by label."""
        if image not in self._answers:
            probabilities = reference_probabilities(self.network, decode_rgb(image), self.contract)
            self._answers[image] = dict(zip(self.labels, map(float, probabilities), strict=True))
        return self._answers[image]


def upload_model(gcs_emulator: GcsEmulator, artifacts: Path, prefix: str) -> dict[str, str]:
    """The exported files uploaded to gs://models/<prefix>/; file name -> URI."""
    return {
        path.name: gcs_emulator.upload("models", f"{prefix}/{path.name}", path.read_bytes())
        for path in sorted(artifacts.iterdir())
        if path.is_file()
    }


def serve_from_gcs(
    strategy: Strategy, gcs_emulator: GcsEmulator, uris: dict[str, str]
) -> Iterator[RunningService]:
    """`strategy` as a process with WORKERS=2 and the test limits, its model file pulled
    from gs:// (`uris`, by file name) at startup, killed when the generator is closed: for a
    fixture to `yield from`."""
    env = gcs_emulator.env(MODEL_URI=uris[strategy.model_file], WORKERS="2", **TEST_LIMITS)
    running = start_service(strategy, env)
    try:
        yield running
    finally:
        running.kill()


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
