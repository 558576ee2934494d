"""ray_serving on a multi-node Ray cluster, for real (docker-compose.ray.yml): a head and two
worker nodes, each its own container with its own CPU share, serving the contract through
the head's one published port. Requests are answered by replicas on both workers and none
on the head; a worker killed under steady load costs a counted number of requests and a
few seconds, no request waits past the stated timeout, and nothing else restarts; a load
step scales the replicas up, and they scale down once it stops.

The cluster runs as a Compose project of its own, with faster failure detection
(RAY_HEALTH_CHECK_*) and the shipped Serve config redeployed with shorter autoscaling
delays (`serve deploy` in the head, as an operator would). Only loopback and the project's
private Docker network are used. Skipped, with the reason, when no Docker daemon answers.
Each test prints what it measured (`pytest -s` shows it). What a head restart loses is
documented (README, "A Ray cluster"), not tested.
"""

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from benchmark.compose import Stack, build_environment, compose_command, docker_unavailable
from benchmark.processes import free_port, wait_until_healthy
from benchmark.runner import expected_prediction

from conftest import ROOT

UNAVAILABLE = docker_unavailable()
# Opt-in until these have run against a real cluster once: they were written without a
# machine to run them on (RUN_RAY_CLUSTER_TESTS=1 runs them).
OPT_IN = "RUN_RAY_CLUSTER_TESTS"
pytestmark = [
    pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE)),
    pytest.mark.skipif(
        os.environ.get(OPT_IN) != "1",
        reason=f"not yet run against a real cluster; {OPT_IN}=1 runs these",
    ),
]

PROJECT = "model-serving-ray-test"
IMAGES = ["model-serving/ray_serving", "model-serving/gcs", "model-serving/exporter"]
HEAD, WORKERS = "ray-head", ("ray-worker-1", "ray-worker-2")
COFFEE = ROOT / "images" / "coffee.jpg"
JPEG = {"Content-Type": "image/jpeg"}
# Serve's state, from the dashboard's REST API inside the head (it listens on its loopback).
DASHBOARD = "http://127.0.0.1:8265"
SERVE_DETAILS = f"{DASHBOARD}/api/serve/applications/"
APP, DEPLOYMENT = "ray_serving", "Predictor"
# The GCS declares a silent node dead after 3 missed health checks, 1 s apart, each given
# 2 s (Ray's defaults: 5, 3 s, 10 s); replicas report their load every 0.5 s.
FAST_DETECTION = {
    "RAY_HEALTH_CHECK_PERIOD_MS": "1000",
    "RAY_HEALTH_CHECK_TIMEOUT_MS": "2000",
    "RAY_HEALTH_CHECK_FAILURES": "3",
    "RAY_METRIC_PUSH_S": "0.5",
}
# ray_serving/serve-cluster.yaml's autoscaling, with shorter delays.
TEST_AUTOSCALING = {"upscale_delay_s": 2, "downscale_delay_s": 5, "look_back_period_s": 2}
MIN_REPLICAS, MAX_REPLICAS = 2, 4
# The longest a request may take: HAProxy answers 500 after its `timeout server` (10 s,
# docker-compose.ray.yml) for a request on a node that vanished, and gives up connecting
# after 2 s a try (4 tries); a client waiting longer is a hang.
STATED_TIMEOUT_SECONDS = 30
# From `compose up` to the first 200: the model's export job, then Ray on three nodes.
START_SECONDS = 600


