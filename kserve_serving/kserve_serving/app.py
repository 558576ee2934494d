"""The app each server process serves: KServe's REST server (its FastAPI app with its
middleware, routes and error handlers, its data plane, its model repository) with the
predictor as its one kserve.Model, behind the contract's front (front.py).

The processes are serving_common's (serve.py: uvicorn, one or WORKERS, the model fetched
once), as in every Python host here, not KServe ModelServer's: its supervisor kills a
server process that has not answered its ping within 5 s of starting (importing KServe and
loading a model takes longer on a busy core) and starts another, without end.
"""

import logging
from importlib.metadata import version
from typing import Any

from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer
from serving_common.app import install_error_handlers
from serving_common.front import ContractFront
from serving_common.open_inference import ModelDescription
from serving_common.protocol import health_document, info_document
from serving_common.serve import DRAIN_SECONDS
from serving_common.settings import Settings
from serving_common.startup import ServiceState
from starlette.types import ASGIApp
from uvicorn.importer import import_from_string

from kserve_serving.front import KServeForward, Refusals
from kserve_serving.model import OnnxPredictorModel

# KServe's app, which its REST server fills: one per process (KServe's own is a module global).
KSERVE_APP = "kserve.model_server:app"
# KServe's timing middleware logs every request; like every strategy here, warnings only.
logging.getLogger("kserve.trace").setLevel(logging.WARNING)


def kserve_app(state: ServiceState) -> ASGIApp:
    settings = state.settings
    info = {**info_document(state), "framework": framework_info(settings)}
    name = ModelDescription.from_info(info).name
    models = ModelRepository()
    models.update(OnnxPredictorModel(name, state))
    extension = ModelRepositoryExtension(models)
    rest = RESTServer(KSERVE_APP, DataPlane(models), extension, settings.port)
    # Fills KSERVE_APP: KServe's middleware, routes and error handlers; then the contract's
    # errors (a ServiceError from the model) as the contract's bodies.
    rest.create_application()
    app = import_from_string(KSERVE_APP)
    install_error_handlers(app)
    return ContractFront(
        KServeForward(app, name, settings),
        Refusals(app),
        "/predict/",
        health=health_document(state),
        info=info,
        settings=settings,
        metrics=state.metrics,
    )


def framework_info(settings: Settings) -> dict[str, Any]:
    """/info's "framework": what hosts the predictor, and how."""
    return {
        "name": "KServe",
        "version": version("kserve"),
        "workers": settings.workers,
        "threads_per_worker": 1,
        # KServe's ModelServer does not batch (KServe's batcher is a Kubernetes sidecar).
        "max_batch_size": 1,
        "batch_wait_ms": None,
        "drain_seconds": DRAIN_SECONDS,
    }
