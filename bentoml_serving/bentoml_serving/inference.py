"""The API method's work, on BentoML's inference thread: each request parsed, decoded and
preprocessed on its own, one inference for all that were not refused, each answered with
its own finished HTTP response.

BentoML hands the method one request, or with MAX_BATCH_SIZE > 1 whatever its dispatcher
gathered. A refused request (bad JSON or base64, not an image, a bomb) gets its own error
and never fails the others: BentoML would answer every request of a batch with the
exception of one.
"""

import contextlib
import logging
import os
import sys
import threading
from typing import Any, cast

from serving_common.app import INFERENCE_NICENESS, error_response, json_response
from serving_common.errors import ErrorType, ServiceError
from serving_common.protocol import (
    CLIENT_GONE_STATUS,
    network_input,
    predict_batch,
    prediction_document,
)
from serving_common.startup import ServiceState
from starlette.responses import Response

from bentoml_serving.request import QueuedRequest

log = logging.getLogger(__name__)
INTERNAL_ERROR = ServiceError(ErrorType.INTERNAL, "internal error")
_thread = threading.local()


def yield_to_http() -> None:
    """Lower the calling thread's priority once (app.py's INFERENCE_NICENESS): HTTP first
    when both want the same core. Per thread, as BentoML's threads come and go (anyio ends
    an idle one after 10 s). Linux only, where a thread's native id is a PRIO_PROCESS
    target; elsewhere it would name a process."""
    if getattr(_thread, "yielded", False):
        return
    _thread.yielded = True
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INFERENCE_NICENESS)


def answer_requests(state: ServiceState, requests: list[QueuedRequest]) -> list[Response]:
    """One finished response per request, in order."""
    answers: list[Response | None] = [None] * len(requests)
    admitted: list[int] = []
    inputs: list[Any] = []
    for i, queued in enumerate(requests):
        if queued.gone:  # its client left while it waited: dropped, counted 499 by front.py
            answers[i] = Response(status_code=CLIENT_GONE_STATUS)
            continue
        try:
            inputs.append(network_input(state, queued.request))
            admitted.append(i)
        except ServiceError as refusal:
            answers[i] = error_response(refusal)
        except Exception:
            log.exception("internal error")
            answers[i] = error_response(INTERNAL_ERROR)
    if admitted:
        try:
            scores = predict_batch(state, inputs)
        except Exception:
            log.exception("internal error")
            for i in admitted:
                answers[i] = error_response(INTERNAL_ERROR)
        else:
            labels = state.model.labels
            for i, row in zip(admitted, scores, strict=True):
                with_probabilities = requests[i].request.with_probabilities
                document = prediction_document(labels, row, with_probabilities)
                answers[i] = json_response(document)
    # Every request has its answer by now: refused, dropped or predicted.
    return cast(list[Response], answers)
