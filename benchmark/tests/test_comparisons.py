"""Tables setting one configuration against another of the same record
(benchmark.comparisons), on the committed records grown by rounds."""

from pathlib import Path

from benchmark.comparisons import render_framework_costs, render_variant_effects, variant_pairs
from benchmark.metrics import derive
from benchmark.record import load_record
from record_builders import with_rounds
from serving_common.strategy import discover_strategies, framework_hosts

RESULTS = Path(__file__).resolve().parents[2] / "results"
NATIVE = sorted(RESULTS.glob("**/native-*.json"))


def cells(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {row[0].strip(): [cell.strip() for cell in row] for row in rows[1:]}


def test_each_variant_is_set_against_its_strategys_default_where_both_were_measured():
    assert variant_pairs(["a", "a+x", "b+y", "c", "c+z"]) == [("a+x", "a"), ("c+z", "c")]
    measured = next(r for r in map(load_record, NATIVE) if variant_pairs(list(r["services"])))
    record = with_rounds(measured, {name: [] for name in measured["services"]})  # one round
    rows = derive(record)
    table = cells(render_variant_effects(record))
    for variant, default in variant_pairs(list(rows)):
        environment = record["strategies"][variant]["environment"]
        assert table[variant][1] == ", ".join(f"{k}={v}" for k, v in environment.items())
        change = rows[variant]["rps_per_core"] / rows[default]["rps_per_core"] - 1
        assert table[variant][3] == f"{change:+.0%}", variant
    plain = next(r for r in map(load_record, NATIVE) if not variant_pairs(list(r["services"])))
    assert render_variant_effects(plain) == ""


def first_round_ratio(record: dict, name: str, other: str) -> float:
    """`name`'s requests/s per core over `other`'s in the record's first round."""
    rows = derive(with_rounds(record, {key: [] for key in record["services"]}))
    return rows[name]["rps_per_core"] / rows[other]["rps_per_core"]


def test_a_variants_difference_is_judged_against_its_rounds():
    record = next(r for r in map(load_record, NATIVE) if variant_pairs(list(r["services"])))
    variant, default = variant_pairs(list(record["services"]))[0]
    # Later rounds at 1.3x and 0.8x of the default, whatever the first round measured: the
    # rounds' range spans no difference at all.
    ratio = first_round_ratio(record, variant, default)
    noisy = with_rounds(record, {variant: [1.3 / ratio, 0.8 / ratio], default: [1.0, 1.0]})
    assert cells(render_variant_effects(noisy))[variant][3].endswith("no measurable difference]")
    steady = with_rounds(record, {variant: [1.0, 1.0], default: [1.0, 1.0]})
    assert "[" not in cells(render_variant_effects(steady))[variant][3]


def test_a_framework_difference_within_its_rounds_range_is_called_no_measurable_difference():
    framework_over = framework_hosts(discover_strategies())
    record, name, host = next(
        (record, name, host)
        for record in map(load_record, NATIVE)
        for name, host in framework_over.items()
        if name in record["services"]
    )

    def difference_cell(scales: dict[str, list[float]]) -> str:
        text = render_framework_costs(with_rounds(record, scales), framework_over)
        return cells(text)[name][3]  # configuration, against, requests/s, difference

    # Per round, the framework against its host: as measured, then 0.8x and 1.3x of the host.
    ratio = first_round_ratio(record, name, host)
    spans = difference_cell({name: [0.8 / ratio, 1.3 / ratio], host: [1.0, 1.0]})
    assert spans.endswith("; no measurable difference]"), spans
    # Both drift alike: the same difference in every round, shown once.
    alike = difference_cell({name: [0.8, 1.3], host: [0.8, 1.3]})
    assert "[" not in alike and alike.endswith("%"), alike
