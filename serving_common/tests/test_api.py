"""In-process API tests of both FastAPI services: every contract route and error row."""

import base64
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_common.app import create_app
from serving_common.errors import STATUS_BY_ERROR_TYPE
from serving_common.model_source import fetch_model
from serving_common.serve import build_state, import_predictor
from serving_common.settings import load_settings
from weather_model.contract import LABELS

from conftest import REFERENCE, ROOT

STRATEGIES = {
    "onnx_serving": ("model.optimized.onnx", "onnx_serving.predictor:OnnxPredictor"),
    "torch_serving": ("model.pt", "torch_serving.predictor:TorchPredictor"),
}
COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()


@pytest.fixture(scope="module", params=sorted(STRATEGIES))
def client(request, artifacts, tmp_path_factory):
    model_file, predictor = STRATEGIES[request.param]
    settings = load_settings(
        8080,
        model_uri=str(artifacts / model_file),
        max_body_bytes=2_000_000,
        max_image_pixels=4_000_000,
    )
    model = fetch_model(settings.model_uri, tmp_path_factory.mktemp("cache"))
    state = build_state(request.param, settings, model, import_predictor(predictor))
    with TestClient(create_app(state), raise_server_exceptions=False) as test_client:
        yield test_client


def as_json(data: bytes) -> dict[str, str]:
    return {"image": base64.b64encode(data).decode()}


def assert_error(response, error_type: str) -> None:
    assert response.status_code == STATUS_BY_ERROR_TYPE[error_type], response.text
    assert response.json()["error_type"] == error_type
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_health(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_predict_json_and_raw_agree(client):
    by_json = client.post("/predict/", json=as_json(COFFEE))
    raw = client.post("/predict", content=COFFEE, headers={"Content-Type": "image/jpeg"})
    assert by_json.status_code == raw.status_code == 200
    assert by_json.json() == raw.json()
    assert by_json.json()["prediction"] in LABELS


def test_probabilities_cover_every_label(client):
    body = client.post("/predict/?probabilities=true", json=as_json(COFFEE)).json()
    assert list(body["probabilities"]) == list(LABELS)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["prediction"] == max(body["probabilities"], key=body["probabilities"].get)


def test_png_with_alpha_and_greyscale(client):
    for name, media in [
        ("coffee_alpha.png", "image/png"),
        ("camera_grey.png", "image/png"),
        ("gravel_grey.jpg", "image/jpeg"),
    ]:
        data = (ROOT / "images" / name).read_bytes()
        response = client.post("/predict/", content=data, headers={"Content-Type": media})
        assert response.status_code == 200, (name, response.text)


def test_study_payload_unchanged(client):
    payload = REFERENCE / "rime_5868.json"
    if not payload.exists():
        pytest.skip(f"the original study's payload is not at {payload}")
    response = client.post(
        "/predict/", content=payload.read_bytes(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["prediction"] in LABELS


def test_info_names_model_and_threads(client, artifacts):
    info = client.get("/info").json()
    metadata = json.loads((artifacts / "metadata.json").read_text())
    assert info["labels"] == list(LABELS)
    assert info["model_sha256"] in {a["sha256"] for a in metadata["artifacts"].values()}
    assert info["workers"] == 1 and info["intra_op_threads"] == 1
    assert info["runtime"]["version"]


def test_metrics_count_requests_and_stages(client):
    client.post("/predict/", json=as_json(COFFEE))
    client.post("/predict/", content=b"{", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").text
    assert 'predict_requests_total{status="200"}' in text
    assert 'predict_requests_total{status="400"}' in text
    for stage in ("parse", "decode", "inference"):
        assert f'predict_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert "predict_request_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    ("content", "content_type", "error_type"),
    [
        (b"{not json", "application/json", "invalid_json"),
        (b'{"image": "%%%"}', "application/json", "invalid_base64"),
        (b'{"img": "AAAA"}', "application/json", "invalid_request"),
        (b'{"image": 42}', "application/json", "invalid_request"),
        (b'["image"]', "application/json", "invalid_request"),
        (
            json.dumps(as_json(b"GIF89a not a photo")).encode(),
            "application/json",
            "unsupported_image",
        ),
        (json.dumps(as_json(b"")).encode(), "application/json", "unsupported_image"),
        (COFFEE[: len(COFFEE) // 3], "image/jpeg", "unsupported_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png", "unsupported_image"),
        (COFFEE, "text/plain", "unsupported_media_type"),
        (b"x" * 2_000_001, "application/json", "body_too_large"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_error_rows(client, content, content_type, error_type):
    response = client.post("/predict/", content=content, headers={"Content-Type": content_type})
    assert_error(response, error_type)
    assert client.get("/").status_code == 200  # the worker lives on


def test_body_limit_applies_without_content_length(client):
    def chunks():
        for _ in range(3):
            yield b"x" * 1_000_000

    response = client.post("/predict/", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert_error(response, "body_too_large")


def test_image_over_pixel_limit_is_refused_before_decoding(client, tmp_path):
    # 2500x2000 = 5 MP > 4 MP limit; a flat PNG compresses to almost nothing (a bomb).
    path = tmp_path / "bomb.png"
    Image.new("RGB", (2500, 2000)).save(path)
    assert path.stat().st_size < 100_000
    response = client.post(
        "/predict/", content=path.read_bytes(), headers={"Content-Type": "image/png"}
    )
    assert_error(response, "image_too_large")
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (2500, 2000)).save(jpeg)
    response = client.post("/predict/", json=as_json(jpeg.read_bytes()))
    assert_error(response, "image_too_large")


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), "not_found")
    assert_error(client.get("/predict/"), "method_not_allowed")
    assert_error(
        client.post("/predict/?probabilities=maybe", json=as_json(COFFEE)), "invalid_request"
    )


def test_error_table_is_the_contract():
    table = json.loads((ROOT / "contract" / "errors.json").read_text())
    assert {k: v["status"] for k, v in table.items()} == STATUS_BY_ERROR_TYPE
    assert all(400 <= s < 500 for k, s in STATUS_BY_ERROR_TYPE.items() if k != "internal")
