"""benchmark.scenario: a strategy's own scenario reached through its manifest, by name, and
a harness that imports no strategy."""

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
from benchmark.plans import PLANS, plan_phases
from benchmark.progress import Phase
from benchmark.scenario import CLUSTER, ClusterOutcome, cluster_strategies, load_scenario
from serving_common.strategy import discover_strategies

HARNESS = Path(__file__).resolve().parents[1] / "benchmark"

FAKE_SCENARIO = """
from benchmark.progress import Phase
from benchmark.scenario import ClusterOutcome


class FakeCluster:
    def __init__(self, strategy, table):
        self.strategy, self.table = strategy, table

    def phases(self, load_s):
        return [Phase("fake: up", 1.0), Phase("fake x2: load", load_s)]

    def run(self, run):
        return ClusterOutcome(services={}, settings={}, node_loss={})

    def up(self, port):
        return f"http://127.0.0.1:{port}"

    def down(self):
        pass
"""


@pytest.fixture
def with_cluster(tmp_path, monkeypatch):
    """A strategy of this checkout given a cluster scenario whose entry is a module outside
    every package the harness knows, importable only by its name."""
    (tmp_path / "fake_cluster.py").write_text(FAKE_SCENARIO)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield lambda table: dataclasses.replace(
        next(iter(discover_strategies().values())), scenarios={CLUSTER: table}
    )
    sys.modules.pop("fake_cluster", None)


def test_the_entry_point_is_imported_by_name_and_given_its_table(with_cluster):
    table = {"entry": "fake_cluster:FakeCluster", "replicas": [2]}
    strategy = with_cluster(table)
    scenario = load_scenario(strategy)
    assert type(scenario).__module__ == "fake_cluster"
    assert (scenario.strategy, scenario.table) == (strategy, table)  # type: ignore[attr-defined]
    assert scenario.run(None) == ClusterOutcome({}, {}, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (None, "`entry` must be"),
        ("fake_cluster.FakeCluster", "`entry` must be"),
        ("fake_cluster:Missing", "does not import"),
        ("no_such_module:Cluster", "does not import"),
    ],
)
def test_a_bad_entry_point_names_the_manifest(with_cluster, entry, problem):
    strategy = with_cluster({} if entry is None else {"entry": entry})
    with pytest.raises(RuntimeError, match=problem) as refused:
        load_scenario(strategy)
    assert str(refused.value).startswith(f"{strategy.folder / 'strategy.toml'} [scenarios.cluster]")


def test_only_strategies_declaring_a_cluster_run_one(with_cluster):
    declared = with_cluster({"entry": "fake_cluster:FakeCluster"})
    other = dataclasses.replace(declared, name="other", scenarios={"elsewhere": {}})
    assert cluster_strategies({"a": declared, "b": other}) == {"a": declared}


def test_cluster_mode_plans_the_single_node_then_the_scenarios_phases(with_cluster):
    strategy = with_cluster({"entry": "fake_cluster:FakeCluster"})
    plan = PLANS["quick"]
    phases = plan_phases(plan, "cluster", [], {strategy.name: load_scenario(strategy)})
    labels = [phase.label for phase in phases]
    assert labels == [
        "images",
        "Compose: GCS emulator and export job",
        "ceiling",
        f"{strategy.name}: start and verify",
        f"{strategy.name}: load",
        "fake: up",
        "fake x2: load",
    ]
    # The scenario is given one configuration's load, as the single node's is planned.
    assert phases[-1] == Phase("fake x2: load", phases[4].planned_s)


def strategy_packages() -> set[str]:
    """Every strategy folder's own Python packages."""
    return {
        package.parent.name
        for strategy in discover_strategies().values()
        for package in strategy.folder.glob("*/__init__.py")
    }


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("path", sorted(HARNESS.glob("*.py")), ids=lambda p: p.name)
def test_the_harness_imports_no_strategy(path):
    """Strategies are reached through their manifests (benchmark.scenario imports a
    scenario's entry point by name at run time), never imported by the harness."""
    packages = strategy_packages()
    assert packages, "no strategy package found"
    assert not imported_modules(path) & packages
