"""The HTTP contract of contract/README.md, without a web framework.

Body limits, JSON/base64 parsing, the `probabilities` flag, prediction with stage metrics,
and the response documents. A host framework (FastAPI in `app.py`; BentoML, Ray Serve or
LitServe elsewhere) wires these to its own routes, so every host answers alike and the
only difference measured is the framework.
"""

import binascii
import time
from collections.abc import AsyncIterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import pybase64

from serving_common.errors import ServiceError
from serving_common.metrics import Metrics
from serving_common.startup import ServiceState

JSON_MEDIA_TYPE = "application/json"
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png")
# ASCII whitespace, which base64 decoding skips: RFC 2045 wraps lines every 76 characters
# (GNU `base64`, Python's `base64.encodebytes`). Anything else outside the alphabet is a 400.
BASE64_WHITESPACE = str.maketrans("", "", " \t\n\r\v\f")
# The words pydantic reads as booleans, which the Rust service accepts too.
TRUE_WORDS = frozenset({"true", "1", "yes", "on", "t", "y"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", "f", "n"})


def media_type(content_type: str | None) -> str:
    """`image/jpeg` from `Image/JPEG; charset=x`; empty when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _too_large(limit: int) -> ServiceError:
    return ServiceError("body_too_large", f"the body exceeds MAX_BODY_BYTES ({limit} bytes)")


async def read_body(chunks: AsyncIterable[bytes], content_length: str | None, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes: from
    Content-Length before reading anything, else while streaming (chunked bodies)."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def image_from_json(body: bytes) -> bytes:
    """`{"image": "<base64>"}` to image bytes."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "image" not in document:
        raise ServiceError("invalid_request", 'expected a JSON object with the field "image"')
    encoded = document["image"]
    if not isinstance(encoded, str):
        raise ServiceError("invalid_request", '"image" must be a base64 string')
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
        raise ServiceError("invalid_base64", '"image" is not valid base64') from None


def image_from_body(kind: str, body: bytes) -> bytes:
    """The image bytes of a /predict/ body of media type `kind`."""
    if kind == JSON_MEDIA_TYPE:
        return image_from_json(body)
    if kind in IMAGE_MEDIA_TYPES:
        return body
    raise ServiceError(
        "unsupported_media_type",
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
    raise ServiceError("invalid_request", f"query.probabilities: {value!r} is not a boolean")


@contextmanager
def counted_request(metrics: Metrics) -> Iterator[float]:
    """Counts one /predict/ request by its final status and times it; yields its start."""
    started = time.perf_counter()
    status = 500
    try:
        yield started
        status = 200
    except ServiceError as exc:
        status = exc.status
        raise
    finally:
        metrics.requests.labels(str(status)).inc()
        metrics.latency.observe(time.perf_counter() - started)


def predict_image(
    state: ServiceState, image: bytes, with_probabilities: bool, started: float
) -> dict[str, Any]:
    """Decode, infer as a batch of one, and shape the response; the parse stage is the time
    since `started`."""
    parsed = time.perf_counter()
    decoded = state.predictor.decode(image, state.settings.max_image_pixels)
    decoded_at = time.perf_counter()
    (scores,) = state.predictor.predict([decoded])
    done = time.perf_counter()
    stage = state.metrics.stage
    stage.labels("parse").observe(parsed - started)
    stage.labels("decode").observe(decoded_at - parsed)
    stage.labels("inference").observe(done - decoded_at)
    return prediction_document(state.model.labels, scores, with_probabilities)


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
        "startup": {
            "download_seconds": state.model.download_seconds,
            "load_seconds": state.load_seconds,
        },
    }
