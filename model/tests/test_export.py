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
from onnx import numpy_helper
from PIL import Image
from torchvision.models import MobileNet_V3_Small_Weights
from weather_model import contract
from weather_model.network import demo_state_dict, load_network, state_dict_to_bytes
from weather_model.onnx_graph import build_serving_graph, export_network, run_onnx
from weather_model.parity import MIN_DEMO_MARGIN, ParityError, check_parity
from weather_model.reference import decode_rgb, reference_transforms, sample_images

from conftest import ROOT, emulator_env, free_port

IMAGES = ROOT / "images"
ARTIFACT_FILES = (contract.STATE_DICT_FILE, contract.ONNX_FILE, contract.OPTIMIZED_ONNX_FILE)


def run_export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weather_model.export", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_second_export_gives_identical_bytes(artifacts, tmp_path):
    result = run_export("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in (*ARTIFACT_FILES, contract.METADATA_FILE):
        assert sha(tmp_path / name) == sha(artifacts / name), name


def test_metadata_describes_the_artifacts(artifacts):
    metadata = json.loads((artifacts / contract.METADATA_FILE).read_text())
    assert metadata["labels"] == list(contract.LABELS)
    assert metadata["input"] == {"name": "image", "dtype": "uint8", "shape": ["height", "width", 3]}
    assert set(metadata["outputs"]) == set(contract.ONNX_OUTPUTS)
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


def test_optimized_graph_has_no_hardware_specific_layout(artifacts):
    model = onnx.load(artifacts / contract.OPTIMIZED_ONNX_FILE)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"ReorderInput", "ReorderOutput", "NchwcConv"}, ops
    assert len(model.graph.node) < len(onnx.load(artifacts / contract.ONNX_FILE).graph.node)


def test_reference_transforms_equal_torchvision_defaults():
    preset = MobileNet_V3_Small_Weights.DEFAULT.transforms()
    assert preset.resize_size == [contract.RESIZE_SIZE]
    assert preset.crop_size == [contract.CROP_SIZE]
    assert tuple(preset.mean) == contract.MEAN and tuple(preset.std) == contract.STD
    image = decode_rgb((IMAGES / "rocket_portrait.jpg").read_bytes())
    assert torch.equal(reference_transforms()(image), preset(image))


def test_demo_weights_are_decisive_and_parity_holds():
    model = load_network(demo_state_dict())
    onnx_bytes = build_serving_graph(export_network(model)).SerializeToString()
    checks = check_parity(model, {"model.onnx": onnx_bytes}, sample_images(IMAGES))
    assert len(checks) == len(sample_images(IMAGES)) >= 12
    assert min(c.margin for c in checks) >= MIN_DEMO_MARGIN
    assert max(c.max_delta["model.onnx"] for c in checks) <= 0.01


def _with_study_preprocessing_bug(graph: onnx.ModelProto) -> bytes:
    """The original study's defect: mean/std for 0-1 values applied to 0-255 values."""
    broken = onnx.ModelProto()
    broken.CopyFrom(graph)
    for initializer in broken.graph.initializer:
        if initializer.name == "pre_scale":
            value = numpy_helper.to_array(initializer) * 255.0
            initializer.CopyFrom(numpy_helper.from_array(value.astype(np.float32), "pre_scale"))
    return broken.SerializeToString()


def test_parity_check_fails_on_a_broken_graph(artifacts):
    model = load_network(demo_state_dict())
    broken = _with_study_preprocessing_bug(onnx.load(artifacts / contract.ONNX_FILE))
    with pytest.raises(ParityError, match=r"broken\.onnx"):
        check_parity(model, {"broken.onnx": broken}, sample_images(IMAGES))


def test_user_state_dict_round_trip(tmp_path):
    weights = demo_state_dict(seed=7)
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


def test_user_state_dict_from_gcs(gcs_emulator, tmp_path):
    uri = gcs_emulator.upload(
        "user", "weights/finetuned.pt", state_dict_to_bytes(demo_state_dict(seed=3))
    )
    result = run_export("--out", str(tmp_path), "--state-dict", uri, env=emulator_env(gcs_emulator))
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
    env = emulator_env(gcs_emulator)
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
    env = emulator_env(gcs_emulator)
    result = run_export("--out", str(tmp_path), "--upload", "gs://uploads/weather", env=env)
    assert result.returncode == 0, result.stderr
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        credentials=AnonymousCredentials(),
        project="t",
        client_options={"api_endpoint": gcs_emulator.host},
    )
    blob = client.bucket("uploads").blob("weather/model.optimized.onnx")
    assert blob.download_as_bytes() == (tmp_path / contract.OPTIMIZED_ONNX_FILE).read_bytes()
