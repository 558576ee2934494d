"""The uvicorn runner: one model download, then one or WORKERS processes serving the app.

The main process reads the strategy's manifest and the settings and fetches the model once
(checking its sha256). With WORKERS=1 it loads the model and serves in-process; with more,
every uvicorn worker loads the already-downloaded file. The app is serving_common's FastAPI
host (app.create_app), or one a strategy builds around a framework's app from the same
loaded predictor (`app_factory`). Any startup problem ends the process with status 1 and
one line naming the cause; so does a worker's startup problem, which ends the whole
service.
"""

import ctypes
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE
from uvicorn.importer import import_from_string
from uvicorn.supervisors import Multiprocess

from serving_common.startup import Launch, StartupError, fatal, prepare

# Hand the launch (the fetched model) and the supervisor's pid to uvicorn's worker processes.
_FETCHED_ENV = "SERVING_FETCHED_MODEL"
_SUPERVISOR_ENV = "SERVING_SUPERVISOR_PID"
_APP_FACTORY_ENV = "SERVING_APP_FACTORY"
# The app every worker builds from its ServiceState, unless a strategy names its own.
DEFAULT_APP_FACTORY = "serving_common.app:create_app"
# Seconds in-flight requests get to finish after SIGTERM.
DRAIN_SECONDS = 30


def run_service(folder: Path, app_factory: str = DEFAULT_APP_FACTORY) -> None:
    """Entry point of a Python strategy: `folder` holds its strategy.toml, which names its
    Predictor class; `app_factory`, "module:function", builds the ASGI app from the loaded
    ServiceState (StartupError for a startup problem)."""
    launch = prepare(folder)
    settings, name = launch.settings, launch.strategy.name
    server: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": DRAIN_SECONDS,
    }
    if settings.workers == 1:
        try:
            app = import_from_string(app_factory)(launch.load())
        except StartupError as exc:
            fatal(name, exc)
        exit_zero_once_drained()
        uvicorn.run(app, **server)
        return
    os.environ[_FETCHED_ENV] = launch.handoff()
    os.environ[_SUPERVISOR_ENV] = str(os.getpid())
    os.environ[_APP_FACTORY_ENV] = app_factory
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix=f"{name}-prom-"))
    serve_workers(settings.workers, server, name)


def serve_workers(workers: int, server: dict[str, Any], service: str) -> None:
    """uvicorn's multi-process supervisor (what uvicorn.run does with workers > 1), then
    exit 1 if a worker failed to start: the worker has printed its one line, and uvicorn
    alone would stop every worker and exit 0."""
    config = uvicorn.Config(
        "serving_common.serve:worker_app", factory=True, workers=workers, **server
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        print(f"{service}: a worker failed to start; stopped", file=sys.stderr, flush=True)
        sys.exit(1)


def exit_zero_once_drained() -> None:
    """SIGTERM ends the service with status 0 once uvicorn has drained it.

    NOTE: uvicorn handles SIGTERM itself while it serves, then re-raises it for the handler
    it found installed; Python's default handler would end the process with -15 instead.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


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


def worker_app() -> ASGIApp:
    """App factory run inside each uvicorn worker process (WORKERS > 1)."""
    exit_with_parent(int(os.environ[_SUPERVISOR_ENV]))
    launch = Launch.from_handoff(os.environ[_FETCHED_ENV])
    try:
        return import_from_string(os.environ[_APP_FACTORY_ENV])(launch.load())
    except StartupError as exc:
        # NOTE: uvicorn's supervisor restarts workers that die, except those that exit with
        # STARTUP_FAILURE: it then stops the others, and `serve_workers` exits 1.
        print(f"{launch.strategy.name}: fatal: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
