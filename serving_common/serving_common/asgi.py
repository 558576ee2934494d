"""A request's body and its client's leaving, from an ASGI server's messages: what every
Python host's plain ASGI parts (app.py, open_inference.py, the frameworks' fronts) read.
"""

from collections.abc import AsyncIterator

from starlette.types import Receive

from serving_common.protocol import ClientGone


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
