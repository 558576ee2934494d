"""The LitServe host as a real process: LitServe's dynamic batching (several requests, one
inference, each client its own answer; a refused request does not sink its batch), a client
that leaves while its request is queued, /info's framework entry, LitServe's own routes
moved off the contract's, and the settings LitServe cannot honour.

The cross-service suites (tests/test_contract.py and the others) cover the contract itself
with the batching off; one batched service here keeps the share of CI time small.
"""

import asyncio
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
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
)

NAME = "litserve_serving"
MAX_BATCH_SIZE = 8
# Long enough that requests sent together meet in one batch even on a busy machine; a lone
# request waits this long for company, then runs as a batch of one.
BATCH_WAIT_MS = 300
IMAGES = sample_images(ROOT / "images")[:MAX_BATCH_SIZE]


@pytest.fixture(scope="module")
def batched(artifacts) -> Iterator[RunningService]:
    """One worker batching up to MAX_BATCH_SIZE requests, from a local model file."""
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
    # A refused request in a batch gets its own error; the others are served (above).
    errors = [response.json()["error_type"] for response in together[len(IMAGES) :]]
    assert [response.status_code for response in together[len(IMAGES) :]] == [400, 415]
    assert errors == ["invalid_json", "unsupported_image"]


def test_a_client_that_leaves_while_queued_is_counted_499(batched):
    """The body arrives whole, then the client leaves while its request waits for a batch:
    a 499, never a 500. (LitServe still runs it: it cannot withdraw a queued request.)"""
    gone_before = metric_samples(batched).get('predict_requests_total{status="499"}', 0)
    body = (ROOT / "images" / "coffee.jpg").read_bytes()
    with socket.create_connection(("127.0.0.1", batched.port), timeout=10) as client:
        client.sendall(
            b"POST /predict/ HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    deadline = time.monotonic() + 10
    while metric_samples(batched).get('predict_requests_total{status="499"}', 0) < gone_before + 1:
        assert time.monotonic() < deadline, "the client that left was not counted 499"
        time.sleep(0.1)
    assert 'predict_requests_total{status="500"}' not in metric_samples(batched)


def test_info_names_the_framework_and_its_batching(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "LitServe" and framework["version"] == "0.2.19"
    assert framework["max_batch_size"] == MAX_BATCH_SIZE
    assert framework["batch_wait_ms"] == BATCH_WAIT_MS
    assert framework["api_servers"] == framework["inference_workers"] == info["workers"] == 1


def test_litserve_routes_are_moved_off_the_contract(batched):
    assert httpx.get(batched.url + "/litserve/health", timeout=10).text == "ok"
    assert httpx.get(batched.url + "/litserve/info", timeout=10).json()["server"]
    for path in ("/health", "/docs", "/openapi.json"):
        response = httpx.get(batched.url + path, timeout=10)
        assert response.status_code == 404 and response.json()["error_type"] == "not_found"


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ({"MAX_BATCH_SIZE": "4", "BATCH_WAIT_MS": "0"}, "BATCH_WAIT_MS"),
        ({"PORT": "80"}, "PORT"),
    ],
)
def test_settings_litserve_cannot_honour_stop_startup_with_one_line(artifacts, setting, fragment):
    env = local_env(artifacts, NAME, **{"PORT": str(free_port()), **setting})
    result = run_to_exit(STRATEGIES[NAME], env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{NAME}: fatal: {fragment}"), result.stderr
    assert "Traceback" not in result.stderr


# Last: it stops the module's service.
def test_sigterm_answers_the_requests_of_a_gathering_batch(batched):
    body = (ROOT / "images" / "coffee.jpg").read_bytes()

    async def stop_while_gathering() -> tuple[list[int], int]:
        async with httpx.AsyncClient(timeout=60) as client:
            sent = [
                asyncio.create_task(
                    client.post(
                        batched.url + "/predict/",
                        content=body,
                        headers={"Content-Type": "image/jpeg"},
                    )
                )
                for _ in range(4)
            ]
            await asyncio.sleep(0.1)  # they wait for the batch to fill (BATCH_WAIT_MS)
            exit_status = await asyncio.to_thread(batched.stop, 60)
            return [response.status_code for response in await asyncio.gather(*sent)], exit_status

    statuses, exit_status = asyncio.run(stop_while_gathering())
    assert statuses == [200] * 4
    assert exit_status == 0, batched.stderr()[-2000:]
