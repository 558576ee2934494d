"""The Ray cluster of docker-compose.ray.yml, driven from outside: brought up as a Compose
project of its own, its Serve state read from the head's dashboard, a Serve config deployed
into it (`serve deploy`, as an operator would), and a worker node killed under load.

Used by the harness (`--mode cluster`) and by tests/test_ray_cluster.py, so both drive the
cluster alike. Only loopback and the project's private Docker network are used.
"""

import asyncio
import csv
import io
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmark.compose import Stack, build_environment, compose_command
from benchmark.processes import free_port, wait_until_healthy
from benchmark.resources import ResourceSampler

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_FILE = "docker-compose.ray.yml"
SERVE_CONFIG = ROOT / "ray_serving" / "serve-cluster.yaml"
IMAGES = ("model-serving/ray_serving", "model-serving/gcs", "model-serving/exporter")
HEAD, WORKERS = "ray-head", ("ray-worker-1", "ray-worker-2")
# Serve's state, from the dashboard's REST API inside the head (it listens on its loopback).
DASHBOARD = "http://127.0.0.1:8265"
SERVE_DETAILS = f"{DASHBOARD}/api/serve/applications/"
NODES = f"{DASHBOARD}/api/v0/nodes?limit=100"
APP, DEPLOYMENT = "ray_serving", "Predictor"
# HAProxy's view of the replicas, from its runtime API on the head (`show stat`: one CSV row
# per server, with its address and UP/DOWN state). Serve puts the admin socket in a folder
# per node.
HAPROXY_STAT = (
    "import glob, socket\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.connect(glob.glob('/tmp/haproxy-serve/*/admin.sock')[0])\n"
    "s.sendall(b'show stat\\n')\n"
    "out = b''\n"
    "while chunk := s.recv(65536): out += chunk\n"
    "print(out.decode())\n"
)
# From `compose up` to the first 200: the model's export job, then Ray on three nodes.
START_SECONDS = 600
# The longest a request may take: HAProxy answers 500 after its `timeout server` (10 s,
# docker-compose.ray.yml) for a request on a node that vanished, and gives up connecting
# after 2 s a try; a client waiting longer is a hang.
STATED_TIMEOUT_SECONDS = 30


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


def serve_config(**deployment: Any) -> dict[str, Any]:
    """The shipped Serve config (ray_serving/serve-cluster.yaml) with the Predictor
    deployment's fields updated; a field given as None is removed."""
    config: dict[str, Any] = yaml.safe_load(SERVE_CONFIG.read_text())
    predictor = config["applications"][0]["deployments"][0]
    predictor.update(deployment)
    for key in [k for k, v in predictor.items() if v is None]:
        del predictor[key]
    return config


def fixed_replicas(replicas: int) -> dict[str, Any]:
    """The shipped config with exactly `replicas` replicas, no autoscaling."""
    return serve_config(num_replicas=replicas, autoscaling_config=None)


