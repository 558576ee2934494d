"""Startup in the main process, before LitServe: settings, the model download and one
warm-up load, each problem one line and exit 1; then LitServe (server.py).

LitServe itself (FastAPI, uvicorn) is imported only once these checks have passed, so a
fatal line costs no framework import (about 1.5 s here).
"""

from importlib.metadata import version
from pathlib import Path
from typing import Any

from serving_common.protocol import health_document, info_document
from serving_common.settings import Settings
from serving_common.startup import StartupError, fatal, prepare

# LitServe refuses other ports.
LITSERVE_PORTS = range(1024, 65536)


def serve(folder: Path) -> None:
    """Entry point: `folder` holds strategy.toml. Returns once LitServe has drained."""
    launch = prepare(folder)
    settings, name = launch.settings, launch.strategy.name
    if problem := unsupported(settings):
        fatal(name, problem)
    # The workers load the same file later; loading it here first turns a model that fails
    # its warm-up into one line and exit 1 before any worker starts.
    try:
        state = launch.load()
    except StartupError as exc:
        fatal(name, exc)
    health = health_document(state)
    info = {**info_document(state), "framework": framework_info(settings)}
    # Only the workers infer: the processes LitServe forks from this one need no session.
    del state

    from litserve_serving.server import run_litserve

    run_litserve(launch, health, info)


def unsupported(settings: Settings) -> str | None:
    """A setting LitServe cannot honour, as the line that says so; None if none."""
    if settings.port not in LITSERVE_PORTS:
        return f"PORT: LitServe listens on 1024 to 65535 only (got {settings.port})"
    if settings.max_batch_size > 1 and settings.batch_wait_ms == 0:
        # LitServe's batching loop would poll its queue without pause: a core per worker.
        return "BATCH_WAIT_MS: must be more than 0 when MAX_BATCH_SIZE > 1 (got 0)"
    return None


def framework_info(settings: Settings) -> dict[str, Any]:
    """/info's "framework": what hosts the predictor, and how it batches."""
    batched = settings.max_batch_size > 1
    return {
        "name": "LitServe",
        "version": version("litserve"),
        # LitServe's default: as many HTTP (API server) processes as inference workers.
        "api_servers": settings.workers,
        "inference_workers": settings.workers,
        "transport": "multiprocessing manager queues",
        "max_batch_size": settings.max_batch_size,
        "batch_wait_ms": settings.batch_wait_ms if batched else None,
    }
