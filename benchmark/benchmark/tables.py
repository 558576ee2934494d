"""A record's Markdown tables (benchmark.record), from the metrics of benchmark.metrics.
Nothing here measures."""

from typing import Any

from benchmark.metrics import (
    STAGES,
    Row,
    ServiceRecord,
    Spread,
    derive,
    derive_rounds,
    figure,
    latency_bounded_rps,
    measured_services,
    p99_at,
    ratio_spread,
    service_cores,
    slo_ms,
)
from benchmark.record import ClusterRecord, ComposeRecord, Machine, Record

# The open loop's p99 bound where a record has no measured service to say it.
DEFAULT_SLO_MS = 100.0


def ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def measured(record: Record) -> str:
    """When and at which commit: one run, or each run of a record that `--add` grew, with
    the machine's speed at its start (today's ceiling) so runs can be told apart."""
    machine, runs = record["machine"], record.get("runs", [])  # only `--add` writes runs
    if len(runs) < 2:
        return f"{machine['date']}, commit `{machine['git_commit'][:10]}`"
    latest = {name: i for i, run in enumerate(runs) for name in run["services"]}
    parts = [
        f"{run['date']} at commit `{run['git_commit'][:10]}` "
        f"({', '.join(n for n in run['services'] if latest[n] == i)}; today's ceiling "
        f"{run['ceiling_rps']:.1f} requests/s at its start)"
        for i, run in enumerate(runs)
        if any(latest[n] == i for n in run["services"])
    ]
    return f"in {len(parts)} runs: " + "; ".join(parts)


def with_spread(row: Row, key: str, spec: str) -> str:
    """A row's figure (benchmark.metrics.SPREAD_KEYS), and where it is the median of
    several rounds, the lowest and highest round: "77.8 [75.1, 79.0]"."""
    value = figure(row, key)
    if value is None:
        return "-"
    if row["rounds"] < 2 or key not in row["spread"]:
        return format(value, spec)
    low, high = row["spread"][key]
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def efficiency_text(row: Row) -> str:
    """Efficiency with its rounds' range, † where its ceilings were timed beside the idle
    service (older records)."""
    return with_spread(row, "efficiency", ".0%") + ("†" if row["ceiling_beside_service"] else "")


def spread_text(spread: Spread, spec: str, judged: bool = False) -> str:
    """A comparison taken round by round: its median, and with several rounds its range;
    `judged`: a difference whose range spans zero is called what it is."""
    if format(spread.low, spec) == format(spread.high, spec):
        return format(spread.median, spec)
    text = f"{spread.median:{spec}} [{spread.low:{spec}}, {spread.high:{spec}}"
    return text + ("; no measurable difference]" if judged and spread.spans_zero() else "]")


def rounds_note(rows: dict[str, Row]) -> list[str]:
    """What the brackets mean, where the figures are medians of several rounds."""
    rounds = max((r["rounds"] for r in rows.values()), default=1)
    if rounds < 2:
        return []
    return [
        "",
        f"Each figure is the median of {rounds} rounds, interleaved (every configuration once, "
        "then every one again, so that the machine's drift hits all alike), with the lowest "
        "and highest round in square brackets; a comparison between two configurations is taken "
        "round by round, and one whose range spans no difference says so.",
    ]


PLAN_NOTES = {
    "full": "",
    "short": " **Short plan: a first look, fewer requests and repeats than the full run.**",
    "quick": " **Quick plan: smoke numbers only.**",
    "overload": " **Overload plan: the overload phase alone, with a shorter main run.**",
}


def pinning(machine: Machine, pinned_by: str) -> str:
    """How the run used the cores, and what it could not pin (macOS has no taskset)."""
    if machine["warnings"]:
        return f"cores not pinned as asked ({'; '.join(machine['warnings'])})"
    return (
        f"each service on cpu(s) {machine['service_cpus']} ({pinned_by}), load from cpu(s) "
        f"{machine['load_cpus']}"
    )


def memory_note(record: ServiceRecord) -> list[str]:
    methods = {r["main"]["resources"]["method"] for r in measured_services(record).values()}
    other = sorted(m for m in methods if m != "psutil process tree")
    return ["", f"Memory measured with {', '.join(other)}, not RSS."] if other else []


def baseline_label(baseline: str | None) -> str:
    """The baseline's column header: its name less the `_serving` every strategy ends in."""
    return baseline.removesuffix("_serving") if baseline else "baseline"


