"""What the launcher hands BentoML's worker processes, and what each worker process holds
once: its launch, its metrics, the wait for its siblings, and the one way it reports a
startup failure.

BentoML starts its workers itself (circus runs `python -m _bentoml_impl.worker.service`,
which imports service.py), so the launcher passes everything through the environment the
workers inherit.
"""

import functools
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

import psutil
from serving_common.metrics import Metrics
from serving_common.startup import Launch, StartupError

# The launch the main process prepared (startup.py's handoff), its pid, and this start's
# folder: the file a worker that cannot start writes its one line to, and the folder where
# each worker marks itself loaded.
LAUNCH_ENV = "BENTOML_SERVING_LAUNCH"
SUPERVISOR_ENV = "BENTOML_SERVING_SUPERVISOR"
SCRATCH_ENV = "BENTOML_SERVING_SCRATCH"
FAILURE_FILE = "worker-failure"
READY_FOLDER = "ready"
# The exit status of a worker that could not start (uvicorn's STARTUP_FAILURE).
STARTUP_FAILURE = 3
# How long a loaded worker waits for the others to load, and how often it looks.
SIBLINGS_TIMEOUT_SECONDS = 300
SIBLINGS_POLL_SECONDS = 0.02


def handed_launch() -> Launch:
    """The launch prepared by `python -m bentoml_serving`, in any of its processes."""
    try:
        handoff = os.environ[LAUNCH_ENV]
    except KeyError:
        raise StartupError(
            f"{LAUNCH_ENV} is not set: start the service with `python -m bentoml_serving`, "
            "which fetches the model first, not with `bentoml serve`"
        ) from None
    return Launch.from_handoff(handoff)


def supervisor() -> int:
    """The launcher's pid: BentoML's supervisor (circus arbiter) runs in it."""
    return int(os.environ[SUPERVISOR_ENV])


def in_worker() -> bool:
    return os.getpid() != supervisor()


@functools.cache
def process_metrics() -> Metrics:
    """This process's metrics, shared by the front and the predictor.

    NOTE: one instance per process: in multi-process mode (BentoML always sets
    PROMETHEUS_MULTIPROC_DIR for its workers) two instances would each cache the same
    sample's value and overwrite each other's writes."""
    return Metrics()


def scratch() -> Path:
    return Path(os.environ[SCRATCH_ENV])


def wait_for_siblings(workers: int) -> None:
    """Mark this worker loaded, then wait until all WORKERS are, before BentoML starts
    serving in it.

    NOTE: BentoML's workers share one listening socket, and uvicorn closes a connection it
    has accepted but not yet read when its shutdown starts. A worker still loading when the
    service already answers (its first worker does) and SIGTERM comes would start
    accepting only to close what it took: so no worker serves before all can. Ends this
    worker, quietly, if another has failed (the launcher is stopping the service) or exited
    (SIGTERM while starting; circus restarts them all otherwise) or SIGTERM comes; with a
    failure line if the others never load.
    """
    ready = scratch() / READY_FOLDER
    ready.mkdir(exist_ok=True)
    (ready / str(os.getpid())).touch()
    siblings = [p for p in psutil.Process(supervisor()).children() if p.pid != os.getpid()]
    terminated = False
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal terminated
        terminated = True
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    deadline = time.monotonic() + SIBLINGS_TIMEOUT_SECONDS
    try:
        # A worker that circus restarts finds the others' marks already there.
        while len(list(ready.iterdir())) < workers:
            if terminated or (scratch() / FAILURE_FILE).exists() or not all_running(siblings):
                os._exit(0)
            if time.monotonic() > deadline:
                report_startup_failure(
                    f"the {workers} workers did not all load within {SIBLINGS_TIMEOUT_SECONDS} s"
                )
            time.sleep(SIBLINGS_POLL_SECONDS)
    finally:
        signal.signal(signal.SIGTERM, previous)


def all_running(processes: list[psutil.Process]) -> bool:
    try:
        return all(p.status() != psutil.STATUS_ZOMBIE for p in processes)
    except psutil.NoSuchProcess:
        return False


def report_startup_failure(message: str) -> NoReturn:
    """End this worker; the first worker to fail asks the launcher to stop the service
    (SIGTERM: BentoML's own graceful stop), and the launcher prints `message` as its last
    line and exits 1. Nothing is printed here: the service's stderr gets one line."""
    try:
        with (scratch() / FAILURE_FILE).open("x") as failure:
            failure.write(message)
    except FileExistsError:
        os._exit(STARTUP_FAILURE)  # another worker failed first and has told the launcher
    except OSError as exc:
        print(f"worker: cannot report its failure ({exc}): {message}", file=sys.stderr, flush=True)
    os.kill(supervisor(), signal.SIGTERM)
    os._exit(STARTUP_FAILURE)
