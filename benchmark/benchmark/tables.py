"""Metrics derived from one raw record, and its Markdown tables. Nothing here measures."""

import re
from typing import Any

BASELINE = "torch_serving"
STAGES = ("parse", "decode", "preprocess", "inference")
_STAGE_LINE = re.compile(
    r'^predict_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} ([0-9.e+-]+)$', re.MULTILINE
)
_BATCH_LINE = re.compile(r"^predict_batch_size_(sum|count) ([0-9.e+-]+)$", re.MULTILINE)


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
    service does not count them (the Rust and PyTorch hosts)."""
    totals: dict[str, float] = {}
    for kind, value in _BATCH_LINE.findall(metrics):
        totals[kind] = totals.get(kind, 0.0) + float(value)
    return totals["sum"] / totals["count"] if totals.get("count") else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def latency_bounded_rps(open_loop: dict[str, Any]) -> float:
    """The highest achieved rate whose p99 stays within the SLO with no failed request."""
    good = [
        step["achieved_rps"]
        for step in open_loop["steps"]
        if step["p99_ms"] <= open_loop["slo_ms"] and step["non_2xx"] == step["errors"] == 0
    ]
    return max(good, default=0.0)


def p99_at(open_loop: dict[str, Any], offered_rps: float) -> float | None:
    """p99 of the open-loop step offered `offered_rps` (rounded as the harness offers it)."""
    rate = max(1, round(offered_rps))
    return next((s["p99_ms"] for s in open_loop["steps"] if s["offered_rps"] == rate), None)


def derive(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-service metrics derived from one raw record, fastest per core first."""
    cores = len(record["machine"]["service_cpus"].split(","))
    rows = {}
    for name, result in record["services"].items():
        if "failed" in result:
            continue
        # The ceiling measured around this service's run (older records: the run's one).
        ceiling = result.get("ceiling", record["ceiling"])
        ab = result["main"]["ab"]
        per_core = ab["requests_per_second"] / cores
        resources = result["main"]["resources"]
        # CPU time the service's whole process tree spent per request under the closed loop.
        cpu_ms = resources["cpu_percent_mean"] / 100 * ab["time_taken_s"] * 1000
        cpu_ms /= max(ab["complete_requests"], 1)
        startup = result["startup"]
        reference = result.get("reference_ceiling", ceiling)
        rows[name] = {
            "pipeline": result.get("pipeline", "graph"),
            "reference_rps": reference["requests_per_second"],
            "vs_reference": per_core / reference["requests_per_second"],
            "stage_ms": stage_ms(result.get("stages", "")),
            "ceiling_stage_ms": ceiling.get("stage_ms", {}),
            "rps": ab["requests_per_second"],
            "rps_per_core": per_core,
            "efficiency": per_core / ceiling["requests_per_second"],
            # Older records timed the ceilings beside the service, idle but running.
            "ceiling_beside_service": result.get("ceilings_measured") != "service stopped",
            "ceiling_rps": ceiling["requests_per_second"],
            "ceiling_ms": ceiling["cpu_ms_per_request"],
            "mean_ms": ab["time_per_request_ms"],
            "p50_ms": ab.get("p50_ms", 0.0),
            "p90_ms": ab.get("p90_ms", 0.0),
            "p99_ms": ab.get("p99_ms", 0.0),
            "non_2xx": ab["non_2xx"],
            "requests": ab["complete_requests"],
            "cpu_percent": resources["cpu_percent_mean"],
            "cpu_ms_per_request": cpu_ms,
            "cpu_vs_ceiling": cpu_ms / ceiling["cpu_ms_per_request"],
            "rss_mb_mean": resources["rss_mb_mean"],
            "rss_mb_peak": resources["rss_mb_peak"],
            "ready_s": _mean([run["ready_seconds"] for run in startup]),
            "download_s": _mean([run["download_seconds"] for run in startup]),
            "load_s": _mean([run["load_seconds"] for run in startup]),
            "startup_runs": len(startup),
            "bounded_per_core": latency_bounded_rps(result["open_loop"]) / cores,
            # At 80% of the service's own closed-loop throughput: latency with headroom.
            "p99_at_80_ms": p99_at(result["open_loop"], 0.8 * ab["requests_per_second"]),
            "mean_batch": mean_batch_size(result.get("stages", "")),
            **{
                f"sweep_{k}": v["ab"]["requests_per_second"] / cores
                for k, v in result.get("sweep", {}).items()
            },
        }
    return dict(sorted(rows.items(), key=lambda row: -row[1]["rps_per_core"]))


def _span(values: list[float]) -> str:
    return f"{min(values):.1f} to {max(values):.1f}" if values else "-"


def _ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def measured(record: dict[str, Any]) -> str:
    """When and at which commit: one run, or each run of a record that `--add` grew, with
    the machine's speed at its start (today's ceiling) so runs can be told apart."""
    machine, runs = record["machine"], record.get("runs", [])
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


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.1f}x" if base else "-"


