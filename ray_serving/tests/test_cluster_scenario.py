"""ray_serving.cluster_scenario, offline: the manifest's `[scenarios.cluster]` table as the
harness reads it (by its entry point), the phases it plans, the Serve configs it deploys,
and the committed `--mode cluster` records against it. The cluster itself runs in
test_ray_cluster.py."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from benchmark.scenario import load_scenario
from ray_serving.cluster_scenario import RayClusterScenario, key
from serving_common.strategy import load_strategy

FOLDER = Path(__file__).resolve().parents[1]
STRATEGY = load_strategy(FOLDER)
RESULTS = FOLDER.parent / "results"


@pytest.fixture
def scenario() -> RayClusterScenario:
    loaded = load_scenario(STRATEGY)
    assert isinstance(loaded, RayClusterScenario)
    return loaded


def test_the_manifest_declares_the_scenario_the_harness_imports(scenario):
    assert scenario.files.compose.parent == scenario.files.serve_config.parent == FOLDER
    assert scenario.node_loss_replicas in scenario.replicas
    # The Compose file runs this strategy's image (and the stack's GCS and exporter).
    assert STRATEGY.docker is not None
    assert STRATEGY.docker.image in scenario.files.images()


def test_the_node_loss_runs_right_after_its_replica_count(scenario):
    labels = [phase.label for phase in scenario.phases(10.0)]
    assert labels[0] == "cluster: start"
    deploys = [label for label in labels if label.endswith(": deploy and load")]
    assert deploys == [f"{key(n)}: deploy and load" for n in scenario.replicas]
    loss = labels.index("cluster: node loss")
    assert labels[loss - 1] == f"{key(scenario.node_loss_replicas)}: deploy and load"


def test_fixed_replicas_drop_autoscaling_and_keep_the_rest(scenario):
    shipped = yaml.safe_load(scenario.files.serve_config.read_text())
    fixed = scenario.files.fixed_replicas(3)
    predictor = fixed["applications"][0]["deployments"][0]
    assert predictor["num_replicas"] == 3 and "autoscaling_config" not in predictor
    expected = copy.deepcopy(shipped)
    expected["applications"][0]["deployments"][0] = predictor
    assert fixed == expected
    assert "autoscaling_config" in shipped["applications"][0]["deployments"][0]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: t.pop("replicas"), "KeyError 'replicas'"),
        (lambda t: t.update(replicas=["two"]), "ValueError"),
        (lambda t: t.update(compose="nowhere.yml"), "nowhere.yml is not a file"),
        (lambda t: t.update(node_loss_replicas=5), "node_loss_replicas is not one of"),
    ],
)
def test_a_wrong_table_is_one_line_naming_the_manifest(change, problem):
    table = copy.deepcopy(STRATEGY.scenarios["cluster"])
    change(table)
    strategy = dataclasses.replace(STRATEGY, scenarios={"cluster": table})
    with pytest.raises(RuntimeError, match=problem) as refused:
        RayClusterScenario(strategy, table)
    assert str(refused.value).startswith(f"{FOLDER / 'strategy.toml'} [scenarios.cluster]: ")
    assert "\n" not in str(refused.value)


RECORDS = [
    path
    for path in sorted(RESULTS.glob("*/cluster-*.json"))
    if next(iter(json.loads(path.read_text())["services"])) == STRATEGY.name
]


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_records_hold_the_declared_configurations(path, scenario):
    record = json.loads(path.read_text())
    assert list(record["services"]) == [STRATEGY.name, *(key(n) for n in scenario.replicas)]
    assert record["node_loss"]["replicas"] == scenario.node_loss_replicas
