"""A request's body and its client's leaving, from an ASGI server's messages: what every
Python host's plain ASGI parts (app.py, open_inference.py, the frameworks' fronts) read.
"""

from collections.abc import AsyncIterator

from starlette.datastructures import Headers, QueryParams
from starlette.types import Receive, Scope

from serving_common import protocol
from serving_common.protocol import ClientGone, PredictRequest
from serving_common.settings import Settings


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as the ASGI server delivers it; ClientGone if the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body", False):
            return


async def client_left(receive: Receive) -> None:
    """Returns once the client has disconnected (the body having been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_predict_request(
    scope: Scope, receive: Receive, settings: Settings, started: float
) -> PredictRequest:
    """protocol.read_predict_request for a plain ASGI front: the headers and query from the
    scope, the body from the server's messages."""
    return await protocol.read_predict_request(
        body_chunks(receive),
        Headers(scope=scope),
        QueryParams(scope["query_string"]),
        settings,
        started,
    )
