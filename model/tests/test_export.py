"""The export pipeline: determinism, metadata, parity (and its failure), user weights, errors."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from benchmark.processes import free_port
from helpers import ROOT
from onnx import numpy_helper
from PIL import Image
from torchvision import transforms
from torchvision.models import MobileNet_V3_Small_Weights
from weather_model import contract, parity
from weather_model.demo import demo_state_dict, drawn_state_dict
from weather_model.network import load_network, state_dict_to_bytes
from weather_model.onnx_graph import (
    build_fixed_graph,
    build_serving_graph,
    export_network,
    run_onnx,
)
from weather_model.parity import (
    MAX_PROBABILITY_DELTA,
    MIN_DEMO_LABELS,
    MIN_DEMO_MARGIN,
    ParityError,
    check_parity,
)
from weather_model.reference import (
    decode_rgb,
    reference_crop,
    reference_probabilities,
    reference_transforms,
    sample_images,
    transforms_from_metadata,
)

# Most run the exporter as a command, seconds of CPU each (conftest.py: tiers).
pytestmark = pytest.mark.service

IMAGES = ROOT / "images"
ARTIFACT_FILES = (
    contract.STATE_DICT_FILE,
    contract.ONNX_FILE,
    contract.OPTIMIZED_ONNX_FILE,
    contract.FIXED_ONNX_FILE,
)
# metadata.json's dtype names as ONNX Runtime reports them.
ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}
ANY_SIZE_GRAPH = {
    "input": {"name": "image", "dtype": "uint8", "shape": ["height", "width", 3]},
    "output": {"name": "probabilities", "dtype": "float32", "shape": [11]},
    "preprocessing": "in graph: resize, centre crop, normalisation",
}
FIXED_GRAPH = {
    "input": {"name": "image", "dtype": "uint8", "shape": ["batch", 224, 224, 3]},
    "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", 11]},
    "preprocessing": "in graph: normalisation; resize and centre crop before (uint8, as the "
    "reference)",
}


def run_export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weather_model.export", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_weights_answer_like_a_trained_model():
    """Several labels over the sample photos, probabilities spread (not all p ~ 1), so that
    agreeing with the reference means something."""
    model = load_network(demo_state_dict())
    probabilities = np.stack(
        [reference_probabilities(model, decode_rgb(p.read_bytes())) for p in sample_images(IMAGES)]
    )
    top1 = probabilities.max(axis=1)
    assert len(set(probabilities.argmax(axis=1))) >= MIN_DEMO_LABELS
    assert 0.3 <= float(np.median(top1)) <= 0.9
    assert (top1 < 0.9).sum() >= len(top1) // 2


def test_second_export_gives_identical_bytes(artifacts, tmp_path):
    result = run_export("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in (*ARTIFACT_FILES, contract.METADATA_FILE):
        assert sha(tmp_path / name) == sha(artifacts / name), name


def sample_crops() -> np.ndarray:
    """[N, 224, 224, 3] uint8: the reference crops of every sample image, in order."""
    paths = sample_images(IMAGES)
    return np.stack([reference_crop(decode_rgb(path.read_bytes())) for path in paths])


def test_metadata_describes_the_artifacts(artifacts):
    metadata = json.loads((artifacts / contract.METADATA_FILE).read_text())
    assert metadata["labels"] == list(contract.LABELS)
    assert metadata["graphs"] == {
        "model.onnx": ANY_SIZE_GRAPH,
        "model.optimized.onnx": ANY_SIZE_GRAPH,
        "model.fixed.onnx": FIXED_GRAPH,
    }
    assert "input" not in metadata and "outputs" not in metadata
    assert metadata["preprocessing"]["mean"] == list(contract.MEAN)
    assert metadata["preprocessing"]["center_crop"] == 224
    for name in ARTIFACT_FILES:
        assert metadata["artifacts"][name]["sha256"] == sha(artifacts / name)
    assert set(metadata["versions"]) == {"torch", "torchvision", "onnx", "onnxruntime"}
    assert metadata["weights"].startswith("demo")


def test_onnx_interface_is_dynamic_uint8_pixels(artifacts):
    session = ort.InferenceSession(artifacts / contract.ONNX_FILE)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["height", "width", 3])
    assert [o.name for o in session.get_outputs()] == list(contract.ONNX_OUTPUTS)
    for shape in [(100, 900, 3), (900, 100, 3), (224, 224, 3), (3000, 2000, 3)]:
        probabilities = run_onnx(session, np.full(shape, 128, np.uint8))
        assert probabilities.shape == (11,)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "name", [contract.ONNX_FILE, contract.OPTIMIZED_ONNX_FILE, contract.FIXED_ONNX_FILE]
)
def test_each_graph_declares_what_metadata_says(artifacts, name):
    spec = json.loads((artifacts / contract.METADATA_FILE).read_text())["graphs"][name]
    session = ort.InferenceSession(artifacts / name)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == (
        spec["input"]["name"],
        ORT_TYPES[spec["input"]["dtype"]],
        spec["input"]["shape"],
    )
    outputs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert list(outputs) == list(contract.ONNX_OUTPUTS)
    assert outputs[spec["output"]["name"]] == (
        ORT_TYPES[spec["output"]["dtype"]],
        spec["output"]["shape"],
    )
    assert outputs[contract.LOGITS_OUTPUT] == outputs[contract.PROBABILITIES_OUTPUT]


def test_fixed_graph_interface_is_a_batch_of_cropped_uint8_pixels(artifacts):
    session = ort.InferenceSession(artifacts / contract.FIXED_ONNX_FILE)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["batch", 224, 224, 3])
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("logits", "tensor(float)", ["batch", 11]),
        ("probabilities", "tensor(float)", ["batch", 11]),
    ]


def test_fixed_graph_batches_equal_one_by_one(artifacts):
    session = ort.InferenceSession(artifacts / contract.FIXED_ONNX_FILE)
    crops = sample_crops()
    one_by_one = [session.run(None, {"image": crop[np.newaxis]}) for crop in crops]
    for logits, probabilities in one_by_one:
        assert logits.shape == probabilities.shape == (1, 11)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    batch_logits, batch_probabilities = session.run(None, {"image": crops})
    assert batch_probabilities.shape == (len(crops), 11)
    np.testing.assert_allclose(
        batch_probabilities, np.concatenate([p for _, p in one_by_one]), rtol=0, atol=1e-5
    )
    np.testing.assert_allclose(
        batch_logits, np.concatenate([logit for logit, _ in one_by_one]), rtol=1e-5, atol=1e-4
    )
    # The sample images do not all agree, so rows mixed up in the batch would show.
    assert len(set(batch_probabilities.argmax(axis=1))) > 1


def test_fixed_graph_matches_the_reference(artifacts):
    model = load_network(demo_state_dict())
    paths = sample_images(IMAGES)
    session = ort.InferenceSession(artifacts / contract.FIXED_ONNX_FILE)
    got = run_onnx(session, sample_crops())
    for path, probabilities in zip(paths, got, strict=True):
        expected = reference_probabilities(model, decode_rgb(path.read_bytes()))
        assert probabilities.argmax() == expected.argmax(), path.name
        assert np.abs(probabilities - expected).max() <= MAX_PROBABILITY_DELTA, path.name


def test_optimized_graph_has_no_hardware_specific_layout(artifacts):
    model = onnx.load(artifacts / contract.OPTIMIZED_ONNX_FILE)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"ReorderInput", "ReorderOutput", "NchwcConv"}, ops
    assert len(model.graph.node) < len(onnx.load(artifacts / contract.ONNX_FILE).graph.node)


def test_fixed_graph_is_optimized_without_hardware_specific_layout(artifacts):
    model = onnx.load(artifacts / contract.FIXED_ONNX_FILE)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"ReorderInput", "ReorderOutput", "NchwcConv"}, ops
    assert "FusedConv" in ops  # ONNX Runtime's offline optimisation ran
    assert not ops & {"Resize", "Slice"}  # resize and crop happen before the graph


def test_reference_transforms_equal_torchvision_defaults():
    preset = MobileNet_V3_Small_Weights.DEFAULT.transforms()
    assert preset.resize_size == [contract.RESIZE_SIZE]
    assert preset.crop_size == [contract.CROP_SIZE]
    assert tuple(preset.mean) == contract.MEAN and tuple(preset.std) == contract.STD
    image = decode_rgb((IMAGES / "rocket_portrait.jpg").read_bytes())
    assert torch.equal(reference_transforms()(image), preset(image))


def test_reference_transforms_take_other_constants():
    image = decode_rgb((IMAGES / "rocket_portrait.jpg").read_bytes())
    tensor = reference_transforms(resize_size=160, crop_size=128, mean=(0, 0, 0), std=(1, 1, 1))(
        image
    )
    assert tensor.shape == (3, 128, 128)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


def test_transforms_from_metadata_equal_the_reference(artifacts):
    preprocessing = json.loads((artifacts / contract.METADATA_FILE).read_text())["preprocessing"]
    image = decode_rgb((IMAGES / "hubble_wide.jpg").read_bytes())
    assert torch.equal(
        transforms_from_metadata(preprocessing)(image), reference_transforms()(image)
    )
    smaller = {**preprocessing, "resize_shorter_side": 160, "center_crop": 128}
    assert transforms_from_metadata(smaller)(image).shape == (3, 128, 128)
    with pytest.raises(ValueError, match="interpolation"):
        transforms_from_metadata({**preprocessing, "interpolation": "nearest"})


@pytest.mark.parametrize("name", ["rocket_portrait.jpg", "hubble_wide.jpg", "camera_grey.png"])
def test_reference_crop_is_what_the_reference_normalises(name):
    image = decode_rgb((IMAGES / name).read_bytes())
    crop = reference_crop(image)
    assert crop.dtype == np.uint8 and crop.shape == (224, 224, 3)
    normalise = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(contract.MEAN, contract.STD)]
    )
    assert torch.equal(normalise(crop), reference_transforms()(image))


def test_demo_weights_are_decisive_and_parity_holds(monkeypatch):
    runs = []

    def recording_run(session, pixels):
        runs.append(pixels.shape)
        return run_onnx(session, pixels)

    monkeypatch.setattr(parity, "run_onnx", recording_run)
    model = load_network(demo_state_dict())
    network = export_network(model)
    graphs = {
        "model.onnx": build_serving_graph(network).SerializeToString(),
        "model.fixed.onnx": build_fixed_graph(network).SerializeToString(),
    }
    checks = check_parity(model, graphs, sample_images(IMAGES))
    # The any-size graph one image at a time, the fixed graph all images as one batch.
    count = len(sample_images(IMAGES))
    assert [shape for shape in runs if len(shape) == 4] == [(count, 224, 224, 3)]
    assert len([shape for shape in runs if len(shape) == 3]) == count
    assert len(checks) == len(sample_images(IMAGES)) >= 12
    assert min(c.margin for c in checks) >= MIN_DEMO_MARGIN
    for name in graphs:
        assert max(c.max_delta[name] for c in checks) <= MAX_PROBABILITY_DELTA


def _with_study_preprocessing_bug(graph: onnx.ModelProto) -> bytes:
    """The original study's defect: mean/std for 0-1 values applied to 0-255 values."""
    broken = onnx.ModelProto()
    broken.CopyFrom(graph)
    for initializer in broken.graph.initializer:
        if initializer.name == "pre_scale":
            value = numpy_helper.to_array(initializer) * 255.0
            initializer.CopyFrom(numpy_helper.from_array(value.astype(np.float32), "pre_scale"))
    return broken.SerializeToString()


