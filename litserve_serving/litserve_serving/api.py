"""The LitAPI every LitServe inference worker runs: the shared ONNX predictor behind the
contract's decode -> batch -> predict -> unbatch -> encode_response.

Each inference worker is a process of its own (LitServe spawns them) with its own
ServiceState, built in `setup` from the launch the main process prepared. Per request:
`network_input` (parse, decode, preprocess); per batch: `predict_batch` (one ONNX Runtime
run). The answer leaves the worker as a finished HTTP response, so the API server process
only passes bytes on.
"""

import contextlib
import os
from typing import Annotated, Any

import litserve as ls
import numpy as np
from fastapi import Depends, Response
from serving_common.app import INFERENCE_NICENESS, error_response, json_response
from serving_common.errors import ServiceError
from serving_common.protocol import (
    PredictRequest,
    network_input,
    predict_batch,
    prediction_document,
)
from serving_common.serve import exit_with_parent
from serving_common.startup import Launch, ServiceState

from litserve_serving.request import PREDICT_PATH, read_predict_request

# What decode_request declares it takes: LitServe hands it the dependency's result.
PredictBody = Annotated[PredictRequest, Depends(read_predict_request)]
# Per-request context keys (LitServe gives each request its own dict, batched or not).
WITH_PROBABILITIES = "with_probabilities"
REFUSAL = "refusal"


class OnnxPredictorAPI(ls.LitAPI):
    """The predictor of strategy.toml in a LitServe worker; MAX_BATCH_SIZE > 1 turns on
    LitServe's dynamic batching, which hands `predict` a list."""

    def __init__(
        self, handoff: str, supervisor: int, max_batch_size: int, batch_wait_ms: float
    ) -> None:
        batched = max_batch_size > 1
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_wait_ms / 1000 if batched else 0.0,
            api_path=PREDICT_PATH,
        )
        # Pickled to each worker with the rest of this object (LitServe spawns them).
        self.handoff = handoff
        self.supervisor = supervisor
        self._service: ServiceState | None = None

    @property
    def service(self) -> ServiceState:
        if self._service is None:
            raise RuntimeError("setup() has not run in this process")
        return self._service

    def setup(self, device: str) -> None:
        """In the worker process, before it takes requests: the model, warmed up."""
        exit_with_parent(self.supervisor)
        # HTTP first when both want the same core (app.py's INFERENCE_NICENESS): the API
        # servers and LitServe's queue answer health and refuse the excess at once. Set
        # before the runtime starts any thread, which then inherits it (on Linux the
        # niceness is per thread).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, INFERENCE_NICENESS)
        # NOTE: the main process loaded the same model already (startup.py's checks); a
        # StartupError here is rare (memory) and LitServe stops the service on it.
        self._service = Launch.from_handoff(self.handoff).load()

    def decode_request(self, request: PredictBody, context: dict[str, Any]) -> Any:
        context[WITH_PROBABILITIES] = request.with_probabilities
        try:
            return network_input(self.service, request)
        except ServiceError as refusal:
            # NOTE: kept, not raised: an exception in a batch's decode_request answers every
            # request of the batch with it (LitServe's BatchedLoop); this one alone gets it.
            context[REFUSAL] = refusal
            return None

    def batch(self, inputs: list[Any]) -> list[Any]:
        # The predictor takes a list (LitServe's default would stack the arrays).
        return inputs

    def predict(self, x: Any, context: Any) -> Any:
        if self.max_batch_size == 1:  # LitServe's SingleLoop: one input, one context
            return self.infer([x], [context])[0]
        return self.infer(x, context)

    def infer(self, inputs: list[Any], contexts: list[dict[str, Any]]) -> list[Any]:
        """Scores for each input, None for the refused ones: one inference on the rest."""
        outputs: list[np.ndarray | None] = [None] * len(inputs)
        admitted = [i for i, context in enumerate(contexts) if REFUSAL not in context]
        if admitted:
            scores = predict_batch(self.service, [inputs[i] for i in admitted])
            for i, row in zip(admitted, scores, strict=True):
                outputs[i] = row
        return outputs

    def encode_response(self, output: Any, context: dict[str, Any]) -> Response:
        """The finished HTTP answer, JSON encoded here rather than in the API server."""
        refusal: ServiceError | None = context.get(REFUSAL)
        if refusal is not None:
            return error_response(refusal)
        labels = self.service.model.labels
        return json_response(prediction_document(labels, output, context[WITH_PROBABILITIES]))
