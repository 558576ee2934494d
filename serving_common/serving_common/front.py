"""The contract's share of each request in front of a framework's own ASGI app (plain ASGI,
built in each of the framework's HTTP processes): what LitServe and KServe cannot be told.

The front answers the contract's `GET /`, `/info` and `/metrics` (and HEAD) itself, from
documents the main process settled before the framework started. A prediction, `POST
/predict/` or each image of an Open Inference Protocol infer request (serving_common's
OpenInference, `/v2/...`), is admitted first (AdmissionGate: 503 instead of the framework's
unbounded queue), then handed to the framework by the host's `forward`, and counted by the
status it was answered with, 499 when its client left first. Everything else goes to the
host's `other` (the framework's app, or a refusal).
"""

import asyncio
import time
from typing import Any

import orjson
from fastapi import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving_common.app import AdmissionGate, error_response
from serving_common.asgi import client_left
from serving_common.errors import ErrorType, ServiceError
from serving_common.metrics import Metrics
from serving_common.open_inference import ModelDescription, OpenInference, is_open_inference
from serving_common.protocol import CLIENT_GONE_STATUS, PREDICT_PATHS
from serving_common.settings import Settings

GET_METHODS = frozenset({"GET", "HEAD"})


def method_not_allowed(allow: str) -> Response:
    response = error_response(ServiceError(ErrorType.METHOD_NOT_ALLOWED, "Method Not Allowed"))
    response.headers["Allow"] = allow
    return response


class ContractFront:
    """`forward` takes each admitted prediction with its path set to `predict_path`; `other`
    every request the contract does not own (and `/predict/` with another method than
    POST)."""

    def __init__(
        self,
        forward: ASGIApp,
        other: ASGIApp,
        predict_path: str,
        health: dict[str, Any],
        info: dict[str, Any],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.forward = forward
        self.other = other
        self.predict_path = predict_path
        self.metrics = metrics
        self.documents = {"/": orjson.dumps(health), "/info": orjson.dumps(info)}
        model = ModelDescription.from_info(info)
        open_inference = OpenInference(self.counted, model, settings, predict_path=predict_path)
        self.gate = AdmissionGate(open_inference, settings=settings, metrics=metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.other(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path in PREDICT_PATHS:
            # One path for both spellings: a framework would redirect the other (307).
            scope = {**scope, "path": self.predict_path}
            await (self.gate if method == "POST" else self.other)(scope, receive, send)
        elif is_open_inference(path):
            await self.gate(scope, receive, send)
        elif path in self.documents or path == "/metrics":
            await self.document(path, method)(scope, receive, send)
        else:
            await self.other(scope, receive, send)

    def document(self, path: str, method: str) -> Response:
        if method not in GET_METHODS:
            return method_not_allowed("GET, HEAD")
        if path == "/metrics":
            return Response(self.metrics.exposition(), media_type=self.metrics.content_type)
        return Response(self.documents[path], media_type="application/json")

    async def counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One admitted prediction through the framework, counted by the status it was
        answered with; 499 if its client disconnected first. NOTE: the work itself is not
        always dropped then: LitServe cannot withdraw a request from its queue or a worker."""
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
            await self.forward(scope, receive_body, send_answer)
        finally:
            if watcher is not None:
                watcher.cancel()
            self.metrics.requests.labels(str(status)).inc()
            self.metrics.latency.observe(time.perf_counter() - started)
