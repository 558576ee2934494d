"""PNG plots of one raw record: throughput per core, latency percentiles, open loop."""

from pathlib import Path
from typing import Any

from benchmark.metrics import ServiceRecord, derive, measured_services, slo_ms


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


def plot_results(record: ServiceRecord, folder: Path) -> list[Path]:
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
    percentiles = {"p50": [rows[n]["p50_ms"] for n in names],
                   "p90": [rows[n]["p90_ms"] for n in names],
                   "p99": [rows[n]["p99_ms"] for n in names]}  # fmt: skip
    for i, (pct, values) in enumerate(percentiles.items()):
        ax.bar([x + i * width for x in range(len(names))], values, width, label=pct)
    ax.set_xticks([x + width for x in range(len(names))], names)
    ax.set_ylabel(f"ms at c={record['plan']['concurrency']}")
    ax.legend(fontsize=8)
    _save(fig, folder / "latency.png")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, result in measured_services(record).items():
        steps = result["open_loop"]["steps"]
        ax.plot([s["offered_rps"] for s in steps], [s["p99_ms"] for s in steps], "o-", label=name)
    slo = slo_ms(record, 0.0)
    ax.axhline(slo, color="#C44E52", linestyle="--", label=f"SLO {slo:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("p99 ms")
    ax.legend(fontsize=8)
    _save(fig, folder / "open_loop.png")
    plt.close("all")
    return [folder / n for n in ("throughput.png", "latency.png", "open_loop.png")]
