"""LitServe's processes for a checked launch, and their shutdown.

The processes, as `LitServer.run` lays them out:
- the main process (this one): LitServe's supervisor; it waits, and on SIGTERM drains the
  API servers and stops the rest;
- a multiprocessing manager process holding LitServe's queues: one for requests, one per
  API server for answers;
- WORKERS API server processes (uvicorn, forked): HTTP, the contract's front (front.py),
  the request body (request.py); each puts a request on the queue and awaits its answer;
- WORKERS inference worker processes (spawned), each with its own ONNX Runtime session
  (api.py): they take requests off the queue, one at a time or up to MAX_BATCH_SIZE within
  BATCH_WAIT_MS, and put finished HTTP answers on the API server's answer queue.
"""

import multiprocessing
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import litserve as ls
from serving_common.app import install_error_handlers
from serving_common.metrics import Metrics
from serving_common.serve import exit_with_parent
from serving_common.startup import Launch, fatal

from litserve_serving.api import OnnxPredictorAPI
from litserve_serving.front import contract_front

# LitServe's own health and info routes, moved (its options) off the contract's /info; its
# GET / cannot be moved, and the front answers / before it.
LITSERVE_HEALTH_PATH = "/litserve/health"
LITSERVE_INFO_PATH = "/litserve/info"
# How LitServe names its API server processes ("LitServer-0", ...).
API_SERVER_NAME = "LitServer-"


def run_litserve(launch: Launch, health: dict[str, Any], info: dict[str, Any]) -> None:
    """Serve until SIGTERM has drained every API server; exit 1 with one line if an
    inference worker fails to start."""
    settings = launch.settings
    supervisor = os.getpid()
    api = OnnxPredictorAPI(
        launch.handoff(), supervisor, settings.max_batch_size, settings.batch_wait_ms
    )
    # Made after PROMETHEUS_MULTIPROC_DIR (__main__.py): each forked API server writes its
    # own file, and every scrape sums all processes.
    metrics = Metrics()
    front = {"health": health, "info": info, "settings": settings, "metrics": metrics}
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=settings.workers,
        # No 504: admission bounds the queue, and a queued request is always answered.
        timeout=False,
        healthcheck_path=LITSERVE_HEALTH_PATH,
        info_path=LITSERVE_INFO_PATH,
        disable_openapi_url=True,
        middlewares=[(contract_front, front)],
    )
    server.app.state.settings = settings  # read by request.read_predict_request
    install_error_handlers(server.app)
    drain_on_sigterm(server, supervisor)
    end_with_supervisor(supervisor)
    try:
        server.run(
            port=settings.port,
            log_level=settings.log_level,
            generate_client_file=False,
            access_log=False,
        )
    except RuntimeError as exc:  # LitServe's "One or more workers failed to start"
        stop_children()
        fatal(launch.strategy.name, exc)


def drain_on_sigterm(server: ls.LitServer, supervisor: int) -> None:
    """SIGTERM drains: every API server stops accepting and finishes its in-flight requests
    (up to 30 s), then LitServe stops the workers and the queues; exit 0.

    NOTE: LitServe installs no SIGTERM handler: its main process would die at once and
    leave every other process running. Its graceful shutdown is the one its shutdown API
    starts, setting `LitServer._shutdown_event` (private) that its main thread waits on;
    set here from a thread, as the handler may interrupt the main thread inside a call to
    the same manager. (Raising KeyboardInterrupt, Ctrl+C's path, is not safe: while
    LitServe is still starting its API servers it loses track of them, and the process
    never exits.) That shutdown drains the API servers one after the other, the next still
    accepting connections, up to 30 s each; so they are all sent SIGTERM first, as uvicorn's
    own supervisor does. Forked API servers inherit this handler: uvicorn re-raises SIGTERM
    to it once it has drained, and there it only ends the process.
    """

    def shut_down() -> None:
        for child in multiprocessing.active_children():
            if child.name.startswith(API_SERVER_NAME):
                child.terminate()  # uvicorn: stop accepting, drain, exit
        # The event exists once LitServe has started its manager; until then, wait.
        while (event := server._shutdown_event) is None:
            time.sleep(0.05)
        event.set()

    def on_sigterm(_: int, __: FrameType | None) -> None:
        if os.getpid() != supervisor:
            sys.exit(0)
        threading.Thread(target=shut_down, name="sigterm", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def end_with_supervisor(supervisor: int) -> None:
    """Every process LitServe forks from here (its manager, the API servers) ends when this
    one does, even killed with SIGKILL: no orphan keeps the port or the memory. The
    inference workers, spawned rather than forked, arm the same in their setup()."""

    def arm() -> None:
        if os.getppid() == supervisor:  # a child, not a child's child
            exit_with_parent(supervisor)

    os.register_at_fork(after_in_child=arm)


def stop_children() -> None:
    """Stop LitServe's processes (the manager, the workers) when it did not get to."""
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(timeout=5)
