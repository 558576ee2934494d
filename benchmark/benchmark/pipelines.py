"""The preprocessing pipelines an ONNX service can run, in-process, without HTTP: what the
ceilings time (what one core can do) and the fidelity report checks (how close each stays to
the PyTorch reference). Each is a configuration of the services (contract/README.md):
the graph MODEL_URI names, JPEG_DCT_SCALING and, in Python, RESIZER.

Stages, as the services' /metrics name them: parse (JSON, base64), decode, preprocess (the
crop resize; nothing when the graph resizes), inference (the ONNX graph).
"""

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pybase64
import simplejpeg
from onnx_predictor.predictor import BATCH_INPUT_RANK
from onnx_predictor.preprocess import Resizer, decode_pixels, resize_crop
from serving_common.images import ImageLimits
from serving_common.settings import Settings
from weather_model.contract import FIXED_ONNX_FILE, OPTIMIZED_ONNX_FILE, PROBABILITIES_OUTPUT
from weather_model.metadata import ModelContract, load_contract

STAGES = ("parse", "decode", "preprocess", "inference")
LIMITS = ImageLimits(
    max_pixels=Settings.model_fields["max_image_pixels"].default,
    max_aspect_ratio=Settings.model_fields["max_aspect_ratio"].default,
)


@dataclass(frozen=True)
class Pipeline:
    name: str
    title: str
    graph: str  # the artifact's file name
    resizer: Resizer | None  # None: the any-size graph resizes, in float
    dct_scaling: bool = False
    int8: bool = False  # the fixed graph statically quantised (quantised_graph)


_FIXED, _ANY_SIZE = FIXED_ONNX_FILE, OPTIMIZED_ONNX_FILE
PIPELINES = {
    p.name: p
    for p in (
        Pipeline("graph", "any-size graph, float resize inside (today's)", _ANY_SIZE, None),
        Pipeline("graph_dct", "JPEG DCT scaling, any-size graph", _ANY_SIZE, None, True),
        Pipeline("pillow", "Pillow uint8 crop resize, fixed graph", _FIXED, "pillow"),
        Pipeline("simd", "SIMD uint8 crop resize, fixed graph", _FIXED, "simd"),
        Pipeline("simd_dct", "JPEG DCT scaling, SIMD crop resize", _FIXED, "simd", True),
        Pipeline("simd_int8", "SIMD crop resize, int8 fixed graph", _FIXED, "simd", int8=True),
    )
}
# Today's pipeline, reference-exact: the floor every earlier result was measured against.
REFERENCE_PIPELINE = "graph"


def session(model: Path | bytes) -> ort.InferenceSession:
    """One thread, every optimisation: as a service worker runs it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class LoadedPipeline:
    """A pipeline with its session: probabilities for image bytes, stage by stage."""

    def __init__(self, pipeline: Pipeline, artifacts: Path, graph: Path | None = None) -> None:
        """`graph`, when given, is the graph file to run instead of the pipeline's own: the
        int8 one another process quantised already (benchmark.instructions)."""
        self.pipeline = pipeline
        # The sizes the model was exported with (its metadata.json), as a service reads them.
        self.contract = load_contract(artifacts)
        self.graph: Path | bytes = graph or artifacts / pipeline.graph
        if pipeline.int8 and graph is None:
            self.graph = quantised_graph(artifacts / pipeline.graph, self.contract)
        self.session = session(self.graph)
        # As the services tell (onnx_predictor), not weather_model.onnx_graph's takes_batches:
        # that module imports torch, seconds of start-up under valgrind (benchmark.instructions).
        self.batched = len(self.session.get_inputs()[0].shape) == BATCH_INPUT_RANK

    def decode(self, image: bytes) -> np.ndarray:
        return decode_pixels(image, LIMITS, self.pipeline.dct_scaling, self.contract.resize_size)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        if self.pipeline.resizer is None:
            return pixels
        contract = self.contract
        crop = resize_crop(pixels, self.pipeline.resizer, contract.resize_size, contract.crop_size)
        return crop[np.newaxis]

    def infer(self, prepared: np.ndarray) -> np.ndarray:
        output = self.session.run([PROBABILITIES_OUTPUT], {"image": prepared})[0]
        return output[0] if self.batched else output

    def probabilities(self, image: bytes) -> np.ndarray:
        return self.infer(self.preprocess(self.decode(image)))


def parse(body: bytes) -> bytes:
    return pybase64.b64decode(orjson.loads(body)["image"], validate=True)


def time_stages(loaded: LoadedPipeline, body: bytes, seconds: float) -> dict[str, Any]:
    """Requests per second and CPU ms per request of the whole pipeline on the calling
    thread, and mean ms per stage, over `seconds` of repeated runs on one JSON body."""
    steps: list[tuple[str, Callable[[Any], Any]]] = [
        ("parse", parse),
        ("decode", loaded.decode),
        ("preprocess", loaded.preprocess),
        ("inference", loaded.infer),
    ]
    totals = dict.fromkeys(STAGES, 0.0)

    def once() -> None:
        value: Any = body
        for stage, step in steps:
            started = time.perf_counter()
            value = step(value)
            totals[stage] += time.perf_counter() - started

    once()  # warm-up: the first run allocates
    totals = dict.fromkeys(STAGES, 0.0)
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        once()
        count += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "pipeline": loaded.pipeline.name,
        "iterations": count,
        "seconds": elapsed,
        "requests_per_second": count / elapsed,
        "cpu_ms_per_request": 1000 * cpu / count,
        "stage_ms": {stage: 1000 * total / count for stage, total in totals.items()},
    }


def time_entropy_decoding(body: bytes, seconds: float) -> float:
    """ms per decode of the payload's JPEG at 1/8 scale: entropy decoding and little else
    (the 1/8 inverse DCT keeps one coefficient per block), the part of decoding no resize or
    scaling removes."""
    jpeg = parse(body)
    height, width, _, _ = simplejpeg.decode_jpeg_header(jpeg)
    # simplejpeg picks the scale from the minimum size; min_factor alone does not scale.
    eighth = {"min_height": -(-height // 8), "min_width": -(-width // 8), "min_factor": 8}
    assert simplejpeg.decode_jpeg(jpeg, "RGB", **eighth).shape[:2] == tuple(eighth.values())[:2]
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        simplejpeg.decode_jpeg(jpeg, "RGB", **eighth)
        count += 1
    return 1000 * (time.perf_counter() - started) / count


def quantised_graph(fixed_graph: Path, contract: ModelContract) -> bytes:
    """The fixed graph with ONNX Runtime's static int8 quantisation (QDQ, per-channel
    weights, float biases), calibrated on the sample photos' reference crops."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from weather_model.demo import SAMPLE_IMAGES
    from weather_model.reference import decode_rgb, reference_crop, sample_images

    images = sample_images(SAMPLE_IMAGES)
    crops = [reference_crop(decode_rgb(p.read_bytes()), contract) for p in images]

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter([{"image": crop[np.newaxis]} for crop in crops])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantised = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fixed_graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantised),
            Crops(),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # Biases stay float: the demo weights leave some squeeze-excitation inputs at
            # zero over the calibration crops, a zero scale that int32 biases cannot take.
            extra_options={"QuantizeBias": False},
        )
        return quantised.read_bytes()
