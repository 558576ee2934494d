"""PNG plots of one raw record: throughput per core, latency percentiles, open loop."""

from pathlib import Path
from typing import Any

from benchmark.metrics import (
    Row,
    ServiceRecord,
    derive,
    figure,
    measured_services,
    rounds_of,
    slo_ms,
)


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A tight bounding box takes in legends placed outside the axes.
    fig.savefig(path, dpi=110, metadata={"Software": None}, bbox_inches="tight")
    fig.clf()


def error_bars(rows: dict[str, Row], names: list[str], key: str) -> list[list[float]] | None:
    """Matplotlib's xerr for a figure: below and above each median, to the lowest and the
    highest round; None for single-round records."""
    if all(rows[n]["rounds"] < 2 or key not in rows[n]["spread"] for n in names):
        return None
    below, above = [], []
    for name in names:
        row = rows[name]
        median = figure(row, key)
        low, high = row["spread"].get(key, (median, median))
        below.append(median - low)
        above.append(high - median)
    return [below, above]


def plot_results(record: ServiceRecord, folder: Path) -> list[Path]:
    """throughput.png, latency.png and open_loop.png, from the raw record only."""
    plt = _pyplot()
    rows = derive(record)
    names = list(rows)

    # Tall enough for every configuration; the legend above the axes, in two columns.
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.32 * len(names)))
    ax.barh(names, [rows[n]["rps_per_core"] for n in names], color="#4C72B0",
            xerr=error_bars(rows, names, "rps_per_core"), capsize=3,
            label="closed loop (bars: lowest and highest round)")  # fmt: skip
    ax.barh(names, [rows[n]["bounded_per_core"] for n in names], color="#55A868", height=0.4,
            label="open loop, p99 within SLO")  # fmt: skip
    ax.scatter([rows[n]["ceiling_rps"] for n in names], names, marker="|", s=300,
               color="#C44E52", label="ceiling, measured around its run", zorder=3)  # fmt: skip
    ax.set_xlabel("requests/s per core")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8,
              markerscale=0.6, frameon=False)  # fmt: skip
    _save(fig, folder / "throughput.png")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.25
    percentiles = {"p50": [rows[n]["p50_ms"] for n in names],
                   "p90": [rows[n]["p90_ms"] for n in names],
                   "p99": [rows[n]["p99_ms"] for n in names]}  # fmt: skip
    for i, (pct, values) in enumerate(percentiles.items()):
        ax.bar([x + i * width for x in range(len(names))], values, width, label=pct)
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_ylabel(f"ms at c={record['plan']['concurrency']}")
    ax.legend(fontsize=8)
    _save(fig, folder / "latency.png")

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for index, (name, result) in enumerate(measured_services(record).items()):
        colour = f"C{index % 10}"
        # Every round's curve, in one colour: their spread is the open loop's noise.
        for number, measured in enumerate(rounds_of(result)):
            steps = measured["open_loop"]["steps"]
            ax.plot([s["offered_rps"] for s in steps], [s["p99_ms"] for s in steps], "o-",
                    color=colour, markersize=3, linewidth=1, alpha=1 if number == 0 else 0.5,
                    label=name if number == 0 else None)  # fmt: skip
    slo = slo_ms(record, 0.0)
    ax.axhline(slo, color="#C44E52", linestyle="--", label=f"SLO {slo:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("p99 ms")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    _save(fig, folder / "open_loop.png")
    plt.close("all")
    return [folder / n for n in ("throughput.png", "latency.png", "open_loop.png")]
