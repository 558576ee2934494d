"""The Open Inference Protocol's pieces (`open_inference.py`) without a server: parsing an
infer request, JSON or binary, and shaping its answer; which requests admission counts."""

import base64
import json
import struct

import numpy as np
import orjson
import pytest
from serving_common.errors import ErrorType, ServiceError
from serving_common.open_inference import (
    LABEL,
    PROBABILITIES,
    InferRequest,
    ModelDescription,
    infer_response,
    parse_infer_request,
)

from serving_common import protocol

MODEL = ModelDescription("tiny_net", ("rain", "snow", "fog"), "some_serving")


def binary_request(images: list[bytes], **document: object) -> tuple[bytes, str]:
    """Triton's binary tensor extension: the JSON part, then each element length-prefixed."""
    data = b"".join(struct.pack("<I", len(image)) + image for image in images)
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)]}
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [tensor], **document}).encode()
    return header + data, str(len(header))


def json_request(data: object, **tensor: object) -> bytes:
    fields = {"name": "image", "datatype": "BYTES", "shape": [1], "data": data, **tensor}
    return json.dumps({"inputs": [fields]}).encode()


def test_binary_elements_are_split_by_their_lengths():
    body, length = binary_request([b"first", b"", b"third"], id="42")
    request = parse_infer_request(body, length)
    assert request.images == [b"first", b"", b"third"]
    assert request.outputs == {PROBABILITIES: False, LABEL: False}
    assert request.id == "42"


def test_json_elements_are_base64_strings_nested_or_not():
    nested = [[base64.b64encode(b"hi").decode()], [base64.b64encode(b"yo").decode()]]
    assert parse_infer_request(json_request(nested, shape=[2, 1]), None).images == [b"hi", b"yo"]


def test_outputs_are_answered_as_asked():
    asked = {"outputs": [{"name": LABEL, "parameters": {"binary_data": True}}]}
    body, length = binary_request([b"x"], **asked)
    assert parse_infer_request(body, length).outputs == {LABEL: True}
    body, length = binary_request([b"x"], parameters={"binary_data_output": True})
    assert parse_infer_request(body, length).outputs == {PROBABILITIES: True, LABEL: True}


@pytest.mark.parametrize(
    ("body", "length", "error_type"),
    [
        (b"{", None, ErrorType.INVALID_JSON),
        (b"{}", "99", ErrorType.INVALID_JSON),
        (b"[]", None, ErrorType.INVALID_REQUEST),
        (json_request(["aGk="], name="pixels"), None, ErrorType.INVALID_REQUEST),
        (json_request(["aGk="], datatype="FP32"), None, ErrorType.INVALID_REQUEST),
        (json_request(["aGk="], shape=[2]), None, ErrorType.INVALID_REQUEST),
        (json_request(["aGk="], shape=[-1]), None, ErrorType.INVALID_REQUEST),
        (json_request([], shape=[0]), None, ErrorType.INVALID_REQUEST),
        (json_request([1]), None, ErrorType.INVALID_REQUEST),
        (json_request(["!!"]), None, ErrorType.INVALID_BASE64),
        (binary_request([b"abc"])[0][:-1], binary_request([b"abc"])[1], ErrorType.INVALID_REQUEST),
    ],
    ids=["json", "length", "array", "input", "datatype", "shape", "negative", "empty",
         "numbers", "base64", "truncated"],
)  # fmt: skip
def test_malformed_requests_are_the_contracts_errors(body, length, error_type):
    with pytest.raises(ServiceError) as caught:
        parse_infer_request(body, length)
    assert caught.value.error_type == error_type


def test_binary_outputs_follow_the_json_part_in_order():
    scores = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32)
    request = InferRequest([b"a", b"b"], {PROBABILITIES: True, LABEL: True}, id="7")
    body, headers = infer_response(MODEL, request, scores, ["rain", "fog"]).encode()
    length = int(dict(headers)[b"inference-header-content-length"])
    document = orjson.loads(body[:length])
    assert document["id"] == "7" and document["model_name"] == "tiny_net"
    sizes = [o["parameters"]["binary_data_size"] for o in document["outputs"]]
    raw = body[length:]
    assert len(raw) == sum(sizes)
    assert np.frombuffer(raw[: sizes[0]], "<f4").reshape(2, 3).tolist() == scores.tolist()
    assert raw[sizes[0] :] == b"\x04\x00\x00\x00rain\x03\x00\x00\x00fog"


def test_json_outputs_hold_their_data():
    scores = np.array([[0.5, 0.25, 0.25]], dtype=np.float32)
    request = InferRequest([b"a"], {PROBABILITIES: False, LABEL: False})
    body, headers = infer_response(MODEL, request, scores, ["rain"]).encode()
    assert dict(headers)[b"content-type"] == b"application/json"
    outputs = orjson.loads(body)["outputs"]
    assert outputs == [
        {"name": PROBABILITIES, "datatype": "FP32", "shape": [1, 3], "data": [0.5, 0.25, 0.25]},
        {"name": LABEL, "datatype": "BYTES", "shape": [1], "data": ["rain"]},
    ]


@pytest.mark.parametrize(
    ("method", "path", "admitted"),
    [
        ("POST", "/predict/", True),
        ("POST", "/v2/models/tiny_net/infer", True),
        ("POST", "/v2/models/tiny_net/versions/1/infer", True),
        ("GET", "/v2/models/tiny_net/infer", False),
        ("GET", "/v2/models/tiny_net", False),
        ("POST", "/v2/models/tiny_net/ready", False),
        ("POST", "/v2/health/live", False),
    ],
)
def test_admission_counts_predictions_and_infer_requests(method, path, admitted):
    assert protocol.is_prediction(method, path) is admitted
