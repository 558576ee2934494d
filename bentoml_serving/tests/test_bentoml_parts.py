"""The strategy's own parts in-process, without BentoML's server: the batch method's answers
(each request its own, refused and dropped ones without inference) on the real predictor,
and the routes mounted in front of BentoML's (the contract's documents, 404 and 405)."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from bentoml_serving.front import ContractRoutes
from bentoml_serving.inference import answer_requests
from bentoml_serving.request import QueuedRequest
from helpers import ROOT, STRATEGIES
from onnx_predictor.predictor import OnnxPredictor
from serving_common.model_source import fetch_model
from serving_common.protocol import PredictRequest
from serving_common.settings import load_settings
from serving_common.startup import ServiceState, build_state

NAME = "bentoml_serving"
COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()


@pytest.fixture(scope="module")
def state(artifacts, tmp_path_factory) -> ServiceState:
    model = str(artifacts / STRATEGIES[NAME].model_file)
    settings = load_settings(STRATEGIES[NAME].port, model_uri=model)
    fetched = fetch_model(model, Path(tmp_path_factory.mktemp("model")), 10)
    return build_state(NAME, settings, fetched, OnnxPredictor)


def request(body: bytes, media_type: str = "image/jpeg", gone: bool = False) -> QueuedRequest:
    return QueuedRequest(PredictRequest(media_type, body, True, 0.0), gone=gone)


def batches(state: ServiceState) -> tuple[float, float]:
    """(inferences, requests inferred) so far, from predict_batch_size."""
    text = state.metrics.exposition().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1].isalpha())
    return float(values["predict_batch_size_count"]), float(values["predict_batch_size_sum"])


def test_a_batch_answers_each_request_and_infers_the_admitted_once(state):
    (alone,) = answer_requests(state, [request(COFFEE)])
    before = batches(state)
    answers = answer_requests(
        state,
        [
            request(COFFEE),
            request(b"{", "application/json"),
            request(COFFEE, gone=True),
            request(COFFEE[:100]),
            request(COFFEE, "text/plain"),
            request(COFFEE),
        ],
    )
    inferences, inferred = (a - b for a, b in zip(batches(state), before, strict=True))
    assert [answer.status_code for answer in answers] == [200, 400, 499, 415, 415, 200]
    for answer in (answers[0], answers[-1]):
        got, expected = json.loads(answer.body), json.loads(alone.body)
        assert got["prediction"] == expected["prediction"]
        assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
    assert (inferences, inferred) == (1, 2)
    assert b'"error_type":"invalid_json"' in answers[1].body
    assert answers[2].body == b""  # nobody reads it


def test_a_batch_of_refusals_runs_no_inference(state):
    before = batches(state)
    answers = answer_requests(state, [request(b"[", "application/json"), request(b"x")])
    assert [answer.status_code for answer in answers] == [400, 415]
    assert batches(state) == before


def call(app: ContractRoutes, method: str, path: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    return asyncio.run(send())


def test_mounted_routes_answer_the_documents_and_the_contract_errors():
    routes = ContractRoutes()
    info = {"labels": ["calm", "storm"]}
    routes.publish({"status": "healthy"}, info)
    assert call(routes, "GET", "/").json() == {"status": "healthy"}
    assert call(routes, "HEAD", "/info").status_code == 200
    assert call(routes, "GET", "/info").json() == info
    for method, path, allow in [
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("GET", "/predict/", "POST"),
        ("PUT", "/predict", "POST"),
    ]:
        response = call(routes, method, path)
        assert response.status_code == 405, (method, path)
        assert response.json()["error_type"] == "method_not_allowed"
        assert response.headers["Allow"] == allow
    response = call(routes, "GET", "/docs.json")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found", "error_type": "not_found"}
