"""`python -m benchmark.report`: render every machine's raw results into the README.

Raw results live in `results/<machine>/` (`benchmark.machine`): `native-full.json`,
`compose-full.json` and `cluster-full.json` (or a `-short` run where no full one exists).
The README gets a table across machines, then one section per machine with its tables, and
each machine's folder its plots. It reads only the runner's JSON; nothing here measures.
"""

import argparse
import json
import re
from pathlib import Path
from typing import Any

from serving_common.strategy import Strategy, discover_strategies

from benchmark.machine import RESULTS
from benchmark.plots import plot_results
from benchmark.tables import (
    derive,
    plan_name,
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


def load_machines(results: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{machine folder: {mode: record}}, the best plan of each mode."""
    machines: dict[str, dict[str, dict[str, Any]]] = {}
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        records = {}
        for mode in ("native", "compose", "cluster"):
            for plan in PLANS_SHOWN:
                path = folder / f"{mode}-{plan}.json"
                if path.exists():
                    records[mode] = json.loads(path.read_text())
                    break
        if records:
            machines[folder.name] = records
    return machines


def machine_title(record: dict[str, Any]) -> str:
    machine = record["machine"]
    return (
        f"{machine['cpu_model']}, {machine['cpus_online']} cores, "
        f"{machine.get('os', 'linux')} {machine.get('arch', 'x86_64')}"
    )


def render_summary(machines: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Requests/s per core and efficiency against the ceiling: one row per strategy, one
    column per machine and mode."""
    columns = [
        (name, mode) for name, records in machines.items() for mode in records if mode != "cluster"
    ]
    derived = {(name, mode): derive(machines[name][mode]) for name, mode in columns}
    strategies = list(dict.fromkeys(s for rows in derived.values() for s in rows))
    header = [
        f"{machine_title(machines[name][mode])}, {mode}"
        + (
            f" ({plan_name(machines[name][mode])} plan)"
            if plan_name(machines[name][mode]) != "full"
            else ""
        )
        for name, mode in columns
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
        for column in columns:
            row = derived[column].get(strategy)
            mark = "†" if row and row["ceiling_beside_service"] else ""
            cells.append(
                f"{row['rps_per_core']:.1f} ({row['efficiency']:.0%}{mark})" if row else "-"
            )
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    return "\n".join(lines)


def render_machine(
    records: dict[str, Any], folder: Path, readme_dir: Path, framework_over: dict[str, str]
) -> str:
    """One machine's section: native tables and plots, what each framework costs, then the
    deployment table. `framework_over`: framework strategy -> the one it is set against."""
    any_record = records.get("native") or records.get("compose") or records["cluster"]
    shown = folder.relative_to(readme_dir) if folder.is_relative_to(readme_dir) else folder
    lines = [f"### {machine_title(any_record)}", "", f"Raw results: `{shown}/`.", ""]
    if "native" in records:
        plot_results(records["native"], folder)
        lines += [render_tables(records["native"], str(shown)), ""]
        costs = render_framework_costs(records["native"], framework_over)
        lines += [costs, ""] if costs else []
    fidelity = folder / FIDELITY_FILE
    if fidelity.exists():
        lines += [
            "Preprocessing variants: fidelity to the PyTorch reference and speed "
            "(`python -m benchmark.fidelity`, part of `make bench`):",
            "",
            render_fidelity(
                json.loads(fidelity.read_text()),
                derive(records["native"]) if "native" in records else {},
            ),
            "",
        ]
    if "compose" in records:
        lines += [
            "Deployment (Docker Compose):",
            "",
            render_deployment(records["compose"], records.get("native")),
            "",
        ]
    if "cluster" in records:
        lines += [render_cluster(records["cluster"]), ""]
    return "\n".join(lines).rstrip()


def render_results(results: Path, readme_dir: Path, strategies: dict[str, Strategy]) -> str:
    """The summary across machines, then each machine's section (and its plots)."""
    framework_over = {
        s.name: s.framework_over for s in strategies.values() if s.framework_over is not None
    }
    results = results.resolve()
    machines = load_machines(results)
    if not machines:
        return "No results yet: `make bench`."
    sections = [render_summary(machines)]
    sections += [
        render_machine(records, results / name, readme_dir, framework_over)
        for name, records in machines.items()
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