def render_tables(record: ServiceRecord, plots: str, baseline: str | None) -> str:
    """The native run's tables; `plots`: the folder of its PNGs, relative to the page it goes in;
    `baseline`: the strategy every other is set against (the manifests'), "-" where the
    record did not measure it."""
    rows, rounds = derive(record), derive_rounds(record)
    machine, plan, ceiling = record["machine"], record["plan"], record["ceiling"]
    slo = slo_ms(record, DEFAULT_SLO_MS)
    first = next(iter(measured_services(record).values()), None)
    cmd = " ".join(first["main"]["command"]) if first else ""
    lines = [
        f"Measured {measured(record)} on {machine['cpu_model']}: {pinning(machine, 'taskset')}. "
        f"Load: `{cmd}`.{PLAN_NOTES[record['plan_name']]}",
        "",
        f"**Ceilings**: a pipeline in-process on one thread of the service core, no HTTP "
        f"(JSON, base64, decode, preprocess, one ONNX Runtime run; "
        "benchmark/benchmark/pipelines.py) on "
        f"`{ceiling['payload']}`. Today's reference-exact pipeline (`graph`: libjpeg-turbo, "
        f"the any-size graph with the resize inside) gave {ceiling['requests_per_second']:.1f} "
        "requests/s at the start. Each service's own pipeline and `graph` are measured again "
        "just before it starts and just after it stops (mean of the two): efficiency and CPU cost "
        "are judged against its own pipeline's, the speed-up against `graph`'s.",
        *rounds_note(rows),
        "",
        "| service | pipeline | requests/s | per core | efficiency | vs today's ceiling "
        f"| vs {baseline_label(baseline)} | mean ms (c={plan['concurrency']}) | p50 ms | p90 ms "
        f"| p99 ms | non-2xx | per core at p99 ≤ {slo:.0f} ms | p99 ms at 80% load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        versus = "-"
        if baseline in rounds:
            versus = spread_text(ratio_spread(rounds, name, baseline, "rps"), ".1f") + "x"
        lines.append(
            f"| {name} | `{r['pipeline']}` | {r['rps']:.1f} | "
            f"{with_spread(r, 'rps_per_core', '.1f')} | "
            f"{efficiency_text(r)} | "
            f"{with_spread(r, 'vs_reference', '.2f')}x | {versus} | {r['mean_ms']:.1f} | "
            f"{r['p50_ms']:.0f} | "
            f"{r['p90_ms']:.0f} | {with_spread(r, 'p99_ms', '.0f')} | {r['non_2xx']:.0f} | "
            f"{with_spread(r, 'bounded_per_core', '.1f')} | "
            f"{with_spread(r, 'p99_at_80_ms', '.0f')} |"
        )
    if any(r["ceiling_beside_service"] for r in rows.values()):
        lines += [
            "",
            "† Ceilings timed while the service ran, idle (results measured before the harness "
            "stopped services for them): a service's own idle work, such as a framework worker "
            "polling its queue, lowers the ceiling and flatters the efficiency.",
        ]
    lines += ["", *render_stages(rows)]
    runs = next(iter(rows.values()))["startup_runs"] if rows else 0
    lines += [
        "",
        "| service | CPU % (mean) | CPU ms/request | ceiling ms/request | vs ceiling "
        f"| RSS MB (mean) | RSS MB (peak) | start s (mean of {runs}) | download s | load s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['cpu_percent']:.0f} | {with_spread(r, 'cpu_ms_per_request', '.1f')} | "
            f"{r['ceiling_ms']:.1f} | {r['cpu_vs_ceiling']:.2f}x | {r['rss_mb_mean']:.0f} | "
            f"{r['rss_mb_peak']:.0f} | {r['ready_s']:.2f} | {r['download_s']:.3f} | "
            f"{r['load_s']:.3f} |"
        )
    lines += memory_note(record)
    if any(r["sweep_per_core"] for r in rows.values()):
        lines += [
            "",
            "Requests/s per core by payload:",
            "",
            "| service | small 640x427 | study 1200x727 | large 1748x2006 | study, raw JPEG |",
            "|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            sweep = r["sweep_per_core"]
            lines.append(
                f"| {name} | {sweep['small']:.1f} | {r['rps_per_core']:.1f} | "
                f"{sweep['large']:.1f} | {sweep['study_raw']:.1f} |"
            )
    for name, result in record["services"].items():
        if "failed" not in result:
            continue
        problems = result["failed"]
        lines.append(
            f"\n**{name} failed verification and was not benchmarked:** {'; '.join(problems)}"
        )
    lines += [
        "",
        f"Open loop: oha at fixed rates (fractions of each service's closed-loop throughput, "
        f"{plan['open_loop_seconds']} s each, latency corrected for coordinated omission); "
        f"the last column is the highest rate whose p99 stayed within {slo:.0f} ms, no failures.",
        "",
        f"![throughput per core against the ceiling]({plots}/throughput.png)",
        f"![latency percentiles under the closed loop]({plots}/latency.png)",
        f"![p99 latency against offered rate]({plots}/open_loop.png)",
        *render_overload(record, rows),
    ]
    return "\n".join(lines)


def share_text(row: Row, key: str, rate: str) -> str:
    """A figure at one offered rate, with its rounds' range where there are several."""
    value = figure(row, key).get(rate)
    if value is None:
        return "-"
    spread = row["spread"].get(f"{key} {rate}")
    if row["rounds"] < 2 or spread is None:
        return f"{value:.0%}"
    return f"{value:.0%} [{spread[0]:.0%}, {spread[1]:.0%}]"


def render_overload(record: ServiceRecord, rows: dict[str, Row]) -> list[str]:
    """Past capacity: how much of its own capacity each configuration still serves."""
    overloads = [r["overload"] for r in measured_services(record).values() if "overload" in r]
    if not overloads:
        return []
    flood, steps = overloads[0]["flood"], overloads[0]["open_loop"]
    rates = [f"{step['factor']:g}x" for step in steps]
    oha = steps[0]["command"] if steps else []
    connections = oha[oha.index("-c") + 1] if "-c" in oha else "-"
    # Schema 5's open loops waited for their last answers (benchmark.record).
    window = (
        "until its last answer"
        if "--wait-ongoing-requests-after-deadline" in oha
        else "over its offered window, the requests still in flight at its end not waited for"
    )
    checks = overloads[0]["capacity_checks"]
    # Before schema 7 no capacity was checked beside the steps (benchmark.record).
    capacity = (
        f"its closed-loop throughput (`{' '.join(checks[0]['command'])}`) just before and "
        "just after each step, their mean (its capacity then)"
        if checks
        else "the configuration's own closed-loop throughput in the same round (its capacity)"
    )
    lines = [
        "",
        f"**Past capacity** ({record['plan']['overload_seconds']} s each): goodput, the 200s "
        f"per second, as a share of {capacity}. The flood: `{' '.join(flood['command'])}`, "
        "clients that send again as soon as they are answered, 503s included, while `GET /` "
        "is probed every "
        f"0.1 s on a new connection; then oha at {' and '.join(rates)} its capacity (open "
        f"loop, {connections} connections, {window}), with the p99 of the 200s alone.",
        "",
        "| service | capacity req/s | flood: goodput | 503s/s | no answer | GET / max ms "
        + "".join(f"| {rate}: goodput | {rate}: p99 of 200s ms " for rate in rates)
        + "|",
        "|---|---|---|---|---|---|" + "---|---|" * len(rates),
    ]
    for name, r in rows.items():
        if r["flood_share"] is None:
            continue
        health = r["flood_health_max_ms"]
        lines.append(
            f"| {name} | {r['rps']:.1f} | {with_spread(r, 'flood_share', '.0%')} | "
            f"{r['flood_refusals_per_s']:.0f} | {r['flood_no_answer']:.0f} | "
            f"{'failed' if health == float('inf') else ms(health)} | "
            + "".join(
                f"{share_text(r, 'overload_share', rate)} | "
                f"{ms(r['overload_ok_p99_ms'].get(rate))} | "
                for rate in rates
            ).rstrip()
        )
    return lines


def render_deployment(record: ComposeRecord, native: ServiceRecord | None = None) -> str:
    """The study's deployment table: image size and container start, with compose throughput
    next to the native run's (`native`, when there is one)."""
    rows = derive(record)
    native_rows = derive(native) if native else {}
    runs = next(iter(rows.values()))["startup_runs"] if rows else 0
    lines = [
        f"Containers measured {record['machine']['date']} on {record['machine']['cpu_model']}, "
        f"commit `{record['machine']['git_commit'][:10]}`: "
        f"{pinning(record['machine'], 'cpuset')}"
        + (f"; native figures from the run of {native['machine']['date']}." if native else ".")
        + PLAN_NOTES[record["plan_name"]],
        "",
        f"| service | image MB | start s (compose up → first 200, mean of {runs}) | requests/s "
        "per core | native requests/s per core | p99 ms | RSS MB (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    deployments = record["deployment"]
    for name in [
        *(n for n in rows if n in deployments),
        *(n for n in deployments if n not in rows),
    ]:
        deployment, r = deployments[name], rows.get(name)
        native_rps = f"{native_rows[name]['rps_per_core']:.1f}" if name in native_rows else "-"
        measured = f"failed | {native_rps} | - | -"
        if r:
            measured = f"{r['ready_s']:.2f} | {r['rps_per_core']:.1f} | {native_rps} | "
            measured += f"{r['p99_ms']:.0f} | {r['rss_mb_mean']:.0f}"
        lines.append(f"| {name} | {deployment['image_mb']:.0f} | {measured} |")
    return "\n".join(lines + memory_note(record))


def render_stages(rows: dict[str, Row]) -> list[str]:
    """Where a request's time goes: each service's stages (its /metrics, wall time on its
    inference thread) next to its pipeline's in-process ceiling."""
    lines = [
        "Where the time goes, ms per request on the study payload (service: its "
        "/metrics over the run; in-process: its pipeline's ceiling):",
        "",
        "| service | " + " | ".join(STAGES) + " | sum | in-process: " + " | ".join(STAGES) + " |",
        "|---|" + "---|" * (2 * len(STAGES) + 1),
    ]
    for name, r in rows.items():
        service = [r["stage_ms"].get(stage) for stage in STAGES]
        inproc = [r["ceiling_stage_ms"].get(stage) for stage in STAGES]
        cells = [f"{v:.2f}" if v is not None else "-" for v in service]
        total = sum(v for v in service if v is not None)
        cells.append(f"{total:.2f}" if any(v is not None for v in service) else "-")
        cells += [f"{v:.2f}" if v is not None else "-" for v in inproc]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_fidelity(record: dict[str, Any], services: dict[str, Row]) -> str:
    """The frontier: every preprocessing variant's fidelity to the PyTorch reference on the
    fidelity set, its in-process speed on the study payload, and the floor, with how far
    each service (`services`: derive()'s rows of the machine's native run) is from it."""
    bound = (
        f"top-1 as the reference on every input it is decisive about (margin ≥ "
        f"{record['decisive_margin']}) and max |Δp| ≤ {record['max_probability_delta']}"
    )
    # Instructions per request (benchmark.instructions): records older than the count, and
    # the services, have none.
    tools = {v["instructions"]["tool"] for v in record["variants"].values() if "instructions" in v}
    counted_by = (
        f" Instructions: counted by {', '.join(sorted(tools))}, on valgrind's own CPU (AVX2 at "
        "most on x86-64); unlike ms, they do not drift with the machine's speed."
        if tools
        else ""
    )
    lines = [
        f"Fidelity set: {record['inputs']} inputs (benchmark/benchmark/fidelity_set.py), "
        f"measured {record['date']}. Bound: {bound}. Speed: in-process, one "
        f"thread, on `{record['payload']}`.{counted_by}",
        "",
        "| variant | what | top-1 agreement | on decisive inputs | max \\|Δp\\| "
        "| mean \\|Δp\\| | meets bound | requests/s per core | M instructions per request "
        "| parse | decode | preprocess | inference ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in record["variants"].items():
        speed = v.get("speed")
        rps, stages = "-", " | ".join("-" for _ in STAGES)
        if speed:
            rps = f"{speed['requests_per_second']:.1f}"
            stages = " | ".join(f"{speed['stage_ms'][stage]:.2f}" for stage in STAGES)
        counted = v.get("instructions")
        instructions = f"{counted['per_request'] / 1e6:.1f}" if counted else "-"
        lines.append(
            f"| `{name}` | {v['title']} | {v['top1_agreement']:.1%} | "
            f"{v['decisive_agreement']:.1%} ({v['decisive_inputs']}) | {v['max_delta']:.4f} | "
            f"{v['mean_delta']:.4f} | {'yes' if v['meets_bound'] else 'no'} | {rps} | "
            f"{instructions} | {stages} |"
        )
    defaults = ", ".join(f"{s} `{p}`" for s, p in record["defaults"].items())
    lines += [
        "",
        f"Fastest meeting the bound: `{record['fastest_meeting_bound']}`. "
        f"What each service's defaults run: {defaults}.",
    ]
    fixed = record["variants"].get("simd", {}).get("speed")
    if fixed:
        ms = fixed["stage_ms"]
        entropy = record["entropy_decoding_ms"]
        floor = ms["parse"] + entropy + ms["inference"]
        lines += [
            "",
            f"**Floor**: parsing ({ms['parse']:.2f} ms) + entropy decoding alone "
            f"({entropy:.2f} ms: the JPEG decoded at 1/8 scale, where the inverse DCT keeps "
            f"one coefficient per block) + the network on the fixed graph "
            f"({ms['inference']:.2f} ms) = {floor:.2f} ms, {1000 / floor:.0f} requests/s "
            "per core, before any resize or HTTP."
            + "".join(
                f" {name}: {r['rps_per_core'] * floor / 1000:.0%} of it."
                for name, r in services.items()
            ),
        ]
    return "\n".join(lines)


def render_cluster(record: ClusterRecord) -> str:
    """`--mode cluster`: the single-node strategy's container, then the Ray cluster with 1,
    2 and 3 replicas, every node on the same cores; then the node-loss run."""
    cores = service_cores(record)
    single = next(iter(record["services"]))
    slo = record["services"][single]["open_loop"]["slo_ms"]
    rows: dict[str, dict[str, Any]] = {}
    for name, result in record["services"].items():
        ab, resources = result["main"]["ab"], result["main"]["resources"]
        cpu_ms = resources["cpu_percent_mean"] / 100 * ab["time_taken_s"] * 1000
        per_core = ab["requests_per_second"] / cores
        rows[name] = {
            "per_core": per_core,
            "efficiency": per_core / result["ceiling"]["requests_per_second"],
            "cpu_ms": cpu_ms / max(ab["complete_requests"], 1),
            "p99_at_80": p99_at(result["open_loop"], 0.8 * ab["requests_per_second"]),
            "bounded": latency_bounded_rps(result["open_loop"]) / cores,
            "rss_mb": resources["rss_mb_mean"],
            "non_2xx": ab["non_2xx"],
        }
    base = rows[single]
    lines = [
        f"Beyond one machine: `{single}` on the cluster its manifest declares "
        f"(`[scenarios.cluster]`; `--mode cluster`, {record['plan_name']} plan, "
        f"{measured(record)}): every node shares cpu(s) {record['machine']['service_cpus']}, "
        "so these are the cost of the cluster path (an ingress forwarding to a replica on "
        "another node, the cluster's processes on every node), not a capacity claim. First "
        "row: the single-node container, same cores, same run.",
        "",
        "| configuration | requests/s per core | difference | efficiency | CPU ms/request "
        f"| difference | p99 ms at 80% of its own capacity | per core at p99 ≤ {slo:.0f} ms "
        "| RSS MB (all nodes) | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['per_core']:.1f} | {r['per_core'] / base['per_core'] - 1:+.0%} | "
            f"{r['efficiency']:.0%} | {r['cpu_ms']:.1f} | {r['cpu_ms'] - base['cpu_ms']:+.1f} | "
            f"{ms(r['p99_at_80'])} | {r['bounded']:.1f} | {r['rss_mb']:.0f} | "
            f"{r['non_2xx']:.0f} |"
        )
    loss = record["node_loss"]
    statuses = ", ".join(
        f"{n} {'with no answer' if s == '0' else s}" for s, n in loss["failed_by_status"].items()
    )
    restarted = ", ".join(loss["restarted"]) or "nothing else"
    lines += [
        "",
        f"Node loss: {loss['replicas']} replicas (one per worker) under "
        f"{loss['offered_rps']} requests/s for {loss['seconds']} s, one worker's container "
        f"killed (SIGKILL) 10 s in: {loss['failed']} of {loss['requests']} requests failed"
        f"{f' ({statuses})' if statuses else ''}; the last failure ended "
        f"{loss['error_window_s']:.1f} s after the kill, every later request answered 200; "
        f"the longest request took {loss['longest_request_s']:.1f} s; Serve had "
        f"{loss['replicas']} replicas running on the survivor {loss['replaced_after_s']:.0f} s "
        f"after the kill; {restarted} restarted; the killed worker, started again, rejoined "
        f"in {loss['rejoined_after_s']:.0f} s.",
    ]
    return "\n".join(lines)