def docker(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout.strip()


def deployment_of(details: dict[str, Any]) -> dict[str, Any]:
    return details["applications"][APP]["deployments"][DEPLOYMENT]  # type: ignore[no-any-return]


def running(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The deployment's RUNNING replicas (not those starting or stopping)."""
    return [r for r in deployment_of(details)["replicas"] if r["state"] == "RUNNING"]


@dataclass
class Cluster:
    stack: Stack
    url: str

    def container(self, service: str) -> str:
        return self.stack.container_id(service)

    def serve_details(self) -> dict[str, Any]:
        read = f"import urllib.request as u; print(u.urlopen('{SERVE_DETAILS}').read().decode())"
        out = self.stack.check("exec", "-T", HEAD, "python3", "-c", read, timeout=60)
        return json.loads(out)  # type: ignore[no-any-return]

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
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s ({details})"
            time.sleep(1)

    def worker_ips(self) -> dict[str, str]:
        """Each worker node's address on the private network -> its service."""
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return {docker("inspect", "-f", template, self.container(w)): w for w in WORKERS}

    def node_state(self, service: str) -> str:
        """Its restart count and start time: both unchanged if nothing restarted it."""
        template = "{{.RestartCount}} {{.State.StartedAt}}"
        return docker("inspect", "-f", template, self.container(service))


def deploy_test_config(cluster: Cluster) -> None:
    """The shipped Serve config with TEST_AUTOSCALING, deployed by `serve deploy` in the
    head: an in-place update (no replica restarts)."""
    config = yaml.safe_load((ROOT / "ray_serving" / "serve-cluster.yaml").read_text())
    config["applications"][0]["deployments"][0]["autoscaling_config"].update(TEST_AUTOSCALING)
    path = "/tmp/serve-test.yaml"
    deploy = f"cat > {path} && serve deploy --address {DASHBOARD} {path}"
    subprocess.run(
        [*compose_command(), "-p", PROJECT, "exec", "-T", HEAD, "sh", "-c", deploy],
        input=yaml.safe_dump(config),
        env=cluster.stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    def deployed(details: dict[str, Any]) -> bool:
        autoscaling = deployment_of(details)["deployment_config"]["autoscaling_config"]
        delays_set = all(autoscaling[k] == v for k, v in TEST_AUTOSCALING.items())
        return delays_set and len(running(details)) == MIN_REPLICAS

    cluster.wait_for(deployed, 180, "the test's autoscaling delays deployed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = [
        image
        for image in IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]
    assert not missing, f"{missing} not built: `make images` builds them (make test does)"
    port = free_port()
    env = {
        **build_environment(),
        "COMPOSE_FILE": "docker-compose.ray.yml",
        "RAY_CLUSTER_PORT": str(port),
        **FAST_DETECTION,
    }
    stack = Stack(PROJECT, env)
    stack.down()  # what an interrupted run left
    try:
        started = time.monotonic()
        stack.check("up", "-d", "--no-build", timeout=START_SECONDS)
        running_cluster = Cluster(stack, f"http://127.0.0.1:{port}")
        wait_until_healthy(running_cluster.url, timeout=START_SECONDS)
        print(f"\ncluster: first 200 {time.monotonic() - started:.0f} s after `compose up`")
        deploy_test_config(running_cluster)
        yield running_cluster
    finally:
        stack.down()


@dataclass
class Outcome:
    sent: float  # seconds from the start of the load
    seconds: float  # until its answer, or its failure
    status: int  # 0: no HTTP answer
    error: str = ""


async def predict(client: httpx.AsyncClient, url: str, started: float) -> Outcome:
    sent = time.monotonic()
    try:
        response = await client.post(url + "/predict/", content=COFFEE.read_bytes(), headers=JPEG)
    except httpx.TimeoutException as exc:
        return Outcome(sent - started, time.monotonic() - sent, 0, f"timeout ({exc!r})")
    except httpx.TransportError as exc:
        return Outcome(sent - started, time.monotonic() - sent, 0, repr(exc))
    error = "" if response.status_code == 200 else response.text[:80]
    return Outcome(sent - started, time.monotonic() - sent, response.status_code, error)


async def open_loop(
    url: str, rate: float, seconds: float, event_at: float, event: Callable[[], None]
) -> tuple[list[Outcome], float]:
    """`rate` predictions a second for `seconds`, each sent on schedule whatever happens to
    the others; `event` runs (in a thread) `event_at` s in. The outcomes, and when the
    event started."""
    limits = httpx.Limits(max_connections=1000)
    async with httpx.AsyncClient(timeout=STATED_TIMEOUT_SECONDS, limits=limits) as client:
        started = time.monotonic()

        async def scheduled(at: float) -> Outcome:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            return await predict(client, url, started)

        requests = [asyncio.create_task(scheduled(i / rate)) for i in range(int(rate * seconds))]
        await asyncio.sleep(event_at)
        event_started = time.monotonic() - started
        await asyncio.to_thread(event)
        return list(await asyncio.gather(*requests)), event_started


@pytest.mark.timeout(START_SECONDS + 300)
def test_replicas_on_both_workers_answer_and_none_on_the_head(cluster, artifacts):
    replicas = running(cluster.serve_details())
    workers = cluster.worker_ips()
    assert sorted(workers.get(r["node_ip"], r["node_ip"]) for r in replicas) == list(WORKERS)

    async def predict_all(count: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=STATED_TIMEOUT_SECONDS) as client:
            body = COFFEE.read_bytes()
            requests = [
                client.post(cluster.url + "/predict/", content=body, headers=JPEG)
                for _ in range(count)
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(predict_all(40))
    expected = expected_prediction(artifacts, COFFEE)
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["prediction"] == expected
    served_by = [r.headers["x-served-by"].rsplit("@", 1) for r in responses]
    assert {host for _, host in served_by} == set(WORKERS)
    assert {replica for replica, _ in served_by} == {r["replica_id"] for r in replicas}
    # /info names its replica and node the same way.
    infos = [httpx.get(cluster.url + "/info", timeout=10).json() for _ in range(10)]
    for info in infos:
        replica = info["framework"]["replica"]
        assert workers[replica["node_ip"]] == replica["host"]
    per_host = {w: sum(host == w for _, host in served_by) for w in WORKERS}
    print(f"\nmulti-node: 40 concurrent predictions answered by {per_host}")


@pytest.mark.timeout(300)
def test_losing_a_worker_under_load_costs_a_few_requests_and_nothing_else(cluster):
    """10 predictions a second for 45 s; 10 s in, `docker kill` (SIGKILL: no goodbye to
    anyone) on a worker's container. The survivor has the capacity for the whole load."""
    rate, seconds, kill_at = 10, 45, 10
    replicas = running(cluster.serve_details())
    workers = cluster.worker_ips()
    assert {workers.get(r["node_ip"]) for r in replicas} == set(WORKERS), replicas
    (victim_ip,) = [ip for ip, worker in workers.items() if worker == WORKERS[1]]
    others = [HEAD, WORKERS[0], "gcs"]
    before = {service: cluster.node_state(service) for service in others}
    victim = cluster.container(WORKERS[1])
    replaced_seconds: list[float] = []

    def kill_and_wait_for_a_replacement() -> None:
        killed = time.monotonic()
        docker("kill", victim)
        cluster.wait_for(
            lambda d: (
                len(running(d)) == MIN_REPLICAS
                and all(r["node_ip"] != victim_ip for r in running(d))
            ),
            60,
            "the lost replica replaced on the surviving worker",
        )
        replaced_seconds.append(time.monotonic() - killed)

    # Docker would restart it (restart: unless-stopped): it stays dead for the test.
    docker("update", "--restart=no", victim)
    try:
        outcomes, killed_at = asyncio.run(
            open_loop(cluster.url, rate, seconds, kill_at, kill_and_wait_for_a_replacement)
        )
    finally:
        docker("update", "--restart=unless-stopped", victim)
        docker("start", victim)
    failed = [o for o in outcomes if o.status != 200]
    recovered = max([o.sent + o.seconds - killed_at for o in failed] + [0.0])
    longest = max(o.seconds for o in outcomes)
    sent = [round(o.sent - killed_at, 1) for o in failed]
    print(
        f"\nnode loss: {len(failed)} of {len(outcomes)} requests failed "
        f"{sorted({(o.status, o.error[:60]) for o in failed})}, sent at {sent} s from the "
        f"kill; the last failure ended {recovered:.1f} s after the kill, every request "
        f"after it answered 200; longest request {longest:.1f} s; Serve had replaced the "
        f"replica {replaced_seconds[0]:.1f} s after the kill"
    )
    assert not [o for o in outcomes if o.error.startswith("timeout")], "a request hung"
    assert longest < STATED_TIMEOUT_SECONDS
    # Back to 100% well before the load ended, and still there at its end.
    assert recovered < seconds - kill_at - 10
    assert all(o.status == 200 for o in outcomes if o.sent > seconds - 10)
    # Nothing else was restarted to get there.
    assert {service: cluster.node_state(service) for service in others} == before
    # The killed worker, started again, joins the cluster again.
    deadline = time.monotonic() + 120
    while docker("inspect", "-f", "{{.State.Health.Status}}", victim) != "healthy":
        assert time.monotonic() < deadline, "the restarted worker did not rejoin in 120 s"
        time.sleep(2)


@pytest.mark.timeout(360)
def test_a_load_step_scales_replicas_up_and_back_down(cluster):
    """12 clients sending predictions back to back (about 6 in flight per replica, 3 times
    the target) until the replicas stop growing, then nothing."""
    concurrency, up_seconds, down_seconds = 12, 120, 120
    cluster.wait_for(lambda d: len(running(d)) == MIN_REPLICAS, 120, "the minimum of replicas")
    stop = threading.Event()
    statuses: list[int] = []

    async def clients() -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=STATED_TIMEOUT_SECONDS, limits=limits) as client:

            async def one_client() -> None:
                while not stop.is_set():
                    statuses.append((await predict(client, cluster.url, 0.0)).status)

            await asyncio.gather(*(one_client() for _ in range(concurrency)))

    timeline: list[tuple[float, int]] = []
    started = time.monotonic()

    def count() -> int:
        replicas = len(running(cluster.serve_details()))
        timeline.append((round(time.monotonic() - started, 1), replicas))
        return replicas

    load = threading.Thread(target=lambda: asyncio.run(clients()))
    load.start()
    try:
        while count() < MAX_REPLICAS and time.monotonic() - started < up_seconds:
            time.sleep(1)
    finally:
        stop.set()
        load.join(STATED_TIMEOUT_SECONDS + 10)
    load_stopped = round(time.monotonic() - started, 1)
    while count() > MIN_REPLICAS and time.monotonic() - started < load_stopped + down_seconds:
        time.sleep(1)
    peak = max(replicas for _, replicas in timeline)
    print(
        f"\nautoscaling: {len(statuses)} predictions, {concurrency} at a time; replicas "
        f"(seconds, running) {timeline}; load stopped at {load_stopped} s"
    )
    assert peak > MIN_REPLICAS, timeline
    assert timeline[-1][1] == MIN_REPLICAS, timeline
    assert set(statuses) == {200}, sorted(set(statuses))
