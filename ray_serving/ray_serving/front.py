"""What a replica answers before Serve's own request handling, when HAProxy connects to it
directly: `GET /` and admission control.

Serve wraps every request a replica's HTTP server takes in its own bookkeeping (request
metadata, a task watching for the client leaving, an ongoing-request slot, metrics)
before the application sees it: about a millisecond of Python per request here, spent
also on requests that only get a 503. Under a flood that queues `GET /` behind the
refusals. Serve puts the middlewares its proxy callback returns
(RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, set by the launcher) in front of each
direct-ingress replica's server, outside that bookkeeping: there, `GET /` is answered and
the excess refused (AdmissionGate, MAX_PENDING_REQUESTS per replica) at once, and the Open
Inference Protocol's routes (`/v2/...`, serving_common's OpenInference) answered behind it,
each image of an infer request sent on through Serve to the replica's `/predict/`.

The same callback runs in Serve's Python proxy actors, which host no replica: it adds
nothing there, and with Ray's proxy as the ingress each replica's app keeps the admission
itself (routes.py).
"""

import os

import orjson
from serving_common.app import AdmissionGate
from serving_common.open_inference import ModelDescription, OpenInference
from serving_common.protocol import health_document, info_document
from serving_common.startup import ServiceState
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ray_serving.ingress import PROXY_CALLBACK, PROXY_CALLBACK_ENV, uses_haproxy

GET_METHODS = frozenset({"GET", "HEAD"})
JSON_HEADERS = [(b"content-type", b"application/json")]


class _Replica:
    """The state of the replica this process hosts (app.Predictor registers it); a Ray
    worker hosts one replica at most."""

    state: ServiceState | None = None


def register(state: ServiceState) -> None:
    _Replica.state = state


def front_admits() -> bool:
    """Whether admission runs here rather than in the replica's app: with HAProxy (direct
    ingress) and this module as Serve's proxy callback."""
    return uses_haproxy() and os.environ.get(PROXY_CALLBACK_ENV) == PROXY_CALLBACK


class ReplicaFront:
    """Plain ASGI in front of Serve's handling of a direct-ingress request."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        body = orjson.dumps(health_document(state))
        self.health_headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        self.health = body
        model = ModelDescription.from_info(info_document(state))
        open_inference = OpenInference(app, model, state.settings)
        self.gate = AdmissionGate(open_inference, settings=state.settings, metrics=state.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in GET_METHODS:
            await send(
                {"type": "http.response.start", "status": 200, "headers": self.health_headers}
            )
            await send({"type": "http.response.body", "body": self.health})
            return
        await self.gate(scope, receive, send)


def replica_front() -> list[Middleware]:
    """Serve's proxy callback: the front in a replica process, nothing elsewhere."""
    state = _Replica.state
    if state is None or not front_admits():
        return []
    return [Middleware(ReplicaFront, state=state)]
