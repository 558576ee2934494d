"""`python -m benchmark.report`: render raw results into README tables and PNG plots.

It reads only the runner's JSON; nothing here measures.
"""

import argparse
import json
import re
from pathlib import Path
from typing import Any

from serving_common.strategy import Strategy, discover_strategies

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"
# The compose-mode record renders into its own section.
DEPLOY_START, DEPLOY_END = "<!-- deployment:start -->", "<!-- deployment:end -->"
# The strategy table, from the manifests (strategy.toml) alone.
STRATEGIES_START, STRATEGIES_END = "<!-- strategies:start -->", "<!-- strategies:end -->"
BASELINE = "torch_serving"


def render_strategies(strategies: dict[str, Strategy]) -> str:
    lines = ["| strategy | folder | port | stack |", "|---|---|---|---|"]
    lines += [
        f"| {s.title} | `{s.name}/` | {s.port} | {s.stack} |"
        for s in sorted(strategies.values(), key=lambda s: s.port)
    ]
    return "\n".join(lines)


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


def render_tables(record: dict[str, Any]) -> str:
    rows = derive(record)
    machine, plan, ceiling = record["machine"], record["plan"], record["ceiling"]
    base = rows.get(BASELINE, {})
    slo = next(
        (r["open_loop"]["slo_ms"] for r in record["services"].values() if "open_loop" in r), 100.0
    )
    cmd = " ".join(next(iter(record["services"].values())).get("main", {}).get("command", []))
    lines = [
        f"Measured {machine['date']} on {machine['cpu_model']}, "
        f"commit `{machine['git_commit'][:10]}`: each service on cpu(s) "
        f"{machine['service_cpus']} (taskset), ab on cpu(s) {machine['load_cpus']}"
        f"{' (quick mode: smoke numbers only)' if record['quick'] else ''}. Load: `{cmd}`.",
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
        "![throughput per core against the ceiling](results/throughput.png)",
        "![latency percentiles under the closed loop](results/latency.png)",
        "![p99 latency against offered rate](results/open_loop.png)",
    ]
    return "\n".join(lines)


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    fig.clf()


def plot_results(record: dict[str, Any], folder: Path) -> list[Path]:
    """throughput.png, latency.png and open_loop.png, from the raw record only."""
    plt = _pyplot()
    rows = derive(record)
    names = list(rows)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names, [rows[n]["rps_per_core"] for n in names], color="#4C72B0", label="closed loop")
    ax.barh(names, [rows[n]["bounded_per_core"] for n in names], color="#55A868", height=0.4,
            label="open loop, p99 within SLO")  # fmt: skip
    ax.scatter([rows[n]["ceiling_rps"] for n in names], names, marker="|", s=600,
               color="#C44E52", label="ceiling, measured around its run")  # fmt: skip
    ax.set_xlabel("requests/s per core")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, markerscale=0.4)
    _save(fig, folder / "throughput.png")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.25
    for i, pct in enumerate(("p50_ms", "p90_ms", "p99_ms")):
        ax.bar([x + i * width for x in range(len(names))], [rows[n][pct] for n in names], width,
               label=pct.removesuffix("_ms"))  # fmt: skip
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_ylabel(f"ms at c={record['plan']['concurrency']}")
    ax.legend(fontsize=8)
    _save(fig, folder / "latency.png")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, result in record["services"].items():
        steps = result.get("open_loop", {}).get("steps", [])
        ax.plot([s["offered_rps"] for s in steps], [s["p99_ms"] for s in steps], "o-", label=name)
    slo = next(
        (r["open_loop"]["slo_ms"] for r in record["services"].values() if "open_loop" in r), 0
    )
    ax.axhline(slo, color="#C44E52", linestyle="--", label=f"SLO {slo:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("p99 ms")
    ax.legend(fontsize=8)
    _save(fig, folder / "open_loop.png")
    plt.close("all")
    return [folder / n for n in ("throughput.png", "latency.png", "open_loop.png")]


def render_deployment(record: dict[str, Any], native: dict[str, Any] | None = None) -> str:
    """The study's deployment table: image size and container start, with compose throughput
    next to the native run's (`native`, when there is one)."""
    rows = derive(record)
    native_rows = derive(native) if native else {}
    runs = next(iter(rows.values()))["startup_runs"] if rows else 0
    lines = [
        f"Containers measured {record['machine']['date']} on {record['machine']['cpu_model']}, "
        f"commit `{record['machine']['git_commit'][:10]}`, cpuset "
        f"{record['machine']['service_cpus']} per service, load from cpu(s) "
        f"{record['machine']['load_cpus']}"
        + (f"; native figures from the run of {native['machine']['date']}." if native else "."),
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
    return "\n".join(lines)


def render_readme(readme: Path, tables: str, markers: tuple[str, str] = (START, END)) -> None:
    start, end = markers
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {start} ... {end} markers")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{tables}\n{end}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "raw", type=Path, nargs="?", help="a raw JSON file written by benchmark.runner"
    )
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--plots", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    strategies = render_strategies(discover_strategies([ROOT]))
    render_readme(args.readme, strategies, (STRATEGIES_START, STRATEGIES_END))
    if args.raw is None:
        print(f"rendered the strategy table in {args.readme}")
        return
    record = json.loads(args.raw.read_text())
    if record["mode"] == "compose":
        native_path = args.raw.with_name("native-full.json")
        native = json.loads(native_path.read_text()) if native_path.exists() else None
        tables = render_deployment(record, native)
        render_readme(args.readme, tables, (DEPLOY_START, DEPLOY_END))
        print(f"rendered the deployment table in {args.readme}")
        return
    render_readme(args.readme, render_tables(record))
    plots = plot_results(record, args.plots)
    print(f"rendered {args.readme} and {', '.join(str(p) for p in plots)}")


if __name__ == "__main__":
    main()
