"""The Ray cluster of docker-compose.cluster.yml, driven from the host: brought up as a
Compose project of its own, its Serve state read from the head's dashboard, a Serve config
deployed into it (`serve deploy`, as an operator would).

Host-side only (the harness's `--mode cluster`, `make up-cluster`, tests/test_ray_cluster.py),
on the workspace's benchmark package; never imported in the image. Only loopback and the
project's private Docker network are used.
"""

import csv
import io
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from benchmark.compose import Stack, build_environment, compose_command
from benchmark.processes import free_port, wait_until_healthy
from benchmark.resources import ResourceSampler
from serving_common.strategy import Strategy

# The Compose file's nodes (its services).
HEAD, WORKERS = "ray-head", ("ray-worker-1", "ray-worker-2")
# Serve's state, from the dashboard's REST API inside the head (it listens on its loopback).
DASHBOARD = "http://127.0.0.1:8265"
SERVE_DETAILS = f"{DASHBOARD}/api/serve/applications/"
NODES = f"{DASHBOARD}/api/v0/nodes?limit=100"
APP, DEPLOYMENT = "ray_serving", "Predictor"
# From `compose up` to the first 200: the model's export job, then Ray on three nodes.
START_SECONDS = 600


@dataclass(frozen=True)
class ClusterFiles:
    """The files strategy.toml's `[scenarios.cluster]` names, relative to the folder."""

    compose: Path  # the cluster's Compose file
    serve_config: Path  # the Serve config the head deploys

    @classmethod
    def of(cls, strategy: Strategy) -> "ClusterFiles":
        table = strategy.scenarios["cluster"]
        return cls(strategy.folder / table["compose"], strategy.folder / table["serve_config"])

    def images(self) -> list[str]:
        """Every image the Compose file runs (built by `make images`, never by it)."""
        services = yaml.safe_load(self.compose.read_text())["services"].values()
        return sorted({service["image"] for service in services})

    def serve_config_with(self, **deployment: Any) -> dict[str, Any]:
        """The shipped Serve config with the Predictor deployment's fields updated; a field
        given as None is removed."""
        config: dict[str, Any] = yaml.safe_load(self.serve_config.read_text())
        predictor = config["applications"][0]["deployments"][0]
        predictor.update(deployment)
        for key in [k for k, v in predictor.items() if v is None]:
            del predictor[key]
        return config

    def fixed_replicas(self, replicas: int) -> dict[str, Any]:
        """The shipped config with exactly `replicas` replicas, no autoscaling."""
        return self.serve_config_with(num_replicas=replicas, autoscaling_config=None)


