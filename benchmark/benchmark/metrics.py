"""Metrics derived from one record (benchmark.record): what the tables and plots show.
Nothing here measures or formats."""

import itertools
import math
import re
import statistics
from typing import Any, NamedTuple, TypedDict, cast

from benchmark.record import (
    ComposeRecord,
    MeasuredService,
    NativeRecord,
    OpenLoop,
    Overload,
    Record,
    Repeat,
)

# A record whose services were each measured in full (native or compose mode).
ServiceRecord = NativeRecord | ComposeRecord
STAGES = ("parse", "decode", "preprocess", "inference")
_STAGE_LINE = re.compile(
    r'^predict_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} ([0-9.e+-]+)$', re.MULTILINE
)
_BATCH_LINE = re.compile(r"^predict_batch_size_(sum|count) ([0-9.e+-]+)$", re.MULTILINE)


class OverloadFigures(TypedDict):
    """Past capacity (the overload phase; None or {} where the plan had none): goodput, the
    200s per second, as a share of the closed-loop throughput beside it (step_capacities)."""

    flood_share: float | None  # under the closed-loop flood
    flood_refusals_per_s: float | None  # its non-2xx answers per second
    flood_no_answer: float | None  # its requests that got no answer (connection errors)
    flood_health_max_ms: float | None  # the slowest GET / meanwhile (a failed probe: inf)
    overload_share: dict[str, float]  # by offered rate over capacity ("2x"): open loop
    overload_ok_p99_ms: dict[str, float]  # the 200s' p99 at that rate


class Row(OverloadFigures):
    """One configuration's metrics."""

    pipeline: str
    reference_rps: float
    vs_reference: float  # per core, against today's reference-exact ceiling
    stage_ms: dict[str, float]  # its /metrics
    ceiling_stage_ms: dict[str, float]  # its pipeline's, in-process
    rps: float
    rps_per_core: float
    efficiency: float  # per core, against its own pipeline's ceiling
    ceiling_beside_service: bool  # ceilings timed beside the idle service (older records)
    ceiling_rps: float
    ceiling_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: float
    requests: float
    cpu_percent: float
    cpu_ms_per_request: float
    cpu_vs_ceiling: float
    rss_mb_mean: float
    rss_mb_peak: float
    ready_s: float
    download_s: float
    load_s: float
    startup_runs: int
    bounded_per_core: float  # the highest open-loop rate within the SLO, per core
    p99_at_80_ms: float | None  # at 80% of its own closed-loop throughput
    mean_batch: float | None  # requests per inference, where the service counts them
    sweep_per_core: dict[str, float]  # requests/s per core by payload (the size sweep)
    rounds: int  # how many rounds the figures are the median of
    spread: dict[str, tuple[float, float]]  # min and max over the rounds (SPREAD_KEYS, by rate)


# The figures whose spread over a plan's rounds the tables quote (min and max beside the
# median): a difference between two configurations is judged against these.
SPREAD_KEYS = (
    "rps",
    "rps_per_core",
    "efficiency",
    "vs_reference",
    "cpu_ms_per_request",
    "p99_ms",
    "p99_at_80_ms",
    "bounded_per_core",
    "flood_share",
)
# Figures by offered rate ({"2x": ...}) whose spread is quoted too, rate by rate, under
# "<figure> <rate>" ("overload_share 4x").
SPREAD_BY_RATE_KEYS = ("overload_share",)


