"""`python -m benchmark.report`: render every machine's raw results into the documentation.

Raw results live in `results/<machine>/` (`benchmark.machine`): `native-full.json`,
`compose-full.json` and `cluster-full.json` (or a `-short` run where no full one exists),
`native-overload.json` (the overload phase alone) and `fidelity.json`; those of another
model than the default in `results/<machine>/<model>/`.
The README gets the strategy table (from the manifests) and a headline table (the reference
machine, `benchmark.machine.REFERENCE_MACHINE`); docs/results.md gets a table across machines
and models, then one section per machine and model with its tables, and each such folder its
plots; docs/overload.md gets every machine's overload run. Each block is rewritten between
its markers, the rest of a page is left as written.
It reads only the runner's JSON; nothing here measures.
"""

import argparse
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from serving_common.strategy import Strategy, discover_strategies, framework_hosts
from weather_model.architectures import DEFAULT_ARCHITECTURE

from benchmark.comparisons import render_framework_costs, render_variant_effects
from benchmark.machine import REFERENCE_MACHINE, RESULTS, model_folders
from benchmark.metrics import Row, derive
from benchmark.plots import plot_results
from benchmark.record import ClusterRecord, ComposeRecord, NativeRecord, Record, load_record
from benchmark.tables import (
    efficiency_text,
    measured,
    render_cluster,
    render_deployment,
    render_fidelity,
    render_overload,
    render_tables,
    with_spread,
)

ROOT = Path(__file__).resolve().parents[2]
README = "README.md"
RESULTS_PAGE = "docs/results.md"  # relative to the repository's root, as README
# docs/results.md: the table across machines, then every machine's section.
START, END = "<!-- results:start -->", "<!-- results:end -->"
# The README: the strategy table, from the manifests (strategy.toml) alone...
STRATEGIES_START, STRATEGIES_END = "<!-- strategies:start -->", "<!-- strategies:end -->"
# ...and the headline table, the reference machine's run.
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
# Which run of a machine is shown, best first: a short run only where no full one exists.
PLANS_SHOWN = ("full", "short")
FIDELITY_FILE = "fidelity.json"  # benchmark.fidelity's record
OVERLOAD_FILE = "native-overload.json"  # `make bench PLAN=overload`
# docs/overload.md: each machine's run of the overload plan.
OVERLOAD_PAGE = "docs/overload.md"
OVERLOAD_START, OVERLOAD_END = "<!-- overload:start -->", "<!-- overload:end -->"


def render_strategies(strategies: dict[str, Strategy]) -> str:
    lines = ["| strategy | folder | port | stack |", "|---|---|---|---|"]
    lines += [
        f"| {s.title} | `{s.name}/` | {s.port} | {s.stack} |"
        for s in sorted(strategies.values(), key=lambda s: s.port)
    ]
    return "\n".join(lines)


@dataclass
class MachineRecords:
    """One machine's records of one model, the best plan of each mode (benchmark.record's
    shapes), and the folder they are in."""

    folder: Path
    architecture: str  # the model they measured (weather_model.architectures)
    native: NativeRecord | None = None
    compose: ComposeRecord | None = None
    cluster: ClusterRecord | None = None
    # The overload phase alone (`make bench PLAN=overload`), shown beside the run above.
    overload: NativeRecord | None = None

    def measured(self) -> dict[str, NativeRecord | ComposeRecord]:
        """The records of every service measured in full, by mode."""
        both = {"native": self.native, "compose": self.compose}
        return {mode: record for mode, record in both.items() if record is not None}

    def any(self) -> Record:
        record = self.native or self.compose or self.cluster or self.overload
        assert record is not None, "a folder without records is not listed"
        return record

    def title(self) -> str:
        """The machine, and the model where it is not the default."""
        model = "" if self.architecture == DEFAULT_ARCHITECTURE else f", {self.architecture}"
        return machine_title(self.any()) + model


def load_folder(folder: Path, architecture: str) -> MachineRecords | None:
    """The records in `folder`, which must have measured `architecture`; None if none."""
    records = MachineRecords(folder, architecture)
    for mode in ("native", "compose", "cluster"):
        path = next(
            (p for plan in PLANS_SHOWN if (p := folder / f"{mode}-{plan}.json").exists()),
            None,
        )
        if path is not None:
            setattr(records, mode, checked_record(path, mode, architecture))
    if (path := folder / OVERLOAD_FILE).exists():
        # A native record: checked_record has checked its mode.
        records.overload = cast(NativeRecord, checked_record(path, "native", architecture))
    found = records.native or records.compose or records.cluster or records.overload
    return records if found else None


def checked_record(path: Path, mode: str, architecture: str) -> Record:
    """The record at `path`, which must be of `mode` and have measured `architecture`."""
    record = load_record(path)
    if record["mode"] != mode:
        raise ValueError(f"{path}: a {record['mode']} record under a {mode} name")
    if record["model"]["architecture"] != architecture:
        raise ValueError(
            f"{path}: a record of {record['model']['architecture']} in {architecture}'s folder"
        )
    return record


