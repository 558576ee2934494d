"""`python -m benchmark.runner`: measure every service and write one raw JSON file.

Natively: a local GCS emulator holds the exported model; each service in turn is started
on the same cores (taskset, where it exists), pulls the model from gs://, is verified on
every payload, is loaded with ab from the other cores, and is stopped. In Compose mode the
same, on each service's container (cpuset). The raw results go to `results/<machine>/`
(`benchmark.machine`); the runner never formats them, `benchmark.report` renders them.
"""

import argparse
import contextlib
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from serving_common.strategy import Strategy, discover_strategies
from weather_model.contract import LABELS, STATE_DICT_FILE

from benchmark import machine
from benchmark.cluster import ClusterIngress, fixed_replicas, lose_a_worker, ray_cluster, settled_at
from benchmark.compose import (
    ContainerService,
    Stack,
    build_environment,
    build_images,
    containerised_strategies,
    start_container,
)
from benchmark.measure import (
    JSON,
    Job,
    Plan,
    load_test,
    measure_service,
    open_loop_sweep,
    verify,
)
from benchmark.payloads import write_payloads
from benchmark.pipelines import PIPELINES, REFERENCE_PIPELINE
from benchmark.processes import GcsEmulator, RunningService, start_service
from benchmark.progress import Phase, Progress

ROOT = Path(__file__).resolve().parents[2]

# The Compose project of `--mode compose`; its containers are removed on every way out.
COMPOSE_PROJECT = "model-serving-bench"
# `--mode cluster`: ray_serving on the Ray cluster of docker-compose.ray.yml (its own Compose
# project), with this many replicas in turn, against the single-node ray_serving container.
CLUSTER_PROJECT, CLUSTER_STRATEGY = "model-serving-bench-ray", "ray_serving"
CLUSTER_REPLICAS = (1, 2, 3)
# The node-loss run: a worker killed under this fraction of the 2-replica throughput.
NODE_LOSS_REPLICAS, NODE_LOSS_LOAD = 2, 0.5

