"""ray_serving on a multi-node Ray cluster, for real (docker-compose.cluster.yml): a head and two
worker nodes, each its own container with its own CPU share, serving the contract through
the head's one published port. Requests are answered by replicas on both workers and none
on the head; a worker killed under steady load costs a counted number of requests and a
few seconds, no request waits past the stated timeout, and nothing else restarts; a load
step scales the replicas up, and they scale down once it stops.

The cluster runs as a Compose project of its own, with faster failure detection
(RAY_HEALTH_CHECK_*). Configs are deployed with `serve deploy` in the head, as an operator
would: two fixed replicas, one per worker, for placement and node loss; then the shipped
config with shorter autoscaling delays for the load step. Only loopback and the project's
private Docker network are used. Skipped, with the reason, when no Docker daemon answers.
Each test prints what it measured (`pytest -s` shows it). What a head restart loses is
documented (docs/ray-cluster.md, "A head restart"), not tested.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from benchmark.compose import docker_unavailable
from benchmark.modes import expected_prediction
from helpers import ROOT
from ray_serving.compose_cluster import (
    START_SECONDS,
    WORKERS,
    ClusterFiles,
    RayCluster,
    ray_cluster,
    running,
    settled_at,
)
from ray_serving.node_loss import STATED_TIMEOUT_SECONDS, lose_a_worker, predict
from serving_common.strategy import load_strategy

UNAVAILABLE = docker_unavailable()
pytestmark = [
    pytest.mark.cluster,
    # Its deadlines (a replica added within 2 minutes of load, a lost node noticed) held
    # only with no other test beside it: `make test` runs it alone (scripts/test-tiers.sh).
    pytest.mark.alone,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE)),
]

PROJECT = "model-serving-ray-test"
# The files strategy.toml's [scenarios.cluster] names: those the harness runs too.
FILES = ClusterFiles.of(load_strategy(Path(__file__).resolve().parents[1]))
COFFEE = ROOT / "images" / "coffee.jpg"
JPEG = "image/jpeg"
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """The cluster, with MIN_REPLICAS fixed replicas, one on each worker (RayCluster.spread):
    the tests of placement and node loss need them there, and autoscaling would move them."""
    started = time.monotonic()
    with ray_cluster(PROJECT, FAST_DETECTION, FILES) as running_cluster:
        print(f"\ncluster: first 200 {time.monotonic() - started:.0f} s after `compose up`")
        running_cluster.spread(MIN_REPLICAS)
        yield running_cluster


@pytest.mark.timeout(START_SECONDS + 300)
def test_replicas_on_both_workers_answer_and_none_on_the_head(cluster, artifacts):
    replicas = running(cluster.serve_details())
    workers = cluster.worker_ips()
    assert sorted(workers.get(r["node_ip"], r["node_ip"]) for r in replicas) == list(WORKERS)

    async def predict_all(count: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=STATED_TIMEOUT_SECONDS) as client:
            body = COFFEE.read_bytes()
            requests = [
                client.post(cluster.url + "/predict/", content=body, headers={"Content-Type": JPEG})
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
    """10 predictions a second for 45 s; 10 s in, a worker's container is killed. The
    survivor has the capacity for the whole load."""
    seconds, kill_at = 45, 10
    loss = lose_a_worker(
        cluster, MIN_REPLICAS, COFFEE.read_bytes(), JPEG, rate=10, seconds=seconds,
        kill_at=kill_at,
    )  # fmt: skip
    print(f"\nnode loss: {loss}")
    assert loss["hung"] == 0, "a request hung"
    assert loss["longest_request_s"] < STATED_TIMEOUT_SECONDS
    # Back to 100% well before the load ended, and still there at its end.
    assert loss["error_window_s"] < seconds - kill_at - 10
    assert loss["ok_in_last_10_s"]
    # Nothing else was restarted to get there, and the killed worker, started again,
    # joined the cluster again (lose_a_worker waits for its health check).
    assert loss["restarted"] == []


@pytest.mark.timeout(360)
def test_a_load_step_scales_replicas_up_and_back_down(cluster):
    """12 clients sending predictions back to back (about 6 in flight per replica, 3 times
    the target) until one more replica runs, then nothing: back to the minimum."""
    concurrency, up_seconds, down_seconds = 12, 120, 120
    # The shipped Serve config with TEST_AUTOSCALING: from the fixed replicas, an in-place
    # update (no replica restarts).
    config = FILES.serve_config_with()
    config["applications"][0]["deployments"][0]["autoscaling_config"].update(TEST_AUTOSCALING)
    cluster.deploy(config, settled_at(MIN_REPLICAS))
    stop = threading.Event()
    statuses: list[int] = []

    body = COFFEE.read_bytes()

    async def clients() -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=STATED_TIMEOUT_SECONDS, limits=limits) as client:

            async def one_client() -> None:
                while not stop.is_set():
                    outcome = await predict(client, cluster.url, body, JPEG, 0.0)
                    statuses.append(outcome.status)

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
        while count() == MIN_REPLICAS and time.monotonic() - started < up_seconds:
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
    assert MIN_REPLICAS < peak <= MAX_REPLICAS, timeline
    assert timeline[-1][1] == MIN_REPLICAS, timeline
    assert set(statuses) == {200}, sorted(set(statuses))
