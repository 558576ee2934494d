"""The run plans (how much each measurement runs) and the phases a run goes through in
order, with the time the plan gives each: what `benchmark.progress` estimates from. Nothing
here measures; `benchmark.runner` picks a plan, `benchmark.modes` runs it.
"""

from benchmark.measure import Plan
from benchmark.progress import Phase
from benchmark.scenario import ClusterScenario

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
EXPORT_JOB, EXPORT_JOB_S = "Compose: GCS emulator and export job", 90.0


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
