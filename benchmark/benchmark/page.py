"""`python -m benchmark.page`: the results page, `results/index.html`, from the raw records.

One static file that opens from disk: no server, nothing fetched, no framework. The table
across machines and models, then a section per machine and model: each mode's table and its
plots, inline SVG (benchmark.page_plots). Checkboxes (plain JavaScript, page.html) show and
hide strategies and variants; `index.html#hide=torch_serving,batched` opens with those
hidden. It reads the records benchmark.report reads; nothing here measures.

Each column is a header and a function of a configuration's row (benchmark.metrics.Row):
a figure the rows gain is a column more in `columns()`.
"""

import argparse
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from matplotlib import colormaps
from matplotlib.colors import to_hex

from benchmark.machine import RESULTS
from benchmark.metrics import Row, ServiceRecord, derive, slo_ms
from benchmark.page_plots import open_loop_svg, selection_attrs, throughput_svg
from benchmark.record import ComposeRecord
from benchmark.report import MachineRecords, load_machines
from benchmark.tables import DEFAULT_SLO_MS, efficiency_text, with_spread

PAGE = "index.html"  # in the results folder, beside the machines' folders
TEMPLATE = Path(__file__).with_name("page.html")
# A colour per configuration, the same in every plot of the page: matplotlib's tab20, its
# ten strong shades first (tab10's), then the ten light ones.
PALETTE = [to_hex(colormaps["tab20"](i)) for i in (*range(0, 20, 2), *range(1, 20, 2))]
NO_RESULTS = "<p>No results yet: <code>make bench</code>.</p>"
MODE_TITLES = {"native": "Processes on the host", "compose": "Containers (Docker Compose)"}

Cell = Callable[[str, Row], str]  # (configuration, its row) -> the cell's text


@dataclass(frozen=True)
class Column:
    header: str
    cell: Cell
    note: str = ""  # the header's tooltip


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def per_core(_: str, row: Row) -> str:
    return with_spread(row, "rps_per_core", ".1f")


def efficiency(_: str, row: Row) -> str:
    return efficiency_text(row)


def spread(key: str, spec: str) -> Cell:
    """A figure with its lowest and highest round, where the run had several rounds."""
    return lambda _, row: with_spread(row, key, spec)


def per_core_and_efficiency(name: str, row: Row) -> str:
    """The table across machines' cell."""
    return f"{per_core(name, row)} ({efficiency(name, row)})"


def image_mb(record: ComposeRecord) -> Cell:
    deployments = record["deployment"]
    return lambda name, _: _number(deployments[name]["image_mb"], 0) if name in deployments else "-"


def columns(record: ServiceRecord) -> list[Column]:
    """The columns of a mode's table, after the configuration's name."""
    slo, concurrency = slo_ms(record, DEFAULT_SLO_MS), record["plan"]["concurrency"]
    shown = [
        Column("requests/s per core", per_core, "closed loop: ab, keep-alive"),
        Column(
            "efficiency",
            efficiency,
            "against its own pipeline's in-process ceiling "
            "(†: ceiling timed beside the idle service)",
        ),
        Column(
            "CPU ms/request",
            spread("cpu_ms_per_request", ".1f"),
            "CPU time of the service's process tree per request",
        ),
        Column("p99 ms", spread("p99_ms", ".0f"), f"closed loop, c={concurrency}"),
        Column(
            "p99 ms at 80% load",
            spread("p99_at_80_ms", ".0f"),
            "open loop at 80% of its own closed-loop throughput",
        ),
        Column(
            f"per core at p99 ≤ {slo:.0f} ms",
            spread("bounded_per_core", ".1f"),
            "the highest open-loop rate within the SLO, no failures",
        ),
        Column("RSS MB", lambda _, r: _number(r["rss_mb_mean"], 0), "mean under load"),
        Column("start s", lambda _, r: _number(r["ready_s"], 2), "start to first 200"),
    ]
    if record["mode"] == "compose":
        shown.append(Column("image MB", image_mb(record)))
    return shown


def _tag(name: str, text: str, attrs: str = "") -> str:
    return f"<{name}{attrs}>{text}</{name}>"


def render_table(table_id: str, header: list[tuple[str, str]], rows: dict[str, list[str]]) -> str:
    """A table with a row per configuration (`rows`: its cells' text), which the checkboxes
    select by its strategy and variant; `header`: each column's title and tooltip."""
    head = _tag("th", "configuration") + "".join(
        _tag("th", html.escape(title), f' title="{html.escape(note)}"' if note else "")
        for title, note in header
    )
    body = [
        _tag(
            "tr",
            _tag("th", html.escape(config)) + "".join(_tag("td", c) for c in cells),
            selection_attrs(config),
        )
        for config, cells in rows.items()
    ]
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table>"
    )


