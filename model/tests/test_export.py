"""The export pipeline: determinism, metadata, parity (and its failure), user weights and
contracts, errors."""

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
from helpers import OWN_MODEL_LABELS, ROOT, ServedModel
from onnx import numpy_helper
from PIL import Image
from torchvision import transforms
from torchvision.models import MobileNet_V3_Small_Weights
from weather_model import contract, parity
from weather_model.architectures import ARCHITECTURES, WEATHER_LABELS, default_contract
from weather_model.demo import demo_state_dict, drawn_state_dict, head_name
from weather_model.export import WRITTEN_FILES
from weather_model.export import main as export_main
from weather_model.metadata import ModelContract, load_contract, read_contract
from weather_model.network import build_network, load_network, state_dict_to_bytes
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
)

# Most run the exporter as a command, seconds of CPU each (conftest.py: tiers).
pytestmark = pytest.mark.service

IMAGES = ROOT / "images"
ARTIFACT_FILES = tuple(name for name in WRITTEN_FILES if name != contract.METADATA_FILE)
# metadata.json's dtype names as ONNX Runtime reports them.
ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}
# The demo model: the default network, its torchvision preprocessing, the weather labels.
DEMO = default_contract()


def graph_entries(model: ModelContract) -> dict[str, dict]:
    """What metadata.json's "graphs" must say for a model of this contract."""
    labels, crop = len(model.labels), model.crop_size
    any_size = {
        "input": {"name": "image", "dtype": "uint8", "shape": ["height", "width", 3]},
        "output": {"name": "probabilities", "dtype": "float32", "shape": [labels]},
        "preprocessing": "in graph: resize, centre crop, normalisation",
    }
    fixed = {
        "input": {"name": "image", "dtype": "uint8", "shape": ["batch", crop, crop, 3]},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", labels]},
        "preprocessing": "in graph: normalisation; resize and centre crop before (uint8, as "
        "the reference)",
    }
    return {"model.onnx": any_size, "model.optimized.onnx": any_size, "model.fixed.onnx": fixed}


def run_export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weather_model.export", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_weights_answer_like_a_trained_model(exported):
    """Several labels over the sample photos, probabilities spread (not all p ~ 1), so that
    agreeing with the reference means something: for every network, whatever the labels."""
    probabilities = np.stack(
        [
            reference_probabilities(exported.network, decode_rgb(p.read_bytes()), exported.contract)
            for p in sample_images(IMAGES)
        ]
    )
    top1 = probabilities.max(axis=1)
    labels = min(MIN_DEMO_LABELS, len(exported.labels))
    assert len(set(probabilities.argmax(axis=1))) >= labels
    assert 0.3 <= float(np.median(top1)) <= 0.9
    assert (top1 < 0.9).sum() >= len(top1) // 2


def test_second_export_gives_identical_bytes(artifacts, tmp_path):
    result = run_export("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in WRITTEN_FILES:
        assert sha(tmp_path / name) == sha(artifacts / name), name


def sample_crops(model: ModelContract) -> np.ndarray:
    """[N, crop, crop, 3] uint8: the reference crops of every sample image, in order."""
    paths = sample_images(IMAGES)
    return np.stack([reference_crop(decode_rgb(path.read_bytes()), model) for path in paths])


@pytest.fixture(params=[*ARCHITECTURES, "own"])
def exported(request, demo_of) -> ServedModel:
    """Each exported model: the demo model of each network, and one of other labels and
    sizes (OWN_MODEL_OPTIONS)."""
    if request.param == "own":
        return request.getfixturevalue("own_model")
    return demo_of(request.param)


def test_each_network_is_exported_with_its_own_preprocessing(demo_of):
    for architecture in ARCHITECTURES:
        assert demo_of(architecture).contract == default_contract(architecture)


def test_metadata_describes_the_artifacts(artifacts):
    metadata = json.loads((artifacts / contract.METADATA_FILE).read_text())
    assert read_contract(metadata) == DEMO
    assert metadata["architecture"] == "mobilenet_v3_small"
    assert metadata["labels"] == list(WEATHER_LABELS)
    assert metadata["preprocessing"] == {
        "resize_shorter_side": 256,
        "interpolation": "bilinear, antialiased",
        "center_crop": 224,
        "scale": "1/255",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert metadata["graphs"] == graph_entries(DEMO)
    assert "input" not in metadata and "outputs" not in metadata
    for name in ARTIFACT_FILES:
        assert metadata["artifacts"][name]["sha256"] == sha(artifacts / name)
    assert set(metadata["versions"]) == {"torch", "torchvision", "onnx", "onnxruntime"}
    assert metadata["weights"].startswith("demo")


def test_own_labels_and_sizes_reach_the_metadata(own_model):
    """`--labels`, `--resize-size` and `--crop-size` (OWN_MODEL_OPTIONS) override the
    network's defaults; mean and std stay torchvision's."""
    metadata = json.loads((own_model.artifacts / contract.METADATA_FILE).read_text())
    assert read_contract(metadata) == ModelContract(
        "mobilenet_v3_small", OWN_MODEL_LABELS, 180, 160, DEMO.mean, DEMO.std
    )
    assert metadata["graphs"] == graph_entries(own_model.contract)
    assert metadata["weights"].startswith("demo")


def test_onnx_interface_is_dynamic_uint8_pixels(exported):
    session = ort.InferenceSession(exported.artifacts / contract.ONNX_FILE)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["height", "width", 3])
    assert [o.name for o in session.get_outputs()] == list(contract.ONNX_OUTPUTS)
    for shape in [(100, 900, 3), (900, 100, 3), (224, 224, 3), (3000, 2000, 3)]:
        probabilities = run_onnx(session, np.full(shape, 128, np.uint8))
        assert probabilities.shape == (len(exported.labels),)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "name", [contract.ONNX_FILE, contract.OPTIMIZED_ONNX_FILE, contract.FIXED_ONNX_FILE]
)
def test_each_graph_declares_what_metadata_says(exported, name):
    artifacts = exported.artifacts
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


