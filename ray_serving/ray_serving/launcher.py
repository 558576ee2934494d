"""The service's main process: startup checks, a local Ray cluster of its own, the Serve
application on it, and the way down.

1. Settings, the model download (once, here) and one warm-up load, each problem one line
   and exit 1, before Ray (seconds of startup) is imported.
2. A local Ray cluster whose every process descends from this one (processes.py), Serve's
   ingress on PORT (ingress.py), the application (app.py) with WORKERS replicas that load
   the file downloaded here.
3. SIGTERM: the ingress stops accepting (HAProxy), every accepted request is answered (up to
   30 s), then Serve and Ray stop and nothing of them is left; exit 0.
"""

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from serving_common.metrics import Metrics
from serving_common.protocol import CLIENT_GONE_STATUS
from serving_common.serve import DRAIN_SECONDS
from serving_common.startup import Launch, StartupError, fatal, prepare

from ray_serving import processes
from ray_serving.aborts import HAProxyLog
from ray_serving.ingress import (
    HAPROXY_LOG_ENV,
    haproxy_log_socket,
    set_ray_environment,
    stop_accepting,
    uses_haproxy,
)

log = logging.getLogger("serving")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Ray's object store: its minimum (75 MB) and a little; nothing large goes through it.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
# From the application running to the ingress answering GET /: HAProxy marks a replica up
# after two health checks.
INGRESS_TIMEOUT_SECONDS = 60
# The drain is over once no request has been in flight for this many polls in a row.
QUIET_POLLS = 3
POLL_SECONDS = 0.05


class LaunchError(RuntimeError):
    """Ray or Serve would not start; the message is one line."""


def serve(folder: Path, work: Path) -> None:
    """Entry point: `folder` holds strategy.toml, `work` is this launch's own folder
    (__main__.py). Returns once drained and stopped."""
    stopping = threading.Event()
    catch_stop_signals(stopping)
    launch = prepare(folder)
    name = launch.strategy.name
    # HAProxy or Ray's proxy would fail to bind it only once Ray is up, out of sight.
    if taken := port_in_use(launch.settings.port):
        fatal(name, taken)
    # The replicas load the same file; loading it here first turns a model that fails its
    # warm-up into one line before Ray starts.
    try:
        launch.load()
    except StartupError as exc:
        fatal(name, exc)
    set_ray_environment(work)
    processes.become_subreaper()
    dropped = count_dropped_predictions(work)
    problem: LaunchError | None = None
    try:
        run(launch, work, stopping)
    except LaunchError as exc:
        problem = exc
    finally:
        stop_ray()
        processes.stop_descendants()
        if dropped is not None:
            dropped.close()
    if problem is not None:
        fatal(name, problem)
    log.info("%s stopped", name)


