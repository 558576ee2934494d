"""The contract's share of the HTTP work in a BentoML worker, around BentoML's own app.

- `ContractFront`, a service middleware (`Service.add_asgi_middleware`), takes every
  `POST /predict/` and `/predict` before BentoML routes it: admission (AdmissionGate: 503
  once MAX_PENDING_REQUESTS are pending in this worker, where BentoML's own
  `traffic.max_concurrency` answers 429 to any route without reading the body), the body
  under MAX_BODY_BYTES and BODY_TIMEOUT_SECONDS (413, 408; BentoML reads any body whole,
  without a limit), the `probabilities` flag, the media type (415), and the count by
  final status, 499 when the client left first. The request then goes on to BentoML's
  `/predict` with its body read (request.py). The Open Inference Protocol's routes
  (`/v2/...`, serving_common's OpenInference) sit behind the same admission, each image of
  an infer request taken as a `/predict/`.
- `ContractRoutes`, mounted at `/` (`bentoml.asgi_app`), answers `GET /` and `/info`, and
  the contract's JSON 404 and 405 for whatever BentoML's router does not take itself
  (BentoML's are plain text). BentoML keeps its probes (`/livez`, `/healthz`, `/readyz`),
  `/schema.json` and `GET /metrics`, which exposes the contract's metrics with its own.
"""

import asyncio
import time
from typing import Any

import orjson
from serving_common.app import AdmissionGate, error_response
from serving_common.asgi import client_left, read_predict_request
from serving_common.errors import ErrorType, ServiceError
from serving_common.open_inference import ModelDescription, OpenInference, is_open_inference
from serving_common.protocol import (
    CLIENT_GONE_STATUS,
    IMAGE_MEDIA_TYPES,
    JSON_MEDIA_TYPE,
    PREDICT_PATHS,
    ClientGone,
    PredictRequest,
    image_from_body,
)
from serving_common.settings import Settings
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bentoml_serving.request import PREDICT_PATH, REQUEST_SCOPE_KEY, QueuedRequest
from bentoml_serving.worker import process_metrics

GET_METHODS = frozenset({"GET", "HEAD"})
ACCEPTED_MEDIA_TYPES = frozenset({JSON_MEDIA_TYPE, *IMAGE_MEDIA_TYPES})
# The contract's routes and the methods each takes: another method is a 405.
CONTRACT_ROUTES = {
    "/": "GET, HEAD",
    "/info": "GET, HEAD",
    "/metrics": "GET, HEAD",
    "/predict/": "POST",
    "/predict": "POST",
}


class ContractFront:
    """Built in each worker process when BentoML's app starts (Starlette builds its
    middleware stack on the first ASGI event)."""

    def __init__(self, app: ASGIApp, settings: Settings, routes: "ContractRoutes") -> None:
        self.app = app
        self.settings = settings
        self.routes = routes
        self.metrics = process_metrics()
        self.gate = AdmissionGate(self.admitted, settings=settings, metrics=self.metrics)
        self.open_inference: OpenInference | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope.get("path", ""), scope.get("method")
        ours = (method == "POST" and path in PREDICT_PATHS) or is_open_inference(path)
        if scope["type"] != "http" or not ours:
            await self.app(scope, receive, send)
            return
        answered = False

        async def send_answer(message: Message) -> None:
            nonlocal answered
            answered = True
            await send(message)

        await self.gate(scope, receive, send_answer)
        if not answered:
            # The client left before any answer (counted 499). NOTE: answered all the same,
            # and uvicorn drops it: BentoML's TimeoutMiddleware, outside this one, keeps a
            # request that never answers alive until traffic.timeout (and with it, a drain).
            await send({"type": "http.response.start", "status": CLIENT_GONE_STATUS})
            await send({"type": "http.response.body", "body": b""})

    async def admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Past admission: a prediction, or the Open Inference Protocol's routes, whose
        infer sends each image to `predict`; those wait for the worker's model, as `GET /`
        does (404 until then)."""
        if not is_open_inference(scope["path"]):
            await self.predict(scope, receive, send)
            return
        if self.open_inference is None and self.routes.info is not None:
            model = ModelDescription.from_info(self.routes.info)
            self.open_inference = OpenInference(self.predict, model, self.settings)
        await (self.open_inference or self.app)(scope, receive, send)

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One admitted prediction: its body, then BentoML; counted by the status it was
        answered with."""
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception escaped
        try:
            try:
                request = await self.read_request(scope, receive, started)
            except ServiceError as refusal:
                status = refusal.status
                await error_response(refusal)(scope, receive, send)
                return
            status = await self.answer(scope, QueuedRequest(request), receive, send)
        except ClientGone:
            status = CLIENT_GONE_STATUS  # nobody reads an answer now (see __call__)
        finally:
            self.metrics.requests.labels(str(status)).inc()
            self.metrics.latency.observe(time.perf_counter() - started)

    async def read_request(self, scope: Scope, receive: Receive, started: float) -> PredictRequest:
        """The request read under the contract's limits (protocol.read_predict_request),
        its media type checked; ServiceError (the contract's 4xx) or ClientGone."""
        request = await read_predict_request(scope, receive, self.settings, started)
        if request.media_type not in ACCEPTED_MEDIA_TYPES:
            # The contract's 415, as the API method would answer it. NOTE: BentoML itself
            # refuses its pickle media type before the method, in a shape of its own.
            image_from_body(request.media_type, request.body)
        return request

    async def answer(
        self, scope: Scope, queued: QueuedRequest, receive: Receive, send: Send
    ) -> int:
        """BentoML's answer to a request whose body is read; the status it got, 499 if the
        client left first (its work then dropped if not yet started: inference.py)."""
        status = 500
        gone = asyncio.Event()

        def left(watched: "asyncio.Future[None]") -> None:
            if not watched.cancelled():
                queued.gone = True
                gone.set()

        # The body is whole and nobody else reads `receive` now: watch for the client leaving.
        watcher = asyncio.ensure_future(client_left(receive))
        watcher.add_done_callback(left)

        async def until_gone() -> Message:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send_answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = CLIENT_GONE_STATUS if queued.gone else message["status"]
            await send(message)

        inner = {**scope, "path": PREDICT_PATH, REQUEST_SCOPE_KEY: queued}
        try:
            await self.app(inner, until_gone, send_answer)
        finally:
            watcher.cancel()
        return status


class ContractRoutes:
    """Plain ASGI, mounted at `/` after BentoML's own routes: it gets every request they
    do not match fully, so also a known route with another method (Starlette's partial
    match)."""

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.info: dict[str, Any] | None = None

    def publish(self, health: dict[str, Any], info: dict[str, Any]) -> None:
        """The documents of `GET /` and `/info`, once this worker's model is loaded."""
        self.documents = {"/": orjson.dumps(health), "/info": orjson.dumps(info)}
        self.info = info

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        response: Response
        if path in self.documents and method in GET_METHODS:
            response = Response(self.documents[path], media_type="application/json")
        elif path in CONTRACT_ROUTES:
            refusal = ServiceError(ErrorType.METHOD_NOT_ALLOWED, "Method Not Allowed")
            response = error_response(refusal)
            response.headers["Allow"] = CONTRACT_ROUTES[path]
        else:
            response = error_response(ServiceError(ErrorType.NOT_FOUND, "Not Found"))
        await response(scope, receive, send)
