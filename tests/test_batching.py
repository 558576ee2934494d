"""Every strategy with a `[variants.batched]` manifest table, batching, as a real process:
requests sent together share inferences and each client keeps its own answer, a refused
request does not sink its batch, a client that leaves while its request waits for a batch
is a 499, /info reports the batch settings, and SIGTERM while batches gather or run answers
every request and leaves no process behind.

The cross-service suites (tests/test_contract.py and the others) cover the contract itself
with the batching off. What only one framework does (its own routes, its /info entry's
name and shape, its process model) is tested in its folder (<strategy>/tests/).
"""

import asyncio
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from benchmark.processes import RunningService
from helpers import (
    ROOT,
    STRATEGIES,
    image_media_type,
    local_service,
    metric_samples,
    predict_with_probabilities,
    still_running,
)
from weather_model.reference import sample_images

pytestmark = pytest.mark.service

BATCHED = sorted(name for name, strategy in STRATEGIES.items() if "batched" in strategy.variants)
MAX_BATCH_SIZE = 8
# Long enough that requests sent together meet in one batch even on a busy machine; a lone
# request waits this long for company, then runs as a batch of one. (A framework without a
# wait window, BentoML, ignores it and reports `batch_wait_ms` null.)
BATCH_WAIT_MS = 300
IMAGES = sample_images(ROOT / "images")[:MAX_BATCH_SIZE]
COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()
# Requests sent together: twice a batch, so at least two batches run or gather at once.
CONCURRENT = 2 * MAX_BATCH_SIZE
# Without a wait window (BentoML's dispatcher sends whatever gathered while the previous
# batch ran) how many requests meet is up to the machine: a few rounds make a batch of one
# every time all but certain. With one, requests sent together meet in the first round.
ROUNDS_WITHOUT_WAIT_WINDOW = 5
# SIGTERM'd services: how long they may take to answer what is in flight and exit.
EXIT_BOUND_SECONDS = 60
# And how long a helper may outlive it: multiprocessing's resource tracker (LitServe's
# workers) exits when it reads the end of its pipe, a moment after its last user.
ORPHAN_GRACE_SECONDS = 5


@pytest.fixture(scope="module", params=BATCHED)
def batched(request, artifacts) -> Iterator[RunningService]:
    """One worker batching up to MAX_BATCH_SIZE requests (the manifest's batched variant),
    from a local model file."""
    variant = STRATEGIES[request.param].variants["batched"]
    assert variant["MAX_BATCH_SIZE"] == str(MAX_BATCH_SIZE), variant
    yield from local_service(artifacts, request.param, **variant, BATCH_WAIT_MS=str(BATCH_WAIT_MS))


def batch_wait_ms(service: RunningService) -> float | None:
    """The service's wait window, from /info (None: its framework has none)."""
    return httpx.get(service.url + "/info", timeout=10).json()["framework"]["batch_wait_ms"]


def test_info_reports_the_batch_settings(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["max_batch_size"] == MAX_BATCH_SIZE
    # Each framework's folder pins which of the two it is.
    assert framework["batch_wait_ms"] in (BATCH_WAIT_MS, None)
    assert info["workers"] == 1


def test_concurrent_requests_share_inferences_and_keep_their_answers(batched, model_contract):
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
    rounds = 1 if batch_wait_ms(batched) else ROUNDS_WITHOUT_WAIT_WINDOW
    for _ in range(rounds):
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
            assert tuple(got) == model_contract.labels
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
        pytest.fail(f"no inference ran more than one request in {rounds} round(s)")
    batches_of_one = 'predict_batch_size_bucket{le="1.0"}'
    assert after[batches_of_one] < after["predict_batch_size_count"]


# Its client leaves a third of a wait window after sending: beside another pytest, on a
# starved core, LitServe had not yet taken the request and counted nothing.
@pytest.mark.alone
def test_a_client_that_leaves_while_queued_is_counted_499(batched):
    """The body arrives whole, then the client leaves while its request waits for a batch:
    a 499, never a 500. (Ray Serve cancels it; LitServe still runs it, as it cannot
    withdraw a queued request.)"""
    wait_ms = batch_wait_ms(batched)
    if not wait_ms:
        pytest.skip("no wait window: a lone request does not wait for a batch")
    gone_before = metric_samples(batched).get('predict_requests_total{status="499"}', 0)
    with socket.create_connection(("127.0.0.1", batched.port), timeout=10) as client:
        client.sendall(
            b"POST /predict/ HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(COFFEE)}\r\n\r\n".encode()
            + COFFEE
        )
        time.sleep(wait_ms / 1000 / 3)  # it reached the worker and waits for a batch
    deadline = time.monotonic() + 10
    while metric_samples(batched).get('predict_requests_total{status="499"}', 0) < gone_before + 1:
        assert time.monotonic() < deadline, "the client that left was not counted 499"
        time.sleep(0.1)
    assert 'predict_requests_total{status="500"}' not in metric_samples(batched)


# Last of each strategy's: it stops the module's service.
def test_sigterm_mid_batch_answers_every_request_and_leaves_no_process(batched):
    root = psutil.Process(batched.pid)
    tree = [root, *root.children(recursive=True)]

    def stop() -> tuple[int, list[str]]:
        """SIGTERM and the exit status, and what is left of the tree before anyone else
        (the fixture's kill of the process group) cleans up."""
        exit_status = batched.stop(EXIT_BOUND_SECONDS)
        deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
        while (left := still_running(tree)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return exit_status, [" ".join(process.cmdline()) for process in left]

    async def stop_mid_batch() -> tuple[list[int], int, list[str]]:
        async with httpx.AsyncClient(timeout=60) as client:
            sent = [
                asyncio.create_task(
                    client.post(
                        batched.url + "/predict/",
                        content=COFFEE,
                        headers={"Content-Type": "image/jpeg"},
                    )
                )
                for _ in range(CONCURRENT)
            ]
            await asyncio.sleep(0.1)  # in flight: read, gathering (BATCH_WAIT_MS) or running
            exit_status, left = await asyncio.to_thread(stop)
            statuses = [response.status_code for response in await asyncio.gather(*sent)]
            return statuses, exit_status, left

    statuses, exit_status, left = asyncio.run(stop_mid_batch())
    assert statuses == [200] * CONCURRENT
    assert exit_status == 0, batched.stderr()[-2000:]
    assert left == [], left
