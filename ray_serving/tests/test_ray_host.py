"""The Ray Serve host as a real process with a real local Ray cluster: /info's framework
entry (which replica on which node), Ray's own routes, Ray's Python proxy as the other
ingress, a startup problem found before Ray starts, and the process tree a service is.

What every batching framework does (requests sharing inferences, a client leaving while its
request waits for a batch, SIGTERM under load leaving no process behind) is tested once for
all in tests/test_batching.py; the cross-service suites (tests/test_contract.py and the
others) cover the contract itself. Starting Ray costs seconds of CPU: one batched service
serves most of this module.
"""

import socket
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from benchmark.processes import RunningService, run_to_exit, start_service
from helpers import ROOT, STRATEGIES, local_env, local_service, predict_with_probabilities

pytestmark = pytest.mark.service

NAME = "ray_serving"
# The batch settings of tests/test_batching.py's service, reported in /info.
MAX_BATCH_SIZE = 8
BATCH_WAIT_MS = 300
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


def test_rays_python_proxy_serves_the_same_contract(artifacts, model_contract):
    """The other ingress (RAY_SERVE_ENABLE_HA_PROXY=0): the same answers and errors, and a
    clean exit."""
    service = start_service(
        STRATEGIES[NAME], local_env(artifacts, NAME, RAY_SERVE_ENABLE_HA_PROXY="0")
    )
    try:
        info = httpx.get(service.url + "/info", timeout=10).json()
        assert info["framework"]["ingress"] == "Ray Serve proxy"
        answer = predict_with_probabilities(service, COFFEE, "image/jpeg")
        assert answer.status_code == 200
        assert answer.json()["prediction"] in model_contract.labels
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


def test_info_names_the_framework_and_its_batching(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "Ray Serve" and framework["version"] == "2.60.0"
    assert framework["ingress"] in {"HAProxy", "Ray Serve proxy"}
    assert framework["batch_wait_ms"] == BATCH_WAIT_MS  # it has a wait window
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


def test_the_service_is_a_tree_of_ray_processes(batched):
    """What tests/test_batching.py's SIGTERM test finds ended: the whole tree, not one."""
    root = psutil.Process(batched.pid)
    tree = [root, *root.children(recursive=True)]
    # GCS, raylet, the Serve controller, the ingress, a replica, Ray's agents at least.
    assert len(tree) >= 6, tree
