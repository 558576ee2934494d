"""The raw record: the one JSON file a run writes (`results/<machine>/<mode>-<plan>.json`).

This module owns its shape. The runner assembles one from each mode's result type
(`NativeResult`, `ComposeResult`, `ClusterResult`); the report, the tables and the plots read
records only through `upgrade()`, which turns a record of any earlier version into the
current shape and checks it, key by key and type by type, against the types below: a key
written but not declared here, or declared but missing, is refused with its path.

Versions (`schema_version`):
- 1: no `schema_version` key: every record written before it, in shapes told apart by the
  keys they lack. `upgrade()` fills each with the value the tables assumed for it
  (`_from_v1`'s comments say which, and why) and drops the two keys no longer written
  (`quick`, now `plan_name`; the run ceiling's `entropy_decoding_ms`, now in fidelity.json).
  NOTE: records from before the open loop existed (the first quick runs) have nothing to
  fill it with, and are refused.
- 2: `schema_version` written; every key below present unless marked NotRequired.
- 3: `model`, the model the run measured. Every earlier run measured the default demo model
  (weather_model.architectures), whose weights' hash was not recorded then: "".
- 4: rounds. The plan's `rounds`: each configuration measured that many times, interleaved
  (every configuration once, then every one again), so that the machine's drift hits them
  alike; a measured service's first round where it always was, each later one in `repeats`.
  Every earlier run measured one round.
- 5: overload. The plan's `overload_seconds` and, where it is not 0, each round's
  `overload` (a closed-loop flood past capacity with health probes, and open loops at
  multiples of capacity); ab's `connection_errors`. Every earlier run had no overload phase
  (0 s, no `overload`), and its ab runs, without `-r`, stopped at the first connection error:
  a recorded one had none.
- 6: the overload phase's open loops end at their deadline: `seconds` is the offered window,
  and the requests still in flight then are counted in `at_deadline`, apart from `errors`.
  Version 5's were waited for, so the window's goodput was divided by up to 2 s more (the
  last paced refusals' wait, the service idle); none was left at its deadline.
- 7: the overload phase's `capacity_checks`: the main run's closed loop for a few seconds
  before the flood and after each step, each step's goodput judged against the checks
  around it. Version 6's had none (`[]`): its steps are judged against the main run's.
A change to the shape adds a version and a step from the previous one.
"""

import copy
import json
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast, final

from weather_model.architectures import DEFAULT_ARCHITECTURE, WEATHER_LABELS

from benchmark.json_check import RecordError, check

SCHEMA_VERSION = 7

Mode = Literal["native", "compose", "cluster"]
PlanName = Literal["full", "short", "quick", "overload"]


class RunPlan(TypedDict):
    """benchmark.measure.Plan, as JSON."""

    requests: int
    concurrency: int
    seconds: int
    sweep_seconds: int
    startup_runs: int
    rounds: int
    ceiling_seconds: float
    open_loop_seconds: float
    open_loop_fractions: list[float]
    overload_seconds: int  # each overload step's; 0: no overload phase


class MachineIdentity(TypedDict):
    """What makes runs comparable: it names the results folder (benchmark.machine)."""

    cpu_model: str
    cpus_online: int
    os: str
    arch: str


class Machine(MachineIdentity):
    """The machine and software of one run."""

    git_commit: str
    service_cpus: str  # a taskset list, e.g. "0" or "0,2"
    load_cpus: str
    warnings: list[str]  # what the platform could not pin
    python: str
    ab: str
    versions: dict[str, str]  # package -> version
    date: str  # ISO 8601, UTC


class ModelInfo(TypedDict):
    """The model a run measured: its metadata.json's network and labels, and its weights."""

    architecture: str  # weather_model.architectures', e.g. "mobilenet_v3_small"
    labels: list[str]
    state_dict_sha256: str  # the exported weights; "" where not recorded (version 2)


class StrategyInfo(TypedDict):
    """What a measured configuration is, from its manifest (strategy.toml)."""

    title: str
    stack: str
    port: int
    model: str
    environment: dict[str, str]  # what a variant adds to the default configuration


class Ceiling(TypedDict):
    """An in-process pipeline timed on one thread (benchmark.ceiling)."""

    pipeline: str
    iterations: int
    seconds: float
    requests_per_second: float
    cpu_ms_per_request: float
    stage_ms: dict[str, float]
    runs: NotRequired[list["Ceiling"]]  # a mean of several (before and after a service)


