"""The runner's side of `benchmark.record`: a run's header (its plan, configurations and
machine), the record assembled from a mode's result and written (or kept unchecked when it
does not fit the schema), and `--add`'s merge into the record already there. The record's
shape is `benchmark.record`'s; nothing here measures or formats.
"""

import hashlib
import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from serving_common.strategy import Strategy
from weather_model.contract import STATE_DICT_FILE
from weather_model.metadata import load_contract

from benchmark import machine
from benchmark.measure import Plan
from benchmark.modes import configurations
from benchmark.record import (
    SCHEMA_VERSION,
    ClusterResult,
    ComposeResult,
    Machine,
    Mode,
    ModelInfo,
    NativeResult,
    PlanName,
    Record,
    RecordError,
    RunHeader,
    RunPlan,
    RunSummary,
    assemble,
    load_record,
    upgrade,
)


def machine_metadata(mode: str, service_cpus: str, load_cpus: str) -> Machine:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=machine.ROOT, capture_output=True, text=True
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


def model_info(artifacts: Path) -> ModelInfo:
    """The exported model in `artifacts`, as a record names it."""
    contract = load_contract(artifacts)
    weights = (artifacts / STATE_DICT_FILE).read_bytes()
    return {
        "architecture": contract.architecture,
        "labels": list(contract.labels),
        "state_dict_sha256": hashlib.sha256(weights).hexdigest(),
    }


def run_header(
    plan_name: PlanName,
    plan: Plan,
    model: ModelInfo,
    selected: dict[str, Strategy],
    mode: Mode,
    service_cpus: str,
    load_cpus: str,
) -> RunHeader:
    """What the record says about the run before anything is measured."""
    return {
        "schema_version": SCHEMA_VERSION,
        "plan_name": plan_name,
        "plan": run_plan(plan),
        "model": model,
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
        "machine": machine_metadata(mode, service_cpus, load_cpus),
    }


def write_record(
    path: Path,
    header: RunHeader,
    mode: Mode,
    result: NativeResult | ComposeResult | ClusterResult,
    add: bool,
) -> None:
    """The record of `header` and `result` to `path` (`add`: merged into the one there)."""
    try:
        record = assemble(header, mode, result)
    except RecordError as exc:
        # A schema mismatch does not throw a run's measurements away: kept for the fix.
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = path.with_suffix(".unchecked.json")
        kept.write_text(json.dumps({**header, "mode": mode, **result}, indent=2) + "\n")
        raise RuntimeError(
            f"the record does not fit benchmark.record ({exc}); kept in {kept}"
        ) from None
    if add:
        record = added_to(path, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def run_plan(plan: Plan) -> RunPlan:
    """The plan as the record keeps it."""
    return RunPlan(
        requests=plan.requests,
        concurrency=plan.concurrency,
        seconds=plan.seconds,
        sweep_seconds=plan.sweep_seconds,
        startup_runs=plan.startup_runs,
        rounds=plan.rounds,
        ceiling_seconds=plan.ceiling_seconds,
        open_loop_seconds=plan.open_loop_seconds,
        open_loop_fractions=list(plan.open_loop_fractions),
        overload_seconds=plan.overload_seconds,
    )


def run_summary(record: Record) -> RunSummary:
    """When and at which commit a run measured which configurations, and how fast the
    machine was at its start (today's ceiling): what tells runs of one record apart."""
    return {
        "date": record["machine"]["date"],
        "git_commit": record["machine"]["git_commit"],
        "ceiling_rps": record["ceiling"]["requests_per_second"],
        "services": list(record["services"]),
    }


def added_to(path: Path, new: Record) -> Record:
    """The record at `path` (of any schema version: upgraded) with `new`'s configurations
    added, or measured again (`--add`): a new strategy is measured without measuring every
    other one again. Both runs must be of the same mode, plan, model and cores; `runs` lists which
    run measured what."""
    if not path.exists():
        return upgrade({**new, "runs": [run_summary(new)]})
    old = load_record(path)
    if (old["mode"], old["plan"]) != (new["mode"], new["plan"]):
        raise RuntimeError(
            f"--add: {path} has mode {old['mode']} and plan {old['plan']}, this run "
            f"{new['mode']} and {new['plan']}"
        )
    if old["model"] != new["model"]:
        raise RuntimeError(
            f"--add: {path} measured the model {old['model']['architecture']} "
            f"(weights {old['model']['state_dict_sha256'][:12] or 'unrecorded'}), this run "
            f"{new['model']['architecture']} (weights {new['model']['state_dict_sha256'][:12]})"
        )
    cores = [(r["machine"]["service_cpus"], r["machine"]["load_cpus"]) for r in (old, new)]
    if cores[0] != cores[1]:
        raise RuntimeError(
            f"--add: {path} was measured with service and load cpus {cores[0]}, this run {cores[1]}"
        )
    merged: dict[str, Any] = {
        **old,
        "strategies": old["strategies"] | new["strategies"],
        "services": {**old["services"], **new["services"]},
        "runs": [*old.get("runs", [run_summary(old)]), run_summary(new)],
    }
    return upgrade(merged)
