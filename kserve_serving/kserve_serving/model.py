"""The shared ONNX predictor as a kserve.Model.

KServe's v1 predict route hands `predict` the body as it read it (bytes: the front sends it
under a media type KServe does not parse) and the request's headers; what the front settled
of the request before (its media type, the `probabilities` flag, how long its body took)
travels with the request's task (front.PENDING). The CPU-bound part runs on the process's
one inference thread, not on the event loop: KServe awaits an async `predict` on its loop,
and runs a synchronous one there too, blocking every other request (kserve#3950).
"""

import dataclasses
from typing import Any

import kserve
from serving_common.app import InferenceThread
from serving_common.protocol import answer_prediction
from serving_common.startup import ServiceState

from kserve_serving.front import PENDING


class OnnxPredictorModel(kserve.Model):  # type: ignore[misc]  # kserve ships no types
    """The predictor of strategy.toml, loaded; `name` is what KServe routes it by."""

    def __init__(self, name: str, state: ServiceState) -> None:
        super().__init__(name)
        self.state = state
        self.inference = InferenceThread()
        self.ready = True

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        pending = PENDING.get()
        request = dataclasses.replace(pending.request, body=payload)
        return await self.inference.run(pending.receive, answer_prediction, self.state, request)
