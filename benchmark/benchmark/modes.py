"""What a run measures and how, in each mode: the strategies selected and their
configurations, then each one measured natively (a local process pinned with taskset, its
model from a GCS emulator), in Compose (its container, cpuset) or, for a strategy that
declares one, on its cluster scenario. Each mode returns its result type of
`benchmark.record`; `benchmark.runner` assembles and writes the record.
"""

import itertools
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from serving_common.strategy import Strategy, discover_strategies
from weather_model.contract import STATE_DICT_FILE
from weather_model.metadata import load_contract

from benchmark.compose import (
    ContainerService,
    Stack,
    build_environment,
    build_images,
    containerised_strategies,
    start_container,
)
from benchmark.measure import Job, Launch, measure_load, measure_rounds
from benchmark.pipelines import REFERENCE_PIPELINE
from benchmark.plans import EXPORT_JOB
from benchmark.processes import GcsEmulator, RunningService, start_service
from benchmark.record import (
    ClusterResult,
    ComposeResult,
    Deployment,
    NativeResult,
    NodeLoss,
    RunCeiling,
)
from benchmark.scenario import ClusterRun, ClusterScenario, cluster_strategies

# The Compose project of `--mode compose`; its containers are removed on every way out.
COMPOSE_PROJECT = "model-serving-bench"
# `--mode cluster` measures each strategy that declares a cluster scenario in its manifest
# (`[scenarios.cluster]`, benchmark.scenario): its single-node container, then the scenario.


def expected_prediction(artifacts: Path, jpeg: Path) -> str:
    """The PyTorch reference's top-1 for a payload image, with the exported weights."""
    from weather_model.network import load_network, state_dict_from_bytes
    from weather_model.reference import decode_rgb, reference_probabilities

    contract = load_contract(artifacts)
    model = load_network(
        state_dict_from_bytes((artifacts / STATE_DICT_FILE).read_bytes()), contract
    )
    probabilities = reference_probabilities(model, decode_rgb(jpeg.read_bytes()), contract)
    return contract.labels[int(probabilities.argmax())]


def measure_first_ceiling(job: Job) -> RunCeiling:
    """Today's reference-exact ceiling once before any service (each service's ceilings are
    measured around it too)."""
    with job.progress.phase("ceiling"):
        ceiling = job.ceiling(REFERENCE_PIPELINE)
    # benchmark.ceiling's dict; record.assemble checks it against RunCeiling.
    return cast(RunCeiling, {**ceiling, "payload": job.main_payload.name})


def select_strategies(mode: str, names: str | None) -> dict[str, Strategy]:
    """The strategies to measure: every discovered one (with a Dockerfile, in compose
    mode; and a cluster scenario, in cluster mode), or those named in `names` ("a,b")."""
    available = discover_strategies() if mode == "native" else containerised_strategies()
    if mode == "cluster":
        available = cluster_strategies(available)
    if not names:
        return available
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise RuntimeError(
            f"--services: unknown {unknown}; known in {mode} mode: {list(available)}"
        )
    return {name: available[name] for name in wanted}


def with_variants(strategies: dict[str, Strategy], specs: list[str]) -> dict[str, Strategy]:
    """`strategies` with the runner's `--variant` configurations added to their manifests'
    (`[variants]`): each spec "<strategy>+<variant>:KEY=VALUE,KEY=VALUE", the environment
    that configuration adds, e.g. "litserve_serving+b16:MAX_BATCH_SIZE=16,BATCH_WAIT_MS=10"
    (a sweep of a setting without editing a manifest)."""
    added = dict(strategies)
    for spec in specs:
        key, _, assignments = spec.partition(":")
        name, _, variant = key.partition("+")
        pairs = [a.partition("=") for a in assignments.split(",") if a]
        if not variant or not pairs or any(not k or not sep for k, sep, _ in pairs):
            raise RuntimeError(
                f"--variant {spec!r}: expected <strategy>+<variant>:KEY=VALUE[,KEY=VALUE...], "
                "e.g. litserve_serving+b16:MAX_BATCH_SIZE=16"
            )
        if name not in added:
            raise RuntimeError(f"--variant {spec!r}: {name} is not measured in this run")
        if variant in added[name].variants:
            raise RuntimeError(f"--variant {spec!r}: {name} already has a variant {variant}")
        environment = {k: v for k, _, v in pairs}
        added[name] = replace(added[name], variants={**added[name].variants, variant: environment})
    return added


