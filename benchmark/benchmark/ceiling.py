"""The hardware ceiling: the cheapest correct pipeline, in-process, on one thread.

Parse JSON, base64-decode, decode the JPEG with libjpeg-turbo, one ONNX Runtime run with
preprocessing in the graph. No HTTP, no framework: what one core can do per second. It runs
on the services' core, and the runner measures it again before and after each service's main
run, because this machine's speed drifts by several percent over minutes.
"""

import time
from pathlib import Path

import onnxruntime as ort
import orjson
import pybase64
import simplejpeg
from weather_model.contract import ONNX_INPUT, PROBABILITIES_OUTPUT

from benchmark.machine import pinned


def measure_ceiling(
    model: Path, payload: Path, seconds: float, cpus: str | None = None
) -> dict[str, float]:
    with pinned(cpus):
        return _measure(model, payload, seconds)


def mean_ceiling(runs: list[dict[str, float]]) -> dict[str, object]:
    """Several measurements as one: total iterations over total time (and CPU time)."""
    iterations = sum(run["iterations"] for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    cpu_ms = sum(run["cpu_ms_per_request"] * run["iterations"] for run in runs)
    return {
        "iterations": iterations,
        "seconds": seconds,
        "requests_per_second": iterations / seconds,
        "cpu_ms_per_request": cpu_ms / iterations,
        "runs": runs,
    }


def _measure(model: Path, payload: Path, seconds: float) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    body = payload.read_bytes()

    def once() -> None:
        pixels = simplejpeg.decode_jpeg(pybase64.b64decode(orjson.loads(body)["image"]), "RGB")
        session.run([PROBABILITIES_OUTPUT], {ONNX_INPUT: pixels})

    once()  # warm-up: first run allocates
    count, started = 0, time.perf_counter()
    cpu_started = time.process_time()
    while time.perf_counter() - started < seconds:
        once()
        count += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "iterations": count,
        "seconds": elapsed,
        "requests_per_second": count / elapsed,
        "cpu_ms_per_request": 1000 * cpu / count,
    }
