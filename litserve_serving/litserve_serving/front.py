"""The contract's share of each request in a LitServe API server process, in front of
LitServe's FastAPI app (LitServer's `middlewares`; server.py adds serving_common's error
handlers to the app itself).

LitServe owns `POST /predict` (its queue to the inference workers) and fixes `GET /` to a
plain-text "litserve running" with no option to move it; its health and info routes move
by option only. So this plain ASGI front answers the contract's `GET /`, `/info` and
`/metrics` (and HEAD) itself, sends `/predict/` to LitServe's `/predict`, bounds pending
predictions per API server (AdmissionGate: 503 instead of LitServe's unbounded queue), and
counts each prediction by the status it got, 499 when its client left first. The Open
Inference Protocol's routes (`/v2/...`, serving_common's OpenInference) sit behind the same
admission, and send each image of an infer request through LitServe's `/predict` too.
"""

import asyncio
import time
from typing import Any

import orjson
from fastapi import Response
from serving_common.app import AdmissionGate, error_response
from serving_common.asgi import client_left
from serving_common.errors import ErrorType, ServiceError
from serving_common.metrics import Metrics
from serving_common.open_inference import ModelDescription, OpenInference, is_open_inference
from serving_common.protocol import CLIENT_GONE_STATUS, PREDICT_PATHS
from serving_common.settings import Settings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from litserve_serving.request import PREDICT_PATH

GET_METHODS = frozenset({"GET", "HEAD"})


class ContractFront:
    """Plain ASGI, built in each API server process (Starlette builds its middleware stack
    on the first event, after LitServe forked the process)."""

    def __init__(
        self,
        app: ASGIApp,
        health: dict[str, Any],
        info: dict[str, Any],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.metrics = metrics
        # Settled by the main process before LitServe forked this one.
        self.documents = {"/": orjson.dumps(health), "/info": orjson.dumps(info)}
        # The Open Inference Protocol's infer sends each image to LitServe's /predict.
        model = ModelDescription.from_info(info)
        open_inference = OpenInference(self.counted, model, settings, predict_path=PREDICT_PATH)
        self.gate = AdmissionGate(open_inference, settings=settings, metrics=metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path in PREDICT_PATHS:
            # LitServe serves one path per LitAPI; Starlette would redirect the other (307).
            scope = {**scope, "path": PREDICT_PATH}
            await (self.gate if method == "POST" else self.app)(scope, receive, send)
        elif is_open_inference(path):
            await self.gate(scope, receive, send)
        elif path in self.documents or path == "/metrics":
            await self.document(path, method)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def document(self, path: str, method: str) -> Response:
        if method not in GET_METHODS:
            refusal = ServiceError(ErrorType.METHOD_NOT_ALLOWED, "Method Not Allowed")
            response = error_response(refusal)
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == "/metrics":
            return Response(self.metrics.exposition(), media_type=self.metrics.content_type)
        return Response(self.documents[path], media_type="application/json")

    async def counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One admitted prediction through LitServe, counted by the status it was answered
        with; 499 if its client disconnected first. NOTE: the work itself is not dropped
        then: LitServe cannot withdraw a request from its queue or a worker."""
        started = time.perf_counter()
        status = 500  # unless an answer starts: an exception escaped
        gone = asyncio.Event()
        watcher: asyncio.Future[None] | None = None

        def left(watched: asyncio.Future[None]) -> None:
            if not watched.cancelled():
                gone.set()

        async def receive_body() -> Message:
            nonlocal watcher
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                # The body is whole and nobody reads any more: watch for the client leaving.
                watcher = asyncio.ensure_future(client_left(receive))
                watcher.add_done_callback(left)
            return message

        async def send_answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                if watcher is not None:
                    watcher.cancel()
                status = CLIENT_GONE_STATUS if gone.is_set() else message["status"]
            await send(message)

        try:
            await self.app(scope, receive_body, send_answer)
        finally:
            if watcher is not None:
                watcher.cancel()
            self.metrics.requests.labels(str(status)).inc()
            self.metrics.latency.observe(time.perf_counter() - started)