class RunCeiling(Ceiling):
    """Today's reference-exact ceiling, once at the start of a run."""

    payload: str


class AbResult(TypedDict):
    """ab's summary (benchmark.ab). NOTE: ab prints its percentiles only when two or more
    requests completed: a main run with fewer is refused here."""

    complete_requests: float
    failed_requests: float
    non_2xx: float
    connection_errors: float  # requests with no answer: connect, receive, write errors
    requests_per_second: float
    time_per_request_ms: float
    time_taken_s: float
    p50_ms: float
    p66_ms: float
    p75_ms: float
    p80_ms: float
    p90_ms: float
    p95_ms: float
    p98_ms: float
    p99_ms: float
    p100_ms: float


class Resources(TypedDict):
    """CPU and memory of what served, sampled during a load (benchmark.resources)."""

    samples: int
    cpu_percent_mean: float
    cpu_percent_peak: float
    rss_mb_mean: float
    rss_mb_peak: float
    interval_s: float
    method: str  # "psutil process tree", or "docker stats (cgroup memory)"


class LoadTest(TypedDict):
    """One closed-loop ab run."""

    command: list[str]
    payload: str
    payload_sha256: str
    ab: AbResult
    resources: Resources


class OpenLoopStep(TypedDict):
    """One fixed offered rate held with oha (benchmark.oha)."""

    offered_rps: int
    command: list[str]
    achieved_rps: float
    success_rate: float
    ok: int
    non_2xx: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float


class OpenLoop(TypedDict):
    slo_ms: float
    steps: list[OpenLoopStep]


class HealthProbes(TypedDict):
    """`GET /` on a new connection every 0.1 s while a load runs (benchmark.measure)."""

    probes: int
    failures: int  # not a 200 within the probe's timeout
    max_ms: float


class Flood(TypedDict):
    """Past capacity, closed loop: ab with many more clients than the service admits, each
    sending again as soon as it is answered (retrying clients, a busy load balancer)."""

    command: list[str]
    ab: AbResult
    health: HealthProbes


class OverloadStep(OpenLoopStep):
    """Past capacity, open loop: oha at a multiple of the round's capacity."""

    factor: float  # offered rate over capacity
    seconds: float  # how long it ran: the offered window (schema 5: until the last answer)
    at_deadline: int  # still in flight at the window's end, not waited for
    ok_p50_ms: float  # latency of the 200s alone
    ok_p99_ms: float


class CapacityCheck(TypedDict):
    """The main run's closed loop for a few seconds, beside an overload step."""

    command: list[str]
    ab: AbResult


class Overload(TypedDict):
    """What a configuration does with more than it can serve (benchmark.measure.overload)."""

    capacity_rps: float  # its closed-loop main run's requests/s, the same round
    # Before the flood and after each step (so one more than the steps); [] before schema 7.
    capacity_checks: list[CapacityCheck]
    flood: Flood
    open_loop: list[OverloadStep]


class StartupSample(TypedDict):
    ready_seconds: float  # start -> first 200 on GET /
    download_seconds: float  # the service's own account (/info)
    load_seconds: float


class Repeat(TypedDict):
    """A later round of one configuration: started again, its ceilings timed around it
    again, loaded as in the first round (no size sweep, no extra cold starts)."""

    main: LoadTest
    open_loop: OpenLoop
    stages: str  # its /metrics text after this round (the service started afresh)
    overload: NotRequired[Overload]  # absent when the plan has no overload phase
    ceiling: Ceiling
    reference_ceiling: Ceiling


@final
class MeasuredService(TypedDict):
    """One configuration measured natively or as a container (benchmark.measure)."""

    pipeline: str  # the in-process pipeline its defaults run: its ceiling's
    # Whether the ceilings were timed with the service stopped, or beside it idle (older).
    ceilings_measured: Literal["service stopped", "service running"]
    runtime: dict[str, Any]  # its /info "runtime", as the service reports it
    main: LoadTest
    sweep: NotRequired[dict[str, LoadTest]]  # by payload; absent when the plan skips it
    open_loop: OpenLoop
    stages: str  # its /metrics text after the run
    overload: NotRequired[Overload]  # absent when the plan has no overload phase
    ceiling: Ceiling  # its own pipeline's, around its run
    reference_ceiling: Ceiling  # today's reference-exact pipeline's, around its run
    startup: list[StartupSample]  # each round's start, then the plan's extra cold starts
    repeats: list[Repeat]  # rounds 2, 3, ... of the plan