def test_fixed_graph_interface_is_a_batch_of_cropped_uint8_pixels(exported):
    session = ort.InferenceSession(exported.artifacts / contract.FIXED_ONNX_FILE)
    (inp,) = session.get_inputs()
    crop, labels = exported.contract.crop_size, len(exported.labels)
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["batch", crop, crop, 3])
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("logits", "tensor(float)", ["batch", labels]),
        ("probabilities", "tensor(float)", ["batch", labels]),
    ]


def test_fixed_graph_batches_equal_one_by_one(exported):
    session = ort.InferenceSession(exported.artifacts / contract.FIXED_ONNX_FILE)
    crops = sample_crops(exported.contract)
    labels = len(exported.labels)
    one_by_one = [session.run(None, {"image": crop[np.newaxis]}) for crop in crops]
    for logits, probabilities in one_by_one:
        assert logits.shape == probabilities.shape == (1, labels)
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    batch_logits, batch_probabilities = session.run(None, {"image": crops})
    assert batch_probabilities.shape == (len(crops), labels)
    np.testing.assert_allclose(
        batch_probabilities, np.concatenate([p for _, p in one_by_one]), rtol=0, atol=1e-5
    )
    np.testing.assert_allclose(
        batch_logits, np.concatenate([logit for logit, _ in one_by_one]), rtol=1e-5, atol=1e-4
    )
    # The sample images do not all agree, so rows mixed up in the batch would show.
    assert len(set(batch_probabilities.argmax(axis=1))) > 1


def test_fixed_graph_matches_the_reference(exported):
    paths = sample_images(IMAGES)
    session = ort.InferenceSession(exported.artifacts / contract.FIXED_ONNX_FILE)
    got = run_onnx(session, sample_crops(exported.contract))
    for path, probabilities in zip(paths, got, strict=True):
        expected = reference_probabilities(
            exported.network, decode_rgb(path.read_bytes()), exported.contract
        )
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
    assert preset.resize_size == [DEMO.resize_size] and preset.crop_size == [DEMO.crop_size]
    assert tuple(preset.mean) == DEMO.mean and tuple(preset.std) == DEMO.std
    image = decode_rgb((IMAGES / "rocket_portrait.jpg").read_bytes())
    assert torch.equal(reference_transforms(DEMO)(image), preset(image))


def test_reference_transforms_take_other_constants():
    image = decode_rgb((IMAGES / "rocket_portrait.jpg").read_bytes())
    other = ModelContract("mobilenet_v3_small", ("a", "b"), 160, 128, (0, 0, 0), (1, 1, 1))
    tensor = reference_transforms(other)(image)
    assert tensor.shape == (3, 128, 128)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