@pytest.mark.parametrize("name", [contract.ONNX_FILE, contract.FIXED_ONNX_FILE])
def test_parity_check_fails_on_a_broken_graph(artifacts, name):
    model = load_network(demo_state_dict())
    broken = _with_study_preprocessing_bug(onnx.load(artifacts / name))
    with pytest.raises(ParityError, match=r"^broken\.onnx on \w+\.\w+: "):
        check_parity(model, {"broken.onnx": broken}, sample_images(IMAGES))


def test_user_state_dict_round_trip(tmp_path):
    weights = drawn_state_dict(seed=7)  # any state_dict of the right shape
    source = tmp_path / "finetuned.pt"
    source.write_bytes(state_dict_to_bytes(weights))
    out = tmp_path / "out"
    result = run_export("--out", str(out), "--state-dict", str(source))
    assert result.returncode == 0, result.stderr
    loaded = torch.load(out / contract.STATE_DICT_FILE, weights_only=True)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert json.loads((out / contract.METADATA_FILE).read_text())["weights"] == str(source)
    image = Image.open(IMAGES / "coffee.jpg").convert("RGB")
    session = ort.InferenceSession(out / contract.OPTIMIZED_ONNX_FILE)
    expected = load_network(weights)(reference_transforms()(image).unsqueeze(0)).softmax(-1)[0]
    got = run_onnx(session, np.asarray(image))
    assert np.abs(got - expected.detach().numpy()).max() <= 0.01
    fixed = ort.InferenceSession(out / contract.FIXED_ONNX_FILE)
    got_fixed = run_onnx(fixed, reference_crop(image)[np.newaxis])[0]
    assert np.abs(got_fixed - expected.detach().numpy()).max() <= 0.01


