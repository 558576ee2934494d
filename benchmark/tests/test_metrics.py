"""Metrics derived from a record (benchmark.metrics): a service's /metrics text, the open
loop's latency-bounded throughput, the rows' order, the rounds' medians and spreads."""

import statistics
from pathlib import Path

import pytest
from benchmark.metrics import (
    Spread,
    change_spread,
    derive,
    derive_rounds,
    difference_spread,
    latency_bounded_rps,
    mean_batch_size,
    measured_services,
    p99_at,
    ratio_spread,
    stage_ms,
)
from benchmark.record import load_record
from record_builders import overload, with_rounds

NATIVE = sorted((Path(__file__).resolve().parents[2] / "results").glob("*/native-*.json"))


def test_stages_and_batch_sizes_are_read_from_a_services_metrics():
    metrics = "\n".join(
        [
            'predict_stage_duration_seconds_sum{stage="decode"} 3.0',
            'predict_stage_duration_seconds_count{stage="decode"} 1000.0',
            'predict_stage_duration_seconds_sum{stage="inference"} 2.0',
            'predict_stage_duration_seconds_count{stage="inference"} 500.0',
            "predict_batch_size_sum 900.0",
            "predict_batch_size_count 300.0",
        ]
    )
    assert stage_ms(metrics) == {"decode": 3.0, "inference": 4.0}
    assert mean_batch_size(metrics) == 3.0
    assert mean_batch_size(metrics.split("predict_batch")[0]) is None


def test_latency_bounded_throughput_picks_the_best_rate_within_the_slo():
    def step(rate, p99, non_2xx=0):
        return {"achieved_rps": rate, "p99_ms": p99, "non_2xx": non_2xx, "errors": 0}

    open_loop = {
        "slo_ms": 100,
        "steps": [step(40, 20), step(60, 80), step(70, 99, non_2xx=1), step(80, 400)],
    }
    assert latency_bounded_rps(open_loop) == 60
    assert latency_bounded_rps({"slo_ms": 100, "steps": [step(40, 200)]}) == 0.0


def test_p99_at_a_rate_is_the_step_offered_it_rounded_as_the_harness_offers():
    steps = [{"offered_rps": 40, "p99_ms": 12.0}, {"offered_rps": 56, "p99_ms": 30.0}]
    open_loop = {"slo_ms": 100, "steps": steps}
    assert p99_at(open_loop, 55.6) == 30.0
    assert p99_at(open_loop, 0.2) is None  # offered at 1 request/s at least: no such step


def test_rows_are_per_configuration_fastest_per_core_first():
    for path in NATIVE:
        record = load_record(path)
        rows = derive(record)
        assert set(rows) == set(measured_services(record)), path
        per_core = [row["rps_per_core"] for row in rows.values()]
        assert per_core == sorted(per_core, reverse=True), path
        cores = len(record["machine"]["service_cpus"].split(","))
        for name, row in rows.items():
            # Each round's closed loop: the first, then the repeats; the row their median.
            result = record["services"][name]
            loads = [result["main"], *(r["main"] for r in result["repeats"])]
            rps = sorted(load["ab"]["requests_per_second"] / cores for load in loads)
            assert row["rps_per_core"] == statistics.median(rps), name
            assert row["spread"]["rps_per_core"] == (rps[0], rps[-1]), name


def test_a_configuration_measured_in_rounds_is_their_median_with_its_range():
    record = load_record(NATIVE[0])
    names = list(measured_services(record))
    once = derive(record)
    rows = derive(with_rounds(record, {name: [0.9, 1.2] for name in names}))
    for name in names:
        row, single = rows[name], once[name]
        assert row["rounds"] == 3 and single["rounds"] == 1 and single["spread"] != {}
        per_core = single["rps_per_core"]
        assert row["rps_per_core"] == per_core  # the median of x, 0.9x and 1.2x
        low, high = row["spread"]["rps_per_core"]
        assert (low, high) == (pytest.approx(0.9 * per_core), pytest.approx(1.2 * per_core))
        # Figures every round shares (the same copy) have no spread.
        assert row["spread"]["cpu_ms_per_request"][0] <= row["cpu_ms_per_request"]


def test_goodput_past_capacity_is_a_share_of_the_rounds_own_capacity():
    record = load_record(NATIVE[0])
    name = next(iter(measured_services(record)))
    result = record["services"][name]
    capacity = result["main"]["ab"]["requests_per_second"]
    result["overload"] = overload(capacity, 0.8 * capacity, 150.0, {2.0: 0.9, 4.0: 0.85})
    row = derive(record)[name]
    assert row["flood_share"] == pytest.approx(0.8)
    assert row["flood_refusals_per_s"] == pytest.approx(150.0)
    assert (row["flood_no_answer"], row["flood_health_max_ms"]) == (0.0, 12.0)
    assert row["overload_share"] == pytest.approx({"2x": 0.9, "4x": 0.85}, abs=0.01)
    assert row["overload_ok_p99_ms"] == {"2x": 300.0, "4x": 300.0}
    # A health probe that failed is no figure to quote as the slowest.
    result["overload"]["flood"]["health"]["failures"] = 1
    assert derive(record)[name]["flood_health_max_ms"] == float("inf")


def test_each_overload_step_is_judged_against_the_capacity_checked_around_it():
    """The machine slowed to 60% of the main run's speed and recovered: a step is judged
    against the mean of the checks just before and after it, not the main run."""
    record = load_record(NATIVE[0])
    name = next(iter(measured_services(record)))
    result = record["services"][name]
    result["overload"] = overload(
        100.0, 54.0, 100.0, {2.0: 0.6, 4.0: 0.9}, checks=[100.0, 80.0, 40.0, 80.0]
    )
    row = derive(record)[name]
    # The flood between 100 and 80, 2x between 80 and 40, 4x between 40 and 80.
    assert row["flood_share"] == pytest.approx(54.0 / 90.0)
    assert row["overload_share"] == pytest.approx({"2x": 60.0 / 60.0, "4x": 90.0 / 60.0})
    # A record without checks (schema 6) is judged against its main run, as it was.
    result["overload"]["capacity_checks"] = []
    row = derive(record)[name]
    assert row["flood_share"] == pytest.approx(0.54)
    assert row["overload_share"] == pytest.approx({"2x": 0.6, "4x": 0.9})


def test_comparisons_are_taken_round_by_round():
    """Two configurations that drift together (each round both faster, or both slower)
    keep their ratio in every round: no spread, though each one's own figure spreads."""
    record = load_record(NATIVE[0])
    a, b = list(measured_services(record))[:2]
    rounds = derive_rounds(with_rounds(record, {a: [0.8, 1.25], b: [0.8, 1.25]}))
    ratio = ratio_spread(rounds, a, b, "rps")
    assert ratio.low == pytest.approx(ratio.high) == pytest.approx(ratio.median)
    rounds = derive_rounds(with_rounds(record, {a: [1.1, 0.9], b: [0.95, 1.05]}))
    change = change_spread(rounds, a, a, "rps")
    assert change == Spread(0.0, 0.0, 0.0) and change.spans_zero()
    assert difference_spread(rounds, a, a, "cpu_ms_per_request").spans_zero()
    mixed = change_spread(rounds, a, b, "rps")
    assert len(rounds[a]) == 3 and mixed.low < mixed.median < mixed.high
