"""`python -m ray_serving.cluster`: the head node of a multi-node Ray cluster
(../docker-compose.cluster.yml), which deploys the Serve application from its config file and
deploys it again whenever the head starts anew.

Worker nodes run nothing of ours but Ray: `ray start --address=<head>:6379 --block`.
On the head, in order:
1. the Serve config (default ../serve-cluster.yaml) is checked (serve_config.py): a bad
   key is one line and exit 1, before Ray starts;
2. `ray start --head --block` as a child: GCS, raylet, dashboard, with no CPUs to offer,
   so that every replica goes to a worker;
3. once the dashboard answers, `serve deploy` of the config: the controller, HAProxy on the
   head, the replicas on the workers (each pulls MODEL_URI as it starts);
4. then it waits. A Ray process that dies makes `ray start --block` exit, and this process
   exits with its status: the container's restart policy starts a new cluster, which
   this deploys again (nothing of Serve survives a head restart: docs/ray-cluster.md,
   "A head restart").
   SIGTERM or SIGINT go to `ray start`, which drains the node and stops it; exit 0.
"""

import argparse
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from serving_common.startup import fatal
from serving_common.strategy import strategy_folder

from ray_serving.serve_config import ServeConfigError, read_serve_config

NAME = "ray_serving.cluster"
FOLDER = strategy_folder(__file__)
DEFAULT_CONFIG = FOLDER / "serve-cluster.yaml"
GCS_PORT = 6379
# Ray's dashboard: `serve deploy` talks to its REST API. Only this container reaches it.
DASHBOARD = "http://127.0.0.1:8265"
# Ray's object store: its minimum (75 MB) and a little; nothing large goes through it.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
# `ray start` on a busy 2-core machine takes 15-30 s before the dashboard answers.
DASHBOARD_TIMEOUT_SECONDS = 180
DEPLOY_ATTEMPTS = 5


class ClusterError(RuntimeError):
    """The head could not start or deploy; the message is one line."""


def head_command(gcs_port: int) -> list[str]:
    return [
        "ray",
        "start",
        "--head",
        f"--port={gcs_port}",
        "--num-cpus=0",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--dashboard-host=127.0.0.1",
        f"--node-name={socket.gethostname()}",
        "--disable-usage-stats",
        "--block",
    ]


def wait_for_dashboard(ray: subprocess.Popen) -> None:
    """Until the head's dashboard says the GCS is healthy."""
    deadline = time.monotonic() + DASHBOARD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if ray.poll() is not None:
            raise ClusterError(f"`ray start --head` exited with {ray.returncode}")
        try:
            with urllib.request.urlopen(f"{DASHBOARD}/api/gcs_healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ClusterError(f"Ray's dashboard did not answer within {DASHBOARD_TIMEOUT_SECONDS} s")


def deploy(config: Path) -> None:
    """`serve deploy` (a REST call to the dashboard, which returns at once; the replicas
    start after), retried while the dashboard's Serve module starts."""
    problem = ""
    for _ in range(DEPLOY_ATTEMPTS):
        result = subprocess.run(
            ["serve", "deploy", str(config), "--address", DASHBOARD],
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            print(f"{NAME}: deployed {config}", file=sys.stderr, flush=True)
            return
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        problem = lines[-1] if lines else f"exit status {result.returncode}"
        time.sleep(2)
    raise ClusterError(f"serve deploy {config}: {problem}")


def run_head(config: Path, gcs_port: int) -> int:
    try:
        read_serve_config(config)
    except ServeConfigError as exc:
        fatal(NAME, exc)
    ray = subprocess.Popen(head_command(gcs_port))
    stopping = False

    def on_signal(_: int, __: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        ray.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        wait_for_dashboard(ray)
        if not stopping:
            deploy(config)
    except ClusterError as exc:
        if not stopping:
            ray.send_signal(signal.SIGTERM)
            ray.wait()
            fatal(NAME, exc)
    status = ray.wait()
    return 0 if stopping else status or 1


def main() -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {NAME}",
        description="The head node of a multi-node Ray cluster, which deploys ray_serving.",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the Serve config")
    parser.add_argument("--gcs-port", type=int, default=GCS_PORT, help="the workers' address")
    args = parser.parse_args()
    sys.exit(run_head(args.config, args.gcs_port))


if __name__ == "__main__":
    main()
