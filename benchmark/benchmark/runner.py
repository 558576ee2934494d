"""`python -m benchmark.runner`: measure every service and write one raw JSON file.

Natively: a local GCS emulator holds the exported model; each service in turn is started
on the same cores (taskset, where it exists), pulls the model from gs://, is verified on
every payload, is loaded with ab from the other cores, and is stopped. In Compose mode the
same, on each service's container (cpuset). The raw results go to `results/<machine>/`
(`benchmark.machine`); the runner never formats them, `benchmark.report` renders them.

This module is the command line and one run's order; the plans and their phases are
`benchmark.plans`', each mode's measuring `benchmark.modes`', and the record's header,
writing and `--add` merge `benchmark.run_record`'s.
"""

import argparse
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from weather_model.contract import STATE_DICT_FILE

from benchmark import machine
from benchmark.measure import Job
from benchmark.modes import (
    configurations,
    expected_prediction,
    run_cluster,
    run_compose,
    run_native,
    select_strategies,
    with_sweep,
    with_variants,
)
from benchmark.payloads import write_payloads
from benchmark.pipelines import PIPELINES
from benchmark.plans import PLANS, plan_phases
from benchmark.progress import Progress
from benchmark.record import ClusterResult, ComposeResult, NativeResult, RecordError
from benchmark.run_record import model_info, run_header, write_record
from benchmark.scenario import load_scenario

ROOT = machine.ROOT


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> Path:
    plan = PLANS[args.plan]
    if args.requests:
        plan = replace(plan, requests=args.requests)
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.mode == "cluster" and plan.rounds > 1:
        # A cluster scenario brings its own nodes up once; its record says one round.
        log(f"cluster mode measures one round (the {args.plan} plan has {plan.rounds})")
        plan = replace(plan, rounds=1)
    selected = select_strategies(args.mode, args.services)
    if args.no_variants:
        selected = {name: replace(s, variants={}) for name, s in selected.items()}
    if args.sweep:
        selected = with_sweep(selected, args.sweep)
    selected = with_variants(selected, args.variant)
    clusters = (
        {name: load_scenario(s) for name, s in selected.items()} if args.mode == "cluster" else {}
    )
    if len(clusters) > 1:
        # The record keeps one cluster's settings and node loss.
        raise RuntimeError(f"--services: one cluster per run, pick one of {list(clusters)}")
    for strategy in selected.values():
        if strategy.ceiling not in PIPELINES:
            raise RuntimeError(
                f"{strategy.name}/strategy.toml: ceiling {strategy.ceiling!r} is not one of "
                f"{list(PIPELINES)} (benchmark/benchmark/pipelines.py)"
            )
    artifacts = Path(args.artifacts)
    if not (artifacts / STATE_DICT_FILE).exists():
        raise RuntimeError(f"no exported model in {artifacts}: run `make export` first")
    payloads = write_payloads(Path(tempfile.mkdtemp(prefix="bench-payloads-")))
    main_payload = Path(args.payload) if args.payload else payloads["study"]
    workers = str(len(args.service_cpus.split(",")))
    model = model_info(artifacts)
    header = run_header(
        args.plan, plan, model, selected, args.mode, args.service_cpus, args.load_cpus
    )
    architecture = model["architecture"]
    out = Path(args.out) if args.out else machine.results_folder(header["machine"], architecture)
    path = out / f"{args.mode}-{args.plan}.json"
    log(
        f"{args.mode} mode, {args.plan} plan {plan}, model {architecture}; service on cpus "
        f"{args.service_cpus} ({workers} workers), load on cpus {args.load_cpus}; results to {path}"
    )
    for warning in header["machine"]["warnings"]:
        log(f"WARNING: {warning}")
    keys = [key for key, _, _ in configurations(selected)]
    progress = Progress(plan_phases(plan, args.mode, keys, clusters), log)
    job = Job(
        plan=plan,
        payloads=payloads,
        main_payload=main_payload,
        expected={
            name: expected_prediction(artifacts, path.with_suffix(".jpg"))
            for name, path in payloads.items()
        },
        artifacts=artifacts,
        service_cpus=args.service_cpus,
        load_cpus=args.load_cpus,
        slo_ms=args.slo_ms,
        progress=progress,
        log=log,
    )
    runtime = {"WORKERS": workers, "INTRA_OP_THREADS": "1", "INTER_OP_THREADS": "1"}
    result: NativeResult | ComposeResult | ClusterResult
    if args.mode == "native":
        result = run_native(artifacts, runtime, selected, job)
    elif args.mode == "cluster":
        ((name, scenario),) = clusters.items()
        result = run_cluster(runtime, selected[name], scenario, job)
    else:
        result = run_compose(runtime, selected, job)
    write_record(path, header, args.mode, result, args.add)
    log(f"wrote {path} in {progress.elapsed() / 60:.1f} min")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode",
        choices=("native", "compose", "cluster"),
        default="native",
        help="cluster: each strategy's own multi-node cluster, declared in its manifest "
        "([scenarios.cluster] of strategy.toml)",
    )
    parser.add_argument(
        "--plan",
        choices=tuple(PLANS),
        default="full",
        help="full: the main job (3 rounds, ~1 h on 2 cores); short: a first look (~5 min); "
        "quick: seconds, make test's smoke run; overload: the overload phase alone "
        "(3 rounds, ~35 min, docs/overload.md)",
    )
    parser.add_argument("--service-cpus", default="0", help="cores for the service (taskset list)")
    parser.add_argument("--load-cpus", default="1", help="cores for the load generator")
    parser.add_argument("--payload", help="a request body to use instead of the study-sized one")
    parser.add_argument("-n", "--requests", type=int, help="ab -n")
    parser.add_argument(
        "--rounds",
        type=int,
        help="measure each configuration this many times, interleaved (default: the plan's; "
        "full: 3, short and quick: 1)",
    )
    parser.add_argument("--services", help="measure only these strategies: a,b (default: all)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="STRATEGY+NAME:KEY=VALUE[,KEY=VALUE]",
        help="one more configuration of a strategy, measured after its manifest's variants, "
        "with the environment it adds (repeatable); e.g. a batching sweep: "
        "litserve_serving+b16:MAX_BATCH_SIZE=16,BATCH_WAIT_MS=10",
    )
    parser.add_argument(
        "--sweep",
        metavar="NAME",
        help="add every combination of a grid the manifests declare ([sweeps.NAME] in "
        "strategy.toml) as variants of each strategy that declares it; e.g. batching: "
        "MAX_BATCH_SIZE and BATCH_WAIT_MS, for the frameworks that batch",
    )
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="measure each strategy's default configuration only, not its manifest's "
        "[variants] (a --variant still adds one)",
    )
    parser.add_argument(
        "--add",
        action="store_true",
        help="add the measured services to the existing results of this mode and plan "
        "(replacing any measured before) instead of starting a new file",
    )
    parser.add_argument("--slo-ms", type=float, default=100.0, help="p99 bound, open loop")
    parser.add_argument(
        "--artifacts", default=str(machine.ARTIFACTS), help="exported model (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        help="folder for the raw JSON (default: results/<machine>/, or "
        "results/<machine>/<model>/ for another model than the default; see benchmark.machine)",
    )
    args = parser.parse_args()
    # SIGTERM (a CI timeout, a test's kill) unwinds like Ctrl-C: services and containers
    # are stopped by the `finally` blocks on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args)
    except (RuntimeError, TimeoutError, RecordError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
