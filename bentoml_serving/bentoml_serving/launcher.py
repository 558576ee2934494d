"""Startup in the main process: settings and the model download, each problem one line and
exit 1 (startup.py); then BentoML's server, whose supervisor runs in this process, until
SIGTERM has drained it (exit 0) or a worker could not start (one line, exit 1).

The processes, as BentoML lays them out for one service:
- this one: BentoML's supervisor (a circus arbiter) holding the listening socket; SIGTERM
  makes it stop its workers with SIGTERM and wait for them;
- WORKERS worker processes (`python -m _bentoml_impl.worker.service`, spawned by circus),
  each a uvicorn server on the shared socket running BentoML's app with the contract's
  front (front.py) and its own ONNX Runtime session (service.py); on SIGTERM each stops
  accepting and finishes its requests, up to DRAIN_SECONDS.

BentoML is imported only once the checks have passed, so a fatal line costs no framework
import (seconds without bytecode caches).
"""

import logging
import os
from pathlib import Path

from serving_common.serve import DRAIN_SECONDS
from serving_common.startup import fatal, prepare

from bentoml_serving.worker import FAILURE_FILE, LAUNCH_ENV, SCRATCH_ENV, SUPERVISOR_ENV

log = logging.getLogger(__name__)


def serve(folder: Path, scratch: Path) -> None:
    """Entry point: `folder` holds strategy.toml, `scratch` is this start's own folder.
    Returns once BentoML has drained after SIGTERM."""
    launch = prepare(folder)
    settings, name = launch.settings, launch.strategy.name
    if settings.max_batch_size > 1:
        log.warning(
            "BATCH_WAIT_MS (%g) is not used: BentoML's dispatcher has no wait window",
            settings.batch_wait_ms,
        )
    failure = scratch / FAILURE_FILE
    os.environ |= {
        LAUNCH_ENV: launch.handoff(),
        SUPERVISOR_ENV: str(os.getpid()),
        SCRATCH_ENV: str(scratch),
    }

    from _bentoml_impl.server import serve_http

    from bentoml_serving.service import SERVICE

    # Circus logs every process it starts and stops at INFO.
    logging.getLogger("circus").setLevel(logging.WARNING)
    SERVICE.inject_config()  # as `bentoml serve` does before serve_http
    try:
        # NOTE: private: the function `bentoml serve` and `bentoml.serve()` call; only
        # it (and the CLI) takes timeout_graceful_shutdown, the drain's bound, which
        # `bentoml.serve()` does not pass on. Blocks until the supervisor has stopped.
        serve_http(
            SERVICE,
            host="0.0.0.0",
            port=settings.port,
            timeout_graceful_shutdown=DRAIN_SECONDS,
        )
    except OSError as exc:  # the listening socket, bound by the supervisor
        fatal(name, f"PORT {settings.port}: {exc.strerror or exc}")
    except RuntimeError as exc:  # circus: every worker of the service has exited
        if not failure.exists():
            fatal(name, f"BentoML stopped: {exc}")
    if failure.exists():
        fatal(name, failure.read_text().strip())
