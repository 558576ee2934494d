"""The run plans (how much each measurement runs) and the phases a run goes through in
order, with the time the plan gives each: what `benchmark.progress` estimates from. Nothing
here measures; `benchmark.runner` picks a plan, `benchmark.modes` runs it.
"""

from benchmark.measure import (
    OVERLOAD_FACTORS,
    Plan,
    capacity_check_s,
    measures_overload,
    round_label,
)
from benchmark.progress import Phase
from benchmark.scenario import ClusterScenario

PLANS = {
    # The main job: every configuration in 3 interleaved rounds (the spread over them is
    # what the tables quote beside each median), each round the study's ab -c 50 for 30 s
    # and a short open loop, and for each strategy's default configuration the overload
    # phase (about 1.5 min); the size sweep once. About an hour on 2 cores for today's
    # nine configurations.
    "full": Plan(
        requests=40_000,
        concurrency=50,
        seconds=30,
        sweep_seconds=10,
        startup_runs=3,
        rounds=3,
        ceiling_seconds=2,
        open_loop_seconds=6,
        open_loop_fractions=(0.5, 0.8, 0.9, 1.0),
        overload_seconds=8,
    ),
    # The overload phase alone, in 3 interleaved rounds, each round's capacity from a 20 s
    # main run: what docs/overload.md quotes, in about 35 minutes for the six strategies
    # (their default configurations; variants go through no overload phase).
    "overload": Plan(
        requests=40_000,
        concurrency=50,
        seconds=20,
        sweep_seconds=0,
        startup_runs=1,
        rounds=3,
        ceiling_seconds=2,
        open_loop_seconds=0,
        open_loop_fractions=(),
        overload_seconds=8,
    ),
    # A first look in about 5 minutes: one round of 10 s a configuration, a short open loop,
    # no size sweep, one start. Its numbers are noisier, and marked as such in the raw
    # results and the report.
    "short": Plan(
        requests=3_000,
        concurrency=50,
        seconds=10,
        sweep_seconds=0,
        startup_runs=1,
        rounds=1,
        ceiling_seconds=1,
        open_loop_seconds=3,
        open_loop_fractions=(0.5, 0.8, 1.0),
        overload_seconds=0,
    ),
    # Seconds per service: make test's end-to-end check of the harness and the report.
    "quick": Plan(
        requests=100,
        concurrency=8,
        seconds=20,
        sweep_seconds=0,
        startup_runs=1,
        rounds=1,
        ceiling_seconds=1,
        open_loop_seconds=2,
        open_loop_fractions=(0.5,),
        overload_seconds=1,
    ),
}
# What the plan cannot know, in seconds: a service's start and verification, one cold start,
# the Compose export job. Only for the progress estimate.
START_S = {"native": 10.0, "compose": 20.0, "cluster": 20.0}
COLD_START_S = {"native": 5.0, "compose": 8.0, "cluster": 0.0}
EXPORT_JOB, EXPORT_JOB_S = "Compose: GCS emulator and export job", 90.0


def overload_s(plan: Plan, name: str) -> float:
    """The overload phase: the flood and each rate past capacity, each followed by the
    service finishing what it still holds (benchmark.measure.settle_s, about 3 s) and a
    capacity check, and one check before the flood."""
    if not measures_overload(plan, name):
        return 0.0
    steps = 1 + len(OVERLOAD_FACTORS)
    return steps * (plan.overload_seconds + 3) + (steps + 1) * (capacity_check_s(plan) + 1)


def plan_phases(
    plan: Plan, mode: str, names: list[str], clusters: dict[str, ClusterScenario] | None = None
) -> list[Phase]:
    """Every phase of a run in order, with the time the plan gives it (progress only).
    Cluster mode: `clusters`, each strategy's scenario, by strategy."""
    phases = []
    if mode in ("compose", "cluster"):
        phases += [Phase("images", 0.0), Phase(EXPORT_JOB, EXPORT_JOB_S)]
    phases.append(Phase("ceiling", plan.ceiling_seconds + 2))
    if mode == "cluster":
        return phases + cluster_phases(plan, clusters or {})
    ceilings = plan.ceiling_seconds + 2  # each pipeline's, before or after a service
    for number in range(1, plan.rounds + 1):
        for name in names:
            phases += [
                Phase(round_label(name, step, number, plan.rounds), seconds)
                for step, seconds in round_steps(plan, mode, name, number, ceilings)
            ]
    return phases


def round_steps(
    plan: Plan, mode: str, name: str, number: int, ceiling_s: float
) -> list[tuple[str, float]]:
    """One round's steps for configuration `name` (benchmark.measure.measure_round's phases),
    with the time each is given; two pipelines' ceilings before it starts and after it
    stops."""
    steps = [("start and verify", 2 * ceiling_s + START_S[mode]), ("main run", plan.seconds)]
    if number == 1 and plan.sweep_seconds:
        steps.append(("size sweep", 3 * (plan.sweep_seconds + 1)))
    if fractions := len(plan.open_loop_fractions):
        steps.append(("open loop", 3 + fractions * (plan.open_loop_seconds + 1)))
    if overload := overload_s(plan, name):
        steps.append(("overload", overload))
    steps.append(("ceilings after", 2 * ceiling_s))
    extra_starts = plan.startup_runs - plan.rounds
    if number == 1 and extra_starts > 0:
        steps.append(("cold starts", extra_starts * COLD_START_S[mode]))
    return steps


def cluster_phases(plan: Plan, clusters: dict[str, ClusterScenario]) -> list[Phase]:
    """Each strategy's single-node container, then its cluster scenario's own phases."""
    load = plan.seconds + 3 + len(plan.open_loop_fractions) * (plan.open_loop_seconds + 1)
    phases = []
    for name, scenario in clusters.items():
        phases += [
            Phase(f"{name}: start and verify", START_S["cluster"]),
            Phase(f"{name}: load", load),
            *scenario.phases(load),
        ]
    return phases