PLAN_NOTES = {
    "full": "",
    "short": " **Short plan: a first look, fewer requests and repeats than the full run.**",
    "quick": " **Quick plan: smoke numbers only.**",
}


def plan_name(record: dict[str, Any]) -> str:
    return record.get("plan_name") or ("quick" if record.get("quick") else "full")


def pinning(machine: dict[str, Any], pinned_by: str) -> str:
    """How the run used the cores, and what it could not pin (macOS has no taskset)."""
    if machine.get("warnings"):
        return f"cores not pinned as asked ({'; '.join(machine['warnings'])})"
    return (
        f"each service on cpu(s) {machine['service_cpus']} ({pinned_by}), load from cpu(s) "
        f"{machine['load_cpus']}"
    )


def memory_note(record: dict[str, Any]) -> list[str]:
    methods = {
        r["main"]["resources"].get("method", "psutil process tree")
        for r in record["services"].values()
        if "main" in r
    }
    other = sorted(m for m in methods if m != "psutil process tree")
    return ["", f"Memory measured with {', '.join(other)}, not RSS."] if other else []


def render_tables(record: dict[str, Any], plots: str) -> str:
    """The native run's tables; `plots`: the folder of its PNGs, relative to the README."""
    rows = derive(record)
    machine, plan, ceiling = record["machine"], record["plan"], record["ceiling"]
    base = rows.get(BASELINE, {})
    slo = next(
        (r["open_loop"]["slo_ms"] for r in record["services"].values() if "open_loop" in r), 100.0
    )
    cmd = " ".join(next(iter(record["services"].values())).get("main", {}).get("command", []))
    lines = [
        f"Measured {measured(record)} on {machine['cpu_model']}: {pinning(machine, 'taskset')}. "
        f"Load: `{cmd}`.{PLAN_NOTES[plan_name(record)]}",
        "",
        f"**Ceilings**: a pipeline in-process on one thread of the service core, no HTTP "
        f"(JSON, base64, decode, preprocess, one ONNX Runtime run; "
        "benchmark/benchmark/pipelines.py) on "
        f"`{ceiling['payload']}`. Today's reference-exact pipeline (`graph`: libjpeg-turbo, "
        f"the any-size graph with the resize inside) gave {ceiling['requests_per_second']:.1f} "
        "requests/s at the start. Each service's own pipeline and `graph` are measured again "
        "just before it starts and just after it stops (mean of the two): efficiency and CPU cost "
        "are judged against its own pipeline's, the speed-up against `graph`'s.",
        "",
        "| service | pipeline | requests/s | per core | efficiency | vs today's ceiling "
        f"| vs torch | mean ms (c={plan['concurrency']}) | p50 ms | p90 ms | p99 ms | non-2xx "
        f"| per core at p99 ≤ {slo:.0f} ms | p99 ms at 80% load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | `{r['pipeline']}` | {r['rps']:.1f} | {r['rps_per_core']:.1f} | "
            f"{r['efficiency']:.0%}{'†' if r['ceiling_beside_service'] else ''} | "
            f"{r['vs_reference']:.2f}x | "
            f"{_ratio(r['rps'], base.get('rps'))} | {r['mean_ms']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p90_ms']:.0f} | {r['p99_ms']:.0f} | {r['non_2xx']:.0f} | "
            f"{r['bounded_per_core']:.1f} | {_ms(r['p99_at_80_ms'])} |"
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
            f"| {name} | {r['cpu_percent']:.0f} | {r['cpu_ms_per_request']:.1f} | "
            f"{r['ceiling_ms']:.1f} | {r['cpu_vs_ceiling']:.2f}x | {r['rss_mb_mean']:.0f} | "
            f"{r['rss_mb_peak']:.0f} | {r['ready_s']:.2f} | {r['download_s']:.3f} | "
            f"{r['load_s']:.3f} |"
        )
    lines += memory_note(record)
    if any("sweep_small" in r for r in rows.values()):
        lines += [
            "",
            "Requests/s per core by payload:",
            "",
            "| service | small 640x427 | study 1200x727 | large 1748x2006 | study, raw JPEG |",
            "|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['sweep_small']:.1f} | {r['rps_per_core']:.1f} | "
                f"{r['sweep_large']:.1f} | {r['sweep_study_raw']:.1f} |"
            )
    failed = {n: r["failed"] for n, r in record["services"].items() if "failed" in r}
    for name, problems in failed.items():
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
    ]
    return "\n".join(lines)


def render_deployment(record: dict[str, Any], native: dict[str, Any] | None = None) -> str:
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
        + PLAN_NOTES[plan_name(record)],
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


def render_stages(rows: dict[str, dict[str, Any]]) -> list[str]:
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


