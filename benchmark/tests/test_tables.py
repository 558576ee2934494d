"""The metrics and tables of a record (benchmark.metrics, benchmark.tables) and the report
that puts them in the README and docs/results.md (benchmark.report), on the committed
records."""

import copy
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest
from benchmark.machine import REFERENCE_MACHINE, model_folders
from benchmark.metrics import derive
from benchmark.record import load_record
from benchmark.report import (
    render_blocks,
    render_headline,
    render_overload_runs,
    render_results,
    rendered_part,
)
from benchmark.tables import baseline_label, render_tables
from record_builders import overload, with_rounds
from serving_common.strategy import discover_strategies

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
# The records the report renders: each machine's and each of its models' own folder (a run
# of a few configurations kept in a folder below, e.g. a threading experiment, is not one).
NATIVE = sorted(
    path
    for machine in RESULTS.iterdir()
    if machine.is_dir()
    for folder, _ in model_folders(machine)
    for path in folder.glob("native-*.json")
)
STRATEGIES = discover_strategies()
BASELINE = next(s.name for s in STRATEGIES.values() if s.baseline)


def test_the_pages_tables_are_a_fresh_render_of_the_committed_records(tmp_path):
    """Compared with the committed pages (the README's strategy and headline tables,
    docs/results.md's results) rather than with themselves: a committed record whose tables
    were not rendered (`make report`), or a renderer change that moves a figure, fails.
    Rendered from a copy of results/ (the plots are written beside the records), laid out
    as in the repository so that every link is the committed one."""
    shutil.copytree(RESULTS, tmp_path / "results")
    blocks = render_blocks(tmp_path, tmp_path / "results", STRATEGIES)
    assert {block.page for block in blocks} == {
        "README.md",
        "docs/results.md",
        "docs/overload.md",
    }
    for block in blocks:
        committed = rendered_part((ROOT / block.page).read_text(), block.markers)
        assert block.text == committed, f"{block.page}, {block.markers[0]}: `make report`"


