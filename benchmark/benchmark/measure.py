"""One service measured: verified first, then closed loop (ab), size sweep, open loop (oha)
and cold starts, each a progress phase. A `Service` is anything with a URL and a resource
sampler: a process (benchmark.processes), a container (benchmark.compose), a cluster's
ingress (a strategy's own scenario, benchmark.scenario); this module imports none of them."""

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from serving_common.protocol import RefusalPacer
from serving_common.settings import Settings

from benchmark.ab import ab_command, run_ab
from benchmark.ceiling import mean_ceiling, measure_ceiling
from benchmark.oha import oha_command, parse_by_status, run_oha
from benchmark.pipelines import REFERENCE_PIPELINE
from benchmark.progress import Progress

JSON = "application/json"
# Past capacity (the overload phase): the flood's clients, as many as the fault suite's and
# three times the services' admission limit (MAX_PENDING_REQUESTS, 64 a worker); the open
# loop's offered rates, as multiples of the round's closed-loop throughput, and its
# connections: enough for every refusal waiting its paced turn (up to 2 s) at 4x.
FLOOD_CLIENTS = 200
# ab -n: far more than a flood's seconds can answer (ab keeps 48 bytes for each).
FLOOD_REQUESTS_CAP = 1_000_000
OVERLOAD_FACTORS = (2.0, 4.0)
OVERLOAD_CONNECTIONS = 1000
# GET / on a new connection this often while the flood runs; an answer slower than the
# timeout counts as a failure.
HEALTH_PROBE_INTERVAL_S = 0.1
HEALTH_PROBE_TIMEOUT_S = 5.0
# A capacity check beside each overload step: the main run's closed loop, this long. The
# machine's speed drifts by tens of percent within minutes, so each step's goodput is
# judged against the checks just before and just after it, not the main run's.
CAPACITY_CHECK_S = 5


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
    sweep_seconds: int  # per size-sweep run, in the first round; 0 skips the sweep
    startup_runs: int  # start samples: each round's start, then more cold starts if fewer
    rounds: int  # each configuration measured this many times, interleaved
    ceiling_seconds: float
    open_loop_seconds: float  # per offered rate
    open_loop_fractions: tuple[float, ...]  # offered rates, as fractions of closed-loop req/s
    overload_seconds: int  # the flood's and each overload rate's; 0 skips the overload phase


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


def offered_rates(closed_rps: float, fractions: tuple[float, ...]) -> list[int]:
    """The fractions of a closed-loop throughput, as whole requests per second."""
    return sorted({max(1, round(closed_rps * f)) for f in fractions})


def open_loop_sweep(service: Service, closed_rps: float, job: Job) -> dict[str, Any]:
    """Offered rates at the plan's fractions of the closed-loop throughput, each held for a
    fixed time."""
    url, payload = service.url + "/predict/", job.main_payload
    # Warm-up, discarded: oha opening its connections would otherwise land in the first
    # step's tail latency.
    run_oha(oha_command(url, payload, max(1, round(closed_rps / 2)), 2, JSON), job.load_cpus)
    steps = []
    for rate in offered_rates(closed_rps, job.plan.open_loop_fractions):
        job.log(f"  {service.name}: open loop at {rate} req/s")
        command = oha_command(url, payload, rate, job.plan.open_loop_seconds, JSON)
        steps.append({"offered_rps": rate, "command": command, **run_oha(command, job.load_cpus)})
    return {"slo_ms": job.slo_ms, "steps": steps}


