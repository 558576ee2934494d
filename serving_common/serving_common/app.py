"""The HTTP layer of contract/README.md, shared by the two FastAPI services.

A strategy only supplies a Predictor: how to turn image bytes into pixels, and pixels into
probabilities. Everything a client sees (routes, errors, limits, metrics) lives here once.
"""

import binascii
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import pybase64
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from serving_common.errors import ServiceError
from serving_common.metrics import Metrics
from serving_common.model_source import FetchedModel
from serving_common.settings import Settings

log = logging.getLogger(__name__)

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png")


class Predictor(Protocol):
    def decode(self, image: bytes, max_pixels: int) -> Any:
        """Image bytes to the model's input; ServiceError for a bad or oversized image."""

    def infer(self, decoded: Any) -> np.ndarray:
        """Probabilities in label order."""

    def describe(self) -> dict[str, Any]:
        """Runtime, versions and threads, for /info."""


@dataclass
class ServiceState:
    name: str
    settings: Settings
    model: FetchedModel
    predictor: Predictor
    load_seconds: float
    metrics: Metrics = field(default_factory=Metrics)


def json_response(content: object, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ServiceError("body_too_large", f"the body exceeds MAX_BODY_BYTES ({limit} bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def image_from_json(body: bytes) -> bytes:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServiceError("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "image" not in document:
        raise ServiceError("invalid_request", 'expected a JSON object with the field "image"')
    encoded = document["image"]
    if not isinstance(encoded, str):
        raise ServiceError("invalid_request", '"image" must be a base64 string')
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError("invalid_base64", '"image" is not valid base64') from None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def create_app(state: ServiceState) -> FastAPI:
    app = FastAPI(title=state.name, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = state
    settings, predictor, metrics = state.settings, state.predictor, state.metrics
    labels = state.model.labels

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> Response:
        return json_response(exc.body(), exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "internal")
        return json_response({"error": str(exc.detail), "error_type": error_type}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_query(_: Request, exc: RequestValidationError) -> Response:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        body = {"error": f"{where}: {error['msg']}", "error_type": "invalid_request"}
        return json_response(body, 422)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> Response:
        log.exception("internal error")
        return json_response({"error": "internal error", "error_type": "internal"}, 500)

    @app.get("/")
    async def health() -> Response:
        return json_response({"status": "healthy", "message": f"{state.name} is ready"})

    @app.get("/info")
    async def info() -> Response:
        return json_response(
            {
                "service": state.name,
                "model_uri": state.model.uri,
                "model_sha256": state.model.sha256,
                "labels": labels,
                "metadata": state.model.metadata,
                "runtime": predictor.describe(),
                "workers": settings.workers,
                "intra_op_threads": settings.intra_op_threads,
                "inter_op_threads": settings.inter_op_threads,
                "max_body_bytes": settings.max_body_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "startup": {
                    "download_seconds": state.model.download_seconds,
                    "load_seconds": state.load_seconds,
                },
            }
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    # NOTE: the handler is async and runs inference inline on purpose: the work is CPU
    # bound and a worker process owns its cores, so a thread-pool hop would only add cost.
    # Concurrency comes from WORKERS processes.
    @app.post("/predict/")
    @app.post("/predict", include_in_schema=False)
    async def predict(request: Request, probabilities: bool = False) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            body = await read_body(request, settings.max_body_bytes)
            kind = media_type(request)
            if kind == "application/json":
                image = image_from_json(body)
            elif kind in IMAGE_MEDIA_TYPES:
                image = body
            else:
                raise ServiceError(
                    "unsupported_media_type",
                    f"Content-Type {kind or '(none)'} is not application/json, "
                    "image/jpeg or image/png",
                )
            parsed = time.perf_counter()
            decoded = predictor.decode(image, settings.max_image_pixels)
            decoded_at = time.perf_counter()
            scores = predictor.infer(decoded)
            done = time.perf_counter()
            metrics.stage.labels("parse").observe(parsed - started)
            metrics.stage.labels("decode").observe(decoded_at - parsed)
            metrics.stage.labels("inference").observe(done - decoded_at)
            result: dict[str, object] = {"prediction": labels[int(np.argmax(scores))]}
            if probabilities:
                result["probabilities"] = dict(zip(labels, map(float, scores), strict=True))
            status = 200
            return json_response(result)
        except ServiceError as exc:
            status = exc.status
            raise
        finally:
            metrics.requests.labels(str(status)).inc()
            metrics.latency.observe(time.perf_counter() - started)

    return app