def table_rows(text: str, header_start: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header cells and {first cell: cells} of the table whose header starts so."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return header, rows


@pytest.mark.parametrize("path", NATIVE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_row_is_set_against_the_manifests_baseline(path):
    """Round by round: each round's requests/s over the baseline's in the same round, their
    median, and with several rounds the lowest and highest."""
    record = load_record(path)
    assert BASELINE in record["services"]
    header, cells = table_rows(render_tables(record, "plots", BASELINE), "| service | pipeline")
    column = header.index(f"vs {baseline_label(BASELINE)}")
    assert cells[BASELINE][column] == "1.0x"

    def rounds(name: str) -> list[float]:
        result = record["services"][name]
        return [m["main"]["ab"]["requests_per_second"] for m in [result, *result["repeats"]]]

    for name in derive(record):
        ratios = [a / b for a, b in zip(rounds(name), rounds(BASELINE), strict=True)]
        low, median, high = (
            f"{r:.1f}" for r in (min(ratios), statistics.median(ratios), max(ratios))
        )
        expected = median if low == high else f"{median} [{low}, {high}]"
        assert cells[name][column] == f"{expected}x", name


def test_a_record_without_the_baseline_shows_no_ratio():
    record = load_record(NATIVE[0])
    del record["services"][BASELINE]
    header, cells = table_rows(render_tables(record, "plots", BASELINE), "| service | pipeline")
    column = header.index(f"vs {baseline_label(BASELINE)}")
    assert cells and all(row[column] == "-" for row in cells.values())
    header, _ = table_rows(render_tables(record, "plots", None), "| service | pipeline")
    assert "vs baseline" in header


def test_rows_are_fastest_per_core_first_and_a_failed_service_is_said_so():
    record = load_record(NATIVE[0])
    record["services"]["broken_serving"] = {"failed": ["study: 500 boom"]}
    rows = derive(record)
    per_core = [row["rps_per_core"] for row in rows.values()]
    assert per_core == sorted(per_core, reverse=True) and "broken_serving" not in rows
    text = render_tables(record, "plots", BASELINE)
    assert "**broken_serving failed verification and was not benchmarked:** study: 500 boom" in text


def test_a_record_with_a_size_sweep_has_the_payload_table():
    full = next(p for p in NATIVE if p.name == "native-full.json")
    record = load_record(full)
    _, cells = table_rows(render_tables(record, "plots", BASELINE), "| service | small")
    for name, row in derive(record).items():
        assert cells[name][1] == f"{row['sweep_per_core']['small']:.1f}", name
    swept = copy.deepcopy(record)
    for result in swept["services"].values():
        assert "failed" not in result
        result.pop("sweep", None)
    assert "| service | small" not in render_tables(swept, "plots", BASELINE)


def test_a_record_with_an_overload_phase_has_the_past_capacity_table():
    record = load_record(next(p for p in NATIVE if p.name == "native-full.json"))
    assert "Past capacity" not in render_tables(record, "plots", BASELINE)
    shares = {}
    for i, (name, result) in enumerate(record["services"].items()):
        capacity = result["main"]["ab"]["requests_per_second"]
        shares[name] = 0.5 + 0.05 * i
        result["overload"] = overload(capacity, shares[name] * capacity, 100.0, {2.0: 0.9})
    record["plan"]["overload_seconds"] = 10
    text = render_tables(record, "plots", BASELINE)
    assert "**Past capacity** (10 s each)" in text and "`ab -c 200 -r`" in text
    assert "(`ab -c 50`) just before and just after each step" in text
    header, cells = table_rows(text, "| service | capacity req/s")
    assert header[-2:] == ["2x: goodput", "2x: p99 of 200s ms"]
    for name, share in shares.items():
        assert cells[name][2] == f"{share:.0%}" and cells[name][-2:] == ["90%", "300"], name


def test_an_overload_plans_run_is_shown_in_its_machines_section_and_on_its_page(tmp_path):
    """`make bench PLAN=overload`'s record: in its machine's section of docs/results.md, and
    in docs/overload.md with every other machine's, each step's goodput with its rounds'
    range."""
    path = next(p for p in NATIVE if p.name == "native-overload.json")
    results = tmp_path / "results"
    (results / path.parent.name).mkdir(parents=True)
    assert render_overload_runs(results).startswith("No run of the overload plan yet")
    shutil.copy(path, results / path.parent.name / path.name)
    record = load_record(path)
    text = render_overload_runs(results)
    assert text.startswith("#### ") and f"commit `{record['machine']['git_commit'][:10]}`" in text
    header, cells = table_rows(text, "| service | capacity req/s")
    column = header.index("4x: goodput")
    overloaded = {name: row for name, row in derive(record).items() if row["overload_share"]}
    assert list(cells) == list(overloaded)  # the variants have no overload phase
    for name, row in overloaded.items():
        low, high = row["spread"]["overload_share 4x"]
        share = row["overload_share"]["4x"]
        assert cells[name][column] == f"{share:.0%} [{low:.0%}, {high:.0%}]", name
    section = render_results(results, tmp_path, STRATEGIES)
    assert "The overload phase alone (`make bench PLAN=overload`)" in section
    assert "| service | capacity req/s" in section


def test_an_older_record_is_marked_where_its_ceilings_were_timed_beside_the_service():
    record = load_record(NATIVE[0])
    beside = json.loads(json.dumps(record))
    name = next(iter(beside["services"]))
    beside["services"][name]["ceilings_measured"] = "service running"
    text = render_tables(beside, "plots", BASELINE)
    assert re.search(rf"^\| {re.escape(name)} \| .*\d%† \|", text, re.M)
    assert "† Ceilings timed while the service ran" in text


def test_another_model_has_a_column_and_a_section_of_its_own(tmp_path):
    """results/<machine>/<model>/: the other model's records beside the default's, a summary
    column and a section each, its plots in its own folder; a record of another model than
    its folder's is refused."""
    machine = NATIVE[0].parent.name
    record = json.loads(NATIVE[0].read_text())
    other = tmp_path / "results" / machine / "resnet50"
    other.mkdir(parents=True)
    shutil.copy(NATIVE[0], other.parent / NATIVE[0].name)
    resnet = load_record(NATIVE[0]) | {"model": {**record.get("model", {}), "labels": ["a"]}}
    resnet["model"] |= {"architecture": "resnet50", "state_dict_sha256": "ab" * 32}
    (other / "native-full.json").write_text(json.dumps(resnet))
    text = render_results(tmp_path / "results", tmp_path, STRATEGIES)
    summary, *sections = text.split("\n### ")
    title = sections[0].split("\n", 1)[0]
    assert [s.split("\n", 1)[0] for s in sections] == [title, f"{title}, resnet50"]
    assert f"| {title}, native" in summary and f"| {title}, resnet50, native" in summary
    raw = f"results/{machine}/resnet50/"
    assert f"Raw results: [`{raw}`]({raw})." in sections[1]  # the page is in tmp_path
    assert sorted(p.name for p in other.glob("*.png")) == sorted(
        p.name for p in other.parent.glob("*.png")
    )
    resnet["model"]["architecture"] = "mobilenet_v3_small"
    (other / "native-full.json").write_text(json.dumps(resnet))
    with pytest.raises(ValueError, match="a record of mobilenet_v3_small in resnet50's folder"):
        render_results(tmp_path / "results", tmp_path, STRATEGIES)


def test_rounds_are_shown_as_the_median_and_the_lowest_and_highest_round():
    record = load_record(NATIVE[0])
    names = list(derive(record))
    grown = with_rounds(record, {name: [0.9, 1.2] for name in names})
    rows = derive(grown)
    text = render_tables(grown, "plots", BASELINE)
    header, cells = table_rows(text, "| service | pipeline")
    column = header.index("per core")
    for name, row in rows.items():
        low, high = row["spread"]["rps_per_core"]
        expected = f"{row['rps_per_core']:.1f} [{low:.1f}, {high:.1f}]"
        assert cells[name][column] == expected, name
    assert "the median of 3 rounds, interleaved" in text
    _, once = table_rows(render_tables(record, "plots", BASELINE), "| service | pipeline")
    assert "[" not in once[names[0]][column]  # one round: the figure alone


def test_the_headline_is_the_reference_machines_run_with_its_images_where_measured(tmp_path):
    """One row per configuration of the reference machine's native run, fastest first; an
    image size only where its Compose run measured one; a message where it has no run."""
    assert render_headline(tmp_path).startswith("No native run of the reference machine")
    text = render_headline(RESULTS)
    header, cells = table_rows(text, "| strategy |")
    native = load_record(RESULTS / REFERENCE_MACHINE / "native-full.json")
    assert list(cells) == list(derive(native))
    compose = RESULTS / REFERENCE_MACHINE / "compose-short.json"
    images = load_record(compose)["deployment"] if compose.exists() else {}
    for name, row in cells.items():
        image = row[header.index("image MB")]
        assert image == (f"{images[name]['image_mb']:.0f}" if name in images else "-"), name
