"""Instructions per request (benchmark.instructions): counted under valgrind, the same count
twice, in the record render_fidelity reads; and records without them still render."""

import json
import shutil
from pathlib import Path

import pytest
from benchmark.instructions import count_instructions, instruction_counter
from benchmark.payloads import write_payloads
from benchmark.pipelines import PIPELINES, LoadedPipeline
from benchmark.tables import render_fidelity

RESULTS = Path(__file__).resolve().parents[2] / "results"
# How far two counts of a pipeline may differ. Measured on every variant: two runs within
# 0.06% (`graph`, where one request in three ran 0.3% over the others), most within 0.01%;
# `pillow` within 0.001%. A request's time drifts by 10% and more on these machines.
REPEATABLE = 1e-3


def fidelity_record(variants: dict[str, dict]) -> dict:
    """A fidelity.json record around `variants`, as benchmark.fidelity writes it."""
    agreement = {
        "inputs": 1,
        "top1_agreement": 1.0,
        "decisive_inputs": 1,
        "decisive_agreement": 1.0,
        "max_delta": 0.0,
        "mean_delta": 0.0,
        "meets_bound": True,
    }
    return {
        "inputs": 1,
        "date": "2026-01-01T00:00:00+00:00",
        "payload": "study.json",
        "decisive_margin": 0.05,
        "max_probability_delta": 0.01,
        "defaults": {},
        "fastest_meeting_bound": None,
        "entropy_decoding_ms": 1.0,
        "variants": {name: {"title": name, **agreement, **v} for name, v in variants.items()},
    }


@pytest.mark.service  # it runs a pipeline as processes, under valgrind (conftest.py: tiers)
@pytest.mark.skipif(
    shutil.which("valgrind") is None,
    reason="valgrind is not installed (apt-get install valgrind): it counts the instructions",
)
def test_every_request_of_a_pipeline_counts_the_same_instructions(artifacts, tmp_path):
    """One count, of three requests (about a minute: valgrind runs Python's imports at a
    fiftieth of their speed); the same pipeline counted in two processes agreed as closely
    (benchmark.instructions)."""
    graphs = {"pillow": LoadedPipeline(PIPELINES["pillow"], artifacts).graph}
    payload = write_payloads(tmp_path)["study"]
    first = count_instructions(graphs, artifacts, payload, 3)["pillow"]
    json.dumps(first)  # what fidelity.json holds
    per_request = first["per_request"]
    # A request decodes a 1200x727 JPEG and runs the network: tens of millions.
    assert per_request > 10_000_000, first
    assert len(first["each_request"]) == 3
    # The median's neighbours agree closely; one request in three can run a few tenths of a
    # percent over (work the interpreter does now and then, e.g. growing an allocator arena):
    # why the record keeps the median.
    close = [c for c in first["each_request"] if abs(c - per_request) <= REPEATABLE * per_request]
    assert len(close) >= 2, first
    assert all(abs(c - per_request) <= 0.01 * per_request for c in first["each_request"]), first
    assert first["tool"] == instruction_counter()
    table = render_fidelity(fidelity_record({"pillow": {"instructions": first}}), {})
    assert "| `pillow` | pillow |" in table
    assert f"| yes | - | {per_request / 1e6:.1f} | - | - | - | - |" in table
    assert f"Instructions: counted by {first['tool']}" in table


def test_without_valgrind_nothing_is_counted(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no valgrind on it
    assert instruction_counter() is None


@pytest.mark.parametrize("record", sorted(RESULTS.glob("**/fidelity.json")), ids=str)
def test_records_before_the_count_still_render(record):
    old = json.loads(record.read_text())
    for variant in old["variants"].values():
        variant.pop("instructions", None)
    table = render_fidelity(old, {})
    for name, variant in old["variants"].items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        speed = variant.get("speed")
        rps = f"{speed['requests_per_second']:.1f}" if speed else "-"
        assert f"| {rps} | - |" in row, row
    assert "Instructions:" not in table
