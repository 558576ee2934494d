"""In-process tests of the FastAPI host (`app.py`) over each Python strategy's batch-shaped
predictor. The framework-free contract pieces are tested in test_protocol.py; the contract
itself over HTTP against every strategy by tests/test_contract.py."""

import base64
import struct

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from helpers import ROOT, STRATEGIES
from serving_common.app import create_app
from serving_common.metrics import STAGES
from serving_common.model_source import fetch_model
from serving_common.settings import load_settings
from serving_common.startup import build_state, import_predictor

from serving_common import protocol

# The strategies serving_common hosts: those whose manifest names a Predictor.
HOSTED = sorted(name for name, s in STRATEGIES.items() if s.predictor)
IMAGES = [ROOT / "images" / name for name in ("coffee.jpg", "camera_grey.png", "rocket.jpg")]


@pytest.fixture(scope="module", params=HOSTED)
def state(request, artifacts, tmp_path_factory):
    strategy = STRATEGIES[request.param]
    settings = load_settings(strategy.port, model_uri=str(artifacts / strategy.model_file))
    model = fetch_model(settings.model_uri, tmp_path_factory.mktemp("cache"))
    return build_state(strategy.name, settings, model, import_predictor(str(strategy.predictor)))


def test_predictor_is_batch_shaped(state, model_contract):
    predictor = state.predictor
    inputs = [
        predictor.preprocess(predictor.decode(path.read_bytes(), state.limits)) for path in IMAGES
    ]
    batch = predictor.predict(inputs)
    assert batch.shape == (len(IMAGES), len(model_contract.labels))
    one_by_one = np.concatenate([predictor.predict([one]) for one in inputs])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=1e-4)


def test_fastapi_host_serves_the_protocol(state):
    coffee = IMAGES[0].read_bytes()
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        assert client.get("/").json() == protocol.health_document(state)
        by_json = client.post("/predict/", json={"image": base64.b64encode(coffee).decode()})
        raw = client.post("/predict", content=coffee, headers={"Content-Type": "image/jpeg"})
        assert by_json.status_code == raw.status_code == 200
        assert by_json.json() == raw.json()
        info = client.get("/info").json()
        assert info["service"] == state.name and info["runtime"]["version"]
        assert (info["max_aspect_ratio"], info["max_pending_requests"]) == (20, 64)
        assert info["refusals_per_second"] == 100
        assert (info["body_timeout_seconds"], info["storage_timeout_seconds"]) == (30, 60)
        error = client.post("/predict/", content=b"{", headers={"Content-Type": "application/json"})
        assert (error.status_code, error.json()["error_type"]) == (400, "invalid_json")
        metrics = client.get("/metrics").text
        assert 'predict_requests_total{status="400"}' in metrics
        for stage in STAGES:
            assert f'predict_stage_duration_seconds_count{{stage="{stage}"}} 2.0' in metrics


def test_fastapi_host_answers_the_open_inference_protocol(state):
    coffee = IMAGES[0].read_bytes()
    model = state.model.metadata["architecture"]
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
    header = orjson.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": 4 + len(coffee)}}]}
    )
    body = header + struct.pack("<I", len(coffee)) + coffee
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get(f"/v2/models/{model}").json()["outputs"][1]["name"] == "label"
        expected = client.post(
            "/predict/?probabilities=true", content=coffee, headers={"Content-Type": "image/jpeg"}
        ).json()
        answer = client.post(
            f"/v2/models/{model}/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["label"]["data"] == [expected["prediction"]]
        assert outputs["probabilities"]["data"] == list(expected["probabilities"].values())
        bad = client.post(f"/v2/models/{model}/infer", content=b"{")
        assert (bad.status_code, bad.json()["error_type"]) == (400, "invalid_json")
        assert client.get("/v2/models/other").status_code == 404
        assert client.delete(f"/v2/models/{model}").headers["Allow"] == "GET, HEAD"
