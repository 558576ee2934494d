"""The raw record's schema (benchmark.record): every committed record reads as the current
shape, a current record reads back as itself, and what does not fit is refused by path."""

import copy
import json
from pathlib import Path

import pytest
from benchmark.metrics import derive
from benchmark.record import (
    RECORD_TYPES,
    SCHEMA_VERSION,
    RecordError,
    check,
    load_record,
    upgrade,
)
from weather_model.architectures import DEFAULT_ARCHITECTURE, WEATHER_LABELS

RESULTS = Path(__file__).resolve().parents[2] / "results"
# Every runner record committed (fidelity.json is benchmark.fidelity's, not the runner's).
COMMITTED = sorted(p for p in RESULTS.glob("**/*.json") if p.name != "fidelity.json")


def committed(mode: str) -> dict:
    """The first committed raw record of `mode`, as JSON gives it."""
    path = next(p for p in COMMITTED if p.name.startswith(f"{mode}-"))
    return json.loads(path.read_text())


def test_there_are_committed_records_of_every_mode():
    assert {p.name.split("-")[0] for p in COMMITTED} == set(RECORD_TYPES)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_record_upgrades_to_a_valid_current_record(path):
    raw = json.loads(path.read_text())
    before = copy.deepcopy(raw)
    record = upgrade(raw)
    assert raw == before  # the raw record is left as it was
    assert record["schema_version"] == SCHEMA_VERSION
    check(record, RECORD_TYPES[record["mode"]])
    assert list(record["services"]) == list(raw["services"])  # the tables' order
    assert load_record(path) == record


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_current_record_round_trips_through_json(path):
    record = upgrade(json.loads(path.read_text()))
    assert upgrade(json.loads(json.dumps(record))) == record


