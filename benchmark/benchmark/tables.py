"""Metrics derived from one raw record, and its Markdown tables. Nothing here measures."""

from typing import Any

BASELINE = "torch_serving"


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


def derive(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-service metrics derived from one raw record."""
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
        rows[name] = {
            "rps": ab["requests_per_second"],
            "rps_per_core": per_core,
            "efficiency": per_core / ceiling["requests_per_second"],
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
            **{
                f"sweep_{k}": v["ab"]["requests_per_second"] / cores
                for k, v in result.get("sweep", {}).items()
            },
        }
    return rows


def _span(values: list[float]) -> str:
    return f"{min(values):.1f} to {max(values):.1f}" if values else "-"


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
        f"Measured {machine['date']} on {machine['cpu_model']}, "
        f"commit `{machine['git_commit'][:10]}`: {pinning(machine, 'taskset')}. "
        f"Load: `{cmd}`.{PLAN_NOTES[plan_name(record)]}",
        "",
        f"**Ceiling**: {ceiling['requests_per_second']:.1f} requests/s per core at the start "
        "— the cheapest correct pipeline in-process on one thread of the service core (JSON, "
        "base64, libjpeg-turbo decode, one ONNX Runtime run with preprocessing in the graph) "
        f"on `{ceiling['payload']}`; measured again just before and just after each service's "
        f"main run ({_span([r['ceiling_rps'] for r in rows.values()])} requests/s, mean of the "
        "two). Efficiency and CPU cost are judged against that adjacent measurement.",
        "",
        "| service | requests/s | per core | efficiency | vs torch | mean ms (c="
        f"{plan['concurrency']}) | p50 ms | p90 ms | p99 ms | non-2xx "
        f"| per core at p99 ≤ {slo:.0f} ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['rps']:.1f} | {r['rps_per_core']:.1f} | {r['efficiency']:.0%} | "
            f"{_ratio(r['rps'], base.get('rps'))} | {r['mean_ms']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p90_ms']:.0f} | {r['p99_ms']:.0f} | {r['non_2xx']:.0f} | "
            f"{r['bounded_per_core']:.1f} |"
        )
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
    for name, deployment in record["deployment"].items():
        r = rows.get(name)
        native_rps = f"{native_rows[name]['rps_per_core']:.1f}" if name in native_rows else "-"
        measured = f"failed | {native_rps} | - | -"
        if r:
            measured = f"{r['ready_s']:.2f} | {r['rps_per_core']:.1f} | {native_rps} | "
            measured += f"{r['p99_ms']:.0f} | {r['rss_mb_mean']:.0f}"
        lines.append(f"| {name} | {deployment['image_mb']:.0f} | {measured} |")
    return "\n".join(lines + memory_note(record))