def render_fidelity(record: dict[str, Any], services: dict[str, dict[str, Any]]) -> str:
    """The frontier: every preprocessing variant's fidelity to the PyTorch reference on the
    fidelity set, its in-process speed on the study payload, and the floor, with how far
    each service (`services`: derive()'s rows of the machine's native run) is from it."""
    bound = (
        f"top-1 as the reference on every input it is decisive about (margin ≥ "
        f"{record['decisive_margin']}) and max |Δp| ≤ {record['max_probability_delta']}"
    )
    lines = [
        f"Fidelity set: {record['inputs']} inputs (benchmark/benchmark/fidelity_set.py), "
        f"measured {record['date']}. Bound: {bound}. Speed: in-process, one "
        f"thread, on `{record['payload']}`.",
        "",
        "| variant | what | top-1 agreement | on decisive inputs | max \\|Δp\\| "
        "| mean \\|Δp\\| | meets bound | requests/s per core | parse | decode | "
        "preprocess | inference ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in record["variants"].items():
        speed = v.get("speed")
        timing = "- | - | - | - | -"
        if speed:
            ms = speed["stage_ms"]
            timing = f"{speed['requests_per_second']:.1f} | " + " | ".join(
                f"{ms[stage]:.2f}" for stage in STAGES
            )
        lines.append(
            f"| `{name}` | {v['title']} | {v['top1_agreement']:.1%} | "
            f"{v['decisive_agreement']:.1%} ({v['decisive_inputs']}) | {v['max_delta']:.4f} | "
            f"{v['mean_delta']:.4f} | {'yes' if v['meets_bound'] else 'no'} | {timing} |"
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


def render_framework_costs(record: dict[str, Any], framework_over: dict[str, str]) -> str:
    """Each framework configuration against the strategy hosting the same predictor
    without a framework (`framework_over`: strategy name -> that strategy, from the
    manifests), both from `record`; empty when the record has no such pair."""
    rows = derive(record)
    pairs = [
        (name, framework_over[name.split("+")[0]])
        for name in rows
        if framework_over.get(name.split("+")[0]) in rows
    ]
    if not pairs:
        return ""
    slo = next(
        (r["open_loop"]["slo_ms"] for r in record["services"].values() if "open_loop" in r), 100.0
    )
    lines = [
        "What a framework costs: each framework configuration against the strategy that hosts "
        "the same predictor without one, from the same record (the differences are the "
        "framework's; `+batched`: its dynamic batching on). Efficiency is against each "
        "service's own ceiling, timed around it: where the machine's speed drifts during a "
        "run, compare efficiencies rather than requests/s.",
        "",
        "| configuration | against | requests/s per core | difference | efficiency "
        f"| CPU ms/request | difference | p99 ms at 80% of its own capacity "
        f"| per core at p99 ≤ {slo:.0f} ms | RSS MB | ratio | start s | requests per inference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, host in pairs:
        r, h = rows[name], rows[host]
        batch = f"{r['mean_batch']:.2f}" if r["mean_batch"] is not None else "-"
        lines.append(
            f"| {name} | {host} | {r['rps_per_core']:.1f} | "
            f"{r['rps_per_core'] / h['rps_per_core'] - 1:+.0%} | "
            f"{r['efficiency']:.0%} (host {h['efficiency']:.0%}) | "
            f"{r['cpu_ms_per_request']:.1f} | "
            f"{r['cpu_ms_per_request'] - h['cpu_ms_per_request']:+.1f} | "
            f"{_ms(r['p99_at_80_ms'])} (host {_ms(h['p99_at_80_ms'])}) | "
            f"{r['bounded_per_core']:.1f} (host {h['bounded_per_core']:.1f}) | "
            f"{r['rss_mb_mean']:.0f} | {r['rss_mb_mean'] / h['rss_mb_mean']:.1f}x | "
            f"{r['ready_s']:.1f} | {batch} |"
        )
    return "\n".join(lines)


def render_cluster(record: dict[str, Any]) -> str:
    """`--mode cluster`: the single-node strategy's container, then the Ray cluster with 1,
    2 and 3 replicas, every node on the same cores; then the node-loss run."""
    cores = len(record["machine"]["service_cpus"].split(","))
    single = next(iter(record["services"]))
    slo = record["services"][single]["open_loop"]["slo_ms"]
    rows = {}
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
        f"Beyond one machine: `{single}` on the Ray cluster of `docker-compose.ray.yml` "
        f"(`--mode cluster`, {plan_name(record)} plan, {measured(record)}): the head and both "
        f"workers share cpu(s) {record['machine']['service_cpus']}, so these are the cost "
        "of the cluster path (the head's HAProxy to a replica on another node, Ray's "
        "processes on three nodes), not a capacity claim. First row: the single-node "
        "container, same cores, same run.",
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
            f"{_ms(r['p99_at_80'])} | {r['bounded']:.1f} | {r['rss_mb']:.0f} | "
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