@pytest.mark.parametrize("name", ["rocket_portrait.jpg", "hubble_wide.jpg", "camera_grey.png"])
@pytest.mark.parametrize("model", [DEMO, default_contract(resize_size=180, crop_size=160)])
def test_reference_crop_is_what_the_reference_normalises(name, model):
    image = decode_rgb((IMAGES / name).read_bytes())
    crop = reference_crop(image, model)
    assert crop.dtype == np.uint8 and crop.shape == (model.crop_size, model.crop_size, 3)
    normalise = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(model.mean, model.std)]
    )
    assert torch.equal(normalise(crop), reference_transforms(model)(image))


def test_demo_weights_are_decisive_and_parity_holds(monkeypatch):
    runs = []

    def recording_run(session, pixels):
        runs.append(pixels.shape)
        return run_onnx(session, pixels)

    monkeypatch.setattr(parity, "run_onnx", recording_run)
    model = load_network(demo_state_dict(DEMO), DEMO)
    network = export_network(model, DEMO)
    graphs = {
        "model.onnx": build_serving_graph(network, DEMO).SerializeToString(),
        "model.fixed.onnx": build_fixed_graph(network, DEMO).SerializeToString(),
    }
    checks = check_parity(model, DEMO, graphs, sample_images(IMAGES))
    # The any-size graph one image at a time, the fixed graph all images as one batch.
    count, crop = len(sample_images(IMAGES)), DEMO.crop_size
    assert [shape for shape in runs if len(shape) == 4] == [(count, crop, crop, 3)]
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
    model = load_network(demo_state_dict(DEMO), DEMO)
    broken = _with_study_preprocessing_bug(onnx.load(artifacts / name))
    with pytest.raises(ParityError, match=r"^broken\.onnx on \w+\.\w+: "):
        check_parity(model, DEMO, {"broken.onnx": broken}, sample_images(IMAGES))


def test_user_state_dict_round_trip(tmp_path):
    weights = drawn_state_dict(DEMO, seed=7)  # any state_dict of the right shape
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
    network = load_network(weights, DEMO)
    expected = network(reference_transforms(DEMO)(image).unsqueeze(0)).softmax(-1)[0]
    got = run_onnx(session, np.asarray(image))
    assert np.abs(got - expected.detach().numpy()).max() <= 0.01
    fixed = ort.InferenceSession(out / contract.FIXED_ONNX_FILE)
    got_fixed = run_onnx(fixed, reference_crop(image, DEMO)[np.newaxis])[0]
    assert np.abs(got_fixed - expected.detach().numpy()).max() <= 0.01


def test_user_state_dict_from_gcs(gcs_emulator, tmp_path):
    uri = gcs_emulator.upload(
        "user", "weights/finetuned.pt", state_dict_to_bytes(drawn_state_dict(DEMO, seed=3))
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
    weights = drawn_state_dict(DEMO, seed=1)
    head = head_name(build_network(DEMO))
    weights[f"{head}.weight"] = torch.zeros(1000, weights[f"{head}.weight"].shape[1])
    weights[f"{head}.bias"] = torch.zeros(1000)
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


def test_own_classifier_exports_with_its_labels_and_sizes(tmp_path):
    """A user's network of another label count: its weights kept, its labels (from a file)
    and sizes written as its contract."""
    own = ModelContract("mobilenet_v3_small", ("cat", "dog", "fox"), 160, 128, DEMO.mean, DEMO.std)
    weights = drawn_state_dict(own, seed=5)
    source = tmp_path / "three.pt"
    source.write_bytes(state_dict_to_bytes(weights))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nfox\n")
    out = tmp_path / "out"
    result = run_export(
        "--out", str(out), "--state-dict", str(source), "--labels-file", str(labels),
        "--resize-size", "160", "--crop-size", "128",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_contract(out) == own
    loaded = torch.load(out / contract.STATE_DICT_FILE, weights_only=True)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (("--crop-size", "300"), "crop size 300 must be at least 1 and at most the resize size"),
        (("--resize-size", "100"), "crop size 224 must be at least 1 and at most the resize size"),
        (("--labels", "rain,snow,rain"), "labels must be distinct: rain repeated"),
        (("--labels", "rain,,snow"), "labels must be a non-empty list of non-empty strings"),
        (("--labels-file", "/nonexistent/labels.txt"), "/nonexistent/labels.txt: cannot read"),
    ],
)
def test_a_bad_contract_option_exits_with_one_line(tmp_path, capsys, options, fragment):
    # In-process: the options are checked before anything is computed or written.
    status = export_main(["--out", str(tmp_path / "out"), *options])
    errors = capsys.readouterr().err
    _assert_one_line_error(subprocess.CompletedProcess([], status, "", errors), fragment)
    assert not (tmp_path / "out").exists()
