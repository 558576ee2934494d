"""The Open Inference Protocol (KServe v2; Triton's HTTP API) beside the contract's routes,
for every Python host: plain ASGI in front of an app that serves the contract's `/predict/`.

Triton's and KServe's clients (`tritonclient.http`) speak it:

- `GET /v2`: the server's name, version and extensions (`binary_tensor_data`);
- `GET /v2/health/live`, `/v2/health/ready`: 200 (a service listens once its model is
  loaded, so live is ready);
- `GET /v2/models/{model}` and `.../ready` (also under `/versions/1`): the model's inputs and
  outputs, from its `metadata.json` (the model's name is its `architecture`);
- `POST /v2/models/{model}/infer`: one input, `image`, BYTES `[N]` (each element an encoded
  JPEG or PNG: base64 strings in JSON, or raw in the binary tensor extension); outputs
  `probabilities` FP32 `[N, labels]` and `label` BYTES `[N]`, each as JSON or binary as
  the request asks.

Each image of an infer request is one prediction through the host's own `/predict/`
(`?probabilities=true`, the image as its body), one after the other, so that the host's
framework, limits and errors apply as they are; the answer is translated back. The infer
request itself is admitted like a `/predict/` (AdmissionGate, from its headers; one slot for
its N images), and its body read under MAX_BODY_BYTES and BODY_TIMEOUT_SECONDS. Errors are
the contract's statuses and bodies (`{"error", "error_type"}`; the protocol asks for
`error`), the request's own shape errors `invalid_json` (400) and `invalid_request` (422).
"""

import asyncio
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving_common.asgi import body_chunks, client_left
from serving_common.errors import ErrorType, ServiceError
from serving_common.protocol import (
    MODEL_PATH,
    ClientGone,
    decode_base64,
    discard_body,
    read_body,
)
from serving_common.settings import Settings

PREFIX = "/v2"
VERSION = "1"  # the one version of the one model a service serves
INPUT = "image"
PROBABILITIES, LABEL = "probabilities", "label"
OUTPUTS = (PROBABILITIES, LABEL)
# The binary tensor extension: the JSON part's length, the binary data after it.
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GET_METHODS = frozenset({"GET", "HEAD"})
POST_METHODS = frozenset({"POST"})


def is_open_inference(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@dataclass(frozen=True)
class ModelDescription:
    """What the protocol says of the model: from its metadata.json."""

    name: str  # metadata.json's architecture
    labels: tuple[str, ...]
    server: str  # the strategy's name

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "ModelDescription":
        """From a service's `/info` document (protocol.info_document)."""
        return cls(info["metadata"]["architecture"], tuple(info["labels"]), info["service"])

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": self.server,
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(self.labels)]},
                {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
            ],
        }


@dataclass
class InferRequest:
    """An infer request's images, and which outputs to answer, each binary or not."""

    images: list[bytes]
    outputs: dict[str, bool]  # name -> as binary data
    id: str | None = None


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorType.INVALID_REQUEST, message)


def _split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary data after it (the binary tensor extension)."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ServiceError(
            ErrorType.INVALID_JSON,
            f"Inference-Header-Content-Length {header_length!r} is not a length within the body",
        )
    length = int(header_length)
    return body[:length], body[length:]


def _bytes_elements(data: bytes) -> list[bytes]:
    """Triton's serialisation of a BYTES tensor: each element as a little-endian uint32
    length, then its bytes."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise _invalid("the binary data of input image ends inside an element's length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise _invalid("the binary data of input image ends inside an element")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def _flat(data: Any) -> Iterator[Any]:
    """A tensor's JSON `data`, row-major, nested or not."""
    for item in data:
        if isinstance(item, list):
            yield from _flat(item)
        else:
            yield item


def _element_count(shape: Any) -> int:
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _invalid('input image: "shape" must be a list of sizes, e.g. [1]')
    return int(np.prod(shape))


