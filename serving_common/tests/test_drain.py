"""Load, slow clients and shutdown, on the real process: a saturated worker still answers
health at once, and SIGTERM answers every accepted request before the process exits 0."""

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from benchmark.processes import start_service
from helpers import ROOT, plain_hosts

# Its tests start services of their own (conftest.py: tiers).
pytestmark = pytest.mark.service

COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()


def post(url: str) -> int | str:
    request = urllib.request.Request(
        f"{url}/predict/", data=COFFEE, headers={"Content-Type": "image/jpeg"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return type(exc).__name__


def concurrently(count: int, url: str) -> tuple[list[threading.Thread], list[int | str]]:
    statuses: list[int | str] = []
    threads = [threading.Thread(target=lambda: statuses.append(post(url))) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, statuses


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_answers_every_accepted_request_then_exits_0(artifacts, workers):
    strategy = plain_hosts()[0]
    env = {**os.environ, "MODEL_URI": str(artifacts / strategy.model_file), "WORKERS": workers}
    service = start_service(strategy, env)
    try:
        threads, statuses = concurrently(30, service.url)
        time.sleep(0.15)
        service.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        assert service.process.wait(timeout=60) == 0
        assert Counter(statuses) == {200: 30}
    finally:
        service.kill()


def test_a_saturated_worker_refuses_the_excess_and_answers_health(artifacts):
    strategy = plain_hosts()[0]
    env = {
        **os.environ,
        "MODEL_URI": str(artifacts / strategy.model_file),
        "MAX_PENDING_REQUESTS": "4",
    }
    service = start_service(strategy, env)
    try:
        threads, statuses = concurrently(24, service.url)
        started = time.monotonic()
        with urllib.request.urlopen(f"{service.url}/", timeout=10) as health:
            assert health.status == 200
        # Generous: the point is seconds of queueing would not pass.
        assert time.monotonic() - started < 1.0
        for thread in threads:
            thread.join()
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 4
    finally:
        service.kill()


def occupied_service(artifacts, **settings: str):
    """A plain host with one pending place, taken by a client that declared a body and
    sends none of it (it holds the place until BODY_TIMEOUT_SECONDS), and its socket."""
    strategy = plain_hosts()[0]
    env = {
        **os.environ,
        "MODEL_URI": str(artifacts / strategy.model_file),
        "MAX_PENDING_REQUESTS": "1",
        **settings,
    }
    service = start_service(strategy, env)
    holder = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    holder.sendall(request_head(100_000))
    time.sleep(0.3)  # the holder's headers read: its place taken
    return service, holder


def request_head(declared: int) -> bytes:
    lines = [
        "POST /predict/ HTTP/1.1",
        "Host: test",
        "Content-Type: image/jpeg",
        f"Content-Length: {declared}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_refusals_are_paced_under_a_flood(artifacts):
    """Ten clients refused at once, REFUSALS_PER_SECOND=10: the answers take turns 0.1 s
    apart, so the last comes at least 0.9 s after the first (a lower bound; a slow machine
    only widens it)."""
    service, holder = occupied_service(artifacts, REFUSALS_PER_SECOND="10")
    try:
        started = time.monotonic()
        threads, statuses = concurrently(10, service.url)
        answered = []
        for thread in threads:
            thread.join()
            answered.append(time.monotonic() - started)
        assert statuses == [503] * 10
        assert max(answered) >= 0.9, answered
    finally:
        holder.close()
        service.kill()
