"""The launcher's parts in-process, without Ray: which HAProxy log lines are predictions
dropped before a replica saw them, the one line a replica's startup failure becomes, the
environment Ray starts with, the process-tree walk that stops what is left, the header
naming the replica that answered, and a cluster head's `ray start`."""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from ray_serving.aborts import dropped_prediction
from ray_serving.cluster import head_command
from ray_serving.ingress import (
    HAPROXY_ENV,
    PORT_RANGE_FILE,
    haproxy_log_socket,
    ray_environment,
)
from ray_serving.launcher import replica_problem
from ray_serving.processes import descendants, stop_descendants
from ray_serving.routes import SERVED_BY_HEADER, ServedBy

# HAProxy's HTTP log lines (`option httplog`), as sent to syslog.
PREFIX = "<134>Nov 30 10:30:00 haproxy[1234]: 127.0.0.1:40000 [30/Nov/2026:10:30:00.123] "
DROPPED = PREFIX + (
    "http_frontend ray_serving/<NOSRV> 0/-1/-1/-1/1 -1 0 - - CC-- 1/1/0/0/0 0/0 "
    '"POST /predict/?probabilities=true HTTP/1.1"'
)
REACHED = PREFIX + (
    "http_frontend ray_serving/replica_1 0/0/0/-1/40 -1 0 - - CD-- 1/1/0/0/0 0/0 "
    '"POST /predict/ HTTP/1.1"'
)
SERVED = PREFIX + (
    "http_frontend ray_serving/replica_1 0/0/0/12/12 200 190 - - ---- 1/1/0/0/0 0/0 "
    '"POST /predict HTTP/1.1"'
)
HEALTH = PREFIX + (
    'http_frontend ray_serving/<NOSRV> 0/-1/-1/-1/0 -1 0 - - CC-- 1/1/0/0/0 0/0 "GET / HTTP/1.1"'
)


def test_only_predictions_dropped_before_a_replica_count():
    assert dropped_prediction(DROPPED)
    assert not dropped_prediction(REACHED)  # the replica saw it and counted it
    assert not dropped_prediction(SERVED)
    assert not dropped_prediction(HEALTH)
    assert not dropped_prediction("<133>Nov 30 haproxy[1]: Server ray_serving/replica_1 is UP")


def test_a_replica_startup_failure_is_its_own_line():
    traceback = (
        "Deploying application ray_serving failed: Traceback (most recent call last):\n"
        '  File "app.py", line 1, in __init__\n'
        "ray_serving.app.ReplicaStartupError: gs://m/model.onnx: no such object\n"
    )
    assert replica_problem(RuntimeError(traceback)) == "gs://m/model.onnx: no such object"
    assert replica_problem(RuntimeError("timed out")) == "Serve did not start: timed out"
    # An actor's error: its call, its traceback, then what was raised.
    actor = (
        "ray::HAProxyManager.ready() (pid=1, ip=192.0.2.2)\n"
        '  File "haproxy.py", line 1869, in ready\n'
        "RuntimeError: HAProxy crashed during startup: cannot bind socket\n"
    )
    assert replica_problem(RuntimeError(actor)) == (
        "Serve did not start: ray::HAProxyManager.ready() (pid=1, ip=192.0.2.2) "
        "RuntimeError: HAProxy crashed during startup: cannot bind socket"
    )


def test_each_launch_gets_its_own_haproxy_files_and_ports(tmp_path):
    one, two = ray_environment(tmp_path / "one"), ray_environment(tmp_path / "two")
    for name in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"):
        assert one[name].startswith(str(tmp_path / "one"))
    assert one["RAY_SERVE_HAPROXY_LOG_TARGET"] == str(haproxy_log_socket(tmp_path / "one"))
    for port in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"):
        assert one[port] != two[port]
    assert one[HAPROXY_ENV] == ("1" if sys.platform == "linux" else "0")


def test_haproxys_admin_socket_path_fits_a_unix_socket():
    """Serve puts it under <dir>/<node id: 56 characters>/; a socket path has at most 107
    bytes. The launch folder is where __main__.py makes it."""
    work = tempfile.mkdtemp(prefix="ray_serving-")
    try:
        socket_dir = os.path.dirname(ray_environment(Path(work))["RAY_SERVE_HAPROXY_SOCKET_PATH"])
        assert len(os.path.join(socket_dir, "n" * 56, "admin.sock")) <= 107
    finally:
        os.rmdir(work)


def test_what_is_left_of_a_tree_is_stopped():
    """A child and its child: both found under the child's parent; the grandchild stopped
    with the child's tree."""
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not descendants(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (grandchild,) = descendants(child.pid)
        assert {child.pid, grandchild} <= set(descendants())
        assert stop_descendants(child.pid, grace_seconds=5) == [grandchild]
        assert descendants(child.pid) == []
    finally:
        child.kill()
        child.wait()


def test_every_response_names_the_replica_and_its_node():
    async def refuse(scope, receive, send):
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=ServedBy(refuse, "a1b2c3@ray-worker-1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/info")

    response = asyncio.run(get())
    assert response.status_code == 503 and response.json() == {}
    assert response.headers[SERVED_BY_HEADER] == "a1b2c3@ray-worker-1"
    assert response.headers["content-type"] == "application/json"


def test_a_cluster_head_offers_no_cpu_and_blocks():
    """Replicas go to the workers only; `ray start` stays in the foreground, watching its
    processes (its exit is the head's)."""
    command = head_command(6379)
    assert command[:3] == ["ray", "start", "--head"]
    assert {"--port=6379", "--num-cpus=0", "--block"} <= set(command)


def test_haproxys_ports_are_outside_the_kernels_ephemeral_range(tmp_path):
    """HAProxy binds them only once Ray has started: a port the kernel may hand to any new
    socket in between (Ray's own, a client's) would make its start fail now and then."""
    start = int(PORT_RANGE_FILE.read_text().split()[0]) if PORT_RANGE_FILE.exists() else 32768
    names = ("STATS_PORT", "METRICS_PORT")
    environment = ray_environment(tmp_path)
    ports = [int(environment[f"RAY_SERVE_HAPROXY_{name}"]) for name in names]
    ports.append(int(environment["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"]))
    assert all(10_000 <= port < start for port in ports), ports
    with socket.socket() as taken:  # and free when picked
        taken.bind(("", ports[0]))
