"""The Ray Serve host as a real process with a real local Ray cluster: @serve.batch's
batches (several requests, one inference, each client its own answer; a refused request
does not sink its batch), a client that leaves while its request waits for a batch,
/info's framework entry, Ray's own routes, Ray's Python proxy as the other ingress, a
startup problem found before Ray starts, and SIGTERM under load leaving no process behind.

The cross-service suites (tests/test_contract.py and the others) cover the contract itself
with the batching off. Starting Ray costs seconds of CPU: one batched service serves most
of this module.
"""

import asyncio
import signal
import socket
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
    image_media_type,
    local_env,
    local_service,
    metric_samples,
    predict_with_probabilities,
    start_service,
    still_running,
)

NAME = "ray_serving"
MAX_BATCH_SIZE = 8
# Long enough that requests sent together meet in one batch even on a busy machine; a lone
# request waits this long for company, then runs as a batch of one.
BATCH_WAIT_MS = 300
IMAGES = sample_images(ROOT / "images")[:MAX_BATCH_SIZE]
COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()


# First: these start services of their own, before the module's batched one is up
# (two Ray clusters at once would only share the CPU).
def test_a_port_in_use_stops_startup_with_one_line_before_ray_starts(artifacts):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_to_exit(STRATEGIES[NAME], local_env(artifacts, NAME, PORT=str(port)))
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{NAME}: fatal: PORT") and str(port) in last, result.stderr
    assert "Traceback" not in result.stderr
    # Found before Ray was imported: no cluster was started and stopped for it.
    assert time.monotonic() - started < 30


def test_rays_python_proxy_serves_the_same_contract(artifacts):
    """The other ingress (RAY_SERVE_ENABLE_HA_PROXY=0): the same answers and errors, and a
    clean exit."""
    service = start_service(
        STRATEGIES[NAME], local_env(artifacts, NAME, RAY_SERVE_ENABLE_HA_PROXY="0")
    )
    try:
        info = httpx.get(service.url + "/info", timeout=10).json()
        assert info["framework"]["ingress"] == "Ray Serve proxy"
        answer = predict_with_probabilities(service, COFFEE, "image/jpeg")
        assert answer.status_code == 200 and answer.json()["prediction"] in LABELS
        refused = predict_with_probabilities(service, b"{", "application/json")
        assert refused.status_code == 400 and refused.json()["error_type"] == "invalid_json"
        missing = httpx.get(service.url + "/nope", timeout=10)
        assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
        assert service.stop(60) == 0, service.stderr()[-2000:]
    finally:
        service.kill()


@pytest.fixture(scope="module")
def batched(artifacts) -> Iterator[RunningService]:
    """One replica batching up to MAX_BATCH_SIZE requests, from a local model file."""
    yield from local_service(
        artifacts, NAME, MAX_BATCH_SIZE=str(MAX_BATCH_SIZE), BATCH_WAIT_MS=str(BATCH_WAIT_MS)
    )


def test_concurrent_requests_run_as_one_batch_and_keep_their_answers(batched):
    # Alone, each request is a batch of one: the unbatched answers.
    alone = {
        path.name: predict_with_probabilities(batched, path.read_bytes(), image_media_type(path))
        for path in IMAGES
    }
    assert all(response.status_code == 200 for response in alone.values())
    before = metric_samples(batched)
    refused = [(b"{", "application/json"), (b"\xff\xd8\xff truncated", "image/jpeg")]
    requests = [(path.read_bytes(), image_media_type(path)) for path in IMAGES] + refused
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(
            pool.map(lambda request: predict_with_probabilities(batched, *request), requests)
        )
    after = metric_samples(batched)

    inferences = after["predict_batch_size_count"] - before["predict_batch_size_count"]
    batched_requests = after["predict_batch_size_sum"] - before["predict_batch_size_sum"]
    assert batched_requests == len(IMAGES)
    assert inferences < len(IMAGES), "no inference ran more than one request"
    for path, response in zip(IMAGES, together, strict=False):
        assert response.status_code == 200, response.text
        expected = alone[path.name].json()
        assert response.json()["prediction"] == expected["prediction"], path.name
        got = response.json()["probabilities"]
        assert list(got) == list(LABELS)
        assert got == pytest.approx(expected["probabilities"], abs=1e-5), path.name
    # A refused request among them gets its own error; the others are served (above).
    errors = [response.json() for response in together[len(IMAGES) :]]
    assert [response.status_code for response in together[len(IMAGES) :]] == [400, 415]
    assert [error["error_type"] for error in errors] == ["invalid_json", "unsupported_image"]