def port_in_use(port: int) -> str | None:
    """The line saying PORT is taken, None if it is free (as the ingress binds it)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            return f"PORT: {port} cannot be listened on ({exc.strerror or exc})"
    return None


def count_dropped_predictions(work: Path) -> HAProxyLog | None:
    """HAProxy's log read here (aborts.py), its dropped predictions counted 499 in the
    replicas' shared metrics; None with Ray's proxy, or a log target set by the user."""
    log_socket = haproxy_log_socket(work)
    if not uses_haproxy() or os.environ.get(HAPROXY_LOG_ENV) != str(log_socket):
        return None
    log_socket.parent.mkdir(exist_ok=True)
    gone = Metrics().requests.labels(str(CLIENT_GONE_STATUS))
    reader = HAProxyLog(log_socket, gone.inc)
    reader.start()
    return reader


def catch_stop_signals(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT only ask for the drain; the main thread does it. (ray.init
    installs a SIGTERM handler of its own that exits at once: this one is put back.)"""

    def on_signal(_: int, __: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run(launch: Launch, work: Path, stopping: threading.Event) -> None:
    settings = launch.settings
    started = time.monotonic()
    start_ray(launch, work)
    catch_stop_signals(stopping)
    if stopping.is_set():
        return
    deploy(launch)
    if wait_for_ingress(settings.port, stopping):
        log.info(
            "%s ready on port %d in %.1f s: %d replica(s) behind %s",
            launch.strategy.name,
            settings.port,
            time.monotonic() - started,
            settings.workers,
            "HAProxy" if uses_haproxy() else "Ray Serve's proxy",
        )
    while not stopping.wait(timeout=1.0):
        pass
    drain(work, Path(os.environ[MULTIPROC_ENV]))


def start_ray(launch: Launch, work: Path) -> None:
    """A new local cluster, its processes children of this one."""
    import ray

    settings = launch.settings
    try:
        # NOTE: Ray's own processes use prometheus_client too, and must not write into the
        # replicas' metrics folder: they inherit this environment, without it (the
        # replicas get it back through their runtime_env, app.py).
        with environment_without(MULTIPROC_ENV):
            ray.init(
                address="local",
                num_cpus=settings.workers * settings.intra_op_threads,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                # Documented in ray.init's docstring: the session (logs, sockets) goes to
                # this launch's folder, removed at exit, instead of /tmp/ray.
                _temp_dir=str(work / "ray"),
            )
    except Exception as exc:
        raise LaunchError(f"Ray did not start: {first_line(exc)}") from None


@contextlib.contextmanager
def environment_without(name: str) -> Iterator[None]:
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def deploy(launch: Launch) -> None:
    """Serve's ingress on PORT, then the application, waiting until its replicas run."""
    from ray import serve

    from ray_serving.app import build_app

    settings, name = launch.settings, launch.strategy.name
    try:
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": "0.0.0.0", "port": settings.port},
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        metrics_dir = os.environ[MULTIPROC_ENV]
        application = build_app({"handoff": launch.handoff(), "metrics_dir": metrics_dir})
        serve.run(application, name=name, route_prefix="/")
    except Exception as exc:
        raise LaunchError(replica_problem(exc)) from None


def replica_problem(exc: BaseException) -> str:
    """The line that names the cause in Serve's deployment failure (a replica's
    ReplicaStartupError, with its traceback in the message), else the first line and, for
    an actor's error (its call, its traceback, then the exception), the last."""
    marker = "ReplicaStartupError: "
    for line in reversed(str(exc).splitlines()):
        if marker in line:
            return line.split(marker, 1)[1].strip()
    first, last = first_line(exc), last_line(exc)
    return f"Serve did not start: {first}" + (f" {last}" if last != first else "")


def last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def wait_for_ingress(port: int, stopping: threading.Event) -> bool:
    """Until GET / answers 200 through the ingress (True) or a stop is asked for."""
    deadline = time.monotonic() + INGRESS_TIMEOUT_SECONDS
    url = f"http://127.0.0.1:{port}/"
    while not stopping.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LaunchError(
                f"the ingress on port {port} did not answer GET / within "
                f"{INGRESS_TIMEOUT_SECONDS} s"
            )
        time.sleep(0.1)
    return False


def drain(work: Path, metrics_dir: Path) -> None:
    """The ingress stops accepting (HAProxy only: Ray's proxy has no such switch, and
    keeps serving new connections meanwhile); then every request in flight is answered,
    for at most DRAIN_SECONDS."""
    deadline = time.monotonic() + DRAIN_SECONDS
    stopped = stop_accepting(work)
    log.info("draining%s", "" if stopped else " (the ingress still accepts connections)")
    quiet = 0
    while quiet < QUIET_POLLS and time.monotonic() < deadline:
        quiet = quiet + 1 if requests_in_flight(metrics_dir) == 0 else 0
        time.sleep(POLL_SECONDS)
    if quiet < QUIET_POLLS:
        log.warning("requests still in flight after %d s; stopping anyway", DRAIN_SECONDS)


def requests_in_flight(metrics_dir: Path) -> float:
    """The replicas' in-flight gauge (app.py), summed from their metrics files."""
    from prometheus_client import CollectorRegistry, multiprocess

    from ray_serving.app import IN_FLIGHT_METRIC

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == IN_FLIGHT_METRIC
        for sample in family.samples
    )


def stop_ray() -> None:
    """Serve (the replicas, already drained; the ingress), then the cluster."""
    if "ray" not in sys.modules:
        return
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        except Exception as exc:
            log.warning("Serve shutdown: %s", first_line(exc))
        ray.shutdown()
