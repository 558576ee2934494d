"""The BentoML service: the shared ONNX predictor behind one `@bentoml.api`, batchable when
MAX_BATCH_SIZE > 1, in WORKERS BentoML worker processes.

Imported by the launcher (to hand BentoML the service) and by every worker BentoML starts
(to build it); both read the same settings from the launch the launcher handed over
(worker.py), so the decorators below get the same configuration in every process. The
model is loaded in each worker (`__init__`); the launcher only downloads it.
"""

import logging
from typing import Any, cast

import anyio.to_thread
import bentoml
from serving_common.protocol import health_document, info_document
from serving_common.serve import DRAIN_SECONDS, exit_with_parent
from serving_common.settings import Settings
from serving_common.startup import ServiceState, StartupError
from starlette.responses import Response

from bentoml_serving.front import ContractFront, ContractRoutes
from bentoml_serving.inference import answer_requests, yield_to_http
from bentoml_serving.request import PREDICT_PATH, PredictInput, PredictOutput, QueuedRequest
from bentoml_serving.worker import (
    handed_launch,
    in_worker,
    process_metrics,
    report_startup_failure,
    supervisor,
    wait_for_siblings,
)

# BentoML's own deadlines, past which it answers 504 (traffic.timeout, from the request's
# start) or 503 (its dispatcher's max_latency_ms, from a request's queueing): set beyond
# the contract's own limits (the body's deadline, then admission bounding the queue), so
# that they never answer first.
DEADLINE_MARGIN_SECONDS = 60
# BentoML checks max_batch_size > 1 even for an API that does not batch.
SMALLEST_BATCH_LIMIT = 2

LAUNCH = handed_launch()
SETTINGS = LAUNCH.settings
NAME = LAUNCH.strategy.name
if in_worker():
    # As early as this worker gets: it ends with the launcher, even one killed with SIGKILL.
    exit_with_parent(supervisor())


def deadline_seconds(settings: Settings) -> int:
    return settings.body_timeout_seconds + DEADLINE_MARGIN_SECONDS


def service_config(settings: Settings) -> dict[str, Any]:
    """BentoML's service configuration (`@bentoml.service(**config)`) from the settings."""
    return {
        "workers": settings.workers,
        # The threads BentoML runs a sync API method on, per worker: one inference at a
        # time, each with INTRA_OP_THREADS (app.py's inference thread).
        "threads": 1,
        "traffic": {"timeout": deadline_seconds(settings)},
        # The contract's logging: no line per request.
        "logging": {"access": {"enabled": False}},
        # NOTE: BentoML wraps every request in OpenTelemetry's middleware whether or not
        # anything exports traces; excluding every URL skips it (a span per request).
        "tracing": {"excluded_urls": ".*"},
    }


def framework_info(settings: Settings) -> dict[str, Any]:
    """/info's "framework": what hosts the predictor, and how it batches."""
    batched = settings.max_batch_size > 1
    return {
        "name": "BentoML",
        "version": bentoml.__version__,
        "workers": settings.workers,
        "threads_per_worker": 1,
        "max_batch_size": settings.max_batch_size,
        # BentoML's dispatcher has no wait window to set: it sends what has gathered
        # while the previous batch ran, and adapts its waiting to past latencies.
        "batch_wait_ms": None,
        "max_latency_ms": deadline_seconds(settings) * 1000 if batched else None,
        "drain_seconds": DRAIN_SECONDS,
    }


ROUTES = ContractRoutes()


@bentoml.service(name=NAME, **service_config(SETTINGS))
@bentoml.asgi_app(ROUTES, path="/", name="contract")
class OnnxPredictorService:
    """The shared OnnxPredictor (onnx_predictor), built once per worker process."""

    def __init__(self) -> None:
        # BentoML configures its workers' logging (warnings and up but its own).
        logging.getLogger("serving").setLevel(SETTINGS.log_level.upper())
        try:
            state = LAUNCH.load()
        except StartupError as exc:
            report_startup_failure(str(exc))
        # NOTE: the metrics the front (front.py) counts with; a second instance in the
        # same process would overwrite its samples (worker.py).
        state.metrics = process_metrics()
        wait_for_siblings(SETTINGS.workers)
        ROUTES.publish(
            health_document(state),
            {**info_document(state), "framework": framework_info(SETTINGS)},
        )
        self.state: ServiceState = state

    @bentoml.on_startup
    async def start_inference_thread(self) -> None:
        """The thread BentoML runs the API method on, started (anyio's thread machinery
        is loaded on first use) and lowered in priority before the first request."""
        await anyio.to_thread.run_sync(yield_to_http)

    @bentoml.api(
        route=PREDICT_PATH,
        input_spec=PredictInput,
        output_spec=PredictOutput,
        batchable=SETTINGS.max_batch_size > 1,
        max_batch_size=max(SMALLEST_BATCH_LIMIT, SETTINGS.max_batch_size),
        max_latency_ms=deadline_seconds(SETTINGS) * 1000,
    )
    def predict(self, requests: list[QueuedRequest]) -> list[Response]:
        """One request, or the batch BentoML's dispatcher gathered: one answer each."""
        yield_to_http()
        return answer_requests(self.state, requests)


# NOTE: what the decorators made of the class (mypy keeps a decorated class's own type).
SERVICE = cast("bentoml.Service[OnnxPredictorService]", OnnxPredictorService)
SERVICE.add_asgi_middleware(ContractFront, settings=SETTINGS, routes=ROUTES)
