"""The contract's HTTP app, one per replica: what the ingress deployment returns from
`__serve_build_asgi_app__` (app.py).

Every route of contract/README.md is answered here, in the replica, whichever ingress is
in front (HAProxy connecting straight to the replica's own HTTP server, or Ray's Python
proxy relaying ASGI messages through actor calls). Ray's ingress answers only its
reserved `/-/healthz` and `/-/routes` itself, in plain text.

The event loop only does HTTP; parsing, decoding and inference run on the replica's
inference thread (app.py's InferenceThread, serving_common's rule), so a busy replica
still answers `GET /` at once.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from serving_common.app import AdmissionGate, body_chunks, json_response
from serving_common.errors import ServiceError
from serving_common.metrics import Metrics
from serving_common.protocol import (
    CLIENT_GONE_STATUS,
    ClientGone,
    discard_body,
    health_document,
    media_type,
    prediction_document,
    probabilities_requested,
    read_body,
)
from serving_common.startup import ServiceState
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

# One request's network input -> its scores (one row), batched or not (app.py).
Score = Callable[[Any], Awaitable[np.ndarray]]
# One request's CPU-bound part before inference, run off the event loop (app.py).
Prepare = Callable[[str, bytes, float], Awaitable[Any]]


@contextlib.contextmanager
def counted_request(metrics: Metrics) -> Iterator[float]:
    """serving_common's protocol.counted_request, with Ray's way of saying the client left:
    Serve cancels the request's task (its proxy, or the replica's own server, saw the
    disconnect), which is a 499 here, never the 500 an unexpected exception is."""
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


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal as the contract's JSON body (serving_common/app.py's handlers)."""

    async def service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        response = json_response(exc.body(), exc.status)
        response.headers.update(exc.headers)
        return response

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "internal")
        return json_response({"error": str(exc.detail), "error_type": error_type}, exc.status_code)

    async def unexpected_error(_: Request, exc: Exception) -> Response:
        log.exception("internal error", exc_info=exc)
        return json_response({"error": "internal error", "error_type": "internal"}, 500)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def create_routes(
    state: ServiceState, info: dict[str, Any], prepare: Prepare, score: Score, admission: bool
) -> FastAPI:
    """The contract's routes for one replica: `prepare` turns a body into the network's
    input (off the event loop), `score` runs it through the model (alone or in a batch);
    `admission`: whether MAX_PENDING_REQUESTS is enforced here (or in front.py)."""
    settings, metrics = state.settings, state.metrics
    app = FastAPI(title=state.name, docs_url=None, redoc_url=None, openapi_url=None)
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
        chunks = body_chunks(request.receive)
        body_deadline = time.monotonic() + settings.body_timeout_seconds
        try:
            with counted_request(metrics) as started:
                try:
                    flag = probabilities_requested(request.query_params.get("probabilities"))
                    body = await read_body(
                        chunks,
                        request.headers.get("content-length"),
                        settings.max_body_bytes,
                        settings.body_timeout_seconds,
                    )
                except ServiceError:
                    # Refused before the body was read (a bad query)? Read the rest first,
                    # or the connection is reset; a no-op once it has been read.
                    await discard_body(chunks, body_deadline - time.monotonic())
                    raise
                kind = media_type(request.headers.get("content-type"))
                network_input = await prepare(kind, body, time.perf_counter() - started)
                scores = await score(network_input)
                document = prediction_document(state.model.labels, scores, flag)
        except ClientGone:
            # Nobody reads this answer. Counted as 499 already.
            return Response(status_code=CLIENT_GONE_STATUS)
        return json_response(document)

    return app
