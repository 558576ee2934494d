"""The canonical contract suite (contract/README.md): every route and every row of
contract/errors.json, over real HTTP, against every discovered strategy serving
`served_model` (the default demo model here; tests/test_contract_other_models.py runs this
very suite against other models)."""

import base64
import functools
import io
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass

import hostile
import httpx
import numpy as np
import pytest
import tritonclient.http
from benchmark.processes import RunningService
from clients import (
    COFFEE,
    JPEG,
    JSON,
    PNG,
    assert_serves_again,
    b64_json,
    post,
    read_response,
    start_predict,
)
from helpers import ROOT, TEST_LIMITS
from PIL import Image
from weather_model.parity import MAX_PROBABILITY_DELTA

ERRORS = json.loads((ROOT / "contract" / "errors.json").read_text())
MAX_BODY_BYTES = int(TEST_LIMITS["MAX_BODY_BYTES"])
MAX_IMAGE_PIXELS = int(TEST_LIMITS["MAX_IMAGE_PIXELS"])
MAX_PENDING_REQUESTS = int(TEST_LIMITS["MAX_PENDING_REQUESTS"])
# Up to 12 x MAX_PENDING_REQUESTS stalled clients, added within BODY_TIMEOUT_SECONDS.
STALLED_ROUNDS = 12


def encoded(size: tuple[int, int], image_format: str) -> bytes:
    """A flat image: compresses to almost nothing whatever its pixel count (a bomb)."""
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, image_format)
    return buffer.getvalue()


