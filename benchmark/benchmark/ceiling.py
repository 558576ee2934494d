"""The hardware ceiling: a preprocessing pipeline in-process, on one thread.

Parse JSON, base64-decode, decode, preprocess, one ONNX Runtime run (benchmark.pipelines):
no HTTP, no framework, what one core can do per second with that pipeline. Two matter for
each service: the pipeline its defaults run (its efficiency is judged against it) and
today's reference-exact one, the any-size graph (speed-ups are quoted against it). Both run
on the services' core, before and after each service's main run, because this machine's
speed drifts by several percent over minutes.
"""

from pathlib import Path
from typing import Any

from benchmark.machine import pinned
from benchmark.pipelines import PIPELINES, STAGES, LoadedPipeline, time_stages


def measure_ceiling(
    artifacts: Path, pipeline: str, payload: Path, seconds: float, cpus: str | None = None
) -> dict[str, Any]:
    loaded = LoadedPipeline(PIPELINES[pipeline], artifacts)
    with pinned(cpus):
        return time_stages(loaded, payload.read_bytes(), seconds)


def mean_ceiling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several measurements as one: total iterations over total time (and CPU time)."""
    iterations = sum(run["iterations"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    cpu_ms = sum(run["cpu_ms_per_request"] * run["iterations"] for run in runs)
    return {
        "pipeline": runs[0]["pipeline"],
        "iterations": iterations,
        "seconds": seconds,
        "requests_per_second": iterations / seconds,
        "cpu_ms_per_request": cpu_ms / iterations,
        "stage_ms": {
            stage: sum(run["stage_ms"][stage] * run["iterations"] for run in runs) / iterations
            for stage in STAGES
        },
        "runs": runs,
    }
