"""A worker node killed under steady load (`docker kill`: no goodbye to anyone), and what
it cost: the requests that failed, for how long, the longest request, how soon Serve
replaced the lost replicas, what else restarted. The open-loop client here sends each
request on schedule whatever happens to the others, and records which node answered.

Host-side only, like compose_cluster: the harness's `--mode cluster` and
tests/test_ray_cluster.py run it alike.
"""

import asyncio
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ray_serving.compose_cluster import HEAD, WORKERS, RayCluster, docker, running, settled_at

# The longest a request may take: HAProxy answers 500 after its `timeout server` (10 s,
# docker-compose.cluster.yml) for a request on a node that vanished, and gives up connecting
# after 2 s a try; a client waiting longer is a hang.
STATED_TIMEOUT_SECONDS = 30


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