@final
class FailedService(TypedDict):
    """A configuration that failed verification and was not measured."""

    failed: list[str]


ServiceResult = MeasuredService | FailedService


class LoadResult(TypedDict):
    """A configuration measured under load only (no size sweep, no cold starts): a cluster
    mode's configurations."""

    ceiling: Ceiling
    main: LoadTest
    open_loop: OpenLoop


class Deployment(TypedDict):
    image: str
    image_mb: float


class NodeLoss(TypedDict):
    """A worker killed under steady load (the cluster scenario's)."""

    replicas: int
    offered_rps: int
    seconds: float
    requests: int
    failed: int
    failed_by_status: dict[str, int]  # "0": no answer at all
    errors: list[str]
    failed_sent_s: list[float]
    error_window_s: float
    longest_request_s: float
    p99_request_s: float
    hung: int
    ok_in_last_10_s: bool
    replaced_after_s: float
    restarted: list[str]
    rejoined_after_s: float


class RunSummary(TypedDict):
    """Which run of a record grown by `--add` measured what."""

    date: str
    git_commit: str
    ceiling_rps: float
    services: list[str]


# What each mode measured: the runner's native, compose and cluster functions return these.


class NativeResult(TypedDict):
    ceiling: RunCeiling
    services: dict[str, ServiceResult]


class ComposeResult(TypedDict):
    ceiling: RunCeiling
    services: dict[str, ServiceResult]
    deployment: dict[str, Deployment]


class ClusterResult(TypedDict):
    ceiling: RunCeiling
    services: dict[str, LoadResult]  # the single-node container first, then each cluster
    cluster: dict[str, str]  # the nodes' settings (cores)
    node_loss: NodeLoss


class RunHeader(TypedDict):
    """What every record has besides its mode's result."""

    schema_version: int
    plan_name: PlanName
    plan: RunPlan
    model: ModelInfo
    strategies: dict[str, StrategyInfo]
    machine: Machine
    runs: NotRequired[list[RunSummary]]  # only in a record grown by `--add`


@final
class NativeRecord(RunHeader, NativeResult):
    mode: Literal["native"]


@final
class ComposeRecord(RunHeader, ComposeResult):
    mode: Literal["compose"]


@final
class ClusterRecord(RunHeader, ClusterResult):
    mode: Literal["cluster"]


Record = NativeRecord | ComposeRecord | ClusterRecord
RECORD_TYPES: dict[str, type] = {
    "native": NativeRecord,
    "compose": ComposeRecord,
    "cluster": ClusterRecord,
}


def upgrade(raw: dict[str, Any]) -> Record:
    """`raw` (a record of any version, as read from JSON) in the current shape, checked;
    `raw` itself is left as it was."""
    version = raw.get("schema_version", 1)
    if version not in range(1, SCHEMA_VERSION + 1):
        raise RecordError(
            f"schema_version {version!r}: this checkout reads versions 1 to {SCHEMA_VERSION} "
            "(benchmark/benchmark/record.py); a newer record needs a newer checkout"
        )
    record = copy.deepcopy(raw)
    if version == 1:
        record = _from_v1(record)
    if version <= 2:
        record = _from_v2(record)
    if version <= 3:
        record = _from_v3(record)
    if version <= 4:
        record = _from_v4(record)
    if version <= 5:
        record = _from_v5(record)
    if version <= 6:
        record = _from_v6(record)
    mode = record.get("mode")
    if mode not in RECORD_TYPES:
        raise RecordError(f"mode: {mode!r} is not one of {list(RECORD_TYPES)}")
    check(record, RECORD_TYPES[mode])
    return cast(Record, record)  # checked against RECORD_TYPES[mode] just above


def assemble(
    header: RunHeader, mode: Mode, result: NativeResult | ComposeResult | ClusterResult
) -> Record:
    """A run's record, from what every run has and what its mode measured; checked, so
    that a key the runner writes but this module does not declare fails the run that wrote
    it rather than the report that reads it."""
    return upgrade({"mode": mode, **header, **result})