def _requested_outputs(document: dict[str, Any]) -> dict[str, bool]:
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _invalid('"parameters" must be an object')
    requested = document.get("outputs")
    if requested is None:
        binary = parameters.get("binary_data_output", False) is True
        return dict.fromkeys(OUTPUTS, binary)
    if not isinstance(requested, list) or not requested:
        raise _invalid('"outputs" must be a list of {"name": ...}')
    outputs: dict[str, bool] = {}
    for output in requested:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUTS:
            raise _invalid(f"unknown output {name!r}: the outputs are {', '.join(OUTPUTS)}")
        options = output.get("parameters") or {}
        outputs[name] = isinstance(options, dict) and options.get("binary_data", False) is True
    return outputs


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request's body (JSON, or JSON then binary data); ServiceError if malformed."""
    text, binary = _split_binary(body, header_length)
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(ErrorType.INVALID_JSON, f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _invalid('expected a JSON object with "inputs"')
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _invalid(f'"inputs" must hold exactly one input, {INPUT!r}')
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise _invalid(f"unknown input {tensor.get('name')!r}: the model takes {INPUT!r}")
    if tensor.get("datatype") != "BYTES":
        raise _invalid(f"input image: datatype must be BYTES, not {tensor.get('datatype')!r}")
    count = _element_count(tensor.get("shape"))
    options = tensor.get("parameters") or {}
    size = options.get("binary_data_size") if isinstance(options, dict) else None
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise _invalid(
                f"input image: binary_data_size {size!r} is not the {len(binary)} bytes sent"
            )
        images = _bytes_elements(binary)
    else:
        if binary:
            raise _invalid("binary data was sent, but input image has no binary_data_size")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise _invalid('input image: "data" must be a list of base64 strings')
        elements = list(_flat(data))
        if not all(isinstance(e, str) for e in elements):
            raise _invalid('input image: "data" must be a list of base64 strings')
        images = [decode_base64(e) for e in elements]
    if len(images) != count or count == 0:
        raise _invalid(f"input image: shape says {count} elements, the data holds {len(images)}")
    request_id = document.get("id")
    return InferRequest(
        images,
        _requested_outputs(document),
        request_id if isinstance(request_id, str) else None,
    )


@dataclass
class InferResponse:
    """The answer's JSON part, and the binary data after it, if any output is binary."""

    document: dict[str, Any]
    binary: list[bytes] = field(default_factory=list)

    def encode(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        text = orjson.dumps(self.document)
        if not self.binary:
            return text, [(b"content-type", b"application/json")]
        headers = [
            (b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH.encode(), str(len(text)).encode()),
        ]
        return text + b"".join(self.binary), headers


def infer_response(
    model: ModelDescription, request: InferRequest, scores: np.ndarray, labels: Sequence[str]
) -> InferResponse:
    """`scores` [N, labels] and the top labels as the protocol's outputs."""
    tensors: dict[str, tuple[str, list[int], Any, bytes]] = {
        PROBABILITIES: (
            "FP32",
            list(scores.shape),
            lambda: scores.ravel().tolist(),
            scores.astype("<f4").tobytes(),
        ),
        LABEL: (
            "BYTES",
            [len(labels)],
            lambda: list(labels),
            b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in labels)),
        ),
    }
    response = InferResponse({"model_name": model.name, "model_version": VERSION, "outputs": []})
    if request.id is not None:
        response.document["id"] = request.id
    for name, binary in request.outputs.items():
        datatype, shape, data, raw = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            output["parameters"] = {"binary_data_size": len(raw)}
            response.binary.append(raw)
        else:
            output["data"] = data()
        response.document["outputs"].append(output)
    return response


@dataclass
class Answer:
    """What the host answered one inner `/predict/`."""

    status: int = 0  # 0: no answer started (the client left)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


