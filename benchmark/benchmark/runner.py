"""`python -m benchmark.runner`: measure every service and write one raw JSON file.

Natively: a local GCS emulator holds the exported model; each service in turn is started
on the same cores (taskset, where it exists), pulls the model from gs://, is verified on
every payload, is loaded with ab from the other cores, and is stopped. In Compose mode the
same, on each service's container (cpuset). The raw results go to `results/<machine>/`
(`benchmark.machine`); the runner never formats them, `benchmark.report` renders them.
"""

import argparse
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
from benchmark.compose import (
    ContainerService,
    Stack,
    build_environment,
    build_images,
    containerised_strategies,
    start_container,
)
from benchmark.measure import Job, Plan, measure_service
from benchmark.payloads import write_payloads
from benchmark.pipelines import PIPELINES, REFERENCE_PIPELINE
from benchmark.processes import GcsEmulator, RunningService, start_service
from benchmark.progress import Phase, Progress

ROOT = Path(__file__).resolve().parents[2]

# The Compose project of `--mode compose`; its containers are removed on every way out.
COMPOSE_PROJECT = "model-serving-bench"

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
START_S = {"native": 10.0, "compose": 20.0}
COLD_START_S = {"native": 5.0, "compose": 8.0}
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
    if mode == "compose":
        phases += [Phase("images", 0.0), Phase(EXPORT_JOB, EXPORT_JOB_S)]
    phases.append(Phase("ceiling", plan.ceiling_seconds + 2))
    for name in names:
        # Two ceilings (the service's pipeline, today's) before it starts and after it stops.
        ceilings = 2 * (plan.ceiling_seconds + 2)
        steps = [
            ("start and verify", ceilings + START_S[mode]),
            ("main run", plan.seconds),
            ("size sweep", 3 * (plan.sweep_seconds + 1) if plan.sweep_seconds else None),
            ("open loop", 3 + len(plan.open_loop_fractions) * (plan.open_loop_seconds + 1)),
            ("cold starts", ceilings + plan.startup_runs * COLD_START_S[mode]),
        ]
        phases += [Phase(f"{name}: {step}", s) for step, s in steps if s is not None]
    return phases


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("native", "compose"), default="native")
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