def chunks(total: int) -> Iterator[bytes]:
    """A body sent chunked, with no Content-Length to refuse it early."""
    for _ in range(total // 500_000):
        yield b"x" * 500_000


OVER_LIMIT = (2500, 2000)  # 5 MP > MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class Case:
    error_type: str
    # "chunked": 3 x MAX_BODY_BYTES, without Content-Length; a key of RAW_SENDERS: the
    # request is sent its own way, over a raw socket
    content: bytes | str = b""
    content_type: str | None = JSON
    query: str = ""
    method: str = "POST"
    path: str = "/predict/"


def short_body(service: RunningService, _: Case) -> httpx.Response:
    """Declares 1000 bytes, sends 10, waits."""
    with closing(start_predict(service, 1000, COFFEE[:10])) as client:
        return read_response(client)


def behind_stalled_clients(service: RunningService, _: Case) -> httpx.Response:
    """A request while every pending slot holds a client that sent its headers and is still
    to send its body. Stalled clients are added a worker's bound at a time until a request
    is refused: which worker accepts a connection is up to the kernel and the workers."""
    with ExitStack() as stack:
        for _ in range(STALLED_ROUNDS):
            for _ in range(MAX_PENDING_REQUESTS):
                stack.enter_context(closing(start_predict(service, 1000)))
            time.sleep(0.2)  # the stalled requests reach their handlers
            response = post(service, COFFEE, JPEG)
            if response.status_code != 200:
                break
        return response


# One row per way to get each error; every row of errors.json but `internal` appears.
ERROR_CASES = {
    "truncated JSON": Case("invalid_json", b"{"),
    "truncated array": Case("invalid_json", b"["),
    "trailing junk": Case("invalid_json", b'"x" junk'),
    "not JSON": Case("invalid_json", b"{not json"),
    "bad base64": Case("invalid_base64", b'{"image": "***"}'),
    "base64 with a stray character": Case("invalid_base64", b'{"image": "AAAA!AAAA"}'),
    "no image field": Case("invalid_request", b'{"picture": ""}'),
    "image not a string": Case("invalid_request", b'{"image": 42}'),
    "JSON array": Case("invalid_request", b'["image"]'),
    "query flag": Case("invalid_request", COFFEE, JPEG, query="?probabilities=maybe"),
    "declared body": Case("body_too_large", b"0" * (MAX_BODY_BYTES + 1), JPEG),
    "chunked body": Case("body_too_large", "chunked", JPEG),
    "short body": Case("request_timeout", "short"),
    "PNG bomb": Case("image_too_large", encoded(OVER_LIMIT, "PNG"), PNG),
    "JPEG bomb in JSON": Case("image_too_large", b64_json(encoded(OVER_LIMIT, "JPEG"))),
    "30000x30000 PNG header": Case("image_too_large", hostile.header_only_png(30000, 30000), PNG),
    **{
        name: Case("extreme_aspect_ratio", make(), hostile.media_type(make()))
        for name, make in hostile.ASPECT_RATIO_BOMBS.items()
    },
    "GIF": Case("unsupported_image", b64_json(b"GIF89a not a photo")),
    "empty image": Case("unsupported_image", b64_json(b"")),
    "truncated JPEG": Case("unsupported_image", COFFEE[: len(COFFEE) // 3], JPEG),
    "PNG header only": Case("unsupported_image", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, PNG),
    "octet-stream": Case("unsupported_media_type", COFFEE, "application/octet-stream"),
    "no Content-Type": Case("unsupported_media_type", COFFEE, None),
    "unknown route": Case("not_found", method="GET", path="/nope"),
    "GET /predict/": Case("method_not_allowed", method="GET"),
    "POST /": Case("method_not_allowed", COFFEE, JPEG, path="/"),
    "POST /info": Case("method_not_allowed", COFFEE, JPEG, path="/info"),
    "DELETE /metrics": Case("method_not_allowed", method="DELETE", path="/metrics"),
    "PUT /predict/": Case("method_not_allowed", COFFEE, JPEG, method="PUT"),
    "DELETE /": Case("method_not_allowed", method="DELETE"),
    "PATCH /info": Case("method_not_allowed", method="PATCH", path="/info"),
    "POST /metrics": Case("method_not_allowed", method="POST", path="/metrics"),
    "behind stalled clients": Case("overloaded", "stalled"),
}
# Cases that send their requests their own way.
RAW_SENDERS = {"short": short_body, "stalled": behind_stalled_clients}


def test_every_error_row_has_a_case():
    assert {case.error_type for case in ERROR_CASES.values()} == set(ERRORS) - {"internal"}


@pytest.mark.parametrize("name", ERROR_CASES)
def test_error_rows(service, name):
    case = ERROR_CASES[name]
    if case.content in RAW_SENDERS:
        response = RAW_SENDERS[case.content](service, case)
    else:
        body = chunks(3 * MAX_BODY_BYTES) if case.content == "chunked" else case.content
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        url = service.url + case.path + case.query
        response = httpx.request(case.method, url, content=body, headers=headers, timeout=60)
    assert response.status_code == ERRORS[case.error_type]["status"], response.text
    assert response.json()["error_type"] == case.error_type and response.json()["error"]
    assert set(response.json()) == {"error", "error_type"}
    if case.error_type == "overloaded":
        assert response.headers["Retry-After"] == "1"
    assert service.process.poll() is None
    assert_serves_again(service)


@functools.cache
def unusual_image(name: str) -> bytes:
    return hostile.VALID[name]()


@pytest.mark.parametrize("name", hostile.VALID)
def test_unusual_images_get_the_reference_answer(service, served_model, name):
    image = unusual_image(name)
    response = post(service, image, hostile.media_type(image), "?probabilities=true")
    assert response.status_code == 200, response.text
    got = response.json()["probabilities"]
    same_pixels = hostile.SAME_PIXELS_AS.get(name)
    expected = served_model.reference_answer(same_pixels() if same_pixels else image)
    assert response.json()["prediction"] == max(expected, key=expected.get)
    worst = max(abs(got[label] - expected[label]) for label in served_model.labels)
    assert worst <= MAX_PROBABILITY_DELTA, f"{service.name} on {name}: {worst:.4f}"


@pytest.mark.parametrize("path", ["/", "/info", "/metrics"])
def test_head_answers_like_get(service, path):
    assert httpx.head(service.url + path, timeout=10).status_code == 200


def test_base64_wrapped_as_rfc_2045_is_accepted(service):
    wrapped = json.dumps({"image": base64.encodebytes(COFFEE).decode()}).encode()
    assert b"\\n" in wrapped
    response = post(service, wrapped, JSON)
    assert response.status_code == 200, response.text
    assert response.json() == post(service, COFFEE, JPEG).json()


def test_health_answers(service):
    response = httpx.get(service.url + "/")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy" and service.name in response.json()["message"]


def test_json_raw_and_no_trailing_slash_agree(service, served_model):
    by_json = post(service, b64_json(COFFEE), "application/json")
    raw = post(service, COFFEE, "image/jpeg")
    bare = httpx.post(
        service.url + "/predict", content=COFFEE, headers={"Content-Type": "image/jpeg"}
    )
    assert by_json.status_code == raw.status_code == bare.status_code == 200
    assert by_json.json() == raw.json() == bare.json()
    assert set(by_json.json()) == {"prediction"}
    assert by_json.json()["prediction"] in served_model.labels


@pytest.mark.parametrize("flag", ["true", "1", "yes", "false", "0"])
def test_probabilities_flag(service, served_model, flag):
    body = post(service, COFFEE, "image/jpeg", f"?probabilities={flag}").json()
    if flag in ("false", "0"):
        assert set(body) == {"prediction"}
        return
    assert list(body["probabilities"]) == served_model.labels
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["prediction"] == max(body["probabilities"], key=body["probabilities"].get)


@pytest.mark.parametrize(
    ("name", "media"),
    [("coffee_alpha.png", "image/png"), ("camera_grey.png", "image/png"),
     ("gravel_grey.jpg", "image/jpeg")],
)  # fmt: skip
def test_alpha_and_greyscale_are_decoded(service, name, media):
    response = post(service, (ROOT / "images" / name).read_bytes(), media)
    assert response.status_code == 200, response.text


def test_image_at_the_pixel_limit_is_served(service):
    side = int(MAX_IMAGE_PIXELS**0.5)
    response = post(service, encoded((side, side), "PNG"), "image/png")
    assert response.status_code == 200, response.text


def test_study_payload(service, served_model, study_payload):
    response = post(service, study_payload, "application/json")
    assert response.status_code == 200 and response.json()["prediction"] in served_model.labels


def test_info_reports_model_workers_and_startup(service, served_model):
    info = httpx.get(service.url + "/info").json()
    assert info["service"] == service.name
    assert info["workers"] == 2
    assert info["labels"] == served_model.labels
    assert info["model_uri"].startswith("gs://")
    assert info["model_uri"].endswith(service.strategy.model_file)
    assert len(info["model_sha256"]) == 64
    assert info["max_body_bytes"] == MAX_BODY_BYTES
    assert info["max_image_pixels"] == MAX_IMAGE_PIXELS
    assert info["runtime"]["runtime"] and info["runtime"]["decoder"]
    assert info["startup"]["download_seconds"] > 0 and info["startup"]["load_seconds"] > 0


def test_metrics_sum_over_workers(service):
    for _ in range(6):
        assert post(service, COFFEE, "image/jpeg").status_code == 200
    assert post(service, b"{", "application/json").status_code == 400
    text = httpx.get(service.url + "/metrics").text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1].isalpha())
    assert float(samples['predict_requests_total{status="200"}']) >= 6
    assert float(samples['predict_requests_total{status="400"}']) >= 1
    for stage in ("parse", "decode", "preprocess", "inference"):
        assert float(samples[f'predict_stage_duration_seconds_count{{stage="{stage}"}}']) >= 6
    assert float(samples["predict_request_duration_seconds_count"]) >= 7


# --- The Open Inference Protocol (KServe v2), driven by Triton's own client --------------

SAMPLE_IMAGES = sorted(p for p in (ROOT / "images").iterdir() if p.suffix in (".jpg", ".png"))


def triton(service: RunningService) -> tritonclient.http.InferenceServerClient:
    return tritonclient.http.InferenceServerClient(service.url.removeprefix("http://"))


def infer(
    service: RunningService, model: str, images: list[bytes], binary: bool
) -> tritonclient.http.InferResult:
    """One infer request of `images`: raw bytes in the binary extension, else base64 in JSON
    (a JPEG is not UTF-8 text); both outputs as binary data or as JSON alike."""
    tensor = tritonclient.http.InferInput("image", [len(images)], "BYTES")
    data = images if binary else [base64.b64encode(image) for image in images]
    tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
    outputs = [
        tritonclient.http.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "label")
    ]
    return triton(service).infer(model, [tensor], outputs=outputs)


