"""`python -m benchmark.runner`: measure every service and write one raw JSON file.

Natively: a local GCS emulator holds the exported model; each service in turn is started
on the same cores (taskset), pulls the model from gs://, is verified on every payload, is
loaded with ab from the other cores, and is stopped. The runner never formats results;
`benchmark.report` renders them.
"""

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
from serving_common.strategy import Strategy, discover_strategies
from weather_model.contract import LABELS, OPTIMIZED_ONNX_FILE, STATE_DICT_FILE

from benchmark.ab import ab_command, run_ab
from benchmark.ceiling import mean_ceiling, measure_ceiling
from benchmark.compose import (
    ContainerService,
    Stack,
    build_environment,
    build_images,
    containerised_strategies,
    start_container,
)
from benchmark.oha import oha_command, run_oha
from benchmark.payloads import write_payloads
from benchmark.processes import GcsEmulator, RunningService, start_service
from benchmark.resources import ResourceSampler

ROOT = Path(__file__).resolve().parents[2]

Service = RunningService | ContainerService
Launch = Callable[[], Service]


@dataclass(frozen=True)
class Plan:
    requests: int  # ab -n
    concurrency: int  # ab -c
    seconds: int  # ab -t: a cap so the slowest strategy fits the time budget
    sweep_seconds: int  # per size-sweep run; 0 skips the sweep
    startup_runs: int
    ceiling_seconds: float
    open_loop_seconds: float  # per offered rate
    open_loop_fractions: tuple[float, ...]  # offered rates, as fractions of closed-loop req/s


# The Compose project of `--mode compose`; its containers are removed on every way out.
COMPOSE_PROJECT = "model-serving-bench"

