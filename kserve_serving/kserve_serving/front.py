"""The contract's share of each request in a KServe ModelServer process, in front of
KServe's FastAPI app (serving_common's ContractFront).

KServe's app serves its liveness on `GET /`, its own `/metrics`, and its v1 and v2
protocols with its own errors; its routes read a request's whole body with no limit or
deadline, and it admits every request. So the front answers the contract's documents, and
sends each admitted prediction (`/predict/`, or one image of an Open Inference Protocol
infer request) to KServe's v1 predict route once the body has been read within the
contract's limits (`forward`). KServe's own routes are not served: they would take an
unbounded body past admission.

KServe's v1 route parses a JSON body itself, with its own 400 for bad JSON; so the body goes
to it under a media type it does not parse (OPAQUE_MEDIA_TYPE) and reaches the model as it
is, which parses it as every strategy does, with the contract's errors (model.py). What the
front settled of the request (its media type, the `probabilities` flag, how long its body
took, its client's receive channel) travels with the request's task: `PENDING`.
"""

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass

from serving_common.app import error_response
from serving_common.asgi import read_predict_request
from serving_common.errors import ErrorType, ServiceError
from serving_common.front import method_not_allowed
from serving_common.protocol import (
    CLIENT_GONE_STATUS,
    ClientGone,
    PredictRequest,
)
from serving_common.settings import Settings
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# A media type KServe hands to the model as bytes: it parses JSON itself, and
# application/octet-stream as JSON too.
OPAQUE_MEDIA_TYPE = b"application/x-predict-body"


@dataclass(frozen=True)
class Pending:
    request: PredictRequest
    receive: Receive  # the client's: the model drops work not started if it leaves


PENDING: ContextVar[Pending] = ContextVar("kserve_serving_pending")


def v1_predict_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


class KServeForward:
    """An admitted prediction, its body read within the contract's limits, through KServe's
    v1 predict route; an exception escaping KServe is logged once and, where nothing was
    answered yet, answered as the contract's 500."""

    def __init__(self, app: ASGIApp, model: str, settings: Settings) -> None:
        self.app = app
        self.path = v1_predict_path(model)
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            request = await read_predict_request(scope, receive, self.settings, started)
        except ServiceError as refusal:
            await error_response(refusal)(scope, receive, send)
            return
        except ClientGone:
            # Nobody reads this answer; the server drops it. Counted as 499.
            await Response(status_code=CLIENT_GONE_STATUS)(scope, receive, send)
            return
        token = PENDING.set(Pending(request, receive))
        answered = False

        async def send_answer(message: Message) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            forwarded = opaque(scope, self.path, len(request.body))
            await self.app(forwarded, replay(request.body, receive), send_answer)
        except Exception:
            # Answered: serving_common's handler on KServe's app logged it and sent the 500,
            # and Starlette raised it again after; otherwise it escaped before any handler.
            if not answered:
                log.exception("internal error")
                internal = ServiceError(ErrorType.INTERNAL, "internal error")
                await error_response(internal)(scope, receive, send)
        finally:
            PENDING.reset(token)


def opaque(scope: Scope, path: str, length: int) -> Scope:
    """The request as KServe's v1 route takes it without parsing the body."""
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in (b"content-type", b"content-length")
    ]
    headers += [(b"content-type", OPAQUE_MEDIA_TYPE), (b"content-length", str(length).encode())]
    return {**scope, "path": path, "raw_path": path.encode(), "headers": headers}


def replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then the client's own channel."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class Refusals:
    """Every HTTP route the contract does not own: 404 (405 for `/predict/` but POST).
    The server's other events (lifespan) go to KServe's app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == "/predict/":
            await method_not_allowed("POST")(scope, receive, send)
        else:
            not_found = ServiceError(ErrorType.NOT_FOUND, "Not Found")
            await error_response(not_found)(scope, receive, send)