def test_open_inference_health_and_model_metadata(service, served_model):
    client, model = triton(service), served_model.contract.architecture
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model) and not client.is_model_ready("no_such_model")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(model)
    assert metadata["name"] == model and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    labels = len(served_model.labels)
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, labels]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_open_inference_answers_as_predict_on_every_sample_image(service, served_model, binary):
    model = served_model.contract.architecture
    for path in SAMPLE_IMAGES:
        image = path.read_bytes()
        expected = post(service, image, hostile.media_type(image), "?probabilities=true").json()
        result = infer(service, model, [image], binary)
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (1, len(served_model.labels)), path.name
        assert probabilities.dtype == np.float32
        # The same float32 values, however each side printed them in JSON.
        same = np.array([expected["probabilities"][k] for k in served_model.labels], np.float32)
        assert probabilities[0].tolist() == same.tolist(), path.name
        (label,) = result.as_numpy("label")
        assert (label.decode() if isinstance(label, bytes) else label) == expected["prediction"]


def test_open_inference_takes_several_images_in_one_request(service, served_model):
    images = [COFFEE, (ROOT / "images" / "rocket.jpg").read_bytes()]
    result = infer(service, served_model.contract.architecture, images, binary=True)
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [post(service, image, JPEG).json()["prediction"] for image in images]
    assert result.as_numpy("probabilities").shape == (2, len(served_model.labels))