class OpenInference:
    """Plain ASGI: the protocol's routes answered here, the rest passed to `app`, which
    serves the contract's `/predict/`. Hosts put it right inside their AdmissionGate."""

    def __init__(
        self,
        app: ASGIApp,
        model: ModelDescription,
        settings: Settings,
        predict_path: str = "/predict/",
    ) -> None:
        """`predict_path`: where `app` takes a prediction."""
        self.app = app
        self.model = model
        self.settings = settings
        self.predict_path = predict_path
        # The server's own documents, answered as they are.
        self.documents = {
            PREFIX: {"name": model.server, "version": VERSION, "extensions": EXTENSIONS},
            f"{PREFIX}/health/live": {"live": True},
            f"{PREFIX}/health/ready": {"ready": True},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_open_inference(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            await self.route(scope, receive, send)
        except ServiceError as refusal:
            await self.send_json(send, refusal.body(), refusal.status, refusal.headers)
        except ClientGone:
            pass

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in self.documents:
            if await self.allowed(method, GET_METHODS, send):
                await self.send_json(send, self.documents[path])
            return
        match = MODEL_PATH.fullmatch(path)
        if match is None:
            raise ServiceError(ErrorType.NOT_FOUND, "Not Found")
        name, version, action = match.groups()
        if name != self.model.name or version not in (None, VERSION):
            if method == "POST":
                # Read and dropped first, as every refusal's body: a connection closed with
                # unread bytes is reset, and a client that sends before it reads sees no 404.
                await discard_body(body_chunks(receive), self.settings.body_timeout_seconds)
            raise ServiceError(
                ErrorType.NOT_FOUND,
                f"unknown model {name!r} version {version or VERSION!r}: this service serves "
                f"{self.model.name!r} version {VERSION!r}",
            )
        if action == "/infer":
            if await self.allowed(method, POST_METHODS, send):
                await self.infer(scope, receive, send)
        elif await self.allowed(method, GET_METHODS, send):
            ready = {"name": self.model.name, "ready": True}
            await self.send_json(send, ready if action == "/ready" else self.model.metadata())

    async def allowed(self, method: str, methods: frozenset[str], send: Send) -> bool:
        """Whether the route takes `method`; if not, the 405 is answered."""
        if method in methods:
            return True
        refusal = ServiceError(ErrorType.METHOD_NOT_ALLOWED, "Method Not Allowed")
        allow = ", ".join(sorted(methods, key=("GET", "HEAD", "POST").index))
        await self.send_json(send, refusal.body(), refusal.status, {"Allow": allow})
        return False

    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        body = await read_body(
            body_chunks(receive),
            _text(headers.get(b"content-length")),
            self.settings.max_body_bytes,
            self.settings.body_timeout_seconds,
        )
        request = parse_infer_request(body, _text(headers.get(HEADER_LENGTH)))
        # The body is whole and nobody reads any more: watch for the client leaving.
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(client_left(receive))
        watcher.add_done_callback(lambda done: None if done.cancelled() else gone.set())
        try:
            rows, labels = [], []
            for image in request.images:
                answer = await self.predict(scope, image, gone)
                if answer.status == 0 or gone.is_set():
                    return  # the client left: nobody reads an answer
                if answer.status != 200:
                    await self.forward(send, answer)
                    return
                document = orjson.loads(answer.body)
                labels.append(document["prediction"])
                rows.append(list(document["probabilities"].values()))
        finally:
            watcher.cancel()
        scores = np.asarray(rows, dtype=np.float32)
        response = infer_response(self.model, request, scores, labels)
        payload, response_headers = response.encode()
        await _send(send, 200, response_headers, payload)

    async def predict(self, scope: Scope, image: bytes, gone: asyncio.Event) -> Answer:
        """One image through the host's own `/predict/`, as its body."""
        media = b"image/png" if image.startswith(PNG_SIGNATURE) else b"image/jpeg"
        inner = {
            **scope,
            "method": "POST",
            "path": self.predict_path,
            "raw_path": self.predict_path.encode(),
            "query_string": b"probabilities=true",
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(image)).encode()),
            ],
        }
        sent = False

        async def receive_image() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": image, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        answer = Answer()

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                answer.body += message.get("body", b"")

        await self.app(inner, receive_image, keep)
        return answer

    @staticmethod
    async def forward(send: Send, answer: Answer) -> None:
        """An inner refusal as it was answered: the contract's status, body and headers."""
        keep = [(k, v) for k, v in answer.headers if k.lower() != b"content-length"]
        await _send(send, answer.status, keep, bytes(answer.body))

    @staticmethod
    async def send_json(
        send: Send, document: object, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await _send(
            send, status, [(b"content-type", b"application/json"), *extra], orjson.dumps(document)
        )


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
