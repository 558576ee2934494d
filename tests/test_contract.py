"""The HTTP contract (contract/README.md), checked over real HTTP against every service."""

import base64
import json

import httpx
import pytest
from weather_model.contract import LABELS

from conftest import REFERENCE, ROOT

ERRORS = json.loads((ROOT / "contract" / "errors.json").read_text())
COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()


def post(service, content: bytes, content_type: str, query: str = "") -> httpx.Response:
    return httpx.post(
        f"{service.url}/predict/{query}",
        content=content,
        headers={"Content-Type": content_type},
        timeout=60,
    )


def b64_json(data: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(data).decode()}).encode()


def test_health_answers(service):
    body = httpx.get(service.url + "/").json()
    assert body["status"] == "healthy" and body["message"]


def test_json_raw_and_no_trailing_slash(service):
    by_json = post(service, b64_json(COFFEE), "application/json")
    raw = post(service, COFFEE, "image/jpeg")
    bare = httpx.post(
        service.url + "/predict", content=COFFEE, headers={"Content-Type": "image/jpeg"}
    )
    assert by_json.status_code == raw.status_code == bare.status_code == 200
    assert by_json.json() == raw.json() == bare.json()
    assert by_json.json()["prediction"] in LABELS


def test_study_payload(service):
    payload = REFERENCE / "rime_5868.json"
    if not payload.exists():
        pytest.skip(f"the original study's payload is not at {payload}")
    response = post(service, payload.read_bytes(), "application/json")
    assert response.status_code == 200 and response.json()["prediction"] in LABELS


@pytest.mark.parametrize(
    ("content", "content_type", "error_type"),
    [
        (b"{", "application/json", "invalid_json"),
        (b'{"image": "***"}', "application/json", "invalid_base64"),
        (b'{"picture": ""}', "application/json", "invalid_request"),
        (b64_json(b"definitely not an image"), "application/json", "unsupported_image"),
        (COFFEE, "application/octet-stream", "unsupported_media_type"),
        (b"0" * 10_000_001, "image/jpeg", "body_too_large"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_error_rows(service, content, content_type, error_type):
    response = post(service, content, content_type)
    assert response.status_code == ERRORS[error_type]["status"], response.text
    assert response.json()["error_type"] == error_type and response.json()["error"]
    assert service.process.poll() is None
    assert post(service, COFFEE, "image/jpeg").status_code == 200


def test_info_reports_workers_and_startup(service):
    info = httpx.get(service.url + "/info").json()
    assert info["workers"] == 2
    assert info["labels"] == list(LABELS)
    assert info["model_uri"].startswith("gs://")
    assert info["startup"]["download_seconds"] > 0 and info["startup"]["load_seconds"] > 0


def test_metrics_sum_over_workers(service):
    for _ in range(6):
        assert post(service, COFFEE, "image/jpeg").status_code == 200
    text = httpx.get(service.url + "/metrics").text
    counts = [
        line
        for line in text.splitlines()
        if line.startswith('predict_requests_total{status="200"}')
    ]
    assert counts and float(counts[0].split()[-1]) >= 6
