"""The cluster scenario strategy.toml declares (`[scenarios.cluster]`, entry
`RayClusterScenario`), run by the harness (benchmark.scenario) without its knowing Ray:
the Ray cluster of docker-compose.cluster.yml, head and both workers on the service cores
(they share them), with each of the table's `replicas` counts in turn, measured like a
single service; and with `node_loss_replicas` replicas, a worker killed under
`node_loss_load` of their closed-loop throughput. The shipped settings throughout: Ray's
own failure detection, HAProxy's timeouts.

Host-side only (on the workspace's benchmark package); never imported in the image.
"""

import contextlib
from dataclasses import dataclass
from typing import Any

from benchmark.measure import JSON, measure_load
from benchmark.progress import Phase
from benchmark.resources import ResourceSampler
from benchmark.scenario import ClusterOutcome, ClusterRun
from serving_common.strategy import MANIFEST, Strategy

from ray_serving.compose_cluster import (
    ClusterFiles,
    RayCluster,
    cluster_stack,
    ray_cluster,
    settled_at,
    start_cluster,
)
from ray_serving.node_loss import lose_a_worker

# The Compose projects: the harness's throwaway cluster, and `make up-cluster`'s.
BENCH_PROJECT, UP_PROJECT = "model-serving-bench-ray", "model-serving-ray"
# What the plan cannot know, in seconds (the progress estimate only).
START_S, DEPLOY_S, NODE_LOSS_S = 120.0, 30.0, 120.0


def key(replicas: int) -> str:
    """A configuration's name in the results."""
    return f"cluster x{replicas}"


@dataclass
class ClusterIngress:
    """The cluster's one published port, measured like a service (benchmark.measure): its
    CPU and memory are every node's."""

    name: str
    url: str
    cluster: RayCluster

    def sampler(self) -> ResourceSampler:
        return self.cluster.sampler()


class RayClusterScenario:
    """benchmark.scenario.ClusterScenario for this strategy's `[scenarios.cluster]` table."""

    def __init__(self, strategy: Strategy, table: dict[str, Any]) -> None:
        where = f"{strategy.folder / MANIFEST} [scenarios.cluster]"
        try:
            self.files = ClusterFiles.of(strategy)
            self.replicas = tuple(int(n) for n in table["replicas"])
            self.node_loss_replicas = int(table["node_loss_replicas"])
            self.node_loss_load = float(table["node_loss_load"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(f"{where}: {type(exc).__name__} {exc}") from exc
        for path in (self.files.compose, self.files.serve_config):
            if not path.is_file():
                raise RuntimeError(f"{where}: {path} is not a file")
        if self.node_loss_replicas not in self.replicas:
            raise RuntimeError(f"{where}: node_loss_replicas is not one of replicas")

    def phases(self, load_s: float) -> list[Phase]:
        deploys = [Phase(f"{key(n)}: deploy and load", DEPLOY_S + load_s) for n in self.replicas]
        loss_after = self.replicas.index(self.node_loss_replicas) + 1
        return [
            Phase("cluster: start", START_S),
            *deploys[:loss_after],
            Phase("cluster: node loss", NODE_LOSS_S),
            *deploys[loss_after:],
        ]

    def run(self, run: ClusterRun) -> ClusterOutcome:
        job = run.job
        cpus = str(len(job.service_cpus.split(",")))
        nodes = {
            "RAY_HEAD_CPUS": cpus, "RAY_WORKER_CPUS": cpus, "RAY_HEAD_CPUSET": job.service_cpus,
            "RAY_WORKER_1_CPUSET": job.service_cpus, "RAY_WORKER_2_CPUSET": job.service_cpus,
        }  # fmt: skip
        services: dict[str, dict[str, Any]] = {}
        node_loss: dict[str, Any] = {}
        with contextlib.ExitStack() as up:
            with job.progress.phase("cluster: start"):
                env = {**run.runtime, **nodes}
                cluster = up.enter_context(ray_cluster(BENCH_PROJECT, env, self.files))
                # Every worker in, so that Serve spreads the replicas over them.
                cluster.wait_for_nodes(180)
            for replicas in self.replicas:
                name = key(replicas)
                with job.progress.phase(f"{name}: deploy and load"):
                    cluster.deploy(self.files.fixed_replicas(replicas), settled_at(replicas))
                    ingress = ClusterIngress(name, cluster.url, cluster)
                    services[name] = {"ceiling": run.ceiling, **measure_load(ingress, job)}
                if replicas == self.node_loss_replicas:
                    # Now, while a scale-up from one has put them on both workers (a
                    # scale-down would leave them on one: Serve stops replicas to empty nodes).
                    with job.progress.phase("cluster: node loss"):
                        closed = services[name]["main"]["ab"]["requests_per_second"]
                        rate = max(1, round(self.node_loss_load * closed))
                        job.log(f"  cluster: a worker killed under {rate} req/s")
                        body = job.main_payload.read_bytes()
                        node_loss = lose_a_worker(cluster, replicas, body, JSON, rate)
        return ClusterOutcome(services=services, settings=nodes, node_loss=node_loss)

    def up(self, port: int) -> str:
        cluster = start_cluster(cluster_stack(UP_PROJECT, {}, self.files, port), self.files)
        print(cluster.stack.check("ps"))
        return cluster.url

    def down(self) -> None:
        cluster_stack(UP_PROJECT, {}, self.files, 0).down()
