"""The FastAPI host of the HTTP contract: routes wired to `protocol.py`.

A strategy only supplies a Predictor; everything a client sees (routes, errors, limits,
metrics) comes from `protocol.py` and the error table.
"""

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from serving_common import protocol
from serving_common.errors import ServiceError
from serving_common.startup import ServiceState

log = logging.getLogger(__name__)


def json_response(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def create_app(state: ServiceState) -> FastAPI:
    app = FastAPI(title=state.name, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = state
    settings, metrics = state.settings, state.metrics

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> Response:
        return json_response(exc.body(), exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "internal")
        return json_response({"error": str(exc.detail), "error_type": error_type}, exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> Response:
        log.exception("internal error")
        return json_response({"error": "internal error", "error_type": "internal"}, 500)

    # GET routes answer HEAD too (FastAPI's, unlike Starlette's, do not by themselves).
    @app.api_route("/", methods=["GET", "HEAD"])
    async def health() -> Response:
        return json_response(protocol.health_document(state))

    @app.api_route("/info", methods=["GET", "HEAD"])
    async def info() -> Response:
        return json_response(protocol.info_document(state))

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    # NOTE: the handler is async and runs inference inline on purpose: the work is CPU
    # bound and a worker process owns its cores, so a thread-pool hop would only add cost.
    # Concurrency comes from WORKERS processes.
    @app.post("/predict/")
    @app.post("/predict", include_in_schema=False)
    async def predict(request: Request) -> Response:
        with protocol.counted_request(metrics) as started:
            flag = protocol.probabilities_requested(request.query_params.get("probabilities"))
            body = await protocol.read_body(
                request.stream(), request.headers.get("content-length"), settings.max_body_bytes
            )
            kind = protocol.media_type(request.headers.get("content-type"))
            image = protocol.image_from_body(kind, body)
            return json_response(protocol.predict_image(state, image, flag, started))

    return app
