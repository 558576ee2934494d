"""The uvicorn runner: one model download, then one or WORKERS processes serving the app.

The main process reads the strategy's manifest and the settings and fetches the model once
(checking its sha256). With WORKERS=1 it loads the model and serves in-process; with more,
every uvicorn worker loads the already-downloaded file. Any startup problem ends the
process with status 1 and one line naming the cause.
"""

import ctypes
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from serving_common.app import create_app
from serving_common.model_source import FetchedModel
from serving_common.settings import load_settings
from serving_common.startup import (
    StartupError,
    build_state,
    download_model,
    fatal,
    import_predictor,
    read_manifest,
    read_settings,
)

# Hands the fetched model from the main process to uvicorn's worker processes.
_FETCHED_ENV = "SERVING_FETCHED_MODEL"
# Seconds in-flight requests get to finish after SIGTERM.
DRAIN_SECONDS = 30


def run_service(folder: Path) -> None:
    """Entry point of a Python strategy: `folder` holds its strategy.toml, which names its
    Predictor class."""
    try:
        strategy = read_manifest(folder)
        if strategy.predictor is None:
            raise StartupError(f"{folder}/strategy.toml: `predictor` is not set")
        predictor = strategy.predictor
    except StartupError as exc:
        fatal(folder.name, exc)
    try:
        settings = read_settings(strategy)
        cache = Path(tempfile.mkdtemp(prefix=f"{strategy.name}-model-"))
        model = download_model(settings, cache)
        server: dict[str, Any] = {
            "host": "0.0.0.0",
            "port": settings.port,
            "log_level": settings.log_level,
            "access_log": False,
            "timeout_graceful_shutdown": DRAIN_SECONDS,
        }
        if settings.workers == 1:
            app = create_app(
                build_state(strategy.name, settings, model, import_predictor(predictor))
            )
            uvicorn.run(app, **server)
            return
    except StartupError as exc:
        fatal(strategy.name, exc)
    os.environ[_FETCHED_ENV] = json.dumps(
        {
            "folder": str(folder),
            "supervisor": os.getpid(),
            "uri": model.uri,
            "path": str(model.path),
            "metadata": model.metadata,
            "download_seconds": model.download_seconds,
        }
    )
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix=f"{strategy.name}-prom-")
    )
    uvicorn.run("serving_common.serve:worker_app", factory=True, workers=settings.workers, **server)


def exit_with_parent(supervisor: int) -> None:
    """A worker ends when its supervisor does, even one killed with SIGKILL (Linux): no
    orphan keeps the port and the memory."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    # NOTE: the signal is armed only from here on; a supervisor that died while this worker
    # was starting is noticed by the parent having changed.
    if os.getppid() != supervisor:
        os._exit(1)


def worker_app() -> FastAPI:
    """App factory run inside each uvicorn worker process (WORKERS > 1)."""
    handoff = json.loads(os.environ[_FETCHED_ENV])
    exit_with_parent(handoff["supervisor"])
    strategy = read_manifest(Path(handoff["folder"]))
    model = FetchedModel(
        handoff["uri"], Path(handoff["path"]), handoff["metadata"], handoff["download_seconds"]
    )
    settings = load_settings(strategy.port)
    try:
        return create_app(
            build_state(strategy.name, settings, model, import_predictor(str(strategy.predictor)))
        )
    except StartupError as exc:
        # NOTE: uvicorn restarts dead workers forever; ask the supervisor to stop instead.
        print(f"{strategy.name}: fatal: {exc}", file=sys.stderr, flush=True)
        os.kill(os.getppid(), signal.SIGTERM)
        sys.exit(1)
