"""The HTTP contract of contract/README.md, without a web framework.

A prediction request read under the body's limits and deadline (`read_predict_request`),
JSON/base64 parsing, the `probabilities` flag, admission control, prediction with stage
metrics, and the response documents. A host framework (FastAPI in `app.py`; BentoML, Ray
Serve or LitServe elsewhere) wires these to its own routes, so every host answers alike and
the only difference measured is the framework.
"""

import asyncio
import binascii
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pybase64

from serving_common.errors import ErrorType, ServiceError
from serving_common.metrics import STAGES, Metrics
from serving_common.settings import Settings
from serving_common.startup import ServiceState

JSON_MEDIA_TYPE = "application/json"
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png")
# ASCII whitespace, which base64 decoding skips: RFC 2045 wraps lines every 76 characters
# (GNU `base64`, Python's `base64.encodebytes`). Anything else outside the alphabet is a 400.
BASE64_WHITESPACE = str.maketrans("", "", " \t\n\r\v\f")
# The words pydantic reads as booleans, which the Rust service accepts too.
TRUE_WORDS = frozenset({"true", "1", "yes", "on", "t", "y"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", "f", "n"})
# The status a client that disconnected before its answer is counted with (nginx's).
CLIENT_GONE_STATUS = 499
PREDICT_PATHS = frozenset({"/predict/", "/predict"})
# The Open Inference Protocol's model routes (open_inference.py):
# /v2/models/{model}[/versions/{version}][/ready | /infer].
MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?")


def is_prediction(method: str, path: str) -> bool:
    """A `/predict/`, or the protocol's infer: admitted alike (AdmissionGate)."""
    if method != "POST":
        return False
    if path in PREDICT_PATHS:
        return True
    match = MODEL_PATH.fullmatch(path)
    return match is not None and match.group(3) == "/infer"


def media_type(content_type: str | None) -> str:
    """`image/jpeg` from `Image/JPEG; charset=x`; empty when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class ClientGone(Exception):
    """The client disconnected before its answer: counted with status 499, work dropped."""


def _too_large(limit: int) -> ServiceError:
    return ServiceError(
        ErrorType.BODY_TOO_LARGE, f"the body exceeds MAX_BODY_BYTES ({limit} bytes)"
    )


async def read_body(
    chunks: AsyncIterable[bytes], content_length: str | None, limit: int, timeout_seconds: float
) -> bytes:
    """The whole body within `timeout_seconds` (else 408), at most `limit` bytes (else 413).

    A body known to be too large, from Content-Length or while streaming, is read to its end
    and discarded before the 413, within the same deadline: clients that send everything
    before reading (urllib, requests) then see the 413 instead of a reset connection.
    """
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    rest = aiter(chunks)
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        await _discard(rest, deadline)
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in rest:
                size += len(chunk)
                if size > limit:
                    break
                parts.append(chunk)
    except TimeoutError:
        raise ServiceError(
            ErrorType.REQUEST_TIMEOUT,
            f"the body did not arrive within BODY_TIMEOUT_SECONDS ({timeout_seconds:g} s)",
        ) from None
    if size > limit:
        parts.clear()
        await _discard(rest, deadline)
        raise _too_large(limit)
    return b"".join(parts)


async def discard_body(chunks: AsyncIterable[bytes], timeout_seconds: float) -> None:
    """Read what is left of the body of a request refused before its body was read (503,
    a bad query), keeping none of it, for at most `timeout_seconds`. The answer waits for
    it: a server that closes a connection with unread bytes resets it (TCP RST), and the
    client never sees the answer."""
    await _discard(aiter(chunks), asyncio.get_running_loop().time() + timeout_seconds)


async def _discard(chunks: AsyncIterator[bytes], deadline: float) -> None:
    """Read what is left of a refused body, keeping none of it, until `deadline`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            async for _ in chunks:
                pass


@dataclass(slots=True)
class PredictRequest:
    """One /predict/ request with its body read: what its CPU-bound part needs of it. Plain
    data, so that a host can pickle it to another process (LitServe's inference workers)."""

    media_type: str
    body: bytes
    with_probabilities: bool
    # From the request's start to the whole body: part of the parse stage.
    read_seconds: float


async def read_predict_request(
    chunks: AsyncIterable[bytes],
    headers: Mapping[str, str],
    query: Mapping[str, str],
    settings: Settings,
    started: float,
) -> PredictRequest:
    """The `probabilities` flag (else 400), the body whole within MAX_BODY_BYTES and
    BODY_TIMEOUT_SECONDS (else 413, 408), and its media type; ServiceError, or ClientGone
    from `chunks`. `headers` are looked up by lower-case name (starlette's Headers are
    case-insensitive); `started`: the request's start, on time.perf_counter's clock.

    Refused before its body was read whole (a bad query), the rest of the body is read and
    discarded before the ServiceError, within the same deadline: a server that closes a
    connection with unread bytes resets it (TCP RST), and the client never sees the 4xx.
    """
    deadline = time.perf_counter() + settings.body_timeout_seconds
    try:
        with_probabilities = probabilities_requested(query.get("probabilities"))
        body = await read_body(
            chunks,
            headers.get("content-length"),
            settings.max_body_bytes,
            settings.body_timeout_seconds,
        )
    except ServiceError:
        # A no-op once the body has been read (read_body discards what it refuses).
        await discard_body(chunks, deadline - time.perf_counter())
        raise
    return PredictRequest(
        media_type(headers.get("content-type")),
        body,
        with_probabilities,
        time.perf_counter() - started,
    )


def image_from_json(body: bytes) -> bytes:
    """`{"image": "<base64>"}` to image bytes."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(ErrorType.INVALID_JSON, f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "image" not in document:
        raise ServiceError(
            ErrorType.INVALID_REQUEST, 'expected a JSON object with the field "image"'
        )
    encoded = document["image"]
    if not isinstance(encoded, str):
        raise ServiceError(ErrorType.INVALID_REQUEST, '"image" must be a base64 string')
    return decode_base64(encoded)


def decode_base64(encoded: str) -> bytes:
    """Standard base64, whitespace skipped; the common unwrapped case without a copy."""
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return pybase64.b64decode(encoded.translate(BASE64_WHITESPACE), validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(ErrorType.INVALID_BASE64, '"image" is not valid base64') from None


def image_from_body(kind: str, body: bytes) -> bytes:
    """The image bytes of a /predict/ body of media type `kind`."""
    if kind == JSON_MEDIA_TYPE:
        return image_from_json(body)
    if kind in IMAGE_MEDIA_TYPES:
        return body
    raise ServiceError(
        ErrorType.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {kind or '(none)'} is not application/json, image/jpeg or image/png",
    )


def probabilities_requested(value: str | None) -> bool:
    """The `?probabilities=` query flag."""
    if value is None:
        return False
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ServiceError(
        ErrorType.INVALID_REQUEST, f"query.probabilities: {value!r} is not a boolean"
    )


@contextlib.contextmanager
def counted_request(metrics: Metrics) -> Iterator[float]:
    """Counts one /predict/ request by its final status and times it; yields its start.

    A client that left is a 499, whichever way the host says so: ClientGone, or the
    handler's task cancelled (Ray Serve cancels it when its proxy, or the replica's own
    server, sees the disconnect). Never the 500 of an unexpected exception."""
    started = time.perf_counter()
    status = 500
    try:
        yield started
        status = 200
    except ServiceError as exc:
        status = exc.status
        raise
    except (ClientGone, asyncio.CancelledError):
        status = CLIENT_GONE_STATUS
        raise
    finally:
        metrics.requests.labels(str(status)).inc()
        metrics.latency.observe(time.perf_counter() - started)


class Admission:
    """At most `limit` /predict/ requests pending in this worker, in flight or queued; one
    more is refused at once (503) rather than queued without bound. Each pending request
    may hold a body of up to MAX_BODY_BYTES, so this also bounds the worker's memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending = 0
        # Hosts that call handlers from several threads share one counter safely.
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def enter(self) -> None:
        """One more pending request, or ServiceError `overloaded` (nothing counted)."""
        with self._lock:
            if self._pending >= self.limit:
                raise ServiceError(
                    ErrorType.OVERLOADED,
                    f"{self.limit} requests are already pending in this worker "
                    "(MAX_PENDING_REQUESTS); try again shortly",
                )
            self._pending += 1

    def leave(self) -> None:
        with self._lock:
            self._pending -= 1

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Pending for the duration of the block, or ServiceError `overloaded`."""
        self.enter()
        try:
            yield
        finally:
            self.leave()


class RefusalPacer:
    """Spaces a worker's 503s at most `rate` a second. Refused clients retry as soon as
    they are answered (a closed loop: retrying clients, a busy load balancer), and each
    refusal costs the worker reading the body it discards (about 0.25 ms of CPU for 300 KB):
    unpaced, a few hundred retrying clients keep the core busy refusing, thousands of times
    a second, while the admitted requests starve (docs/overload.md). A refusal waits for its
    turn instead, its body unread (at most the server's 64 KB read buffer of it in memory),
    and costs nothing while it waits; one whose turn is more than MAX_WAIT_SECONDS away is
    answered at once, so the waiting (and their memory) stay bounded. Below `rate` nothing
    waits. One event loop's: not thread-safe."""

    MAX_WAIT_SECONDS = 2.0

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next_turn = 0.0

    def delay(self, now: float) -> float:
        """Seconds the refusal arriving at `now` waits before it is answered (its turn
        taken), or 0: at once."""
        turn = max(now, self._next_turn)
        if not self.interval or turn - now > self.MAX_WAIT_SECONDS:
            return 0.0
        self._next_turn = turn + self.interval
        return turn - now


def answer_prediction(state: ServiceState, request: PredictRequest) -> dict[str, Any]:
    """The CPU-bound part of one /predict/: parse the body, decode, preprocess, infer as a
    batch of one, shape the answer. Blocking: hosts run it off the threads that answer HTTP.
    The parse stage is the request's `read_seconds` (the body arriving) plus the JSON and
    base64 decoding."""
    (scores,) = predict_batch(state, [network_input(state, request)])
    return prediction_document(state.model.labels, scores, request.with_probabilities)


def network_input(state: ServiceState, request: PredictRequest) -> Any:
    """One request's part before inference: parse the body, decode, preprocess (timed as
    the parse, decode and preprocess stages). A batching host runs it per request and then
    `predict_batch` on several."""
    parse, decode, preprocess, _ = STAGES
    stage = state.metrics.stage
    started = time.perf_counter()
    image = image_from_body(request.media_type, request.body)
    parsed = time.perf_counter()
    decoded = state.predictor.decode(image, state.limits)
    decoded_at = time.perf_counter()
    preprocessed = state.predictor.preprocess(decoded)
    stage.labels(parse).observe(request.read_seconds + parsed - started)
    stage.labels(decode).observe(decoded_at - parsed)
    stage.labels(preprocess).observe(time.perf_counter() - decoded_at)
    return preprocessed


def predict_batch(state: ServiceState, inputs: list[Any]) -> np.ndarray:
    """One inference on `network_input`s: [len(inputs), labels]. Its time is the inference
    stage of each request in it; its size is counted in predict_batch_size."""
    started = time.perf_counter()
    scores = state.predictor.predict(inputs)
    seconds = time.perf_counter() - started
    inference = state.metrics.stage.labels(STAGES[-1])
    for _ in inputs:
        inference.observe(seconds)
    state.metrics.batch_size.observe(len(inputs))
    return scores


def prediction_document(
    labels: tuple[str, ...], scores: np.ndarray, with_probabilities: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"prediction": labels[int(np.argmax(scores))]}
    if with_probabilities:
        result["probabilities"] = dict(zip(labels, map(float, scores), strict=True))
    return result


def health_document(state: ServiceState) -> dict[str, str]:
    return {"status": "healthy", "message": f"{state.name} is ready"}


def info_document(state: ServiceState) -> dict[str, Any]:
    settings = state.settings
    return {
        "service": state.name,
        "model_uri": state.model.uri,
        "model_sha256": state.model.sha256,
        "labels": state.model.labels,
        "metadata": state.model.metadata,
        "runtime": state.predictor.describe(),
        "workers": settings.workers,
        "intra_op_threads": settings.intra_op_threads,
        "inter_op_threads": settings.inter_op_threads,
        "max_body_bytes": settings.max_body_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "max_aspect_ratio": settings.max_aspect_ratio,
        "max_pending_requests": settings.max_pending_requests,
        "refusals_per_second": settings.refusals_per_second,
        "body_timeout_seconds": settings.body_timeout_seconds,
        "storage_timeout_seconds": settings.storage_timeout_seconds,
        "startup": {
            "download_seconds": state.model.download_seconds,
            "load_seconds": state.load_seconds,
        },
    }
