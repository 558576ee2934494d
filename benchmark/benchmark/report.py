"""`python -m benchmark.report`: render every machine's raw results into the README.

Raw results live in `results/<machine>/` (`benchmark.machine`): `native-full.json`,
`compose-full.json` and `cluster-full.json` (or a `-short` run where no full one exists),
and `fidelity.json`; those of another model than the default in `results/<machine>/<model>/`.
The README gets a table across machines and models, then one section per machine and model
with its tables, and each such folder its plots. It reads only the runner's JSON; nothing
here measures.
"""

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from serving_common.strategy import Strategy, discover_strategies, framework_hosts
from weather_model.architectures import DEFAULT_ARCHITECTURE

from benchmark.machine import RESULTS, model_folders
from benchmark.metrics import derive
from benchmark.plots import plot_results
from benchmark.record import ClusterRecord, ComposeRecord, NativeRecord, Record, load_record
from benchmark.tables import (
    render_cluster,
    render_deployment,
    render_fidelity,
    render_framework_costs,
    render_tables,
)

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"
# The strategy table, from the manifests (strategy.toml) alone.
STRATEGIES_START, STRATEGIES_END = "<!-- strategies:start -->", "<!-- strategies:end -->"
# Which run of a machine is shown, best first: a short run only where no full one exists.
PLANS_SHOWN = ("full", "short")
FIDELITY_FILE = "fidelity.json"  # benchmark.fidelity's record


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

    def measured(self) -> dict[str, NativeRecord | ComposeRecord]:
        """The records of every service measured in full, by mode."""
        both = {"native": self.native, "compose": self.compose}
        return {mode: record for mode, record in both.items() if record is not None}

    def any(self) -> Record:
        record = self.native or self.compose or self.cluster
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
        if path is None:
            continue
        record = load_record(path)
        if record["mode"] != mode:
            raise ValueError(f"{path}: a {record['mode']} record under a {mode} name")
        if record["model"]["architecture"] != architecture:
            raise ValueError(
                f"{path}: a record of {record['model']['architecture']} in {architecture}'s folder"
            )
        setattr(records, mode, record)
    return records if records.native or records.compose or records.cluster else None


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


def render_machine(
    records: MachineRecords,
    readme_dir: Path,
    framework_over: dict[str, str],
    baseline: str | None,
) -> str:
    """One machine's section for one model: native tables and plots, what each framework
    costs, then the deployment table. `framework_over`: framework strategy -> the one it is
    set against; `baseline`: the strategy the others are set against."""
    folder = records.folder
    shown = folder.relative_to(readme_dir) if folder.is_relative_to(readme_dir) else folder
    lines = [f"### {records.title()}", "", f"Raw results: `{shown}/`.", ""]
    if records.native:
        plot_results(records.native, folder)
        lines += [render_tables(records.native, str(shown), baseline), ""]
        costs = render_framework_costs(records.native, framework_over)
        lines += [costs, ""] if costs else []
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
    return "\n".join(lines).rstrip()


def render_results(results: Path, readme_dir: Path, strategies: dict[str, Strategy]) -> str:
    """The summary across machines and models, then each one's section (and its plots)."""
    framework_over = framework_hosts(strategies)
    # The manifests' baseline (`baseline = true`), looked up by name in each record: a
    # record that did not measure it (an older one, or one of a few `--services`) shows
    # "-" in its column.
    baseline = next((s.name for s in strategies.values() if s.baseline), None)
    results = results.resolve()
    machines = load_machines(results)
    if not machines:
        return "No results yet: `make bench`."
    sections = [render_summary(machines)]
    sections += [
        render_machine(records, readme_dir, framework_over, baseline) for records in machines
    ]
    return "\n\n".join(sections)


def render_readme(readme: Path, tables: str, markers: tuple[str, str] = (START, END)) -> None:
    start, end = markers
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {start} ... {end} markers")
    readme.write_text(pattern.sub(lambda _: f"{start}\n{tables}\n{end}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help="one folder per machine")
    args = parser.parse_args()
    strategies = discover_strategies([ROOT])
    render_readme(args.readme, render_strategies(strategies), (STRATEGIES_START, STRATEGIES_END))
    readme_dir = args.readme.parent.resolve()
    render_readme(args.readme, render_results(args.results, readme_dir, strategies))
    print(f"rendered {args.readme}: the strategy table and the results in {args.results}")


if __name__ == "__main__":
    main()