def probe_health(url: str, stop: threading.Event) -> dict[str, Any]:
    """GET / on a new connection every HEALTH_PROBE_INTERVAL_S until `stop` is set: how
    many, how many failed (no 200 within HEALTH_PROBE_TIMEOUT_S), the slowest."""
    times, failures = [], 0
    while not stop.wait(HEALTH_PROBE_INTERVAL_S):
        started = time.perf_counter()
        try:
            ok = httpx.get(url + "/", timeout=HEALTH_PROBE_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            ok = False
        times.append(time.perf_counter() - started)
        failures += not ok
    return {"probes": len(times), "failures": failures, "max_ms": 1000 * max(times, default=0.0)}


def flood(service: Service, job: Job) -> dict[str, Any]:
    """FLOOD_CLIENTS clients in a closed loop, each sending again as soon as it is answered
    (503s included: retrying clients, a busy load balancer), while GET / is probed."""
    command = ab_command(
        service.url + "/predict/",
        job.main_payload,
        FLOOD_REQUESTS_CAP,
        FLOOD_CLIENTS,
        job.plan.overload_seconds,
        JSON,
        keep_going=True,
    )
    stop = threading.Event()
    with ThreadPoolExecutor(1) as prober:
        health = prober.submit(probe_health, service.url, stop)
        try:
            result, _ = run_ab(command, job.load_cpus)
        finally:
            stop.set()
    return {"command": command, "ab": result, "health": health.result()}


def capacity_check(service: Service, job: Job) -> dict[str, Any]:
    """The main run's closed loop for CAPACITY_CHECK_S (no longer than an overload step):
    the service's capacity right now."""
    plan = job.plan
    command = ab_command(
        service.url + "/predict/",
        job.main_payload,
        plan.requests,
        plan.concurrency,
        capacity_check_s(plan),
        JSON,
    )
    result, _ = run_ab(command, job.load_cpus)
    return {"command": command, "ab": result}


def overload(service: Service, capacity_rps: float, job: Job) -> dict[str, Any]:
    """Past capacity: the closed-loop flood, then oha at OVERLOAD_FACTORS times the round's
    closed-loop throughput (`capacity_rps`), with a capacity check before the flood and
    after each step. What it does with the excess (refused at once, paced, queued) decides
    how much of its capacity it still serves (its goodput)."""
    checks = [capacity_check(service, job)]
    job.log(f"  {service.name}: flood of {FLOOD_CLIENTS} clients")
    flooded = flood(service, job)
    time.sleep(settle_s(capacity_rps))
    checks.append(capacity_check(service, job))
    url, steps = service.url + "/predict/", []
    for factor in OVERLOAD_FACTORS:
        rate = max(1, round(capacity_rps * factor))
        job.log(f"  {service.name}: open loop at {rate} req/s ({factor:g}x capacity)")
        command = oha_command(
            url,
            job.main_payload,
            rate,
            job.plan.overload_seconds,
            JSON,
            connections=OVERLOAD_CONNECTIONS,
            by_status=True,
            # Goodput over the offered window: waiting for the last paced refusals (up to
            # 2 s, the service idle) would count their wait as time the service had.
            wait_at_deadline=False,
        )
        step = run_oha(command, job.load_cpus, parse=parse_by_status)
        steps.append({"factor": factor, "offered_rps": rate, "command": command, **step})
        # What the window left behind finishes before the next measurement starts.
        time.sleep(settle_s(capacity_rps))
        checks.append(capacity_check(service, job))
    return {
        "capacity_rps": capacity_rps,
        "capacity_checks": checks,
        "flood": flooded,
        "open_loop": steps,
    }


def capacity_check_s(plan: Plan) -> int:
    return min(CAPACITY_CHECK_S, plan.overload_seconds)


def settle_s(capacity_rps: float) -> float:
    """How long a service past capacity may still be busy once its clients have left: its
    paced refusals' longest wait, then its full admission queue at capacity (a host that
    cannot withdraw a request, LitServe, serves them all)."""
    pending = Settings.model_fields["max_pending_requests"].default
    return RefusalPacer.MAX_WAIT_SECONDS + pending / max(capacity_rps, 1.0)


def measures_overload(plan: Plan, name: str) -> bool:
    """Whether configuration `name` goes through the overload phase: in a plan that has
    one, each strategy's default configuration; not its variants ("<strategy>+<variant>",
    benchmark.modes.configurations), which refuse through the same admission code."""
    return plan.overload_seconds > 0 and "+" not in name


def measure_load(service: Service, job: Job) -> dict[str, Any]:
    """Verified, then the closed-loop main run and the open-loop sweep (no size sweep, no
    cold starts): what a cluster's configurations are measured with."""
    problems = verify(service, job)
    if problems:
        raise RuntimeError(f"{service.name}: FAILED verification: {problems}")
    main = load_test(service, job.main_payload, JSON, job.plan.seconds, job)
    rps = main["ab"]["requests_per_second"]
    return {"main": main, "open_loop": open_loop_sweep(service, rps, job)}


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


def round_label(name: str, step: str, number: int, rounds: int) -> str:
    """A progress phase: "<configuration>: <step>", with the round where there are several."""
    return f"{name}: {step}" + (f" (round {number}/{rounds})" if rounds > 1 else "")


def measure_round(
    name: str, pipeline: str, launch: Launch, job: Job, number: int
) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Round `number` of one configuration: started, verified, loaded, stopped, with its
    ceilings timed just before it starts and just after it stops; the first round also
    records the service's runtime and sweeps the payload sizes. Returns what it measured
    and the start's sample, or {"failed": problems} and None."""
    plan, phase = job.plan, job.progress.phase

    def label(step: str) -> str:
        return round_label(name, step, number, plan.rounds)

    result: dict[str, Any] = {}
    # Its CPU cost per request is judged against the mean of the ceilings on the same core
    # before it starts and after it stops. Never while it runs: an idle framework's own work
    # (a worker polling its queue, a cluster's heartbeats) would lower them and flatter its
    # efficiency.
    pipelines = ceiling_pipelines(pipeline)
    with contextlib.ExitStack() as running:
        with phase(label("start and verify")):
            before = [job.ceiling(p) for p in pipelines]
            service = launch()
            running.callback(service.stop)
            problems = verify(service, job)
            if problems:
                job.log(f"{name}: FAILED verification: {problems}")
                return {"failed": problems}, None
            if number == 1:
                result["runtime"] = httpx.get(service.url + "/info", timeout=10).json()["runtime"]
            start = startup_sample(service)
        with phase(label("main run")):
            result["main"] = load_test(service, job.main_payload, JSON, plan.seconds, job)
        if number == 1 and plan.sweep_seconds:
            with phase(label("size sweep")):
                result["sweep"] = {
                    size: load_test(service, job.payloads[size], JSON, plan.sweep_seconds, job)
                    for size in ("small", "large")
                }
                raw_jpeg = job.payloads["study"].with_suffix(".jpg")
                result["sweep"]["study_raw"] = load_test(
                    service, raw_jpeg, "image/jpeg", plan.sweep_seconds, job
                )
        rps = result["main"]["ab"]["requests_per_second"]
        result["open_loop"] = {"slo_ms": job.slo_ms, "steps": []}
        if plan.open_loop_fractions:
            with phase(label("open loop")):
                result["open_loop"] = open_loop_sweep(service, rps, job)
        result["stages"] = httpx.get(service.url + "/metrics").text
        if measures_overload(plan, name):
            # Last: the stage timings above are the admitted requests' under the main
            # load, not under the flood.
            with phase(label("overload")):
                result["overload"] = overload(service, rps, job)
    with phase(label("ceilings after")):
        after = [job.ceiling(p) for p in pipelines]
        runs = zip(pipelines, before, after, strict=True)
        ceilings = {p: mean_ceiling([b, a]) for p, b, a in runs}
        result["ceiling"] = ceilings[pipeline]
        result["reference_ceiling"] = ceilings[REFERENCE_PIPELINE]
    return result, start


def measure_service(name: str, pipeline: str, launch: Launch, job: Job) -> dict[str, Any]:
    """The first round of one configuration, then the cold starts the plan wants beyond one
    per round. `pipeline`: the in-process pipeline the service's defaults run (its
    ceiling)."""
    measured, start = measure_round(name, pipeline, launch, job, 1)
    if start is None:
        return measured
    extra = job.plan.startup_runs - job.plan.rounds
    startup = [start]
    if extra > 0:
        with job.progress.phase(round_label(name, "cold starts", 1, job.plan.rounds)):
            startup += measure_startup(launch, extra)
    return {
        "pipeline": pipeline,
        "ceilings_measured": "service stopped",
        **measured,
        "startup": startup,
        "repeats": [],
    }


def measure_rounds(configurations: list[tuple[str, str, Launch]], job: Job) -> dict[str, Any]:
    """Every configuration (name, its pipeline, how to start it) measured in the plan's
    rounds, interleaved: each one once, then each one again, so that the machine's drift
    over the run (its speed moves by several percent in minutes) hits every configuration
    alike. A configuration that fails verification in any round is reported as failed."""
    results: dict[str, Any] = {}
    for number in range(1, job.plan.rounds + 1):
        for name, pipeline, launch in configurations:
            if number == 1:
                results[name] = measure_service(name, pipeline, launch, job)
                continue
            if "failed" in results[name]:
                continue
            repeat, start = measure_round(name, pipeline, launch, job, number)
            if start is None:
                results[name] = {"failed": [f"round {number}: {p}" for p in repeat["failed"]]}
                continue
            results[name]["repeats"].append(repeat)
            results[name]["startup"].append(start)
    return results