FULL = Plan(
    requests=40_000,
    concurrency=50,
    seconds=180,
    sweep_seconds=30,
    startup_runs=15,
    ceiling_seconds=20,
    open_loop_seconds=15,
    open_loop_fractions=(0.5, 0.7, 0.8, 0.9, 1.0, 1.1),
)
QUICK = Plan(
    requests=100,
    concurrency=8,
    seconds=20,
    sweep_seconds=0,
    startup_runs=1,
    ceiling_seconds=1,
    open_loop_seconds=2,
    open_loop_fractions=(0.5,),
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def machine_metadata(service_cpus: str, load_cpus: str) -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    ab_version = subprocess.run(["ab", "-V"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "git_commit": commit or "unknown",
        "cpu_model": cpu_model,
        "cpus_online": os.cpu_count(),
        "service_cpus": service_cpus,
        "load_cpus": load_cpus,
        "python": platform.python_version(),
        "ab": ab_version,
        "versions": {
            pkg: version(pkg)
            for pkg in ("onnxruntime", "torch", "fastapi", "uvicorn", "simplejpeg", "pillow")
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def expected_prediction(artifacts: Path, jpeg: Path) -> str:
    """The PyTorch reference's top-1 for a payload image, with the exported weights."""
    from weather_model.network import load_network, state_dict_from_bytes
    from weather_model.reference import decode_rgb, reference_probabilities

    state = state_dict_from_bytes((artifacts / STATE_DICT_FILE).read_bytes())
    return LABELS[
        int(reference_probabilities(load_network(state), decode_rgb(jpeg.read_bytes())).argmax())
    ]


def verify(service: "Service", payloads: dict[str, Path], expected: dict[str, str]) -> list[str]:
    """Problems found; a service with any is reported as failed, not benchmarked."""
    problems = []
    for name, path in payloads.items():
        response = httpx.post(
            service.url + "/predict/",
            content=path.read_bytes(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        got = response.json().get("prediction") if response.status_code == 200 else response.text
        if got != expected[name]:
            problems.append(f"{name}: expected {expected[name]}, got {got}")
    return problems


def load_test(
    service: Service,
    payload: Path,
    content_type: str,
    plan: Plan,
    seconds: int,
    load_cpus: str,
) -> dict[str, Any]:
    command = ab_command(
        service.url + "/predict/", payload, plan.requests, plan.concurrency, seconds, content_type
    )
    with ResourceSampler(service.pid) as sampler:
        result, _ = run_ab(command, load_cpus)
    return {
        "command": command,
        "payload": payload.name,
        "payload_sha256": sha256(payload),
        "ab": result,
        "resources": sampler.summary(),
    }


def open_loop_sweep(
    service: Service,
    payload: Path,
    closed_loop: dict[str, Any],
    plan: Plan,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Offered rates around the closed-loop throughput, each held for a fixed time."""
    closed_rps = closed_loop["ab"]["requests_per_second"]
    # Warm-up, discarded: oha opening its connections would otherwise land in the first
    # step's tail latency.
    warm_up = oha_command(
        service.url + "/predict/", payload, max(1, round(closed_rps / 2)), 2, "application/json"
    )
    run_oha(warm_up, args.load_cpus)
    steps = []
    for fraction in plan.open_loop_fractions:
        rate = max(1, round(closed_rps * fraction))
        log(f"{service.name}: open loop at {rate} req/s")
        command = oha_command(
            service.url + "/predict/", payload, rate, plan.open_loop_seconds, "application/json"
        )
        steps.append({"offered_rps": rate, "command": command, **run_oha(command, args.load_cpus)})
    return {"slo_ms": args.slo_ms, "steps": steps}


def measure_startup(launch: "Launch", runs: int) -> list[dict[str, float]]:
    """Process (or `compose up`) start -> first 200 on GET /, `runs` times."""
    results = []
    for _ in range(runs):
        service = launch()
        info = httpx.get(service.url + "/info").json()["startup"]
        results.append({"ready_seconds": service.healthy_at - service.started_at, **info})
        service.stop()
    return results


def run(args: argparse.Namespace) -> Path:
    plan = QUICK if args.quick else FULL
    selected = select_strategies(args.mode, args.services)
    if args.requests:
        plan = Plan(**{**plan.__dict__, "requests": args.requests})
    artifacts = Path(args.artifacts)
    if not (artifacts / STATE_DICT_FILE).exists():
        raise RuntimeError(f"no exported model in {artifacts}: run `make export` first")
    payload_files = write_payloads(Path(tempfile.mkdtemp(prefix="bench-payloads-")))
    main_payload = Path(args.payload) if args.payload else payload_files["study"]
    workers = str(len(args.service_cpus.split(",")))
    log(
        f"{args.mode} mode, plan {plan}; service on cpus {args.service_cpus} ({workers} workers), "
        f"load on cpus {args.load_cpus}"
    )
    expected = {
        name: expected_prediction(artifacts, path.with_suffix(".jpg"))
        for name, path in payload_files.items()
    }
    record: dict[str, Any] = {
        "mode": args.mode,
        "quick": args.quick,
        "plan": plan.__dict__,
        "strategies": {
            name: {"title": s.title, "stack": s.stack, "port": s.port, "model": s.model_file}
            for name, s in selected.items()
        },
        "machine": machine_metadata(args.service_cpus, args.load_cpus),
        "services": {},
    }
    log("measuring the ceiling (in-process, one thread)")
    record["ceiling"] = measure_ceiling(
        artifacts / OPTIMIZED_ONNX_FILE, main_payload, plan.ceiling_seconds, args.service_cpus
    )
    record["ceiling"]["payload"] = main_payload.name
    runtime = {"WORKERS": workers, "INTRA_OP_THREADS": "1", "INTER_OP_THREADS": "1"}
    inputs = (args, plan, payload_files, main_payload, expected)
    if args.mode == "native":
        record["services"] = run_native(artifacts, runtime, selected, inputs)
    else:
        record["services"], record["deployment"] = run_compose(runtime, selected, inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.mode}-{'quick' if args.quick else 'full'}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {path}")
    return path


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


def run_native(
    artifacts: Path, runtime: dict[str, str], strategies: dict[str, Strategy], inputs: tuple
) -> dict[str, Any]:
    """Each service as a local process pinned with taskset, its model from a GCS emulator."""
    args = inputs[0]
    results = {}
    with tempfile.TemporaryDirectory() as gcs_dir:
        emulator = GcsEmulator.start(Path(gcs_dir))
        try:
            uris = {
                p.name: emulator.upload("models", f"weather/{p.name}", p.read_bytes())
                for p in artifacts.iterdir()
                if p.is_file()
            }
            for name, strategy in strategies.items():
                env = emulator.env(MODEL_URI=uris[strategy.model_file], **runtime)

                def launch(s: Strategy = strategy, env: dict[str, str] = env) -> RunningService:
                    return start_service(s, env, args.service_cpus)

                results[name] = measure_service(name, launch, *inputs)
        finally:
            emulator.stop()
    return results


def run_compose(
    runtime: dict[str, str], strategies: dict[str, Strategy], inputs: tuple
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each service as its container (cpuset = the service cores), the stack's own GCS
    emulator and export job providing the model."""
    args = inputs[0]
    log("compose: images (docker/build-images.sh)")
    build_images()
    env = {**build_environment(), **runtime}
    env |= {"SERVICE_CPUS": runtime["WORKERS"], "SERVICE_CPUSET": args.service_cpus}
    stack = Stack(COMPOSE_PROJECT, env)
    results, deployment = {}, {}
    try:
        stack.check("up", "--exit-code-from", "model", "model", timeout=1200)
        for name in strategies:
            deployment[name] = {"image": stack.image(name), "image_mb": stack.image_size_mb(name)}

            def launch(name: str = name) -> ContainerService:
                return start_container(stack, name)

            results[name] = measure_service(name, launch, *inputs)
    finally:
        stack.down()
    return results, deployment


def measure_service(
    name: str,
    launch: "Launch",
    args: argparse.Namespace,
    plan: Plan,
    payload_files: dict[str, Path],
    main_payload: Path,
    expected: dict[str, str],
) -> dict[str, Any]:
    log(f"{name}: starting")
    service = launch()
    result: dict[str, Any] = {}
    try:
        problems = verify(service, payload_files, expected)
        check = httpx.post(
            service.url + "/predict/",
            content=main_payload.read_bytes(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        if check.status_code != 200:
            problems.append(f"{main_payload.name}: {check.status_code} {check.text}")
        if problems:
            log(f"{name}: FAILED verification: {problems}")
            return {"failed": problems}

        # The ceiling again, on the same core just before and just after the service's main
        # run: the service's CPU cost per request is judged against their mean.
        def ceiling() -> dict[str, float]:
            return measure_ceiling(
                Path(args.artifacts) / OPTIMIZED_ONNX_FILE, main_payload, plan.ceiling_seconds,
                args.service_cpus,
            )  # fmt: skip

        result["runtime"] = httpx.get(service.url + "/info", timeout=10).json()["runtime"]
        log(f"{name}: verified; ceiling, ab on {main_payload.name}, ceiling")
        before = ceiling()
        result["main"] = load_test(
            service, main_payload, "application/json", plan, plan.seconds, args.load_cpus
        )
        result["ceiling"] = mean_ceiling([before, ceiling()])
        if plan.sweep_seconds:
            sweep = {}
            for size in ("small", "large"):
                log(f"{name}: size sweep {size}")
                sweep[size] = load_test(
                    service, payload_files[size], "application/json", plan, plan.sweep_seconds,
                    args.load_cpus,
                )  # fmt: skip
            log(f"{name}: raw JPEG body")
            sweep["study_raw"] = load_test(
                service, payload_files["study"].with_suffix(".jpg"), "image/jpeg", plan,
                plan.sweep_seconds, args.load_cpus,
            )  # fmt: skip
            result["sweep"] = sweep
        result["open_loop"] = open_loop_sweep(service, main_payload, result["main"], plan, args)
        result["stages"] = httpx.get(service.url + "/metrics").text
    finally:
        service.stop()
    log(f"{name}: startup x{plan.startup_runs}")
    result["startup"] = measure_startup(launch, plan.startup_runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("native", "compose"), default="native")
    parser.add_argument(
        "--quick", action="store_true", help="seconds, not minutes (used by make test)"
    )
    parser.add_argument("--service-cpus", default="0", help="cores for the service (taskset list)")
    parser.add_argument("--load-cpus", default="1", help="cores for the load generator")
    parser.add_argument("--payload", help="a request body to use instead of the study-sized one")
    parser.add_argument("-n", "--requests", type=int, help="ab -n")
    parser.add_argument("--services", help="measure only these strategies: a,b (default: all)")
    parser.add_argument("--slo-ms", type=float, default=100.0, help="p99 bound, open loop")
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts"), help="exported model")
    parser.add_argument("--out", default=str(ROOT / "results" / "raw"))
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
