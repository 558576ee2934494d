"""The fidelity set, the agreement measure and the fidelity report, on real pipelines."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from benchmark.fidelity import agreement, measure, service_configurations
from benchmark.fidelity_set import DERIVED, fidelity_set
from benchmark.payloads import write_payloads
from benchmark.run_record import model_info
from benchmark.tables import render_fidelity
from PIL import Image
from serving_common.strategy import ManifestError, discover_strategies
from weather_model.contract import FIXED_ONNX_FILE
from weather_model.demo import SAMPLE_IMAGES
from weather_model.reference import sample_images


@pytest.fixture(scope="module")
def inputs() -> dict[str, bytes]:
    return fidelity_set()


def test_fidelity_set_is_large_varied_and_reproducible(inputs):
    photos = sample_images(SAMPLE_IMAGES)
    assert len(inputs) == len(photos) * (1 + len(DERIVED)) >= 200
    assert fidelity_set() == inputs  # byte for byte
    ratios, formats, modes = [], set(), set()
    for data in inputs.values():
        image = Image.open(io.BytesIO(data))
        ratios.append(image.width / image.height)
        formats.add(image.format)
        modes.add(image.mode)
    assert min(ratios) == pytest.approx(1 / 3, rel=0.01)
    assert max(ratios) == pytest.approx(3, rel=0.01)
    assert formats == {"JPEG", "PNG"}
    assert {"L", "RGB"} <= modes
    sizes = [Image.open(io.BytesIO(data)).size for data in inputs.values()]
    assert min(min(size) for size in sizes) < 224 < 2000 < max(max(size) for size in sizes)


def _probabilities(top: float, second: float) -> np.ndarray:
    rest = (1 - top - second) / 9
    return np.array([top, second] + [rest] * 9)


def test_agreement_bound():
    decisive, close = _probabilities(0.6, 0.3), _probabilities(0.41, 0.40)
    reference = np.stack([decisive, close])
    assert agreement(reference, reference)["meets_bound"]
    # The close call flips by 0.006: the bound holds (not decisive, small move).
    flipped = np.stack([decisive, close[[1, 0, *range(2, 11)]]])
    result = agreement(reference, flipped)
    assert result["top1_agreement"] == 0.5
    assert result["decisive_inputs"] == 1 and result["decisive_agreement"] == 1.0
    assert result["meets_bound"]
    # A move of 0.02 anywhere breaks it, as does a decisive flip.
    moved = reference + np.array([[0.02, -0.02] + [0] * 9, [0] * 11])
    assert not agreement(reference, moved)["meets_bound"]
    assert agreement(reference, moved)["max_delta"] == pytest.approx(0.02)
    swapped = np.stack([decisive[[1, 0, *range(2, 11)]], close])
    assert not agreement(reference, swapped)["meets_bound"]


# The manifests' service configurations that port the in-process Pillow pipeline: the fixed
# graph, Pillow's resize, a full-size decode.
PILLOW_PORTS = {
    name: configuration
    for name, configuration in service_configurations().items()
    if configuration.settings.get("RESIZER") == "pillow"
    and configuration.settings["MODEL_URI"] == FIXED_ONNX_FILE
    and configuration.settings.get("JPEG_DCT_SCALING", "false") == "false"
}


def test_service_configurations_come_from_the_manifests():
    strategies = discover_strategies()
    configurations = service_configurations(strategies)
    declared = [(s.name, n) for s in strategies.values() for n in s.fidelity]
    assert declared and len(configurations) == len(declared)
    for strategy_name, name in declared:
        configuration = configurations[name]
        assert configuration.strategy.name == strategy_name
        # MODEL_URI, a constant's name in the manifest, is the artifact's file here.
        assert configuration.settings["MODEL_URI"].startswith("model.")
        assert configuration.title.startswith(f"{strategies[strategy_name].title} service, ")
    assert PILLOW_PORTS, "no manifest's [fidelity.NAME] ports the Pillow pipeline"


def test_a_service_configuration_may_not_take_a_pipelines_name(tmp_path):
    folder = tmp_path / "clashing_serving"
    folder.mkdir()
    (folder / "strategy.toml").write_text(
        'name = "clashing_serving"\ntitle = "t"\nstack = "s"\nport = 8090\n'
        'model = "FIXED_ONNX_FILE"\nrun = ["python"]\n[fidelity.pillow]\nRESIZER = "pillow"\n'
    )
    with pytest.raises(ManifestError, match=r"`\[fidelity.pillow\]`: the fidelity report has"):
        service_configurations(discover_strategies([tmp_path]))


@pytest.mark.service  # it starts the services (conftest.py: tiers)
def test_report_on_real_pipelines_and_a_service(artifacts, inputs, tmp_path):
    """A slice of the set through the exact Pillow pipeline, today's graph and each service
    configuration porting Pillow's resize: the record renders, Pillow's resize meets the
    bound, and each port gives Pillow's numbers."""
    chosen = {name: inputs[name] for name in list(inputs)[::40]}
    payload = write_payloads(tmp_path)["study"]
    record = measure(
        Path(os.path.relpath(artifacts)),  # relative, as `make bench` passes it
        payload,
        seconds=0.2,
        cpus=None,
        services=PILLOW_PORTS,
        pipelines=("graph", "pillow"),
        inputs=chosen,
        instruction_requests=None,  # a minute or more under valgrind: test_instructions.py
    )
    json.dumps(record)  # what fidelity.json holds
    assert record["model"] == model_info(artifacts)
    variants = record["variants"]
    assert set(variants) == {"graph", "pillow", *PILLOW_PORTS}
    assert variants["pillow"]["meets_bound"], variants["pillow"]
    assert variants["pillow"]["max_delta"] < 0.005
    for name in PILLOW_PORTS:
        for statistic in ("max_delta", "mean_delta"):
            port, python = variants[name][statistic], variants["pillow"][statistic]
            assert port == pytest.approx(python, abs=1e-6), (name, statistic)
    for variant in variants.values():
        assert variant["inputs"] == len(chosen)
        assert variant["decisive_agreement"] == 1.0, variant
    assert variants["pillow"]["speed"]["requests_per_second"] > 0
    assert set(variants["graph"]["speed"]["stage_ms"]) == {
        "parse",
        "decode",
        "preprocess",
        "inference",
    }
    assert record["entropy_decoding_ms"] > 0
    assert not any("instructions" in variant for variant in variants.values())
    table = render_fidelity(record, {})
    assert "| `pillow` |" in table and "| yes |" in table