def v2_infer_body(image: bytes, **tensor: object) -> bytes:
    data = [base64.b64encode(image).decode()]
    fields = {"name": "image", "datatype": "BYTES", "shape": [1], "data": data, **tensor}
    return json.dumps({"inputs": [fields]}).encode()


@pytest.mark.parametrize(
    ("content", "path", "error_type"),
    [
        (b"{", "", "invalid_json"),
        (v2_infer_body(COFFEE, name="pixels"), "", "invalid_request"),
        (v2_infer_body(COFFEE, datatype="FP32"), "", "invalid_request"),
        (v2_infer_body(COFFEE, shape=[2]), "", "invalid_request"),
        (v2_infer_body(COFFEE, data=["not base64!"]), "", "invalid_base64"),
        (v2_infer_body(COFFEE[:5000]), "", "unsupported_image"),
        (v2_infer_body(encoded(OVER_LIMIT, "PNG")), "", "image_too_large"),
        (b"x" * (MAX_BODY_BYTES + 1), "", "body_too_large"),
        (v2_infer_body(COFFEE), "no_such_model", "not_found"),
    ],
    ids=["json", "input", "datatype", "shape", "base64", "image", "pixels", "body", "model"],
)
def test_open_inference_errors_are_the_contracts(service, served_model, content, path, error_type):
    model = path or served_model.contract.architecture
    url = f"{service.url}/v2/models/{model}/infer"
    response = httpx.post(url, content=content, headers={"Content-Type": JSON}, timeout=60)
    assert response.status_code == ERRORS[error_type]["status"], response.text
    assert response.json()["error_type"] == error_type and response.json()["error"]
    assert service.process.poll() is None
    assert_serves_again(service)
