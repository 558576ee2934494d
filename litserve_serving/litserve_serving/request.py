"""The HTTP half of a /predict/ request, in a LitServe API server process.

LitServe reads `request.json()` unless `decode_request` declares another request type;
declared as `Annotated[PredictRequest, Depends(read_predict_request)]`, FastAPI runs the
dependency below instead, and LitServe queues its result for an inference worker as is. So
the body is read here, within the contract's limits and deadline (413, 408), and crosses to
the worker as bytes with three small fields: no parsing or decoding in the HTTP process.
"""

import time
from dataclasses import dataclass

from fastapi import Request
from serving_common.app import body_chunks
from serving_common.errors import ServiceError
from serving_common.protocol import discard_body, media_type, probabilities_requested, read_body
from serving_common.settings import Settings

# The one route LitServe serves predictions on; the front (front.py) sends /predict/ here.
PREDICT_PATH = "/predict"


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """What an inference worker needs of one request; pickled through LitServe's queue."""

    media_type: str
    body: bytes
    with_probabilities: bool
    # From the handler's start to the whole body: part of the parse stage, as in app.py.
    read_seconds: float


async def read_predict_request(request: Request) -> PredictRequest:
    """The body, whole and within MAX_BODY_BYTES and BODY_TIMEOUT_SECONDS, with what the
    headers and query say about it; ServiceError (the contract's 4xx) or ClientGone."""
    settings: Settings = request.app.state.settings
    started = time.perf_counter()
    deadline = time.monotonic() + settings.body_timeout_seconds
    chunks = body_chunks(request.receive)
    try:
        with_probabilities = probabilities_requested(request.query_params.get("probabilities"))
        body = await read_body(
            chunks,
            request.headers.get("content-length"),
            settings.max_body_bytes,
            settings.body_timeout_seconds,
        )
    except ServiceError:
        # Refused before the body was read (a bad query)? Read the rest first, or the
        # connection is reset; a no-op once it has been read.
        await discard_body(chunks, deadline - time.monotonic())
        raise
    return PredictRequest(
        media_type(request.headers.get("content-type")),
        body,
        with_probabilities,
        time.perf_counter() - started,
    )