class Spread(NamedTuple):
    """A figure over a plan's rounds: the median, and the lowest and highest round."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(statistics.median(values), min(values), max(values))

    def spans_zero(self) -> bool:
        """A difference some round measured one way and another the other way."""
        return self.low <= 0 <= self.high


def stage_ms(metrics: str) -> dict[str, float]:
    """Mean ms per stage from a service's /metrics text (the run's every request)."""
    totals: dict[tuple[str, str], float] = {}
    for kind, stage, value in _STAGE_LINE.findall(metrics):
        totals[kind, stage] = totals.get((kind, stage), 0.0) + float(value)
    return {
        stage: 1000 * totals[("sum", stage)] / totals[("count", stage)]
        for stage in STAGES
        if totals.get(("count", stage))
    }


def mean_batch_size(metrics: str) -> float | None:
    """Requests per inference over the run, from a service's /metrics text; None where the
    service does not count them (hosts without dynamic batching)."""
    totals: dict[str, float] = {}
    for kind, value in _BATCH_LINE.findall(metrics):
        totals[kind] = totals.get(kind, 0.0) + float(value)
    return totals["sum"] / totals["count"] if totals.get("count") else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def latency_bounded_rps(open_loop: OpenLoop) -> float:
    """The highest achieved rate whose p99 stays within the SLO with no failed request."""
    good = [
        step["achieved_rps"]
        for step in open_loop["steps"]
        if step["p99_ms"] <= open_loop["slo_ms"] and step["non_2xx"] == step["errors"] == 0
    ]
    return max(good, default=0.0)


def p99_at(open_loop: OpenLoop, offered_rps: float) -> float | None:
    """p99 of the open-loop step offered `offered_rps` (rounded as the harness offers it)."""
    rate = max(1, round(offered_rps))
    return next((s["p99_ms"] for s in open_loop["steps"] if s["offered_rps"] == rate), None)


def overload_figures(overload: Overload | None) -> OverloadFigures:
    """A round's overload phase as Row figures (None and {} where it had none)."""
    if overload is None:
        return OverloadFigures(
            flood_share=None,
            flood_refusals_per_s=None,
            flood_no_answer=None,
            flood_health_max_ms=None,
            overload_share={},
            overload_ok_p99_ms={},
        )
    flood, steps = overload["flood"], overload["open_loop"]
    capacity = step_capacities(overload)
    ab, health = flood["ab"], flood["health"]
    answered = ab["complete_requests"] - ab["non_2xx"] - ab["connection_errors"]
    by_key = {f"{step['factor']:g}x": step for step in steps}
    return OverloadFigures(
        flood_share=max(answered, 0.0) / ab["time_taken_s"] / capacity[0],
        flood_refusals_per_s=ab["non_2xx"] / ab["time_taken_s"],
        flood_no_answer=ab["connection_errors"],
        flood_health_max_ms=math.inf if health["failures"] else health["max_ms"],
        overload_share={
            key: step["ok"] / step["seconds"] / own
            for (key, step), own in zip(by_key.items(), capacity[1:], strict=True)
        },
        overload_ok_p99_ms={key: step["ok_p99_ms"] for key, step in by_key.items()},
    )


def step_capacities(overload: Overload) -> list[float]:
    """The capacity each overload step (the flood, then each open loop) is judged against:
    the mean of the capacity checks just before and just after it, or the round's main run
    where none was taken (before schema 7)."""
    checks = [c["ab"]["requests_per_second"] for c in overload["capacity_checks"]]
    if not checks:
        return [overload["capacity_rps"]] * (1 + len(overload["open_loop"]))
    return [(before + after) / 2 for before, after in itertools.pairwise(checks)]


def service_cores(record: Record) -> int:
    return len(record["machine"]["service_cpus"].split(","))


def measured_services(record: ServiceRecord) -> dict[str, MeasuredService]:
    """The configurations measured, without those that failed verification."""
    return {name: r for name, r in record["services"].items() if "failed" not in r}


def slo_ms(record: ServiceRecord, default: float) -> float:
    """The open loop's p99 bound (every service of a run has the same)."""
    return next((r["open_loop"]["slo_ms"] for r in measured_services(record).values()), default)


def rounds_of(result: MeasuredService) -> list[Repeat]:
    """Each round's measurements of one configuration: the first, then the repeats."""
    first: Repeat = {
        "main": result["main"],
        "open_loop": result["open_loop"],
        "stages": result["stages"],
        "ceiling": result["ceiling"],
        "reference_ceiling": result["reference_ceiling"],
    }
    if "overload" in result:
        first["overload"] = result["overload"]
    return [first, *result["repeats"]]