def load_record(path: Path) -> Record:
    """The record at `path`, upgraded; an unreadable one is refused with its path."""
    try:
        return upgrade(json.loads(path.read_text()))
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


def _from_v1(record: dict[str, Any]) -> dict[str, Any]:
    """Version 1's shapes as version 2: each default is what the tables assumed when the
    key was missing."""
    # Runs before `plan_name` were the full plan unless marked quick.
    quick = record.pop("quick", False)
    record.setdefault("plan_name", "quick" if quick else "full")
    record.setdefault("strategies", {})
    for info in record["strategies"].values():
        info.setdefault("environment", {})
    # Runs before the machine was recorded were all on the first machine (Linux x86-64),
    # pinned with taskset.
    machine = record["machine"]
    machine.setdefault("os", "linux")
    machine.setdefault("arch", "x86_64")
    machine.setdefault("warnings", [])
    ceiling = record["ceiling"]
    ceiling.pop("entropy_decoding_ms", None)  # measured by benchmark.fidelity since
    _ceiling_from_v1(ceiling)
    for result in record["services"].values():
        if "failed" in result:
            continue
        for load in [result["main"], *result.get("sweep", {}).values()]:
            # Memory was sampled only from the process tree before docker stats.
            load["resources"].setdefault("method", "psutil process tree")
        if record["mode"] == "cluster":
            continue
        # Before pipelines were named, every service ran today's `graph`.
        result.setdefault("pipeline", "graph")
        # Before the harness stopped services for them, ceilings were timed beside the
        # service, idle but running.
        result.setdefault("ceilings_measured", "service running")
        result.setdefault("runtime", {})  # not recorded then
        # Before per-service ceilings, the run's one ceiling stood for every service.
        if "ceiling" not in result:
            result["ceiling"] = {k: v for k, v in ceiling.items() if k != "payload"}
        result.setdefault("reference_ceiling", copy.deepcopy(result["ceiling"]))
        for own in (result["ceiling"], result["reference_ceiling"]):
            _ceiling_from_v1(own)
    return record


def _from_v2(record: dict[str, Any]) -> dict[str, Any]:
    """Version 2 as version 3: every run before the model was recorded measured the default
    demo model."""
    default = {"architecture": DEFAULT_ARCHITECTURE, "labels": list(WEATHER_LABELS)}
    record.setdefault("model", {**default, "state_dict_sha256": ""})
    return record


def _from_v3(record: dict[str, Any]) -> dict[str, Any]:
    """Version 3 as version 4: every run before rounds measured each configuration once."""
    record["plan"].setdefault("rounds", 1)
    if record["mode"] != "cluster":
        for result in record["services"].values():
            if "failed" not in result:
                result.setdefault("repeats", [])
    return record


def _from_v4(record: dict[str, Any]) -> dict[str, Any]:
    """Version 4 as version 5: no run before it had an overload phase, and its ab runs
    (without -r) ended at the first connection error, so a recorded one had none."""
    record["plan"].setdefault("overload_seconds", 0)
    for result in record["services"].values():
        if "failed" in result:
            continue
        loads = [result["main"], *result.get("sweep", {}).values()]
        loads += [repeat["main"] for repeat in result.get("repeats", [])]
        for load in loads:
            load["ab"].setdefault("connection_errors", 0.0)
    return record


def _from_v5(record: dict[str, Any]) -> dict[str, Any]:
    """Version 5 as version 6: its overload open loops waited for every answer, so none was
    left at the deadline."""
    for result in record["services"].values():
        for measured in [result, *result.get("repeats", [])]:
            for step in measured.get("overload", {}).get("open_loop", []):
                step.setdefault("at_deadline", 0)
    return record


def _from_v6(record: dict[str, Any]) -> dict[str, Any]:
    """Version 6 as version 7: no capacity was checked beside its overload steps."""
    for result in record["services"].values():
        for measured in [result, *result.get("repeats", [])]:
            if "overload" in measured:
                measured["overload"].setdefault("capacity_checks", [])
    record["schema_version"] = SCHEMA_VERSION
    return record


def _ceiling_from_v1(ceiling: dict[str, Any]) -> None:
    # Before stages were timed, a ceiling was one total, of the then only `graph` pipeline.
    ceiling.setdefault("pipeline", "graph")
    ceiling.setdefault("stage_ms", {})
    for run in ceiling.get("runs", []):
        _ceiling_from_v1(run)
