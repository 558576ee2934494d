"""The FastAPI host of the HTTP contract: routes wired to `protocol.py`.

A strategy only supplies a Predictor; everything a client sees (routes, errors, limits,
admission, metrics) comes from `protocol.py` and the error table.

The event loop only does HTTP: reading bodies, answering health, info and metrics. The
CPU-bound part of a prediction (JSON, base64, decoding, inference) runs on one inference
thread per worker process, so a saturated worker still answers `GET /` at once. One thread,
not more: a worker's inference already uses the INTRA_OP_THREADS it is given, and the
runtimes and decoders release the GIL while they work.
"""

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serving_common import protocol
from serving_common.asgi import body_chunks, client_left
from serving_common.errors import ErrorType, ServiceError
from serving_common.metrics import Metrics
from serving_common.open_inference import ModelDescription, OpenInference
from serving_common.settings import Settings
from serving_common.startup import ServiceState

log = logging.getLogger(__name__)
T = TypeVar("T")


def json_response(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def error_response(refusal: ServiceError) -> Response:
    """A refusal as the contract's JSON body, with its headers (e.g. Retry-After)."""
    response = json_response(refusal.body(), refusal.status)
    response.headers.update(refusal.headers)
    return response


# The inference thread's niceness (Linux schedules threads by it). When both threads want
# the same core, HTTP goes first: health, bodies, and 503s for the excess are answered at
# once even under a flood, and inference has the core whenever HTTP is idle. Measured with
# ab -c 200 on one core: GET / median 300 -> 9 ms; fewer 200s per second during the flood.
INFERENCE_NICENESS = 5


def _yield_to_http() -> None:
    """Runs on the inference thread as it starts: lower its priority (never refused).

    Linux only, where a thread's native id is a valid PRIO_PROCESS target with a niceness
    of its own. NOTE: elsewhere (macOS) setpriority takes a process id, which a thread id is
    not: the call would fail, or renice whatever process had that number.
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INFERENCE_NICENESS)


class InferenceThread:
    """The one thread a worker runs predictions on, in arrival order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="inference", initializer=_yield_to_http
        )

    async def run(self, receive: Receive, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on the inference thread. If the client leaves first, work not yet
        started is dropped, and ClientGone is raised either way."""
        result = asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        watcher = asyncio.ensure_future(client_left(receive))
        try:
            await asyncio.wait((result, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not result.done():
            result.cancel()
            raise protocol.ClientGone
        return result.result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def kept_open(scope: Scope) -> bool:
    """Whether the server keeps the connection open after the answer (HTTP/1.1 without
    `Connection: close`): uvicorn then reads on, dropping whatever is left of a body the
    application did not read, and takes the next request after it."""
    return scope.get("http_version") == "1.1" and not any(
        name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
    )


class AdmissionGate:
    """Admission control in front of the framework (plain ASGI): a prediction (`/predict/`,
    or the Open Inference Protocol's infer) is pending from its headers until its answer is
    sent; one over MAX_PENDING_REQUESTS is answered 503 before FastAPI routes it, so a
    refusal costs no routing or handler.

    Any ASGI host can put it in front of its app: it needs the settings and the metrics, not
    the predictor (a framework's HTTP process may have none)."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.admission = protocol.Admission(settings.max_pending_requests)
        self.pacer = protocol.RefusalPacer(settings.refusals_per_second)
        self.metrics = metrics
        self.body_timeout_seconds = settings.body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not protocol.is_prediction(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            self.admission.enter()
        except ServiceError as refusal:
            await self.refuse(refusal, scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()

    async def refuse(
        self, refusal: ServiceError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The 503, once the client can see it. A client that sent `Expect: 100-continue`
        waits for our word before it sends its body: it is refused at once, nothing read,
        and the connection closed (RFC 9110, 10.1.1). Any other waits its turn under a flood
        (RefusalPacer). Then, on a connection the server keeps open after the answer, it is
        answered with its body unread: the server's HTTP parser drops the rest as it arrives,
        without handing it to the application. On one the server closes (HTTP/1.0, as ab
        sends, or `Connection: close`) its body is read and discarded first: a connection
        closed with unread bytes is reset, and the client would never see the answer."""
        expects_continue = any(
            name == b"expect" and value.lower() == b"100-continue"
            for name, value in scope["headers"]
        )
        try:
            with protocol.counted_request(self.metrics):
                if not expects_continue:
                    await asyncio.sleep(self.pacer.delay(asyncio.get_running_loop().time()))
                    if not kept_open(scope):
                        await protocol.discard_body(body_chunks(receive), self.body_timeout_seconds)
                raise refusal
        except ServiceError:
            pass
        except protocol.ClientGone:
            return
        headers = {**refusal.headers, **({"Connection": "close"} if expects_continue else {})}
        body = orjson.dumps(refusal.body())
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *((name.lower().encode(), value.encode()) for name, value in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """The error table on a FastAPI app, whichever framework built it: a ServiceError as
    its JSON body and headers, ClientGone as an empty 499, routing's and the framework's
    HTTPExceptions as the contract's JSON, anything else logged and a 500."""

    async def service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc)

    async def client_gone(_: Request, __: Exception) -> Response:
        # Nobody reads this answer; uvicorn drops it. Its host counts it as 499
        # (counted_request, or serving_common.front.ContractFront).
        return Response(status_code=protocol.CLIENT_GONE_STATUS)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # 404, 405 from routing; 500 is LitServe's answer for an exception in a worker.
        error_type = {404: ErrorType.NOT_FOUND, 405: ErrorType.METHOD_NOT_ALLOWED}.get(
            exc.status_code, ErrorType.INTERNAL
        )
        body = ServiceError(error_type, str(exc.detail)).body()
        return json_response(body, exc.status_code)

    async def unexpected_error(_: Request, exc: Exception) -> Response:
        log.exception("internal error", exc_info=exc)
        return error_response(ServiceError(ErrorType.INTERNAL, "internal error"))

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(protocol.ClientGone, client_gone)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def create_app(state: ServiceState) -> FastAPI:
    inference = InferenceThread()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Every accepted request has been answered by now (uvicorn drains them first).
        inference.shutdown()

    app = FastAPI(
        title=state.name, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.service = state
    settings, metrics = state.settings, state.metrics
    # Outermost last: admission, then the Open Inference Protocol's routes, then FastAPI's.
    model = ModelDescription.from_info(protocol.info_document(state))
    app.add_middleware(OpenInference, model=model, settings=settings)
    app.add_middleware(AdmissionGate, settings=settings, metrics=metrics)

    install_error_handlers(app)

    # GET routes answer HEAD too (FastAPI's, unlike Starlette's, do not by themselves).
    @app.api_route("/", methods=["GET", "HEAD"])
    async def health() -> Response:
        return json_response(protocol.health_document(state))

    @app.api_route("/info", methods=["GET", "HEAD"])
    async def info() -> Response:
        return json_response(protocol.info_document(state))

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.post("/predict/")
    @app.post("/predict", include_in_schema=False)
    async def predict(request: Request) -> Response:
        try:
            with protocol.counted_request(metrics) as started:
                predict_request = await protocol.read_predict_request(
                    body_chunks(request.receive),
                    request.headers,
                    request.query_params,
                    settings,
                    started,
                )
                document = await inference.run(
                    request.receive, protocol.answer_prediction, state, predict_request
                )
                return json_response(document)
        except protocol.ClientGone:
            # Nobody reads this answer; uvicorn drops it. Counted as 499 already.
            return Response(status_code=protocol.CLIENT_GONE_STATUS)

    return app
