"""The BentoML host as real processes: BentoML's batching (requests sent together share
inferences, each client keeps its own answer, a refused request does not sink its batch),
SIGTERM while batches are in flight, a worker that cannot start, workers outliving a killed
supervisor, and BentoML's own routes next to the contract's.

The cross-service suites (tests/test_contract.py and the others) cover the contract itself
with the batching off; one batched service here keeps the share of CI time small.
"""

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from benchmark.processes import RunningService, run_to_exit
from weather_model.contract import LABELS
from weather_model.reference import sample_images

from conftest import (
    ROOT,
    STRATEGIES,
    free_port,
    image_media_type,
    local_env,
    local_service,
    metric_samples,
    predict_with_probabilities,
    start_service,
    still_running,
)

NAME = "bentoml_serving"
MAX_BATCH_SIZE = 8
IMAGES = sample_images(ROOT / "images")[:MAX_BATCH_SIZE]
# Requests sent together per round, and rounds at most until one inference ran several:
# BentoML's dispatcher sends whatever gathered while the previous batch ran, so how many
# meet is up to the machine; a few rounds make a batch of one every time all but certain.
CONCURRENT = 2 * MAX_BATCH_SIZE
ROUNDS = 5
# SIGTERM'd services and killed supervisors: how long their processes may take to end.
EXIT_BOUND_SECONDS = 60


def wait_until_gone(processes: list[psutil.Process]) -> list[psutil.Process]:
    deadline = time.monotonic() + EXIT_BOUND_SECONDS
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def batched(artifacts) -> Iterator[RunningService]:
    """One worker batching up to MAX_BATCH_SIZE requests, from a local model file."""
    yield from local_service(artifacts, NAME, MAX_BATCH_SIZE=str(MAX_BATCH_SIZE))


def test_concurrent_requests_share_inferences_and_keep_their_answers(batched):
    # Alone, each request is a batch of one: the unbatched answers.
    alone = {
        path.name: predict_with_probabilities(batched, path.read_bytes(), image_media_type(path))
        for path in IMAGES
    }
    assert all(response.status_code == 200 for response in alone.values())
    refused = [(b"{", "application/json"), (b"\xff\xd8\xff truncated", "image/jpeg")]
    good = [(path, path.read_bytes(), image_media_type(path)) for path in IMAGES]
    good = (good * 2)[: CONCURRENT - len(refused)]
    requests = [(body, kind) for _, body, kind in good] + refused
    for _ in range(ROUNDS):
        before = metric_samples(batched)
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(
                pool.map(lambda request: predict_with_probabilities(batched, *request), requests)
            )
        after = metric_samples(batched)

        for (path, _, _), response in zip(good, together, strict=False):
            assert response.status_code == 200, response.text
            expected = alone[path.name].json()
            assert response.json()["prediction"] == expected["prediction"], path.name
            got = response.json()["probabilities"]
            assert list(got) == list(LABELS)
            assert got == pytest.approx(expected["probabilities"], abs=1e-5), path.name
        # A refused request in a batch gets its own error; the others are served (above).
        answers = together[len(good) :]
        assert [response.status_code for response in answers] == [400, 415]
        assert [response.json()["error_type"] for response in answers] == [
            "invalid_json",
            "unsupported_image",
        ]
        # Only the admitted requests reach an inference.
        inferred = after["predict_batch_size_sum"] - before["predict_batch_size_sum"]
        assert inferred == len(good)
        inferences = after["predict_batch_size_count"] - before["predict_batch_size_count"]
        if inferences < len(good):
            break
    else:
        pytest.fail(f"no inference ran more than one request in {ROUNDS} rounds")
    batches_of_one = 'predict_batch_size_bucket{le="1.0"}'
    assert after[batches_of_one] < after["predict_batch_size_count"]


def test_info_names_the_framework_and_its_batching(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "BentoML" and framework["version"] == "1.4.40"
    assert framework["max_batch_size"] == MAX_BATCH_SIZE
    assert framework["batch_wait_ms"] is None  # BentoML's dispatcher has no wait window
    assert framework["workers"] == info["workers"] == 1


def test_bentoml_keeps_its_probes_and_metrics_beside_the_contract(batched):
    for probe in ("/livez", "/healthz", "/readyz"):
        assert httpx.get(batched.url + probe, timeout=10).status_code == 200, probe
    metrics = metric_samples(batched)
    assert any(name.startswith("bentoml_service_request_total") for name in metrics)
    assert any(name.startswith("predict_requests_total") for name in metrics)
    # BentoML's UI and OpenAPI document are behind the contract's routes: 404 in its JSON.
    for path in ("/docs.json", "/static_content/index.css", "/nope"):
        response = httpx.get(batched.url + path, timeout=10)
        assert response.status_code == 404 and response.json()["error_type"] == "not_found"


# Last of the module's: it stops the module's service.
def test_sigterm_answers_the_requests_of_running_batches(batched):
    body = (ROOT / "images" / "coffee.jpg").read_bytes()

    async def stop_while_batching() -> tuple[list[int], int]:
        async with httpx.AsyncClient(timeout=60) as client:
            sent = [
                asyncio.create_task(
                    client.post(
                        batched.url + "/predict/",
                        content=body,
                        headers={"Content-Type": "image/jpeg"},
                    )
                )
                for _ in range(CONCURRENT)
            ]
            await asyncio.sleep(0.1)  # in flight: read, queued, or in a batch
            exit_status = await asyncio.to_thread(batched.stop, EXIT_BOUND_SECONDS)
            return [response.status_code for response in await asyncio.gather(*sent)], exit_status

    statuses, exit_status = asyncio.run(stop_while_batching())
    assert statuses == [200] * CONCURRENT
    assert exit_status == 0, batched.stderr()[-2000:]


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
