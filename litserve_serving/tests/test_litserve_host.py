"""The LitServe host as a real process: /info's framework entry, LitServe's own routes
moved off the contract's, and the settings LitServe cannot honour.

What every batching framework does (requests sharing inferences, a client leaving while
queued, SIGTERM while a batch gathers) is tested once for all in tests/test_batching.py;
the cross-service suites (tests/test_contract.py and the others) cover the contract itself.
"""

from collections.abc import Iterator

import httpx
import pytest
from benchmark.processes import RunningService, free_port, run_to_exit
from helpers import STRATEGIES, local_env, local_service

pytestmark = pytest.mark.service

NAME = "litserve_serving"
# The batch settings of tests/test_batching.py's service, reported in /info.
MAX_BATCH_SIZE = 8
BATCH_WAIT_MS = 300


@pytest.fixture(scope="module")
def batched(artifacts) -> Iterator[RunningService]:
    """One worker batching up to MAX_BATCH_SIZE requests, from a local model file."""
    yield from local_service(
        artifacts, NAME, MAX_BATCH_SIZE=str(MAX_BATCH_SIZE), BATCH_WAIT_MS=str(BATCH_WAIT_MS)
    )


def test_info_names_the_framework_and_its_batching(batched):
    info = httpx.get(batched.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "LitServe" and framework["version"] == "0.2.19"
    assert framework["batch_wait_ms"] == BATCH_WAIT_MS  # it has a wait window
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