@dataclass
class RayCluster:
    stack: Stack
    url: str  # the ingress, on loopback

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
            cwd=ROOT,
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
        self.deploy(fixed_replicas(1), settled_at(1))
        self.deploy(fixed_replicas(replicas), settled_at(replicas))

    def wait_for_nodes(self, timeout: float) -> None:
        """Until Ray counts the head and every worker ALIVE."""
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != sorted([HEAD, *WORKERS]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every node ALIVE within {timeout} s")
            time.sleep(1)

    def ingress_servers(self) -> dict[str, str]:
        """HAProxy's servers for the application (its Python fallback proxy included), by
        address without the port -> state (UP, DOWN, MAINT, ...)."""
        stat = docker("exec", self.container(HEAD), "python3", "-c", HAPROXY_STAT)
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


@dataclass
class ClusterIngress:
    """The cluster's one published port, measured like a service (benchmark.measure): its
    CPU and memory are every node's."""

    name: str
    url: str
    cluster: RayCluster

    def sampler(self) -> ResourceSampler:
        return self.cluster.sampler()


@contextmanager
def ray_cluster(project: str, env: dict[str, str]) -> Iterator[RayCluster]:
    """The cluster up (images already built), its ingress answering; down on the way out.
    `env`: docker-compose.ray.yml's variables (CPU sets, failure detection, ...)."""
    missing = [
        image
        for image in IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    if missing:
        raise RuntimeError(f"{missing} not built: `make images` builds them")
    port = free_port()
    env = {**build_environment(), **env, "COMPOSE_FILE": CLUSTER_FILE}
    stack = Stack(project, {**env, "RAY_CLUSTER_PORT": str(port)})
    stack.down()  # what an interrupted run left
    try:
        stack.check("up", "-d", "--no-build", timeout=START_SECONDS)
        cluster = RayCluster(stack, f"http://127.0.0.1:{port}")
        wait_until_healthy(cluster.url, timeout=START_SECONDS)
        yield cluster
    finally:
        # Killed, not drained: a throwaway cluster, and each Ray node's own drain on SIGTERM
        # makes `compose down` take about a minute (the workers', then the head's).
        stack.run("kill")
        stack.down()


@dataclass
class Outcome:
    sent: float  # seconds from the start of the load
    seconds: float  # until its answer, or its failure
    status: int  # 0: no HTTP answer
    error: str = ""
    served_by: str = ""  # the node that answered (X-Served-By), if a replica did


async def predict(
    client: httpx.AsyncClient, url: str, body: bytes, content_type: str, started: float
) -> Outcome:
    sent = time.monotonic()
    try:
        response = await client.post(
            url + "/predict/", content=body, headers={"Content-Type": content_type}
        )
    except httpx.TimeoutException as exc:
        return Outcome(sent - started, time.monotonic() - sent, 0, f"timeout ({exc!r})")
    except httpx.TransportError as exc:
        return Outcome(sent - started, time.monotonic() - sent, 0, repr(exc))
    error = "" if response.status_code == 200 else response.text[:80]
    served_by = response.headers.get("x-served-by", "").rpartition("@")[2]
    return Outcome(sent - started, time.monotonic() - sent, response.status_code, error, served_by)


async def open_loop(
    url: str,
    body: bytes,
    content_type: str,
    rate: float,
    seconds: float,
    event_at: float,
    event: Callable[[], None],
) -> tuple[list[Outcome], float]:
    """`rate` predictions a second for `seconds`, each sent on schedule whatever happens to
    the others; `event` runs (in a thread) `event_at` s in. The outcomes, and when the
    event started."""
    limits = httpx.Limits(max_connections=1000)
    async with httpx.AsyncClient(timeout=STATED_TIMEOUT_SECONDS, limits=limits) as client:
        started = time.monotonic()

        async def scheduled(at: float) -> Outcome:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            return await predict(client, url, body, content_type, started)

        requests = [asyncio.create_task(scheduled(i / rate)) for i in range(int(rate * seconds))]
        await asyncio.sleep(event_at)
        event_started = time.monotonic() - started
        await asyncio.to_thread(event)
        return list(await asyncio.gather(*requests)), event_started


def lose_a_worker(
    cluster: RayCluster,
    replicas: int,
    body: bytes,
    content_type: str,
    rate: float,
    seconds: float = 45,
    kill_at: float = 10,
) -> dict[str, Any]:
    """`rate` predictions a second for `seconds`, the replicas on both workers; `kill_at` s
    in, `docker kill` (SIGKILL: no goodbye to anyone) on the second worker's container,
    which stays dead until the load ends and is then started again. What it cost: the
    failed requests, when the last one ended (the error window, from the kill), the longest
    request, how soon Serve had `replicas` running again on the survivor, what else
    restarted (nothing should), and how soon the killed worker rejoined."""
    workers = cluster.worker_ips()
    (victim_ip,) = [ip for ip, worker in workers.items() if worker == WORKERS[1]]
    # Losing a node that holds every replica is an outage, not what this measures; nor
    # is a scale-down under way, which may leave them on one.
    details = cluster.serve_details()
    placement = [workers.get(r["node_ip"]) for r in running(details)]
    if set(placement) != set(WORKERS) or not settled_at(replicas)(details):
        raise RuntimeError(f"not {replicas} settled replicas on both workers: {placement}")
    others = [HEAD, WORKERS[0], "gcs"]
    before = {service: cluster.node_state(service) for service in others}
    victim = cluster.container(WORKERS[1])
    replaced_after: list[float] = []
    killed_at_clock: list[float] = []
    # What HAProxy made of it: its servers' states, sampled every second, at each change.
    node_of = {**workers, cluster.ip(HEAD): "fallback proxy"}
    ingress: list[tuple[float, dict[str, str]]] = []
    load_over = threading.Event()

    def watch_the_ingress() -> None:
        while not load_over.is_set():
            try:
                servers = cluster.ingress_servers()
                states = {node_of.get(ip, ip): state for ip, state in sorted(servers.items())}
            except (subprocess.SubprocessError, ValueError, KeyError) as exc:
                states = {"unreadable": type(exc).__name__}
            if not ingress or ingress[-1][1] != states:
                ingress.append((time.monotonic(), states))
            load_over.wait(1)

    def kill_and_wait_for_a_replacement() -> None:
        killed = time.monotonic()
        killed_at_clock.append(killed)
        docker("kill", victim)

        def replaced(details: dict[str, Any]) -> bool:
            now = running(details)
            return len(now) == replicas and all(r["node_ip"] != victim_ip for r in now)

        cluster.wait_for(replaced, 60, "the lost replicas replaced on the surviving worker")
        replaced_after.append(time.monotonic() - killed)

    # Docker would restart it (restart: unless-stopped): it stays dead for the load.
    docker("update", "--restart=no", victim)
    watcher = threading.Thread(target=watch_the_ingress, daemon=True)
    watcher.start()
    try:
        outcomes, killed_at = asyncio.run(
            open_loop(
                cluster.url, body, content_type, rate, seconds, kill_at,
                kill_and_wait_for_a_replacement,
            )
        )  # fmt: skip
    finally:
        load_over.set()
        watcher.join(30)
        docker("update", "--restart=unless-stopped", victim)
        docker("start", victim)
    restarted = [s for s in others if cluster.node_state(s) != before[s]]
    rejoin_started = time.monotonic()
    cluster.wait_for_nodes(180)
    failed = [o for o in outcomes if o.status != 200]
    served = [o for o in outcomes if o.status == 200]
    statuses: dict[str, int] = {}
    for o in failed:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    return {
        "replicas": replicas,
        "offered_rps": rate,
        "seconds": seconds,
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_by_status": statuses,
        "errors": sorted({o.error[:60] for o in failed}),
        "failed_sent_s": [round(o.sent - killed_at, 2) for o in failed],
        "failed_seconds": [round(o.seconds, 2) for o in failed],
        # Which node answered, before the kill and after it.
        "served_before": dict(Counter(o.served_by for o in served if o.sent < killed_at)),
        "served_after": dict(Counter(o.served_by for o in served if o.sent >= killed_at)),
        # HAProxy's servers (by node) over the load, seconds from the kill.
        "ingress_states": [(round(at - killed_at_clock[0], 1), states) for at, states in ingress],
        # From the kill until the last failed request ended: every later one answered 200.
        "error_window_s": max([o.sent + o.seconds - killed_at for o in failed] + [0.0]),
        "longest_request_s": max(o.seconds for o in outcomes),
        "p99_request_s": sorted(o.seconds for o in outcomes)[int(0.99 * (len(outcomes) - 1))],
        "hung": sum(o.error.startswith("timeout") for o in outcomes),
        "ok_in_last_10_s": all(o.status == 200 for o in outcomes if o.sent > seconds - 10),
        "replaced_after_s": replaced_after[0],
        "restarted": restarted,
        "rejoined_after_s": time.monotonic() - rejoin_started,
    }