def derive_round(result: MeasuredService, measured: Repeat, cores: int) -> Row:
    """One round's metrics; start times and the size sweep are the configuration's own
    (every round's start, the first round's sweep)."""
    ceiling, reference = measured["ceiling"], measured["reference_ceiling"]
    ab = measured["main"]["ab"]
    per_core = ab["requests_per_second"] / cores
    resources = measured["main"]["resources"]
    # CPU time the service's whole process tree spent per request under the closed loop.
    cpu_ms = resources["cpu_percent_mean"] / 100 * ab["time_taken_s"] * 1000
    cpu_ms /= max(ab["complete_requests"], 1)
    startup = result["startup"]
    return Row(
        pipeline=result["pipeline"],
        reference_rps=reference["requests_per_second"],
        vs_reference=per_core / reference["requests_per_second"],
        stage_ms=stage_ms(measured["stages"]),
        ceiling_stage_ms=ceiling["stage_ms"],
        rps=ab["requests_per_second"],
        rps_per_core=per_core,
        efficiency=per_core / ceiling["requests_per_second"],
        ceiling_beside_service=result["ceilings_measured"] != "service stopped",
        ceiling_rps=ceiling["requests_per_second"],
        ceiling_ms=ceiling["cpu_ms_per_request"],
        mean_ms=ab["time_per_request_ms"],
        p50_ms=ab["p50_ms"],
        p90_ms=ab["p90_ms"],
        p99_ms=ab["p99_ms"],
        non_2xx=ab["non_2xx"],
        requests=ab["complete_requests"],
        cpu_percent=resources["cpu_percent_mean"],
        cpu_ms_per_request=cpu_ms,
        cpu_vs_ceiling=cpu_ms / ceiling["cpu_ms_per_request"],
        rss_mb_mean=resources["rss_mb_mean"],
        rss_mb_peak=resources["rss_mb_peak"],
        ready_s=_mean([run["ready_seconds"] for run in startup]),
        download_s=_mean([run["download_seconds"] for run in startup]),
        load_s=_mean([run["load_seconds"] for run in startup]),
        startup_runs=len(startup),
        bounded_per_core=latency_bounded_rps(measured["open_loop"]) / cores,
        p99_at_80_ms=p99_at(measured["open_loop"], 0.8 * ab["requests_per_second"]),
        mean_batch=mean_batch_size(measured["stages"]),
        sweep_per_core={
            payload: load["ab"]["requests_per_second"] / cores
            for payload, load in result.get("sweep", {}).items()
        },
        **overload_figures(measured.get("overload")),
        rounds=1,
        spread={},
    )


def figure(row: Row, key: str) -> Any:
    """A row's figure by name (the tables and ratios pick figures by name)."""
    return cast(dict[str, Any], row)[key]


def _median_of(values: list[Any]) -> Any:
    """The median of a figure over rounds: of each stage for a dict of stages, of the rounds
    that have it for a figure some round could not give (None), else the first round's
    (names, flags, counts that every round shares)."""
    first = values[0]
    if isinstance(first, dict):
        return {key: statistics.median(v[key] for v in values if key in v) for key in first}
    if isinstance(first, bool) or not isinstance(first, float | None):
        return first
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_row(rounds: list[Row]) -> Row:
    """A configuration's rounds as one row: each figure's median, with the spread of
    SPREAD_KEYS' figures over the rounds where every round has one."""
    row = cast(Row, {key: _median_of([figure(r, key) for r in rounds]) for key in rounds[0]})
    row["sweep_per_core"] = rounds[0]["sweep_per_core"]
    row["rounds"] = len(rounds)
    row["spread"] = {}
    for key in SPREAD_KEYS:
        values = [figure(r, key) for r in rounds]
        if all(v is not None for v in values):
            row["spread"][key] = (min(values), max(values))
    for key in SPREAD_BY_RATE_KEYS:
        for rate in figure(row, key):
            values = [figure(r, key).get(rate) for r in rounds]
            if all(v is not None for v in values):
                row["spread"][f"{key} {rate}"] = (min(values), max(values))
    return row


def derive_rounds(record: ServiceRecord) -> dict[str, list[Row]]:
    """Each configuration's metrics, round by round (the plan's rounds, interleaved)."""
    cores = service_cores(record)
    return {
        name: [derive_round(result, measured, cores) for measured in rounds_of(result)]
        for name, result in measured_services(record).items()
    }


def derive(record: ServiceRecord) -> dict[str, Row]:
    """Per-configuration metrics of one record, each the median over its rounds, fastest
    per core first."""
    rows = {name: median_row(rounds) for name, rounds in derive_rounds(record).items()}
    return dict(sorted(rows.items(), key=lambda row: -row[1]["rps_per_core"]))


def paired(
    rounds: dict[str, list[Row]], name: str, other: str, key: str
) -> list[tuple[float, float]]:
    """`name`'s figure `key` beside `other`'s, round by round: each round measured both
    minutes apart, so the machine's drift over a run cancels in their comparison."""
    pairs = zip(rounds[name], rounds[other], strict=False)
    return [(figure(a, key), figure(b, key)) for a, b in pairs]


def ratio_spread(rounds: dict[str, list[Row]], name: str, other: str, key: str) -> Spread:
    """`name`'s figure `key` over `other`'s, taken round by round."""
    return Spread.of([a / b for a, b in paired(rounds, name, other, key)])


def change_spread(rounds: dict[str, list[Row]], name: str, other: str, key: str) -> Spread:
    """`name`'s figure `key` relative to `other`'s (ratio - 1), taken round by round."""
    return Spread.of([a / b - 1 for a, b in paired(rounds, name, other, key)])


def difference_spread(rounds: dict[str, list[Row]], name: str, other: str, key: str) -> Spread:
    """`name`'s figure `key` less `other`'s, taken round by round."""
    return Spread.of([a - b for a, b in paired(rounds, name, other, key)])
