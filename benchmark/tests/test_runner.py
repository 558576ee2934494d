"""How the runner assembles its record (benchmark.runner with benchmark.record), on the
committed records: no service is started here (the quick runs of test_harness.py do)."""

import hashlib
import json
from pathlib import Path

import pytest
from benchmark.machine import describe, machine_name, results_folder
from benchmark.plans import PLANS
from benchmark.record import (
    SCHEMA_VERSION,
    ModelInfo,
    RecordError,
    RunPlan,
    assemble,
    check,
    load_record,
    upgrade,
)
from benchmark.run_record import added_to, model_info, run_plan
from weather_model.architectures import DEFAULT_ARCHITECTURE
from weather_model.contract import STATE_DICT_FILE
from weather_model.metadata import load_contract

RESULTS = Path(__file__).resolve().parents[2] / "results"
NATIVE = sorted(RESULTS.glob("**/native-*.json"))
HEADER_KEYS = ("schema_version", "plan_name", "plan", "model", "strategies", "machine")


@pytest.mark.parametrize("name", PLANS)
def test_every_plan_is_recorded_as_the_schema_declares(name):
    plan = run_plan(PLANS[name])
    check(plan, RunPlan)
    assert plan["open_loop_fractions"] == list(PLANS[name].open_loop_fractions)


@pytest.mark.parametrize("path", sorted(RESULTS.glob("**/*-*.json")), ids=lambda p: p.name)
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
    with pytest.raises(RuntimeError, match=r"measured the model mobilenet_v3_small .* resnet50"):
        other = {"architecture": "resnet50", "labels": ["a"], "state_dict_sha256": "ab" * 32}
        added_to(path, {**new, "model": other})


def test_the_model_is_the_exported_one(artifacts):
    """The record names the network, labels and weights of the artifacts it measured."""
    model = model_info(artifacts)
    check(model, ModelInfo)
    contract = load_contract(artifacts)
    assert model["architecture"] == contract.architecture
    assert model["labels"] == list(contract.labels)
    weights = (artifacts / STATE_DICT_FILE).read_bytes()
    assert model["state_dict_sha256"] == hashlib.sha256(weights).hexdigest()


def test_another_model_has_a_results_folder_of_its_own():
    machine = describe()
    default = results_folder(machine)
    assert default == results_folder(machine, DEFAULT_ARCHITECTURE)
    assert default == RESULTS / machine_name(machine)
    assert results_folder(machine, "resnet50") == default / "resnet50"
