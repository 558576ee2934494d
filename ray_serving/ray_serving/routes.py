"""The contract's HTTP app, one per replica: what the ingress deployment returns from
`__serve_build_asgi_app__` (app.py).

Every route of contract/README.md is answered here, in the replica, whichever ingress is
in front (HAProxy connecting straight to the replica's own HTTP server, or Ray's Python
proxy relaying ASGI messages through actor calls), the Open Inference Protocol's `/v2/...`
too (with HAProxy, front.py answers them first, in front of Serve). Ray's ingress answers
only its reserved `/-/healthz` and `/-/routes` itself, in plain text.

The event loop only does HTTP; parsing, decoding and inference run on the replica's
inference thread (app.py's InferenceThread, serving_common's rule), so a busy replica
still answers `GET /` at once.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from serving_common.app import AdmissionGate, install_error_handlers, json_response
from serving_common.asgi import body_chunks
from serving_common.open_inference import ModelDescription, OpenInference
from serving_common.protocol import (
    CLIENT_GONE_STATUS,
    ClientGone,
    PredictRequest,
    counted_request,
    health_document,
    prediction_document,
    read_predict_request,
)
from serving_common.startup import ServiceState
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The response header naming the replica and its node (ServedBy).
SERVED_BY_HEADER = "x-served-by"
# One request's network input -> its scores (one row), batched or not (app.py).
Score = Callable[[Any], Awaitable[np.ndarray]]
# One request's CPU-bound part before inference, run off the event loop (app.py).
Prepare = Callable[[PredictRequest], Awaitable[Any]]


class InFlight:
    """Plain ASGI around the app: counts the HTTP requests being answered (the launcher
    waits for none before it stops Ray on SIGTERM)."""

    def __init__(self, app: ASGIApp, in_flight: Any) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.dec()


class ServedBy:
    """Plain ASGI around the app: every response it sends names the replica and the node
    that answered (`X-Served-By: <replica id>@<host>`), so that a client of a cluster
    sees where its requests went. (`GET /` and admission's 503s, answered in front of
    Serve with HAProxy (front.py), do not pass here.)"""

    def __init__(self, app: ASGIApp, served_by: str) -> None:
        self.app = app
        self.header = (SERVED_BY_HEADER.encode(), served_by.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


def create_routes(
    state: ServiceState, info: dict[str, Any], prepare: Prepare, score: Score, admission: bool
) -> FastAPI:
    """The contract's routes for one replica: `prepare` turns a request into the network's
    input (off the event loop), `score` runs it through the model (alone or in a batch);
    `admission`: whether MAX_PENDING_REQUESTS is enforced here (or in front.py)."""
    settings, metrics = state.settings, state.metrics
    app = FastAPI(title=state.name, docs_url=None, redoc_url=None, openapi_url=None)
    # Outermost last: admission, then the Open Inference Protocol's routes. Those are here
    # whatever the ingress: with HAProxy, front.py answers them in front of Serve, but
    # HAProxy sends requests to Serve's Python proxy until it has seen a replica up.
    model = ModelDescription.from_info(info)
    app.add_middleware(OpenInference, model=model, settings=settings)
    if admission:
        app.add_middleware(AdmissionGate, settings=settings, metrics=metrics)
    install_error_handlers(app)
    health = health_document(state)

    # GET routes answer HEAD too (FastAPI's, unlike Starlette's, do not by themselves).
    @app.api_route("/", methods=["GET", "HEAD"])
    async def answer_health() -> Response:
        return json_response(health)

    @app.api_route("/info", methods=["GET", "HEAD"])
    async def answer_info() -> Response:
        return json_response(info)

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def answer_metrics() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.post("/predict/")
    @app.post("/predict", include_in_schema=False)
    async def predict(request: Request) -> Response:
        try:
            # Serve cancels this task when the client leaves: counted 499 too.
            with counted_request(metrics) as started:
                predict_request = await read_predict_request(
                    body_chunks(request.receive),
                    request.headers,
                    request.query_params,
                    settings,
                    started,
                )
                network_input = await prepare(predict_request)
                scores = await score(network_input)
                document = prediction_document(
                    state.model.labels, scores, predict_request.with_probabilities
                )
        except ClientGone:
            # Nobody reads this answer. Counted as 499 already.
            return Response(status_code=CLIENT_GONE_STATUS)
        return json_response(document)

    return app