def docker(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout.strip()


def deployment_of(details: dict[str, Any]) -> dict[str, Any]:
    return details["applications"][APP]["deployments"][DEPLOYMENT]  # type: ignore[no-any-return]


def running(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The deployment's RUNNING replicas (not those starting or stopping)."""
    return [r for r in deployment_of(details)["replicas"] if r["state"] == "RUNNING"]


def settled_at(replicas: int) -> Callable[[dict[str, Any]], bool]:
    """Exactly `replicas` replicas, all RUNNING (none starting or stopping)."""

    def settled(details: dict[str, Any]) -> bool:
        every = deployment_of(details)["replicas"]
        return len(every) == replicas and len(running(details)) == replicas

    return settled


@dataclass
class RayCluster:
    stack: Stack
    url: str  # the ingress, on loopback
    files: ClusterFiles

    def container(self, service: str) -> str:
        return self.stack.container_id(service)

    def dashboard(self, url: str) -> Any:
        """A GET of Ray's dashboard, from inside the head, as JSON."""
        read = f"import urllib.request as u; print(u.urlopen('{url}').read().decode())"
        return json.loads(self.stack.check("exec", "-T", HEAD, "python3", "-c", read, timeout=60))

    def serve_details(self) -> dict[str, Any]:
        return self.dashboard(SERVE_DETAILS)  # type: ignore[no-any-return]

    def alive_nodes(self) -> list[str]:
        """The node names Ray counts ALIVE (a killed node stays in its list, DEAD)."""
        nodes = self.dashboard(NODES)["data"]["result"]["result"]
        return sorted(n["node_name"] for n in nodes if n["state"] == "ALIVE")

    def wait_for(
        self, condition: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Serve's state once `condition` holds, polled every second."""
        deadline = time.monotonic() + timeout
        details: dict[str, Any] | None = None
        while True:
            try:
                details = self.serve_details()
                if condition(details):
                    return details
            except (RuntimeError, KeyError, ValueError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s ({details})")
            time.sleep(1)

    def deploy(self, config: dict[str, Any], settled: Callable[[dict[str, Any]], bool]) -> None:
        """`serve deploy` of `config` in the head, then wait until `settled` holds."""
        path = "/tmp/serve-deployed.yaml"
        deploy = f"cat > {path} && serve deploy --address {DASHBOARD} {path}"
        subprocess.run(
            [*compose_command(), "-p", self.stack.project, "exec", "-T", HEAD, "sh", "-c", deploy],
            input=yaml.safe_dump(config),
            env=self.stack.env,
            cwd=self.files.compose.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.wait_for(settled, 300, "the deployed Serve config settled")

    def spread(self, replicas: int) -> None:
        """Exactly `replicas` replicas (no autoscaling), as evenly over the workers as Serve
        places them: once every node is ALIVE, one replica, then the rest, which Serve's
        spread scheduling puts on the emptiest workers. (A worker that joined late, or a
        scale-down, which stops replicas to empty a node, can leave them all on one.)"""
        self.wait_for_nodes(180)
        self.deploy(self.files.fixed_replicas(1), settled_at(1))
        self.deploy(self.files.fixed_replicas(replicas), settled_at(replicas))

    def wait_for_nodes(self, timeout: float) -> None:
        """Until Ray counts the head and every worker ALIVE."""
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != sorted([HEAD, *WORKERS]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every node ALIVE within {timeout} s")
            time.sleep(1)

    def ingress_servers(self) -> dict[str, str]:
        """HAProxy's servers for the application (its Python fallback proxy included), by
        address without the port -> state (UP, DOWN, MAINT, ...): ray_serving.haproxy_stat,
        run in the head."""
        stat = docker("exec", self.container(HEAD), "python3", "-m", "ray_serving.haproxy_stat")
        rows = csv.DictReader(io.StringIO(stat.removeprefix("# ")))
        return {
            row["addr"].rsplit(":", 1)[0]: row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND") and row.get("addr")
        }

    def ip(self, service: str) -> str:
        """The node's address on the private network."""
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return docker("inspect", "-f", template, self.container(service))

    def worker_ips(self) -> dict[str, str]:
        """Each worker node's address on the private network -> its service."""
        return {self.ip(w): w for w in WORKERS}

    def node_state(self, service: str) -> str:
        """Its restart count and start time: both unchanged if nothing restarted it."""
        template = "{{.RestartCount}} {{.State.StartedAt}}"
        return docker("inspect", "-f", template, self.container(service))

    def sampler(self) -> ResourceSampler:
        """CPU and memory of every node's processes together (Linux: the containers'
        processes are this machine's)."""
        nodes = (HEAD, *WORKERS)
        pids = [int(docker("inspect", "-f", "{{.State.Pid}}", self.container(n))) for n in nodes]
        return ResourceSampler(*pids)


def cluster_stack(project: str, env: dict[str, str], files: ClusterFiles, port: int) -> Stack:
    """The Compose project of the cluster, its ingress on loopback `port`. `env`: the
    Compose file's variables (CPU sets, failure detection, ...)."""
    variables = {"COMPOSE_FILE": str(files.compose), "RAY_CLUSTER_PORT": str(port)}
    return Stack(project, {**build_environment(), **env, **variables})


def start_cluster(stack: Stack, files: ClusterFiles) -> RayCluster:
    """`compose up` (images already built), until the ingress answers."""
    missing = [
        image
        for image in files.images()
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    if missing:
        raise RuntimeError(f"{missing} not built: `make images` builds them")
    stack.check("up", "-d", "--no-build", timeout=START_SECONDS)
    cluster = RayCluster(stack, f"http://127.0.0.1:{stack.env['RAY_CLUSTER_PORT']}", files)
    wait_until_healthy(cluster.url, timeout=START_SECONDS)
    return cluster


@contextmanager
def ray_cluster(project: str, env: dict[str, str], files: ClusterFiles) -> Iterator[RayCluster]:
    """A throwaway cluster up on a free port, its ingress answering; down on the way out."""
    stack = cluster_stack(project, env, files, free_port())
    stack.down()  # what an interrupted run left
    try:
        yield start_cluster(stack, files)
    finally:
        # Killed, not drained: a throwaway cluster, and each Ray node's own drain on SIGTERM
        # makes `compose down` take about a minute (the workers', then the head's).
        stack.run("kill")
        stack.down()
