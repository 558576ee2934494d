"""The results page's plots (benchmark.page), as SVG text to inline: each record's open loop
(p99 against offered rate) and throughput per core. Every element drawn for a configuration
(its line, its bars, its legend entry) carries that configuration's `data-strategy` and
`data-variant`, so the page's checkboxes can hide it.

Deterministic, so that the committed page can be compared with a fresh render: the ids
matplotlib hashes are salted with the plot's own id (not a random one), the date is left out,
and text stays text (no glyph outlines drawn from the fonts of the machine).
"""

import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

from benchmark.metrics import ServiceRecord, derive, measured_services, slo_ms

# The throughput plot's colours: one per kind of bar, as benchmark.plots draws them.
CLOSED, BOUNDED, CEILING = "#4C72B0", "#55A868", "#C44E52"
DEFAULT_VARIANT = "default"
# An id in matplotlib's SVG, and each way it refers to one: id="…", url(#…), href="#…".
_ID_REFERENCE = re.compile(r'( id="|url\(#|href="#)([^")]+)')


def selection(config: str) -> tuple[str, str]:
    """A configuration's strategy and variant: `ray_serving+batched` is ray_serving's
    `batched` variant, `ray_serving` its default."""
    strategy, _, variant = config.partition("+")
    return strategy, variant or DEFAULT_VARIANT


def selection_attrs(config: str) -> str:
    """The attributes the page's checkboxes select a configuration's elements by."""
    strategy, variant = selection(config)
    return f' data-strategy="{html.escape(strategy)}" data-variant="{html.escape(variant)}"'


@dataclass
class Plot:
    """One figure being drawn, and which of its elements belong to which configuration."""

    plot_id: str
    figure: Figure
    tagged: dict[str, str] = field(default_factory=dict)  # SVG id -> configuration

    def tag(self, artist: Any, config: str, part: str) -> None:
        gid = f"{part}-{len(self.tagged)}"
        artist.set_gid(gid)
        self.tagged[gid] = config

    def svg(self) -> str:
        """The figure as an <svg> element, its configurations' elements marked, and every id
        in it prefixed with the plot's (matplotlib numbers each figure's from 1; a page holds
        many)."""
        out = io.StringIO()
        with rc_context({"svg.hashsalt": self.plot_id, "svg.fonttype": "none"}):
            # "tight": the figure grows to hold the legend below the axes.
            self.figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
        text = out.getvalue()
        text = text[text.index("<svg") :]  # no XML prolog inside HTML
        for gid, config in self.tagged.items():
            text = text.replace(f'id="{gid}"', f'id="{gid}"{selection_attrs(config)}', 1)
        return _ID_REFERENCE.sub(lambda m: f"{m[1]}{self.plot_id}-{m[2]}", text)


def _legend_below(plot: Plot, handles: list[Any], labels: list[str], configs: list[str]) -> None:
    """The legend under the axes, in as many columns as fit the width; each configuration's
    entry tagged with it ("" for an entry that is nobody's, like the SLO)."""
    ax = plot.figure.axes[0]
    legend = ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=min(3, len(labels)),
        fontsize=8,
        frameon=False,
    )
    for handle, text, config in zip(
        legend.legend_handles, legend.get_texts(), configs, strict=True
    ):
        if config:
            plot.tag(handle, config, "key")
            plot.tag(text, config, "label")


def open_loop_svg(record: ServiceRecord, plot_id: str, colors: dict[str, str]) -> str:
    """p99 against offered rate, a line per configuration (`colors`: each one's, the same in
    every plot of the page), on a log scale, with the SLO."""
    plot = Plot(plot_id, Figure(figsize=(7, 3.4)))
    ax = plot.figure.add_subplot()
    services = measured_services(record)
    handles, labels, configs = [], [], []
    for name in derive(record):
        steps = services[name]["open_loop"]["steps"]
        (line,) = ax.plot(
            [s["offered_rps"] for s in steps],
            [s["p99_ms"] for s in steps],
            "o-",
            color=colors[name],
            markersize=4,
        )
        plot.tag(line, name, "line")
        handles.append(line)
        labels.append(name)
        configs.append(name)
    slo = slo_ms(record, 0.0)
    handles.append(ax.axhline(slo, color=CEILING, linestyle="--"))
    labels.append(f"SLO {slo:.0f} ms")
    configs.append("")
    ax.set_yscale("log")
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("p99 ms")
    _legend_below(plot, handles, labels, configs)
    return plot.svg()


def throughput_svg(record: ServiceRecord, plot_id: str) -> str:
    """Requests/s per core, a row per configuration, fastest on top: the closed loop, the
    open loop's highest rate within the SLO, and its pipeline's in-process ceiling."""
    rows = derive(record)
    names = list(rows)[::-1]  # barh draws upwards
    plot = Plot(plot_id, Figure(figsize=(7, 1.4 + 0.3 * len(names))))
    ax = plot.figure.add_subplot()
    y = range(len(names))
    closed = ax.barh(y, [rows[n]["rps_per_core"] for n in names], color=CLOSED)
    bounded = ax.barh(y, [rows[n]["bounded_per_core"] for n in names], color=BOUNDED, height=0.4)
    ceilings = [
        ax.plot(
            [rows[n]["ceiling_rps"]],
            [i],
            marker="|",
            markersize=16,
            markeredgewidth=2,
            color=CEILING,
            linestyle="none",
        )[0]
        for i, n in enumerate(names)
    ]
    ticks = ax.set_yticks(y, names)
    for name, *artists in zip(names, closed, bounded, ceilings, ticks, strict=True):
        for artist, part in zip(artists, ("closed", "bounded", "ceiling", "tick"), strict=True):
            plot.tag(artist, name, part)
    ax.set_xlabel("requests/s per core")
    slo = slo_ms(record, 0.0)
    labels = ["closed loop", f"open loop, p99 ≤ {slo:.0f} ms", "in-process ceiling"]
    _legend_below(plot, [closed, bounded, ceilings[0]], labels, ["", "", ""])
    return plot.svg()
