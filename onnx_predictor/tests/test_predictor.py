"""The ONNX predictor picks its pipeline from the graph MODEL_URI names: the fixed graph
with the service's own crop resize, a batch per run; the any-size graph as it was."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from onnx_predictor.predictor import OnnxPredictor
from serving_common.images import ImageLimits
from serving_common.model_source import fetch_model
from serving_common.settings import load_settings
from weather_model.contract import FIXED_ONNX_FILE, OPTIMIZED_ONNX_FILE
from weather_model.reference import decode_rgb, reference_crop

LIMITS = ImageLimits(max_pixels=40_000_000, max_aspect_ratio=20)
IMAGES = [ROOT / "images" / name for name in ("hubble_wide.jpg", "camera_grey.png", "rocket.jpg")]
# Run with cykooz-resizer made unimportable (a None entry in sys.modules is how Python
# spells "no such module"), as on Linux arm64 where it has no wheel.
WITHOUT_SIMD = "import sys; sys.modules['cykooz_resizer'] = None\n"


def predictor(artifacts: Path, graph: str, tmp_path: Path, **settings: object) -> OnnxPredictor:
    config = load_settings(8080, model_uri=str(artifacts / graph), **settings)
    return OnnxPredictor(fetch_model(config.model_uri, tmp_path), config)


def inputs(onnx: OnnxPredictor) -> list[np.ndarray]:
    return [onnx.preprocess(onnx.decode(path.read_bytes(), LIMITS)) for path in IMAGES]


@pytest.mark.parametrize("resizer", ["simd", "pillow"])
def test_fixed_graph_runs_a_batch_as_its_single_runs(artifacts, model_contract, tmp_path, resizer):
    onnx = predictor(artifacts, FIXED_ONNX_FILE, tmp_path, resizer=resizer)
    batch = inputs(onnx)
    crop = model_contract.crop_size
    assert all(one.shape == (crop, crop, 3) and one.dtype == np.uint8 for one in batch)
    together = onnx.predict(batch)
    assert together.shape == (len(IMAGES), len(model_contract.labels))
    one_by_one = np.concatenate([onnx.predict([one]) for one in batch])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    pipeline = onnx.describe()["pipeline"]
    assert pipeline["graph"] == "fixed" and pipeline["jpeg_dct_scaling"] is False
    assert pipeline["resizer"].startswith("cykooz-resizer" if resizer == "simd" else "Pillow")
    assert pipeline["resizer_setting"] == resizer
    assert (pipeline["resizer_cpu_extension"] is None) == (resizer == "pillow")


def test_fixed_graph_with_pillow_sees_the_reference_crop(artifacts, model_contract, tmp_path):
    onnx = predictor(artifacts, FIXED_ONNX_FILE, tmp_path, resizer="pillow")
    image = IMAGES[0].read_bytes()
    crop = onnx.preprocess(onnx.decode(image, LIMITS))
    expected = reference_crop(decode_rgb(image), model_contract)
    assert np.abs(crop.astype(np.int16) - expected).max() <= 1


def test_any_size_graph_resizes_in_the_graph_and_ignores_the_resizer(artifacts, tmp_path):
    onnx = predictor(artifacts, OPTIMIZED_ONNX_FILE, tmp_path, resizer="pillow")
    decoded = onnx.decode(IMAGES[0].read_bytes(), LIMITS)
    assert onnx.preprocess(decoded) is decoded
    assert onnx.describe()["pipeline"] == {
        "graph": "any-size",
        "resizer": "in graph",
        "resizer_cpu_extension": None,
        "resizer_setting": "pillow (ignored)",
        "jpeg_dct_scaling": False,
    }


@pytest.mark.parametrize("graph", [FIXED_ONNX_FILE, OPTIMIZED_ONNX_FILE])
def test_dct_scaling_feeds_either_graph_a_smaller_decode(
    artifacts, model_contract, tmp_path, graph
):
    onnx = predictor(artifacts, graph, tmp_path, jpeg_dct_scaling=True)
    decoded = onnx.decode(IMAGES[0].read_bytes(), LIMITS)  # 1200x727: 1/2 keeps 364 >= 256
    assert model_contract.resize_size == 256
    assert decoded.shape == (364, 600, 3)
    assert onnx.predict([onnx.preprocess(decoded)]).shape == (1, len(model_contract.labels))
    assert onnx.describe()["pipeline"]["jpeg_dct_scaling"] is True


def run_without_simd(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SIMD + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_cykooz_pillow_resizes_and_the_any_size_graph_ignores_simd(artifacts):
    code = (
        "from onnx_predictor.preprocess import choose_resizer\n"
        "from onnx_predictor.predictor import OnnxPredictor\n"
        "from serving_common.model_source import fetch_model\n"
        "from serving_common.settings import load_settings\n"
        "import tempfile\n"
        "print(choose_resizer('pillow'))\n"
        "settings = load_settings(8080)\n"
        "model = fetch_model(settings.model_uri, tempfile.mkdtemp())\n"
        "print(OnnxPredictor(model, settings).describe()['pipeline']['resizer_setting'])\n"
    )
    env = {"MODEL_URI": str(artifacts / OPTIMIZED_ONNX_FILE), "RESIZER": "simd"}
    result = run_without_simd(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["pillow", "simd (ignored)"]
