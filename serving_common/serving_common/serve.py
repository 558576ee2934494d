"""Process startup: configuration, one model download, workers, and one-line fatal errors.

The main process reads the settings and fetches the model once (checking its sha256), then
runs uvicorn. With WORKERS=1 it loads the model and serves in-process; with more, every
worker loads the already-downloaded file, so the model is downloaded once, not per worker.
"""

import importlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from weather_model.storage import ArtifactError

from serving_common.app import Predictor, ServiceState, create_app
from serving_common.model_source import FetchedModel, fetch_model
from serving_common.settings import ConfigError, Settings, load_settings

log = logging.getLogger("serving")

# Hands the fetched model from the main process to uvicorn's worker processes.
_FETCHED_ENV = "SERVING_FETCHED_MODEL"

LoadPredictor = Callable[[FetchedModel, Settings], Predictor]


def import_predictor(path: str) -> LoadPredictor:
    """'package.module:Class' -> the class; imported late so that the main process of a
    multi-worker service never loads the runtime (torch alone is hundreds of MB)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class LoadError(RuntimeError):
    """A fetched model the runtime cannot load."""


def fatal(service: str, message: object) -> None:
    print(f"{service}: fatal: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def credentials_source() -> str:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return f"emulator at {os.environ['STORAGE_EMULATOR_HOST']}"
    if os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN"):
        return "CLOUDSDK_AUTH_ACCESS_TOKEN (redacted)"
    return "application default credentials"


def build_state(
    service: str, settings: Settings, model: FetchedModel, load: LoadPredictor
) -> ServiceState:
    started = time.perf_counter()
    try:
        predictor = load(model, settings)
    except Exception as exc:
        raise LoadError(f"{model.uri}: the runtime cannot load it ({exc})") from None
    seconds = time.perf_counter() - started
    log.info("model loaded in %.3f s", seconds)
    return ServiceState(service, settings, model, predictor, seconds)


def worker_app() -> FastAPI:
    """App factory run inside each uvicorn worker process (WORKERS > 1)."""
    handoff = json.loads(os.environ[_FETCHED_ENV])
    service, default_port = handoff["service"], handoff["default_port"]
    load = import_predictor(handoff["predictor"])
    model = FetchedModel(
        handoff["uri"],
        Path(handoff["path"]),
        handoff["metadata"],
        handoff["download_seconds"],
    )
    settings = load_settings(default_port)
    try:
        return create_app(build_state(service, settings, model, load))
    except LoadError as exc:
        # NOTE: uvicorn restarts dead workers forever; ask the supervisor to stop instead.
        print(f"{service}: fatal: {exc}", file=sys.stderr, flush=True)
        os.kill(os.getppid(), 15)
        sys.exit(1)


def run_service(service: str, default_port: int, predictor: str) -> None:
    """Entry point of a service; `predictor` is the import path of its Predictor class."""
    try:
        settings = load_settings(default_port)
    except ConfigError as exc:
        fatal(service, exc)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info(
        "%s config: %s; credentials: %s",
        service,
        settings.model_dump(),
        credentials_source(),
    )
    cache = Path(tempfile.mkdtemp(prefix=f"{service}-model-"))
    try:
        model = fetch_model(settings.model_uri, cache)
    except ArtifactError as exc:
        fatal(service, exc)
    server = {
        "host": "0.0.0.0",
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 30,
    }
    if settings.workers == 1:
        try:
            app = create_app(build_state(service, settings, model, import_predictor(predictor)))
        except LoadError as exc:
            fatal(service, exc)
        uvicorn.run(app, **server)  # type: ignore[arg-type]
        return
    os.environ[_FETCHED_ENV] = json.dumps(
        {
            "service": service,
            "default_port": default_port,
            "predictor": predictor,
            "uri": model.uri,
            "path": str(model.path),
            "metadata": model.metadata,
            "download_seconds": model.download_seconds,
        }
    )
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix=f"{service}-prom-"))
    uvicorn.run("serving_common.serve:worker_app", factory=True, workers=settings.workers, **server)  # type: ignore[arg-type]