def with_sweep(strategies: dict[str, Strategy], sweep: str) -> dict[str, Strategy]:
    """`strategies` with the runner's `--sweep NAME` added: for each strategy whose manifest
    declares `[sweeps.NAME]`, every combination of its values as a variant
    "NAME-<value>-<value>" (e.g. "batching-16-20" for MAX_BATCH_SIZE=16, BATCH_WAIT_MS=20),
    except a combination one of its variants already sets."""
    if not any(sweep in strategy.sweeps for strategy in strategies.values()):
        raise RuntimeError(f"--sweep {sweep}: no strategy measured here declares [sweeps.{sweep}]")
    swept = dict(strategies)
    for name, strategy in strategies.items():
        if sweep not in strategy.sweeps:
            continue
        grid, variants = strategy.sweeps[sweep], dict(strategy.variants)
        for values in itertools.product(*grid.values()):
            environment = dict(zip(grid, values, strict=True))
            if environment not in variants.values():
                variants["-".join([sweep, *values])] = environment
        swept[name] = replace(strategy, variants=variants)
    return swept


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


def run_native(
    artifacts: Path, runtime: dict[str, str], strategies: dict[str, Strategy], job: Job
) -> NativeResult:
    """Each service as a local process pinned with taskset, its model from a GCS emulator;
    today's ceiling first."""
    ceiling = measure_first_ceiling(job)
    with tempfile.TemporaryDirectory() as gcs_dir:
        emulator = GcsEmulator.start(Path(gcs_dir))
        try:
            uris = {
                p.name: emulator.upload("models", f"weather/{p.name}", p.read_bytes())
                for p in artifacts.iterdir()
                if p.is_file()
            }
            launches: list[tuple[str, str, Launch]] = []
            for key, strategy, extra in configurations(strategies):
                # A variant may set a runtime setting too (WORKERS=1 on two cores).
                env = emulator.env(MODEL_URI=uris[strategy.model_file], **(runtime | extra))

                def launch(s: Strategy = strategy, env: dict[str, str] = env) -> RunningService:
                    return start_service(s, env, job.service_cpus)

                launches.append((key, strategy.ceiling, launch))
            # benchmark.measure's results; the record's types check them (record.assemble).
            results = measure_rounds(launches, job)
        finally:
            emulator.stop()
    return {"ceiling": ceiling, "services": results}


def stack_environment(runtime: dict[str, str], job: Job) -> dict[str, str]:
    """The Compose stack's variables: the local images, the services' runtime settings, and
    MODEL, the network its export job exports: the one of the run's artifacts, whose
    predictions the services are verified against (the same demo weights, exported again)."""
    return {**build_environment(), **runtime, "MODEL": load_contract(job.artifacts).architecture}


def run_compose(
    runtime: dict[str, str], strategies: dict[str, Strategy], job: Job
) -> ComposeResult:
    """Each service as its container (cpuset = the service cores), the stack's own GCS
    emulator and export job providing the model."""
    with job.progress.phase("images"):
        build_images()
    env = stack_environment(runtime, job)
    env |= {"SERVICE_CPUS": runtime["WORKERS"], "SERVICE_CPUSET": job.service_cpus}
    stack = Stack(COMPOSE_PROJECT, env)
    deployment: dict[str, Deployment] = {}
    try:
        with job.progress.phase(EXPORT_JOB):
            stack.check("up", "--exit-code-from", "model", "model", timeout=1200)
        ceiling = measure_first_ceiling(job)
        launches: list[tuple[str, str, Launch]] = []
        for key, strategy, extra in configurations(strategies):
            name = strategy.name
            deployment[key] = {"image": stack.image(name), "image_mb": stack.image_size_mb(name)}
            variant = Stack(stack.project, {**stack.env, **extra})

            def launch(name: str = name, variant: Stack = variant) -> ContainerService:
                return start_container(variant, name)

            launches.append((key, strategy.ceiling, launch))
        results = measure_rounds(launches, job)
    finally:
        stack.down()
    return {"ceiling": ceiling, "services": results, "deployment": deployment}


def run_cluster(
    runtime: dict[str, str], strategy: Strategy, scenario: ClusterScenario, job: Job
) -> ClusterResult:
    """The single-node strategy as its container (cpuset = the service cores), then its
    cluster scenario (the strategy's manifest says what that measures), after the stack is
    down."""
    with job.progress.phase("images"):
        build_images()
    cpus = str(len(job.service_cpus.split(",")))
    env = stack_environment(runtime, job)
    env |= {"SERVICE_CPUS": cpus, "SERVICE_CPUSET": job.service_cpus}
    stack = Stack(COMPOSE_PROJECT, env)
    name, services = strategy.name, dict[str, Any]()
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
            services[name] = {"ceiling": own_ceiling, **measure_load(single, job)}
        single.stop()
    finally:
        stack.down()
    outcome = scenario.run(ClusterRun(job=job, runtime=runtime, ceiling=own_ceiling))
    clash = set(services) & set(outcome.services)
    if clash:
        raise RuntimeError(f"{strategy.name}: its cluster names configurations {clash} again")
    return {
        "ceiling": ceiling,
        "services": services | outcome.services,
        "cluster": outcome.settings,
        # The scenario's own dict; record.assemble checks it against NodeLoss.
        "node_loss": cast(NodeLoss, outcome.node_loss),
    }