def test_a_client_that_leaves_while_queued_is_counted_499(batched):
    """The body arrives whole, then the client leaves while its request waits for a batch:
    Serve cancels it, a 499, never a 500."""
    gone_before = metric_samples(batched).get('predict_requests_total{status="499"}', 0)
    with socket.create_connection(("127.0.0.1", batched.port), timeout=10) as client:
        client.sendall(
            b"POST /predict/ HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(COFFEE)}\r\n\r\n".encode()
            + COFFEE
        )
        time.sleep(BATCH_WAIT_MS / 1000 / 3)  # it reached the replica and waits for a batch
    deadline = time.monotonic() + 10
    while metric_samples(batched).get('predict_requests_total{status="499"}', 0) < gone_before + 1:
        assert time.monotonic() < deadline, "the client that left was not counted 499"
        time.sleep(0.1)
    assert 'predict_requests_total{status="500"}' not in metric_samples(batched)


def test_info_names_the_framework_and_its_batching(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "Ray Serve" and framework["version"] == "2.60.0"
    assert framework["ingress"] in {"HAProxy", "Ray Serve proxy"}
    assert framework["max_batch_size"] == MAX_BATCH_SIZE
    assert framework["batch_wait_ms"] == BATCH_WAIT_MS
    assert framework["replicas"] == info["workers"] == 1
    # Which replica on which node: here the one replica, on this machine's only node.
    replica = framework["replica"]
    assert replica["host"] == socket.gethostname() and replica["node_id"] and replica["node_ip"]
    answer = predict_with_probabilities(batched, COFFEE, "image/jpeg")
    assert answer.headers["x-served-by"] == f"{replica['id']}@{replica['host']}"


def test_rays_own_routes_answer_in_plain_text_and_nothing_else_is_added(batched):
    # Ray's ingress keeps /-/healthz and /-/routes for itself (not JSON: documented).
    health = httpx.get(batched.url + "/-/healthz", timeout=10)
    assert health.status_code == 200 and health.text
    assert httpx.get(batched.url + "/-/routes", timeout=10).status_code == 200
    for path in ("/docs", "/openapi.json", "/redoc"):
        response = httpx.get(batched.url + path, timeout=10)
        assert response.status_code == 404 and response.json()["error_type"] == "not_found"


# Last: it stops the module's service.
def test_sigterm_under_load_answers_every_request_and_leaves_no_process(batched):
    root = psutil.Process(batched.pid)
    tree = [root, *root.children(recursive=True)]
    # GCS, raylet, the Serve controller, the ingress, a replica, Ray's agents at least.
    assert len(tree) >= 6, tree

    def stop() -> tuple[int, list[str]]:
        """SIGTERM and the exit status, and what is left of the tree before anyone else
        (the fixture's kill of the process group) cleans up."""
        batched.process.send_signal(signal.SIGTERM)
        exit_status = batched.process.wait(60)
        return exit_status, [" ".join(process.cmdline()) for process in still_running(tree)]

    async def stop_under_load() -> tuple[list[int], int, list[str]]:
        async with httpx.AsyncClient(timeout=60) as client:
            sent = [
                asyncio.create_task(
                    client.post(
                        batched.url + "/predict/",
                        content=COFFEE,
                        headers={"Content-Type": "image/jpeg"},
                    )
                )
                for _ in range(2 * MAX_BATCH_SIZE)
            ]
            await asyncio.sleep(0.1)  # they wait for their batch (BATCH_WAIT_MS)
            exit_status, left = await asyncio.to_thread(stop)
            statuses = [response.status_code for response in await asyncio.gather(*sent)]
            return statuses, exit_status, left

    statuses, exit_status, left = asyncio.run(stop_under_load())
    assert statuses == [200] * (2 * MAX_BATCH_SIZE)
    assert exit_status == 0, batched.stderr()[-2000:]
    assert left == [], left
