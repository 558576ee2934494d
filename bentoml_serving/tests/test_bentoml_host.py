"""The BentoML host as real processes: /info's framework entry, a worker that cannot
start, workers outliving a killed supervisor, and BentoML's own routes next to the
contract's.

What every batching framework does (requests sharing inferences, SIGTERM while batches are
in flight) is tested once for all in tests/test_batching.py; the cross-service suites
(tests/test_contract.py and the others) cover the contract itself.
"""

import json
import os
import shutil
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from benchmark.processes import RunningService, free_port, run_to_exit, start_service
from helpers import (
    ROOT,
    STRATEGIES,
    local_env,
    local_service,
    metric_samples,
    predict_with_probabilities,
    still_running,
)

pytestmark = pytest.mark.service

NAME = "bentoml_serving"
MAX_BATCH_SIZE = 8
# Given, and ignored: BentoML's dispatcher has no wait window (a warning says so).
BATCH_WAIT_MS = 300
# Killed supervisors and workers that cannot start: how long their processes may take to end.
EXIT_BOUND_SECONDS = 60


def wait_until_gone(processes: list[psutil.Process]) -> list[psutil.Process]:
    deadline = time.monotonic() + EXIT_BOUND_SECONDS
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def batched(artifacts) -> Iterator[RunningService]:
    """One worker batching up to MAX_BATCH_SIZE requests, from a local model file."""
    yield from local_service(
        artifacts, NAME, MAX_BATCH_SIZE=str(MAX_BATCH_SIZE), BATCH_WAIT_MS=str(BATCH_WAIT_MS)
    )


def test_info_names_the_framework_and_its_batching(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "BentoML" and framework["version"] == "1.4.40"
    assert framework["batch_wait_ms"] is None  # BentoML's dispatcher has no wait window
    assert framework["workers"] == info["workers"] == 1


def test_bentoml_keeps_its_probes_and_metrics_beside_the_contract(batched):
    for probe in ("/livez", "/healthz", "/readyz"):
        assert httpx.get(batched.url + probe, timeout=10).status_code == 200, probe
    # One prediction, so the contract's request counter has a sample.
    coffee = (ROOT / "images" / "coffee.jpg").read_bytes()
    assert predict_with_probabilities(batched, coffee, "image/jpeg").status_code == 200
    metrics = metric_samples(batched)
    assert any(name.startswith("bentoml_service_request_total") for name in metrics)
    assert any(name.startswith("predict_requests_total") for name in metrics)
    # BentoML's UI and OpenAPI document are behind the contract's routes: 404 in its JSON.
    for path in ("/docs.json", "/static_content/index.css", "/nope"):
        response = httpx.get(batched.url + path, timeout=10)
        assert response.status_code == 404 and response.json()["error_type"] == "not_found"


def test_a_worker_that_cannot_start_ends_the_service_with_one_line(artifacts, tmp_path):
    """The model's sha256 checks out but its 11 outputs do not match the 10 labels of its
    metadata.json: the launcher only downloads, so each worker's warm-up is where it fails.
    The service stops its other worker and exits 1 with that worker's one line."""
    for path in artifacts.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    metadata = json.loads((artifacts / "metadata.json").read_text())
    metadata["labels"] = metadata["labels"][:-1]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    model = str(tmp_path / STRATEGIES[NAME].model_file)
    env = {**os.environ, "MODEL_URI": model, "PORT": str(free_port()), "WORKERS": "2"}

    result = run_to_exit(STRATEGIES[NAME], env)

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{NAME}: fatal: {model}"), result.stderr
    assert "label" in lines[-1]
    assert [line for line in lines if "fatal" in line] == [lines[-1]], result.stderr
    assert "Traceback" not in result.stderr
    # No worker outlives it: none is left with this model in its environment.
    left = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("MODEL_URI") == model:
                left.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    assert wait_until_gone(left) == []


def test_workers_end_with_a_killed_supervisor(artifacts):
    """SIGKILL to the launcher (BentoML's supervisor): its workers, which circus starts in
    sessions of their own, out of reach of the process group's signals, exit too."""
    running = start_service(STRATEGIES[NAME], local_env(artifacts, NAME, WORKERS="2"))
    try:
        workers = psutil.Process(running.pid).children(recursive=True)
        assert len(workers) == 2
        running.process.kill()
        running.process.wait()
        left = wait_until_gone(workers)
    finally:
        running.kill()
        for process in still_running(workers):
            process.kill()
    assert left == [], [process.pid for process in left]