def load_machines(results: Path) -> list[MachineRecords]:
    """Each machine's records, of each model (benchmark.machine.model_folders), the best
    plan of each mode, each upgraded to the current shape (benchmark.record.upgrade)."""
    found = []
    for machine in sorted(p for p in results.iterdir() if p.is_dir()):
        found += [
            r for folder, model in model_folders(machine) if (r := load_folder(folder, model))
        ]
    return found


def machine_title(record: Record) -> str:
    machine = record["machine"]
    return (
        f"{machine['cpu_model']}, {machine['cpus_online']} cores, {machine['os']} {machine['arch']}"
    )


def render_summary(machines: list[MachineRecords]) -> str:
    """Requests/s per core and efficiency against the ceiling: one row per strategy, one
    column per machine, model and mode."""
    columns = [
        (records.title(), mode, record)
        for records in machines
        for mode, record in records.measured().items()
    ]
    derived = [derive(record) for _, _, record in columns]
    strategies = list(dict.fromkeys(s for rows in derived for s in rows))
    header = [
        f"{title}, {mode}"
        + (f" ({record['plan_name']} plan)" if record["plan_name"] != "full" else "")
        for title, mode, record in columns
    ]
    lines = [
        "Requests/s per core (efficiency against the machine's in-process ceiling; † ceiling "
        "timed beside the idle service, see each machine's table):",
        "",
        f"| strategy | {' | '.join(header)} |",
        "|---|" + "---|" * len(columns),
    ]
    for strategy in strategies:
        cells = []
        for rows in derived:
            row = rows.get(strategy)
            mark = "†" if row and row["ceiling_beside_service"] else ""
            cells.append(
                f"{row['rps_per_core']:.1f} ({row['efficiency']:.0%}{mark})" if row else "-"
            )
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Page:
    """Where a machine's section goes: links are relative to the page's folder; paths are
    shown from the repository's root, the folder that holds results/."""

    folder: Path
    root: Path

    def link(self, target: Path) -> str:
        return Path(os.path.relpath(target, self.folder)).as_posix()

    def shown(self, target: Path) -> str:
        return target.relative_to(self.root).as_posix()


def render_machine(
    records: MachineRecords,
    page: Page,
    framework_over: dict[str, str],
    baseline: str | None,
) -> str:
    """One machine's section for one model: native tables and plots, what each framework
    costs, then the deployment table. `framework_over`: framework strategy -> the one it is
    set against; `baseline`: the strategy the others are set against."""
    folder = records.folder
    link, shown = page.link(folder), page.shown(folder)
    lines = [f"### {records.title()}", "", f"Raw results: [`{shown}/`]({link}/).", ""]
    if records.native:
        plot_results(records.native, folder)
        lines += [render_tables(records.native, link, baseline), ""]
        for comparison in (
            render_framework_costs(records.native, framework_over),
            render_variant_effects(records.native),
        ):
            lines += [comparison, ""] if comparison else []
    fidelity = folder / FIDELITY_FILE
    if fidelity.exists():
        lines += [
            "Preprocessing variants: fidelity to the PyTorch reference and speed "
            "(`python -m benchmark.fidelity`, part of `make bench`):",
            "",
            render_fidelity(
                json.loads(fidelity.read_text()),
                derive(records.native) if records.native else {},
            ),
            "",
        ]
    if records.compose:
        lines += [
            "Deployment (Docker Compose):",
            "",
            render_deployment(records.compose, records.native),
            "",
        ]
    if records.cluster:
        lines += [render_cluster(records.cluster), ""]
    if records.overload:
        lines += [render_overload_run(records.overload), ""]
    return "\n".join(lines).rstrip()


def render_overload_run(record: NativeRecord) -> str:
    """An overload plan's record: which run (each run, where `--add` grew it), then its
    Past capacity table."""
    return "\n".join(
        [
            f"The overload phase alone (`make bench PLAN=overload`), each service on cpu(s) "
            f"{record['machine']['service_cpus']}: measured {measured(record)}."
            + rounds_caption(record),
            *render_overload(record, derive(record)),
        ]
    )


def render_overload_runs(results: Path) -> str:
    """docs/overload.md's tables: every machine's overload plan run, default model."""
    sections = [
        f"#### {records.title()}\n\n{render_overload_run(records.overload)}"
        for records in load_machines(results.resolve())
        if records.overload and records.architecture == DEFAULT_ARCHITECTURE
    ]
    return "\n\n".join(sections) or "No run of the overload plan yet: `make bench PLAN=overload`."


def render_results(results: Path, page_dir: Path, strategies: dict[str, Strategy]) -> str:
    """The summary across machines and models, then each one's section (and its plots), for
    a page in `page_dir`."""
    framework_over = framework_hosts(strategies)
    # The manifests' baseline (`baseline = true`), looked up by name in each record: a
    # record that did not measure it (an older one, or one of a few `--services`) shows
    # "-" in its column.
    baseline = next((s.name for s in strategies.values() if s.baseline), None)
    results = results.resolve()
    machines = load_machines(results)
    if not machines:
        return "No results yet: `make bench`."
    page = Page(page_dir.resolve(), results.parent)
    sections = [render_summary(machines)]
    sections += [render_machine(records, page, framework_over, baseline) for records in machines]
    return "\n\n".join(sections)


