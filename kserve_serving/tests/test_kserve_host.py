"""The KServe host as a real process: /info's framework entry, and KServe's own routes kept
behind the contract's front.

The cross-service suites (tests/test_contract.py and the others) cover the contract itself,
the Open Inference Protocol included.
"""

from collections.abc import Iterator

import httpx
import pytest
from benchmark.processes import RunningService
from helpers import local_service

pytestmark = pytest.mark.service

NAME = "kserve_serving"


@pytest.fixture(scope="module")
def kserve(artifacts) -> Iterator[RunningService]:
    yield from local_service(artifacts, NAME)


def test_info_names_the_framework(kserve):
    info = httpx.get(kserve.url + "/info", timeout=10).json()
    framework = info["framework"]
    assert framework["name"] == "KServe" and framework["version"] == "0.21.0"
    assert framework["workers"] == info["workers"] == 1
    assert framework["max_batch_size"] == 1 and framework["batch_wait_ms"] is None


def test_kserve_routes_are_not_served(kserve, model_contract, study_payload):
    """KServe's routes read a body without limit and admit everything: only the contract's
    and the Open Inference Protocol's (serving_common's) are served."""
    model = model_contract.architecture
    requests = [
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{model}", None),
        ("POST", f"/v1/models/{model}:predict", study_payload),
        ("GET", "/docs", None),
        ("GET", "/openapi.json", None),
    ]
    for method, path, body in requests:
        response = httpx.request(method, kserve.url + path, content=body, timeout=10)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error_type"] == "not_found"
    # The contract's health, not KServe's liveness document.
    assert httpx.get(kserve.url + "/", timeout=10).json()["status"] == "healthy"
