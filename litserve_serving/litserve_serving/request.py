"""The HTTP half of a /predict/ request, in a LitServe API server process.

LitServe reads `request.json()` unless `decode_request` declares another request type;
declared as `Annotated[PredictRequest, Depends(read_predict_request)]`, FastAPI runs the
dependency below instead, and LitServe queues its result for an inference worker as is. So
the body is read here, within the contract's limits and deadline (413, 408), and crosses to
the worker as bytes with three small fields (protocol.PredictRequest): no parsing or
decoding in the HTTP process.
"""

import time

from fastapi import Request
from serving_common.asgi import body_chunks

from serving_common import protocol

# The one route LitServe serves predictions on; the front (front.py) sends /predict/ here.
PREDICT_PATH = "/predict"


async def read_predict_request(request: Request) -> protocol.PredictRequest:
    """protocol.read_predict_request as a FastAPI dependency: ServiceError (the contract's
    4xx) or ClientGone; the request's start is the handler's."""
    return await protocol.read_predict_request(
        body_chunks(request.receive),
        request.headers,
        request.query_params,
        request.app.state.settings,
        time.perf_counter(),
    )
