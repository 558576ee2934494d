"""`python -m benchmark.fidelity`: every preprocessing variant against the PyTorch reference
on the fidelity set, with each variant's in-process speed: the frontier the ONNX services'
defaults are chosen from (`make bench` runs it).

A variant meets the bound when it gives the reference's top-1 on every input the reference
is decisive about (top-1 ahead of the runner-up by at least DECISIVE_MARGIN) and no
probability moves by more than MAX_PROBABILITY_DELTA on any input. The Python variants run
in-process (benchmark.pipelines, on the shared onnx_predictor code); the configurations a
strategy's manifest lists under `[fidelity.NAME]` (a service whose preprocessing is its own
code) run as the real service, natively, over HTTP. Writes fidelity.json in the model's
results folder (results/<machine>/, or results/<machine>/<model>/: benchmark.machine).

Each in-process variant has its `speed` (pipelines.time_stages: requests/s, CPU ms per
request, ms per stage, on one core of this machine, which drift with the machine's speed)
and, when valgrind is installed, its `instructions` (benchmark.instructions): `per_request`,
the instructions one request executes (the median of `each_request`, the counts of
several), which do not drift; `tool`, what counted them. Records older than the count, and
the service configurations, have no `instructions` (tables render "-").
"""

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving_common.strategy import ManifestError, Strategy, discover_strategies
from weather_model import contract
from weather_model.contract import STATE_DICT_FILE
from weather_model.metadata import load_contract
from weather_model.network import load_network, state_dict_from_bytes
from weather_model.parity import MAX_PROBABILITY_DELTA
from weather_model.reference import decode_rgb, reference_probabilities

from benchmark.fidelity_set import fidelity_set
from benchmark.instructions import REQUESTS, count_instructions, instruction_counter
from benchmark.machine import ARTIFACTS, describe, pinned, results_folder
from benchmark.payloads import write_payloads
from benchmark.pipelines import (
    PIPELINES,
    REFERENCE_PIPELINE,
    LoadedPipeline,
    time_entropy_decoding,
    time_stages,
)
from benchmark.processes import start_service
from benchmark.report import FIDELITY_FILE
from benchmark.run_record import model_info

ROOT = Path(__file__).resolve().parents[2]
DECISIVE_MARGIN = 0.05


@dataclass(frozen=True)
class ServiceConfiguration:
    """One `[fidelity.NAME]` of a strategy's manifest: the strategy, run with `settings`
    (contract/README.md), MODEL_URI the artifact's file name."""

    strategy: Strategy
    settings: dict[str, str]

    @property
    def title(self) -> str:
        described = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.strategy.title} service, {described}"


def service_configurations(
    strategies: dict[str, Strategy] | None = None,
) -> dict[str, ServiceConfiguration]:
    """Every discovered strategy's `[fidelity.NAME]` configurations, by NAME."""
    strategies = strategies if strategies is not None else discover_strategies([ROOT])
    found: dict[str, ServiceConfiguration] = {}
    for strategy in strategies.values():
        for name, env in strategy.fidelity.items():
            if name in found or name in PIPELINES:
                raise ManifestError(
                    f"{strategy.folder}: `[fidelity.{name}]`: the fidelity report has a variant "
                    "of that name already; name it after the strategy"
                )
            constant = env.get("MODEL_URI", strategy.model_constant)
            rest = {k: v for k, v in env.items() if k != "MODEL_URI"}
            settings = {"MODEL_URI": str(getattr(contract, constant)), **rest}
            found[name] = ServiceConfiguration(strategy, settings)
    return found


