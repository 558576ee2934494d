"""One service measured: verified first, then closed loop (ab), size sweep, open loop (oha)
and cold starts, each a progress phase. A `Service` is anything with a URL and a resource
sampler: a process (benchmark.processes), a container (benchmark.compose), a cluster's
ingress (a strategy's own scenario, benchmark.scenario); this module imports none of them."""

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from benchmark.ab import ab_command, run_ab
from benchmark.ceiling import mean_ceiling, measure_ceiling
from benchmark.oha import oha_command, run_oha
from benchmark.pipelines import REFERENCE_PIPELINE
from benchmark.progress import Progress

JSON = "application/json"


class Sampler(Protocol):
    """CPU and memory sampled while a load runs (benchmark.resources): sampling between
    `__enter__` and `__exit__`, then its summary."""

    def __enter__(self) -> "Sampler": ...

    def __exit__(self, *_: object) -> None: ...

    def summary(self) -> dict[str, float | str]: ...


class Service(Protocol):
    """What is measured: a name for the log, the base URL of the contract's endpoints, and
    the CPU and memory of whatever serves them."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    def sampler(self) -> Sampler: ...


class StartedService(Service, Protocol):
    """A service the harness started, and stops: its cold start is measured too."""

    @property
    def started_at(self) -> float: ...  # monotonic, when its start began

    @property
    def healthy_at(self) -> float: ...  # monotonic, its first 200 on GET /

    def stop(self) -> int: ...


Launch = Callable[[], StartedService]


@dataclass(frozen=True)
class Plan:
    requests: int  # ab -n
    concurrency: int  # ab -c
    seconds: int  # ab -t: a cap so the slowest strategy fits the time budget
    sweep_seconds: int  # per size-sweep run; 0 skips the sweep
    startup_runs: int
    ceiling_seconds: float
    open_loop_seconds: float  # per offered rate
    open_loop_fractions: tuple[float, ...]  # offered rates, as fractions of closed-loop req/s


@dataclass(frozen=True)
class Job:
    """What every service of a run is measured with."""

    plan: Plan
    payloads: dict[str, Path]  # name -> JSON body, with the JPEG beside it (.jpg)
    main_payload: Path
    expected: dict[str, str]  # payload name -> the PyTorch reference's top-1
    artifacts: Path  # the exported model, every graph the ceilings run
    service_cpus: str
    load_cpus: str
    slo_ms: float
    progress: Progress
    log: Callable[[str], None]

    def ceiling(self, pipeline: str) -> dict[str, Any]:
        return measure_ceiling(
            self.artifacts,
            pipeline,
            self.main_payload,
            self.plan.ceiling_seconds,
            self.service_cpus,
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(service: Service, job: Job) -> list[str]:
    """Problems found; a service with any is reported as failed, not benchmarked."""
    problems = []
    for name, path in [*job.payloads.items(), (job.main_payload.name, job.main_payload)]:
        response = httpx.post(
            service.url + "/predict/",
            content=path.read_bytes(),
            headers={"Content-Type": JSON},
            timeout=60,
        )
        if response.status_code != 200:
            problems.append(f"{name}: {response.status_code} {response.text}")
        elif name in job.expected and response.json()["prediction"] != job.expected[name]:
            got = response.json()["prediction"]
            problems.append(f"{name}: expected {job.expected[name]}, got {got}")
    return problems


def load_test(
    service: Service, payload: Path, content_type: str, seconds: int, job: Job
) -> dict[str, Any]:
    plan = job.plan
    command = ab_command(
        service.url + "/predict/", payload, plan.requests, plan.concurrency, seconds, content_type
    )
    with service.sampler() as sampler:
        result, _ = run_ab(command, job.load_cpus)
    return {
        "command": command,
        "payload": payload.name,
        "payload_sha256": sha256(payload),
        "ab": result,
        "resources": sampler.summary(),
    }


def offered_rates(closed_rps: list[float], fractions: tuple[float, ...]) -> list[int]:
    """Fractions of each closed-loop throughput given (the service's own, and for a variant
    its base configuration's too, so that both are compared at the same rates)."""
    return sorted({max(1, round(rps * f)) for rps in closed_rps for f in fractions})


def open_loop_sweep(service: Service, closed_rps: list[float], job: Job) -> dict[str, Any]:
    """Offered rates around the closed-loop throughput, each held for a fixed time."""
    url, payload = service.url + "/predict/", job.main_payload
    # Warm-up, discarded: oha opening its connections would otherwise land in the first
    # step's tail latency.
    run_oha(oha_command(url, payload, max(1, round(closed_rps[0] / 2)), 2, JSON), job.load_cpus)
    steps = []
    for rate in offered_rates(closed_rps, job.plan.open_loop_fractions):
        job.log(f"  {service.name}: open loop at {rate} req/s")
        command = oha_command(url, payload, rate, job.plan.open_loop_seconds, JSON)
        steps.append({"offered_rps": rate, "command": command, **run_oha(command, job.load_cpus)})
    return {"slo_ms": job.slo_ms, "steps": steps}


def measure_load(service: Service, job: Job) -> dict[str, Any]:
    """Verified, then the closed-loop main run and the open-loop sweep (no size sweep, no
    cold starts): what a cluster's configurations are measured with."""
    problems = verify(service, job)
    if problems:
        raise RuntimeError(f"{service.name}: FAILED verification: {problems}")
    main = load_test(service, job.main_payload, JSON, job.plan.seconds, job)
    rps = main["ab"]["requests_per_second"]
    return {"main": main, "open_loop": open_loop_sweep(service, [rps], job)}


def startup_sample(service: StartedService) -> dict[str, float]:
    """Process (or `compose up`) start -> first 200 on GET /, and the service's own account
    of its start (model download and load) from /info."""
    info = httpx.get(service.url + "/info", timeout=10).json()["startup"]
    return {"ready_seconds": service.healthy_at - service.started_at, **info}


def measure_startup(launch: Launch, runs: int) -> list[dict[str, float]]:
    """`runs` more starts, each stopped once it answered."""
    results = []
    for _ in range(runs):
        service = launch()
        results.append(startup_sample(service))
        service.stop()
    return results


def ceiling_pipelines(own: str) -> list[str]:
    """The pipelines timed around a service: its own and today's reference-exact one."""
    return list(dict.fromkeys([own, REFERENCE_PIPELINE]))


def measure_service(
    name: str, pipeline: str, launch: Launch, job: Job, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`pipeline`: the in-process pipeline the service's defaults run (its ceiling); `base`:
    for a variant, its strategy's default configuration's results (its open-loop rates are
    offered to the variant too)."""
    plan, phase = job.plan, job.progress.phase
    result: dict[str, Any] = {"pipeline": pipeline, "ceilings_measured": "service stopped"}
    # The ceilings, on the same core just before the service starts and just after it
    # stops: its CPU cost per request is judged against their mean. Never while it runs:
    # an idle framework's own work (a worker polling its queue, a cluster's heartbeats)
    # would lower them and flatter its efficiency.
    pipelines = ceiling_pipelines(pipeline)
    with contextlib.ExitStack() as running:
        with phase(f"{name}: start and verify"):
            before = [job.ceiling(p) for p in pipelines]
            service = launch()
            running.callback(service.stop)
            problems = verify(service, job)
            if problems:
                job.log(f"{name}: FAILED verification: {problems}")
                return {"failed": problems}
            result["runtime"] = httpx.get(service.url + "/info", timeout=10).json()["runtime"]
            # This start is the first of the plan's start samples: one launch fewer.
            first_start = startup_sample(service)
        with phase(f"{name}: main run"):
            result["main"] = load_test(service, job.main_payload, JSON, plan.seconds, job)
        if plan.sweep_seconds:
            with phase(f"{name}: size sweep"):
                result["sweep"] = {
                    size: load_test(service, job.payloads[size], JSON, plan.sweep_seconds, job)
                    for size in ("small", "large")
                }
                raw_jpeg = job.payloads["study"].with_suffix(".jpg")
                result["sweep"]["study_raw"] = load_test(
                    service, raw_jpeg, "image/jpeg", plan.sweep_seconds, job
                )
        with phase(f"{name}: open loop"):
            closed_rps = [result["main"]["ab"]["requests_per_second"]]
            if base and "main" in base:
                closed_rps.append(base["main"]["ab"]["requests_per_second"])
            result["open_loop"] = open_loop_sweep(service, closed_rps, job)
        result["stages"] = httpx.get(service.url + "/metrics").text
    with phase(f"{name}: cold starts"):
        after = [job.ceiling(p) for p in pipelines]
        runs = zip(pipelines, before, after, strict=True)
        ceilings = {p: mean_ceiling([b, a]) for p, b, a in runs}
        result["ceiling"] = ceilings[pipeline]
        result["reference_ceiling"] = ceilings[REFERENCE_PIPELINE]
        result["startup"] = [first_start, *measure_startup(launch, plan.startup_runs - 1)]
    return result