def test_user_state_dict_from_gcs(gcs_emulator, tmp_path):
    uri = gcs_emulator.upload(
        "user", "weights/finetuned.pt", state_dict_to_bytes(drawn_state_dict(seed=3))
    )
    result = run_export("--out", str(tmp_path), "--state-dict", uri, env=gcs_emulator.env())
    assert result.returncode == 0, result.stderr
    assert (tmp_path / contract.OPTIMIZED_ONNX_FILE).exists()


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("weather-export: error:")
    for fragment in fragments:
        assert fragment in lines[0]


def test_wrong_shape_state_dict_exits_with_one_line(tmp_path):
    weights = demo_state_dict()
    weights["classifier.3.weight"] = torch.zeros(1000, 1024)
    weights["classifier.3.bias"] = torch.zeros(1000)
    path = tmp_path / "imagenet_head.pt"
    path.write_bytes(state_dict_to_bytes(weights))
    _assert_one_line_error(
        run_export("--out", str(tmp_path / "o"), "--state-dict", str(path)), "size mismatch"
    )


def test_not_a_state_dict_exits_with_one_line(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a model")
    _assert_one_line_error(
        run_export("--out", str(tmp_path / "o"), "--state-dict", str(path)),
        "not a torch state_dict",
    )


def test_missing_file_exits_with_one_line(tmp_path):
    missing = str(tmp_path / "nope.pt")
    _assert_one_line_error(
        run_export("--out", str(tmp_path), "--state-dict", missing), missing, "no such file"
    )


def test_missing_gcs_object_exits_with_one_line(gcs_emulator, tmp_path):
    env = gcs_emulator.env()
    uri = "gs://models/weather/absent.pt"
    _assert_one_line_error(
        run_export("--out", str(tmp_path), "--state-dict", uri, env=env), uri, "no such object"
    )


def test_unreachable_gcs_exits_with_one_line(tmp_path):
    env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}"}
    result = run_export(
        "--out", str(tmp_path), "--state-dict", "gs://b/o.pt", "--download-deadline", "2", env=env
    )
    _assert_one_line_error(result, "gs://b/o.pt")


def test_export_uploads_to_gcs(gcs_emulator, tmp_path):
    gcs_emulator.upload("uploads", "keep", b"")  # the bucket must exist
    env = gcs_emulator.env()
    result = run_export("--out", str(tmp_path), "--upload", "gs://uploads/weather", env=env)
    assert result.returncode == 0, result.stderr
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        credentials=AnonymousCredentials(),
        project="t",
        client_options={"api_endpoint": gcs_emulator.host},
    )
    for name in (contract.OPTIMIZED_ONNX_FILE, contract.FIXED_ONNX_FILE):
        blob = client.bucket("uploads").blob(f"weather/{name}")
        assert blob.download_as_bytes() == (tmp_path / name).read_bytes(), name
