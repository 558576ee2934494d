"""One /predict/ request as BentoML's API method sees it, and the input and output specs
that carry it through BentoML's endpoint and its batching dispatcher.

The contract's share of the HTTP request (admission, the body under its limits and
deadline, the query flag) is done before BentoML routes it (front.py), so the request
reaches BentoML with its body already read, as a `QueuedRequest` in the ASGI scope.
`PredictInput.from_http_request` hands it to the API method as a list of one: the shape
BentoML's dispatcher concatenates into batches (its default container for lists) and
splits the method's list of answers back along. The method answers with finished HTTP
responses; `PredictOutput.to_http_response` returns the request's own.

NOTE: `from_http_request` and `to_http_response` are classmethods of BentoML's public
`bentoml.IODescriptor`, but not a documented extension point: BentoML parses a body by
its Content-Type (JSON, multipart, pickle) and has no input type for a raw JPEG or PNG
body, nor for a body read under size and time limits.
"""

from dataclasses import dataclass
from typing import Any

import bentoml
from serving_common.protocol import PredictRequest
from starlette.requests import Request
from starlette.responses import Response

# Where front.py leaves the request for the API method, in the ASGI scope.
REQUEST_SCOPE_KEY = "bentoml_serving.request"
# The route of BentoML's API method; front.py sends /predict/ here too.
PREDICT_PATH = "/predict"


@dataclass(slots=True)
class QueuedRequest:
    """One request on its way through BentoML's dispatcher, and whether its client has
    left."""

    request: PredictRequest
    # Set by front.py when the client disconnects first: work not yet started is dropped.
    gone: bool = False


class PredictInput(bentoml.IODescriptor):
    """The API method's one argument: the request, as a list of one."""

    # Any: a QueuedRequest; pydantic builds no schema for it, and none is needed.
    requests: list[Any]

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> "PredictInput":
        # The body was read by front.py; no JSON parsing or validation here.
        return cls.model_construct(requests=[request.scope[REQUEST_SCOPE_KEY]])


class PredictOutput(bentoml.IODescriptor):
    """The API method's answers: this request's, a list of one finished response."""

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        (response,) = obj
        return response  # type: ignore[no-any-return]