def agreement(reference: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """How `got` [inputs, labels] agrees with `reference` [inputs, labels]."""
    ranked = np.sort(reference, axis=1)
    decisive = ranked[:, -1] - ranked[:, -2] >= DECISIVE_MARGIN
    same_top1 = got.argmax(axis=1) == reference.argmax(axis=1)
    delta = np.abs(got - reference).max(axis=1)  # per input, the largest move of any label
    return {
        "inputs": len(reference),
        "top1_agreement": float(same_top1.mean()),
        "decisive_inputs": int(decisive.sum()),
        "decisive_agreement": float(same_top1[decisive].mean()),
        "max_delta": float(delta.max()),
        "mean_delta": float(delta.mean()),
        "meets_bound": bool(same_top1[decisive].all() and delta.max() <= MAX_PROBABILITY_DELTA),
    }


def reference(artifacts: Path, inputs: dict[str, bytes]) -> np.ndarray:
    """[inputs, labels]: the PyTorch reference on the exported weights and contract."""
    model_contract = load_contract(artifacts)
    state_dict = state_dict_from_bytes((artifacts / STATE_DICT_FILE).read_bytes())
    model = load_network(state_dict, model_contract)
    return np.stack(
        [
            reference_probabilities(model, decode_rgb(data), model_contract)
            for data in inputs.values()
        ]
    )


@contextmanager
def running(artifacts: Path, configuration: ServiceConfiguration) -> Iterator[str]:
    """The configuration's service, natively, its MODEL_URI a file in `artifacts`."""
    settings = configuration.settings
    # Absolute: the service runs in its own folder (`make bench` passes a relative path).
    model = artifacts.resolve() / settings["MODEL_URI"]
    env = {**settings, "MODEL_URI": str(model), "PATH": "/usr/bin:/bin"}
    service = start_service(configuration.strategy, env)
    try:
        yield service.url
    finally:
        service.stop()


def service_probabilities(
    url: str, inputs: dict[str, bytes], labels: tuple[str, ...]
) -> np.ndarray:
    """[inputs, labels]: the service's answers, in the order of `labels` (metadata.json's)."""
    rows = []
    with httpx.Client(timeout=60) as client:
        for data in inputs.values():
            kind = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
            answer = client.post(
                f"{url}/predict/?probabilities=true", content=data, headers={"Content-Type": kind}
            )
            answer.raise_for_status()
            probabilities = answer.json()["probabilities"]
            rows.append([probabilities[label] for label in labels])
    return np.array(rows)


def measure(
    artifacts: Path,
    payload: Path,
    seconds: float,
    cpus: str | None,
    services: dict[str, ServiceConfiguration] | None = None,
    pipelines: tuple[str, ...] = tuple(PIPELINES),
    inputs: dict[str, bytes] | None = None,
    instruction_requests: int | None = REQUESTS,
) -> dict[str, Any]:
    """The record of fidelity.json; `services` default to every manifest's `[fidelity.NAME]`,
    `inputs` to the whole fidelity set; `instruction_requests` are the requests counted per
    pipeline (benchmark.instructions), None not to count."""
    services = services if services is not None else service_configurations()
    if instruction_requests and instruction_counter() is None:
        print("instructions per request: not counted, valgrind is not installed")
        instruction_requests = None
    inputs = inputs if inputs is not None else fidelity_set()
    expected = reference(artifacts, inputs)
    variants: dict[str, Any] = {}
    graphs: dict[str, Path | bytes] = {}  # what each pipeline ran, to count it
    body = payload.read_bytes()
    for name in pipelines:
        pipeline = PIPELINES[name]
        loaded = LoadedPipeline(pipeline, artifacts)
        got = np.stack([loaded.probabilities(data) for data in inputs.values()])
        with pinned(cpus):
            speed = time_stages(loaded, body, seconds)
        variants[name] = {"title": pipeline.title, **agreement(expected, got), "speed": speed}
        graphs[name] = loaded.graph
    if instruction_requests:  # after the timings: it takes both cores
        started = time.perf_counter()
        counted = count_instructions(graphs, artifacts, payload, instruction_requests)
        for name, instructions in counted.items():
            variants[name]["instructions"] = instructions
        print(f"instructions per request: counted in {time.perf_counter() - started:.0f} s")
    labels = load_contract(artifacts).labels
    for name, configuration in services.items():
        with running(artifacts, configuration) as url:
            got = service_probabilities(url, inputs, labels)
        variants[name] = {"title": configuration.title, **agreement(expected, got)}
    with pinned(cpus):
        entropy_ms = time_entropy_decoding(body, seconds)
    return {
        "machine": describe(),
        "model": model_info(artifacts),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "payload": payload.name,
        "inputs": len(inputs),
        "decisive_margin": DECISIVE_MARGIN,
        "max_probability_delta": MAX_PROBABILITY_DELTA,
        "reference_pipeline": REFERENCE_PIPELINE,
        # What each strategy's defaults run (strategy.toml's `ceiling`).
        "defaults": {s.name: s.ceiling for s in discover_strategies([ROOT]).values()},
        "fastest_meeting_bound": fastest_meeting_bound(variants),
        "entropy_decoding_ms": entropy_ms,
        "variants": variants,
    }


def fastest_meeting_bound(variants: dict[str, Any]) -> str | None:
    timed = [(v["speed"]["requests_per_second"], n) for n, v in variants.items() if "speed" in v]
    meeting = [(rps, name) for rps, name in timed if variants[name]["meets_bound"]]
    return max(meeting)[1] if meeting else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS, help="exported model")
    parser.add_argument("--payload", type=Path, help="a JSON body to time (default: study)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per variant")
    parser.add_argument("--cpus", default="0", help="the core the timings run on")
    parser.add_argument(
        "--no-services",
        action="store_true",
        help="skip the configurations run as real services (manifests' [fidelity.NAME])",
    )
    parser.add_argument(
        "--no-instructions",
        action="store_true",
        help="skip counting instructions per request (valgrind; about two minutes)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    payload = args.payload or write_payloads(Path(tempfile.mkdtemp(prefix="fidelity-")))["study"]
    services = {} if args.no_services else service_configurations()
    requests = None if args.no_instructions else REQUESTS
    record = measure(
        args.artifacts, payload, args.seconds, args.cpus, services, instruction_requests=requests
    )
    folder = results_folder(record["machine"], record["model"]["architecture"])
    out = args.out or folder / FIDELITY_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for name, variant in record["variants"].items():
        speed = variant.get("speed", {}).get("requests_per_second")
        instructions = variant.get("instructions", {}).get("per_request")
        print(
            f"{name:12} top-1 {variant['top1_agreement']:.1%}, decisive "
            f"{variant['decisive_agreement']:.1%}, max |Δp| {variant['max_delta']:.4f}, "
            f"mean {variant['mean_delta']:.4f}"
            + (f", {speed:.1f} req/s in-process" if speed else "")
            + (f", {instructions / 1e6:.1f} M instructions/request" if instructions else "")
            + (" (meets the bound)" if variant["meets_bound"] else "")
        )
    print(f"fastest meeting the bound: {record['fastest_meeting_bound']}; wrote {out}")


if __name__ == "__main__":
    main()