def section_id(records: MachineRecords, results: Path) -> str:
    """A section's anchor: its folder under results/, e.g. intel-xeon-…-x86_64-resnet50."""
    return records.folder.relative_to(results).as_posix().replace("/", "-")


def render_summary(machines: list[MachineRecords]) -> str:
    """Requests/s per core (efficiency): a row per configuration, a column per machine,
    model and mode."""
    measured = [(m, mode, rec) for m in machines for mode, rec in m.measured().items()]
    derived = [derive(record) for _, _, record in measured]
    configs = list(dict.fromkeys(name for rows in derived for name in rows))
    header = [
        (
            f"{m.title()}, {mode}"
            + (f" ({r['plan_name']} plan)" if r["plan_name"] != "full" else ""),
            "",
        )
        for m, mode, r in measured
    ]
    rows = {
        name: [
            per_core_and_efficiency(name, rows[name]) if name in rows else "-" for rows in derived
        ]
        for name in configs
    }
    return (
        '<section id="summary"><h2>Across machines and models</h2>'
        "<p>Requests/s per core under the closed loop (efficiency against each configuration's "
        "own in-process ceiling; †: that ceiling timed beside the idle service, as older records "
        "did).</p>\n" + render_table("summary-table", header, rows) + "</section>"
    )


def render_mode(anchor: str, record: ServiceRecord, colors: dict[str, str]) -> str:
    """One mode's run of a machine and model: its table, then its two plots."""
    rows, header = derive(record), columns(record)
    machine, mode = record["machine"], record["mode"]
    plan = "" if record["plan_name"] == "full" else f", {record['plan_name']} plan (a first look)"
    rounds = record["plan"]["rounds"]
    plan += f"; medians of {rounds} interleaved rounds, [lowest, highest]" if rounds > 1 else ""
    when = f"measured {machine['date'][:10]}, commit {machine['git_commit'][:10]}{plan}"
    cells = {n: [c.cell(n, r) for c in header] for n, r in rows.items()}
    table = render_table(f"{anchor}-table", [(c.header, c.note) for c in header], cells)
    figures = [
        (
            f"{anchor}-open-loop",
            "p99 latency against offered rate (open loop, oha)",
            open_loop_svg(record, f"{anchor}-open-loop", colors),
        ),
        (
            f"{anchor}-throughput",
            "Requests/s per core against the in-process ceiling",
            throughput_svg(record, f"{anchor}-throughput"),
        ),
    ]
    plots = "".join(
        f'<figure id="{fid}">{svg}<figcaption>{caption}</figcaption></figure>'
        for fid, caption, svg in figures
    )
    return (
        f"<h3>{MODE_TITLES[mode]}</h3><p>{html.escape(when)}.</p>\n{table}\n"
        f'<div class="plots">{plots}</div>'
    )


def render_section(records: MachineRecords, results: Path, colors: dict[str, str]) -> str:
    anchor = section_id(records, results)
    folder = records.folder.relative_to(results).as_posix()
    parts = [
        f'<section id="{anchor}"><h2>{html.escape(records.title())}</h2>',
        f'<p>Raw results: <a href="{folder}/">results/{folder}/</a>.</p>',
    ]
    parts += [
        render_mode(f"{anchor}-{mode}", rec, colors) for mode, rec in records.measured().items()
    ]
    return "\n".join([*parts, "</section>"])


def render_page(results: Path) -> str:
    """The page, from the records under `results` (one folder per machine)."""
    results = results.resolve()
    machines = [m for m in load_machines(results) if m.measured()]
    configs = sorted({name for m in machines for r in m.measured().values() for name in derive(r)})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(configs)}
    template = Template(TEMPLATE.read_text())
    if not machines:
        return template.substitute(body=NO_RESULTS)
    contents = [("summary", "Across machines and models")]
    contents += [(section_id(m, results), m.title()) for m in machines]
    links = "".join(f'<li><a href="#{a}">{html.escape(title)}</a></li>' for a, title in contents)
    body = "\n".join(
        [
            f"<nav><ul>{links}</ul></nav>",
            render_summary(machines),
            *(render_section(m, results, colors) for m in machines),
        ]
    )
    return template.substitute(body=body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="one folder per machine")
    args = parser.parse_args()
    page = args.results / PAGE
    page.write_text(render_page(args.results))
    print(f"rendered {page} from the records in {args.results}")


if __name__ == "__main__":
    main()