def test_an_unknown_schema_version_is_refused_clearly():
    raw = {**committed("native"), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(RecordError, match=rf"schema_version {SCHEMA_VERSION + 1}: .* 1 to "):
        upgrade(raw)
    with pytest.raises(RecordError, match="schema_version '2'"):
        upgrade({**raw, "schema_version": "2"})


def test_a_path_names_the_file_it_refuses(tmp_path):
    path = tmp_path / "native-full.json"
    path.write_text(json.dumps({**committed("native"), "schema_version": 0}))
    with pytest.raises(RecordError, match=rf"^{path}: schema_version 0"):
        load_record(path)


def test_a_key_not_declared_is_refused_with_its_path():
    record = upgrade(committed("native"))
    name = next(iter(record["services"]))
    record["services"][name]["main"]["ab"]["p42_ms"] = 1.0
    with pytest.raises(RecordError, match=rf"record\.services\.{name}\.main\.ab: unknown \['p42"):
        upgrade(record)


def test_a_missing_key_and_a_wrong_type_are_refused_with_their_paths():
    record = upgrade(committed("native"))
    name = next(iter(record["services"]))
    missing = copy.deepcopy(record)
    del missing["services"][name]["open_loop"]
    with pytest.raises(RecordError, match=rf"services\.{name}: missing \['open_loop'\]"):
        upgrade(missing)
    wrong = copy.deepcopy(record)
    wrong["machine"]["cpus_online"] = "2"
    with pytest.raises(RecordError, match=r"record\.machine\.cpus_online: '2' is not an integer"):
        upgrade(wrong)
    with pytest.raises(RecordError, match="mode: 'batch'"):
        upgrade({**record, "mode": "batch"})


def test_a_service_that_failed_verification_is_a_record_of_its_own():
    record = upgrade(committed("native"))
    record["services"]["broken_serving"] = {"failed": ["study: 500 boom"]}
    assert upgrade(record)["services"]["broken_serving"] == {"failed": ["study: 500 boom"]}
    assert "broken_serving" not in derive(upgrade(record))
    record["services"]["broken_serving"] = {"failed": ["x"], "main": {}}
    with pytest.raises(RecordError, match="broken_serving"):
        upgrade(record)


def oldest_shape(raw: dict) -> dict:
    """A committed record as the first harness wrote it: no version, plan name, machine
    identity, pipelines, per-service ceilings, memory method or strategy metadata."""
    old = copy.deepcopy(raw)
    for key in ("schema_version", "plan_name", "strategies", "model"):
        old.pop(key, None)
    old["quick"] = True
    for key in ("os", "arch", "warnings"):
        del old["machine"][key]
    for key in ("pipeline", "stage_ms"):
        del old["ceiling"][key]
    for result in old["services"].values():
        for key in ("pipeline", "ceilings_measured", "runtime", "ceiling", "reference_ceiling"):
            result.pop(key, None)
        del result["main"]["resources"]["method"]
    return old


def test_a_record_before_the_model_was_recorded_measured_the_default_demo_model():
    version_2 = {**upgrade(committed("native")), "schema_version": 2}
    del version_2["model"]
    model = upgrade(version_2)["model"]
    assert model["architecture"] == DEFAULT_ARCHITECTURE
    assert model["labels"] == list(WEATHER_LABELS) and model["state_dict_sha256"] == ""


def test_a_record_before_rounds_measured_one_round():
    version_3 = {**upgrade(committed("native")), "schema_version": 3}
    del version_3["plan"]["rounds"]
    for result in version_3["services"].values():
        result.pop("repeats", None)
    record = upgrade(version_3)
    assert record["plan"]["rounds"] == 1 and record["schema_version"] == SCHEMA_VERSION
    measured = [r for r in record["services"].values() if "failed" not in r]
    assert measured and all(r["repeats"] == [] for r in measured)
    assert all(row["rounds"] == 1 for row in derive(record).values())
    cluster = {**upgrade(committed("cluster")), "schema_version": 3}
    del cluster["plan"]["rounds"]
    assert upgrade(cluster)["plan"]["rounds"] == 1  # its configurations have no repeats


def test_a_record_before_the_overload_phase_had_none_and_no_connection_errors():
    version_4 = {**upgrade(committed("native")), "schema_version": 4}
    del version_4["plan"]["overload_seconds"]
    measured = [r for r in version_4["services"].values() if "failed" not in r]
    for result in measured:
        result.pop("overload", None)
        for load in [result["main"], *[r["main"] for r in result["repeats"]]]:
            del load["ab"]["connection_errors"]
    record = upgrade(version_4)
    assert record["plan"]["overload_seconds"] == 0
    for result in record["services"].values():
        if "failed" not in result:
            assert result["main"]["ab"]["connection_errors"] == 0 and "overload" not in result
    assert all(row["flood_share"] is None for row in derive(record).values())


def test_a_record_whose_overload_windows_waited_left_none_at_their_deadline():
    version_5 = {**with_overload(), "schema_version": 5}
    steps = steps_of(version_5)
    for step in steps:
        del step["at_deadline"]
    assert all(step["at_deadline"] == 0 for step in steps_of(upgrade(version_5)))


def test_a_record_without_capacity_checks_beside_its_overload_has_none():
    version_6 = {**with_overload(), "schema_version": 6}
    overloads = overloads_of(version_6)
    for phase in overloads:
        phase.pop("capacity_checks", None)
    assert overloads and all(o["capacity_checks"] == [] for o in overloads_of(upgrade(version_6)))


def with_overload() -> dict:
    """A committed native record with an overload phase, upgraded."""
    raw = [json.loads(path.read_text()) for path in COMMITTED if path.name.startswith("native-")]
    return next(r for r in map(upgrade, raw) if steps_of(r))


def overloads_of(record: dict) -> list[dict]:
    return [
        measured["overload"]
        for result in record["services"].values()
        for measured in [result, *result.get("repeats", [])]
        if "overload" in measured
    ]


def steps_of(record: dict) -> list[dict]:
    return [
        step
        for result in record["services"].values()
        for measured in [result, *result.get("repeats", [])]
        for step in measured.get("overload", {}).get("open_loop", [])
    ]


def test_the_oldest_shape_gets_the_defaults_the_tables_assumed():
    raw = committed("native")
    record = upgrade(oldest_shape(raw))
    assert record["plan_name"] == "quick" and "quick" not in record
    assert record["strategies"] == {}
    machine = record["machine"]
    assert (machine["os"], machine["arch"], machine["warnings"]) == ("linux", "x86_64", [])
    run_ceiling = {k: v for k, v in record["ceiling"].items() if k != "payload"}
    assert run_ceiling["pipeline"] == "graph" and run_ceiling["stage_ms"] == {}
    for result in record["services"].values():
        assert "failed" not in result
        assert result["pipeline"] == "graph" and result["runtime"] == {}
        assert result["ceilings_measured"] == "service running"
        # The run's one ceiling stood for every service's, and for the reference's.
        assert result["ceiling"] == result["reference_ceiling"] == run_ceiling
        assert result["main"]["resources"]["method"] == "psutil process tree"
    rows = derive(record)
    assert all(row["ceiling_beside_service"] for row in rows.values())
    ceiling_rps = record["ceiling"]["requests_per_second"]
    for name, row in rows.items():
        assert row["efficiency"] == row["rps_per_core"] / ceiling_rps, name


def test_a_v1_record_drops_the_keys_no_longer_written():
    raw = copy.deepcopy(committed("native"))
    raw.pop("schema_version", None)
    raw["ceiling"]["entropy_decoding_ms"] = 1.5
    assert "entropy_decoding_ms" not in upgrade(raw)["ceiling"]