PLANS = {
    # The main job: the study's ab -n 40000 -c 50, capped at 180 s per service.
    "full": Plan(
        requests=40_000,
        concurrency=50,
        seconds=180,
        sweep_seconds=30,
        startup_runs=15,
        ceiling_seconds=10,
        open_loop_seconds=15,
        open_loop_fractions=(0.5, 0.7, 0.8, 0.9, 1.0, 1.1),
    ),
    # A first look in about 5 minutes: fewer requests, no size sweep, fewer repeats. Its
    # numbers are noisier, and marked as such in the raw results and the report.
    "short": Plan(
        requests=3_000,
        concurrency=50,
        seconds=30,
        sweep_seconds=0,
        startup_runs=3,
        ceiling_seconds=3,
        open_loop_seconds=5,
        open_loop_fractions=(0.5, 0.8, 1.0),
    ),
    # Seconds per service: make test's end-to-end check of the harness and the report.
    "quick": Plan(
        requests=100,
        concurrency=8,
        seconds=20,
        sweep_seconds=0,
        startup_runs=1,
        ceiling_seconds=1,
        open_loop_seconds=2,
        open_loop_fractions=(0.5,),
    ),
}
# What the plan cannot know, in seconds: a service's start and verification, one cold start,
# the Compose export job. Only for the progress estimate.
START_S = {"native": 10.0, "compose": 20.0, "cluster": 20.0}
COLD_START_S = {"native": 5.0, "compose": 8.0, "cluster": 0.0}
CLUSTER_START_S, DEPLOY_S, NODE_LOSS_S = 120.0, 30.0, 120.0
EXPORT_JOB, EXPORT_JOB_S = "Compose: GCS emulator and export job", 90.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine_metadata(mode: str, service_cpus: str, load_cpus: str) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    ab_version = subprocess.run(["ab", "-V"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        **machine.describe(),
        "git_commit": commit or "unknown",
        "service_cpus": service_cpus,
        "load_cpus": load_cpus,
        "warnings": machine.pinning_warnings(mode),
        "python": platform.python_version(),
        "ab": ab_version,
        "versions": {
            pkg: version(pkg)
            for pkg in ("onnxruntime", "torch", "fastapi", "uvicorn", "simplejpeg", "pillow")
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def plan_phases(plan: Plan, mode: str, names: list[str]) -> list[Phase]:
    """Every phase of a run in order, with the time the plan gives it (progress only)."""
    phases = []
    if mode in ("compose", "cluster"):
        phases += [Phase("images", 0.0), Phase(EXPORT_JOB, EXPORT_JOB_S)]
    phases.append(Phase("ceiling", plan.ceiling_seconds + 2))
    if mode == "cluster":
        return phases + cluster_phases(plan, names)
    for name in names:
        # Two ceilings (the service's pipeline, today's) before it starts and after it stops.
        ceilings = 2 * (plan.ceiling_seconds + 2)
        steps = [
            ("start and verify", ceilings + START_S[mode]),
            ("main run", plan.seconds),
            ("size sweep", 3 * (plan.sweep_seconds + 1) if plan.sweep_seconds else None),
            ("open loop", 3 + len(plan.open_loop_fractions) * (plan.open_loop_seconds + 1)),
            ("cold starts", ceilings + (plan.startup_runs - 1) * COLD_START_S[mode]),
        ]
        phases += [Phase(f"{name}: {step}", s) for step, s in steps if s is not None]
    return phases


def cluster_phases(plan: Plan, names: list[str]) -> list[Phase]:
    """`names`: the single-node configuration, then the cluster's."""
    load = plan.seconds + 3 + len(plan.open_loop_fractions) * (plan.open_loop_seconds + 1)
    single, *replicas = names
    return [
        Phase(f"{single}: start and verify", START_S["cluster"]),
        Phase(f"{single}: load", load),
        Phase("cluster: start", CLUSTER_START_S),
        *(Phase(f"{name}: deploy and load", DEPLOY_S + load) for name in replicas[:2]),
        Phase("cluster: node loss", NODE_LOSS_S),
        *(Phase(f"{name}: deploy and load", DEPLOY_S + load) for name in replicas[2:]),
    ]


def expected_prediction(artifacts: Path, jpeg: Path) -> str:
    """The PyTorch reference's top-1 for a payload image, with the exported weights."""
    from weather_model.network import load_network, state_dict_from_bytes
    from weather_model.reference import decode_rgb, reference_probabilities

    state = state_dict_from_bytes((artifacts / STATE_DICT_FILE).read_bytes())
    return LABELS[
        int(reference_probabilities(load_network(state), decode_rgb(jpeg.read_bytes())).argmax())
    ]


def run(args: argparse.Namespace) -> Path:
    plan = PLANS[args.plan]
    if args.requests:
        plan = Plan(**{**plan.__dict__, "requests": args.requests})
    if args.mode == "cluster" and args.services:
        raise RuntimeError("--services: cluster mode measures ray_serving only")
    selected = select_strategies(args.mode, args.services)
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
    record: dict[str, Any] = {
        "mode": args.mode,
        "plan_name": args.plan,
        "plan": plan.__dict__,
        "strategies": {
            key: {
                "title": s.title,
                "stack": s.stack,
                "port": s.port,
                "model": s.model_file,
                "environment": extra,
            }
            for key, s, extra in configurations(selected)
        },
        "machine": machine_metadata(args.mode, args.service_cpus, args.load_cpus),
        "services": {},
    }
    out = Path(args.out) if args.out else machine.results_folder(record["machine"])
    path = out / f"{args.mode}-{args.plan}.json"
    log(
        f"{args.mode} mode, {args.plan} plan {plan}; service on cpus {args.service_cpus} "
        f"({workers} workers), load on cpus {args.load_cpus}; results to {path}"
    )
    for warning in record["machine"]["warnings"]:
        log(f"WARNING: {warning}")
    keys = [key for key, _, _ in configurations(selected)]
    if args.mode == "cluster":
        keys = [CLUSTER_STRATEGY, *(cluster_key(n) for n in CLUSTER_REPLICAS)]
    progress = Progress(plan_phases(plan, args.mode, keys), log)
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
    if args.mode == "native":
        record["ceiling"] = measure_first_ceiling(job)
        record["services"] = run_native(artifacts, runtime, selected, job)
    elif args.mode == "cluster":
        record |= run_cluster(runtime, selected[CLUSTER_STRATEGY], job)
    else:
        record["services"], record["deployment"], record["ceiling"] = run_compose(
            runtime, selected, job
        )
    if args.add:
        record = added_to(path, record)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {path} in {progress.elapsed() / 60:.1f} min")
    return path


def run_summary(record: dict[str, Any]) -> dict[str, Any]:
    """When and at which commit a run measured which configurations, and how fast the
    machine was at its start (today's ceiling): what tells runs of one record apart."""
    return {
        "date": record["machine"]["date"],
        "git_commit": record["machine"]["git_commit"],
        "ceiling_rps": record["ceiling"]["requests_per_second"],
        "services": list(record["services"]),
    }


def added_to(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """The record at `path` with `new`'s configurations added, or measured again (`--add`):
    a new strategy is measured without measuring every other one again. Both runs must be
    of the same mode, plan and cores; `runs` lists which run measured what."""
    if not path.exists():
        return {**new, "runs": [run_summary(new)]}
    old = json.loads(path.read_text())
    for key in ("mode", "plan"):
        if old[key] != json.loads(json.dumps(new[key])):
            raise RuntimeError(f"--add: {path} has {key} {old[key]}, this run {new[key]}")
    for key in ("service_cpus", "load_cpus"):
        if old["machine"][key] != new["machine"][key]:
            raise RuntimeError(f"--add: {path} was measured with {key} {old['machine'][key]}")
    return {
        **old,
        "strategies": old["strategies"] | new["strategies"],
        "services": old["services"] | new["services"],
        "runs": [*old.get("runs", [run_summary(old)]), run_summary(new)],
    }


def measure_first_ceiling(job: Job) -> dict[str, Any]:
    """Today's reference-exact ceiling once before any service (each service's ceilings are
    measured around it too)."""
    with job.progress.phase("ceiling"):
        ceiling: dict[str, Any] = job.ceiling(REFERENCE_PIPELINE)
    ceiling["payload"] = job.main_payload.name
    return ceiling


def select_strategies(mode: str, names: str | None) -> dict[str, Strategy]:
    """The strategies to measure: every discovered one (with a Dockerfile, in compose
    mode), or those named in `names` ("a,b")."""
    available = discover_strategies() if mode == "native" else containerised_strategies()
    if mode == "cluster":
        available = {CLUSTER_STRATEGY: available[CLUSTER_STRATEGY]}
    if not names:
        return available
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise RuntimeError(
            f"--services: unknown {unknown}; known in {mode} mode: {list(available)}"
        )
    return {name: available[name] for name in wanted}


def configurations(
    strategies: dict[str, Strategy],
) -> list[tuple[str, Strategy, dict[str, str]]]:
    """What is measured: each strategy's default configuration, then its variants as
    "<name>+<variant>" with the environment each adds (strategy.toml `[variants]`)."""
    return [
        (key, strategy, extra)
        for name, strategy in strategies.items()
        for key, extra in [(name, {}), *((f"{name}+{v}", e) for v, e in strategy.variants.items())]
    ]


def base_name(key: str) -> str:
    """ "litserve_serving+batched" -> "litserve_serving"."""
    return key.split("+", 1)[0]


def run_native(
    artifacts: Path, runtime: dict[str, str], strategies: dict[str, Strategy], job: Job
) -> dict[str, Any]:
    """Each service as a local process pinned with taskset, its model from a GCS emulator."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as gcs_dir:
        emulator = GcsEmulator.start(Path(gcs_dir))
        try:
            uris = {
                p.name: emulator.upload("models", f"weather/{p.name}", p.read_bytes())
                for p in artifacts.iterdir()
                if p.is_file()
            }
            for key, strategy, extra in configurations(strategies):
                env = emulator.env(MODEL_URI=uris[strategy.model_file], **runtime, **extra)

                def launch(s: Strategy = strategy, env: dict[str, str] = env) -> RunningService:
                    return start_service(s, env, job.service_cpus)

                base = results.get(base_name(key)) if extra else None
                results[key] = measure_service(key, strategy.ceiling, launch, job, base)
        finally:
            emulator.stop()
    return results


def run_compose(
    runtime: dict[str, str], strategies: dict[str, Strategy], job: Job
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Each service as its container (cpuset = the service cores), the stack's own GCS
    emulator and export job providing the model."""
    with job.progress.phase("images"):
        build_images()
    env = {**build_environment(), **runtime}
    env |= {"SERVICE_CPUS": runtime["WORKERS"], "SERVICE_CPUSET": job.service_cpus}
    stack = Stack(COMPOSE_PROJECT, env)
    results: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    try:
        with job.progress.phase(EXPORT_JOB):
            stack.check("up", "--exit-code-from", "model", "model", timeout=1200)
        ceiling = measure_first_ceiling(job)
        for key, strategy, extra in configurations(strategies):
            name = strategy.name
            deployment[key] = {"image": stack.image(name), "image_mb": stack.image_size_mb(name)}
            variant = Stack(stack.project, {**stack.env, **extra})

            def launch(name: str = name, variant: Stack = variant) -> ContainerService:
                return start_container(variant, name)

            base = results.get(name) if extra else None
            results[key] = measure_service(key, strategy.ceiling, launch, job, base)
    finally:
        stack.down()
    return results, deployment, ceiling


def cluster_key(replicas: int) -> str:
    return f"cluster x{replicas}"


def measure_load(service: ContainerService | ClusterIngress, job: Job, name: str) -> dict[str, Any]:
    """Verified, then the closed-loop main run and the open-loop sweep (no size sweep, no
    cold starts)."""
    problems = verify(service, job)
    if problems:
        raise RuntimeError(f"{name}: FAILED verification: {problems}")
    main = load_test(service, job.main_payload, JSON, job.plan.seconds, job)
    rps = main["ab"]["requests_per_second"]
    return {"main": main, "open_loop": open_loop_sweep(service, [rps], job)}


def run_cluster(runtime: dict[str, str], strategy: Strategy, job: Job) -> dict[str, Any]:
    """The single-node strategy as its container (cpuset = the service cores), then the Ray
    cluster, head and both workers on those same cores (they share them), with 1, 2 and 3
    replicas, and a worker killed under load with 2. The shipped settings throughout: Ray's own
    failure detection, HAProxy's timeouts."""
    with job.progress.phase("images"):
        build_images()
    cpus = str(len(job.service_cpus.split(",")))
    env = {**build_environment(), **runtime}
    env |= {"SERVICE_CPUS": cpus, "SERVICE_CPUSET": job.service_cpus}
    stack = Stack(COMPOSE_PROJECT, env)
    name, services = strategy.name, {}
    try:
        with job.progress.phase(EXPORT_JOB):
            stack.check("up", "--exit-code-from", "model", "model", timeout=1200)
        ceiling = measure_first_ceiling(job)
        # Its own pipeline's ceiling, timed with nothing running: each configuration's
        # efficiency is judged against it.
        own_ceiling = job.ceiling(strategy.ceiling)
        with job.progress.phase(f"{name}: start and verify"):
            single = start_container(stack, name)
        with job.progress.phase(f"{name}: load"):
            services[name] = {"ceiling": own_ceiling, **measure_load(single, job, name)}
        single.stop()
    finally:
        stack.down()
    nodes = {
        "RAY_HEAD_CPUS": cpus, "RAY_WORKER_CPUS": cpus, "RAY_HEAD_CPUSET": job.service_cpus,
        "RAY_WORKER_1_CPUSET": job.service_cpus, "RAY_WORKER_2_CPUSET": job.service_cpus,
    }  # fmt: skip
    with contextlib.ExitStack() as up:
        with job.progress.phase("cluster: start"):
            cluster = up.enter_context(ray_cluster(CLUSTER_PROJECT, {**runtime, **nodes}))
            # Every worker in, so that Serve spreads the replicas over them.
            cluster.wait_for_nodes(180)
        for replicas in CLUSTER_REPLICAS:
            key = cluster_key(replicas)
            with job.progress.phase(f"{key}: deploy and load"):
                cluster.deploy(fixed_replicas(replicas), settled_at(replicas))
                ingress = ClusterIngress(key, cluster.url, cluster)
                services[key] = {"ceiling": own_ceiling, **measure_load(ingress, job, key)}
            if replicas == NODE_LOSS_REPLICAS:
                # Now, while a scale-up from one has put them on both workers (a scale-down
                # would leave them on one: Serve stops replicas to empty nodes).
                with job.progress.phase("cluster: node loss"):
                    rate = max(
                        1,
                        round(NODE_LOSS_LOAD * services[key]["main"]["ab"]["requests_per_second"]),
                    )
                    job.log(f"  cluster: a worker killed under {rate} req/s")
                    body = job.main_payload.read_bytes()
                    node_loss = lose_a_worker(cluster, replicas, body, JSON, rate)
    return {"ceiling": ceiling, "services": services, "cluster": nodes, "node_loss": node_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode",
        choices=("native", "compose", "cluster"),
        default="native",
        help="cluster: ray_serving on the Ray cluster of docker-compose.ray.yml",
    )
    parser.add_argument(
        "--plan",
        choices=tuple(PLANS),
        default="full",
        help="full: the main job (~25 min on 2 cores); short: a first look (~5 min); "
        "quick: seconds, make test's smoke run",
    )
    parser.add_argument("--service-cpus", default="0", help="cores for the service (taskset list)")
    parser.add_argument("--load-cpus", default="1", help="cores for the load generator")
    parser.add_argument("--payload", help="a request body to use instead of the study-sized one")
    parser.add_argument("-n", "--requests", type=int, help="ab -n")
    parser.add_argument("--services", help="measure only these strategies: a,b (default: all)")
    parser.add_argument(
        "--add",
        action="store_true",
        help="add the measured services to the existing results of this mode and plan "
        "(replacing any measured before) instead of starting a new file",
    )
    parser.add_argument("--slo-ms", type=float, default=100.0, help="p99 bound, open loop")
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"), help="exported model")
    parser.add_argument(
        "--out", help="folder for the raw JSON (default: results/<machine>/, see benchmark.machine)"
    )
    args = parser.parse_args()
    # SIGTERM (a CI timeout, a test's kill) unwinds like Ctrl-C: services and containers
    # are stopped by the `finally` blocks on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
