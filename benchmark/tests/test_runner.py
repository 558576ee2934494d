"""How the runner assembles its record (benchmark.runner with benchmark.record), on the
committed records: no service is started here (the quick runs of test_harness.py do)."""

import json
from pathlib import Path

import pytest
from benchmark.plans import PLANS
from benchmark.record import (
    SCHEMA_VERSION,
    RecordError,
    RunPlan,
    assemble,
    check,
    load_record,
    upgrade,
)
from benchmark.run_record import added_to, run_plan

RESULTS = Path(__file__).resolve().parents[2] / "results"
NATIVE = sorted(RESULTS.glob("*/native-*.json"))
HEADER_KEYS = ("schema_version", "plan_name", "plan", "strategies", "machine")


@pytest.mark.parametrize("name", PLANS)
def test_every_plan_is_recorded_as_the_schema_declares(name):
    plan = run_plan(PLANS[name])
    check(plan, RunPlan)
    assert plan["open_loop_fractions"] == list(PLANS[name].open_loop_fractions)


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*/*-*.json")), ids=lambda p: p.name)
def test_a_record_is_its_header_and_its_modes_result(path):
    record = load_record(path)
    mode = record["mode"]
    header = {key: record[key] for key in HEADER_KEYS}
    result = {key: value for key, value in record.items() if key not in (*HEADER_KEYS, "mode")}
    assert assemble(header, mode, result) == record
    assert next(iter(assemble(header, mode, result))) == "mode"  # first in the file
    del result["services"]
    with pytest.raises(RecordError, match=r"record: missing \['services'\]"):
        assemble(header, mode, result)


def test_add_upgrades_the_older_record_it_grows(tmp_path):
    """`--add` to a file of an older schema version: the merged record is of the current
    one, keeps every configuration and says which run measured what."""
    old = json.loads(NATIVE[0].read_text())
    old.pop("schema_version", None)  # as every record before versioning
    path = tmp_path / "native-full.json"
    path.write_text(json.dumps(old))
    new = upgrade(old)
    first = next(iter(new["services"]))
    new["services"] = {"new_serving": new["services"][first]}
    new["strategies"] = {}
    new["machine"] = {**new["machine"], "date": "2026-12-06T07:00:00+00:00"}
    merged = added_to(path, new)
    assert merged["schema_version"] == SCHEMA_VERSION
    assert list(merged["services"]) == [*old["services"], "new_serving"]
    assert [run["services"] for run in merged["runs"]] == [list(old["services"]), ["new_serving"]]
    with pytest.raises(RuntimeError, match="plan"):
        added_to(path, {**new, "plan": {**new["plan"], "requests": 1}})
    with pytest.raises(RuntimeError, match="cpus"):
        added_to(path, {**new, "machine": {**new["machine"], "load_cpus": "7"}})
