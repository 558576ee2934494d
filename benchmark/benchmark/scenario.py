"""Scenarios a strategy declares in its own manifest, run by the harness without knowing the
strategy: a `[scenarios.NAME]` table in strategy.toml names an `entry` point
("package.module:callable"), imported by name at run time, and whatever that entry reads.

One kind today, `cluster`: the strategy on a multi-node cluster of its own (`--mode cluster`
measures it, `make up-cluster` brings it up). The entry is called with the strategy and its
table and returns a `ClusterScenario`. The harness measures the single-node container and
hands the scenario a `ClusterRun`; the scenario measures each of its configurations with the
harness's own functions (benchmark.measure.measure_load, under `job.progress` phases) and
returns a `ClusterOutcome`.

`python -m benchmark.scenario up|down [--strategy NAME] [--port N]`: the cluster up (ready
once its ingress answers) or down, for the one strategy that declares one (or NAME).
"""

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from serving_common.strategy import MANIFEST, Strategy, discover_strategies

from benchmark.progress import Phase

if TYPE_CHECKING:
    # Only named here: `make up-cluster` needs none of the measuring (nor its imports).
    from benchmark.measure import Job

CLUSTER = "cluster"


@dataclass(frozen=True)
class ClusterRun:
    """What a cluster scenario is measured with."""

    job: "Job"
    # The contract's settings every configuration runs with (WORKERS, INTRA_OP_THREADS, ...).
    runtime: dict[str, str]
    # The strategy's own pipeline's ceiling, timed with nothing running: each configuration's
    # efficiency is judged against it.
    ceiling: dict[str, Any]


@dataclass(frozen=True)
class ClusterOutcome:
    """What a cluster scenario measured, as the raw record keeps it."""

    # Configuration name -> benchmark.measure.measure_load's result, with "ceiling".
    services: dict[str, dict[str, Any]]
    # The cluster's own settings for the run (CPU shares, core sets), recorded as "cluster".
    settings: dict[str, str]
    # A node lost under load: what it cost (recorded as "node_loss").
    node_loss: dict[str, Any]


class ClusterScenario(Protocol):
    def phases(self, load_s: float) -> list[Phase]:
        """Its progress phases in order, `load_s` being one configuration's measured load
        (the progress estimate only): the names its `run` enters."""
        ...

    def run(self, run: ClusterRun) -> ClusterOutcome:
        """The cluster up, each configuration measured, the cluster down on every way out."""
        ...

    def up(self, port: int) -> str:
        """The cluster up on its own (images built), its ingress on loopback `port`; its URL."""
        ...

    def down(self) -> None:
        """What `up` started, removed."""
        ...


def cluster_strategies(strategies: dict[str, Strategy]) -> dict[str, Strategy]:
    """Those of `strategies` that declare a cluster scenario."""
    return {name: s for name, s in strategies.items() if CLUSTER in s.scenarios}


def load_scenario(strategy: Strategy, kind: str = CLUSTER) -> ClusterScenario:
    """The scenario its manifest declares, built by its entry point."""
    table = strategy.scenarios[kind]
    where = f"{strategy.folder / MANIFEST} [scenarios.{kind}]"
    entry = table.get("entry")
    module, _, attribute = entry.partition(":") if isinstance(entry, str) else ("", "", "")
    if not module or not attribute:
        raise RuntimeError(f'{where}: `entry` must be "package.module:callable", not {entry!r}')
    try:
        factory = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"{where}: entry {entry!r} does not import: {exc}") from exc
    scenario: ClusterScenario = factory(strategy, table)
    return scenario


def one_cluster(name: str | None) -> Strategy:
    """The strategy named, or the one that declares a cluster scenario."""
    declared = cluster_strategies(discover_strategies())
    if name is not None:
        if name not in declared:
            raise RuntimeError(
                f"--strategy: {name!r} declares no cluster; those that do: {list(declared)}"
            )
        return declared[name]
    if len(declared) != 1:
        raise RuntimeError(f"pick one with --strategy: strategies with a cluster: {list(declared)}")
    return next(iter(declared.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--strategy", help="the strategy whose cluster (default: the only one)")
    parser.add_argument("--port", type=int, default=8086, help="the ingress's loopback port")
    args = parser.parse_args()
    try:
        scenario = load_scenario(one_cluster(args.strategy))
        if args.action == "up":
            print(f"ready: {scenario.up(args.port)}/predict/")
        else:
            scenario.down()
    except (RuntimeError, TimeoutError) as exc:
        print(f"scenario: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