@dataclass
class Headline:
    """One configuration of the reference machine's run, and its image where a Compose run
    measured one."""

    name: str
    row: Row
    image_mb: float | None


# The headline's columns: a header and how a cell is written; the measured figures with
# their lowest and highest round where the run had several (benchmark.tables.with_spread).
HEADLINE_COLUMNS: list[tuple[str, Callable[[Headline], str]]] = [
    ("requests/s per core", lambda h: with_spread(h.row, "rps_per_core", ".1f")),
    ("efficiency", lambda h: efficiency_text(h.row)),
    ("p99 ms at 80% load", lambda h: with_spread(h.row, "p99_at_80_ms", ".0f")),
    ("RSS MB (peak)", lambda h: f"{h.row['rss_mb_peak']:.0f}"),
    ("start s", lambda h: seconds(h.row["ready_s"])),
    ("image MB", lambda h: optional(h.image_mb, ".0f")),
]


def seconds(value: float) -> str:
    # Starts range from a tenth of a second (Rust) to tens (Ray): two digits either way.
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def headline_caption(records: MachineRecords, native: NativeRecord) -> str:
    """Which machine and which run the headline shows."""
    machine = native["machine"]
    plan = "" if native["plan_name"] == "full" else f", {native['plan_name']} plan"
    images = ""
    if records.compose:
        images = f"; image sizes from its Compose run of {records.compose['machine']['date'][:10]}"
    return (
        f"{records.title()} (`{records.folder.name}`), each service on cpu(s) "
        f"{machine['service_cpus']}: the native run of {machine['date'][:10]}, commit "
        f"`{machine['git_commit'][:10]}`{plan}{images}." + rounds_caption(native)
    )


def rounds_caption(record: NativeRecord) -> str:
    rounds = record["plan"]["rounds"]
    if rounds < 2:
        return ""
    return (
        f" Medians of {rounds} interleaved rounds, the lowest and highest round in square brackets."
    )


def render_headline(results: Path) -> str:
    """The reference machine's native run of the default model: one row per configuration,
    fastest per core first."""
    records = load_folder(results / REFERENCE_MACHINE, DEFAULT_ARCHITECTURE)
    if records is None or records.native is None:
        return f"No native run of the reference machine (`{REFERENCE_MACHINE}`) yet."
    images = records.compose["deployment"] if records.compose else {}
    headlines = [
        Headline(name, row, images[name]["image_mb"] if name in images else None)
        for name, row in derive(records.native).items()
    ]
    lines = [
        headline_caption(records, records.native),
        "",
        "| strategy | " + " | ".join(header for header, _ in HEADLINE_COLUMNS) + " |",
        "|---|" + "---|" * len(HEADLINE_COLUMNS),
    ]
    lines += [
        f"| {h.name} | " + " | ".join(cell(h) for _, cell in HEADLINE_COLUMNS) + " |"
        for h in headlines
    ]
    return "\n".join(lines)


@dataclass
class Block:
    """A rendered block and where it goes: a page (relative to the repository's root) and
    the markers around it there."""

    page: str
    markers: tuple[str, str]
    text: str


def render_blocks(root: Path, results: Path, strategies: dict[str, Strategy]) -> list[Block]:
    """Every rendered block of the documentation, from the manifests and `results`."""
    results_dir = (root / RESULTS_PAGE).parent
    return [
        Block(README, (STRATEGIES_START, STRATEGIES_END), render_strategies(strategies)),
        Block(README, (HEADLINE_START, HEADLINE_END), render_headline(results)),
        Block(RESULTS_PAGE, (START, END), render_results(results, results_dir, strategies)),
        Block(OVERLOAD_PAGE, (OVERLOAD_START, OVERLOAD_END), render_overload_runs(results)),
    ]


def rendered_part(text: str, markers: tuple[str, str]) -> str:
    """What is between a page's markers, as render_block writes it."""
    start, end = markers
    return text.split(start + "\n", 1)[1].split("\n" + end, 1)[0]


def render_block(page: Path, markers: tuple[str, str], text: str) -> None:
    """`text` between the page's markers, the rest of the page as it was."""
    start, end = markers
    written = page.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(written):
        raise ValueError(f"{page} has no {start} ... {end} markers")
    page.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", written))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=ROOT, help=f"where {README} and {RESULTS_PAGE} are"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="one folder per machine")
    args = parser.parse_args()
    for block in render_blocks(args.root, args.results, discover_strategies([ROOT])):
        render_block(args.root / block.page, block.markers, block.text)
    print(
        f"rendered {README}, {RESULTS_PAGE} and {OVERLOAD_PAGE} from the manifests and "
        f"{args.results}"
    )


if __name__ == "__main__":
    main()
