"""The ONNX Runtime Predictor, hosted by every strategy whose manifest names it. The graph
MODEL_URI names decides the pipeline:

* the any-size graph (model.onnx, model.optimized.onnx): the service decodes to uint8
  pixels and the graph does the rest, resize included; one image per run;
* the fixed graph (model.fixed.onnx): the service decodes, then resizes only the region
  that survives the centre crop (RESIZER), and the graph normalises and classifies a batch
  [N, crop, crop, 3] in one run.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import simplejpeg
from serving_common.images import ImageLimits
from serving_common.model_source import FetchedModel
from serving_common.settings import ConfigError, Settings

from onnx_predictor.preprocess import (
    Resizer,
    choose_resizer,
    decode_pixels,
    describe_resizer,
    resize_crop,
    simd_cpu_extension,
)

# A graph whose input is a batch [batch, crop, crop, 3] rather than one image [height,
# width, 3]: metadata.json's "graphs" entry says which, and the session must agree.
BATCH_INPUT_RANK = 4


def takes_batches(model: FetchedModel, session: ort.InferenceSession) -> bool:
    """Whether the graph is the fixed one, from its metadata.json entry, checked against
    the loaded graph's input; ConfigError if they disagree."""
    declared = model.graph["input"]["shape"]
    actual = session.get_inputs()[0].shape
    if len(declared) != len(actual):
        raise ConfigError(
            f"{model.uri}: metadata.json declares the input {declared}, "
            f"the graph takes {actual}; re-export the model"
        )
    return len(declared) == BATCH_INPUT_RANK


class OnnxPredictor:
    def __init__(self, model: FetchedModel, settings: Settings) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        # The saved graph is optimised offline and portable; the layout level (NCHWc for
        # this machine's vector width) can only be chosen here, at load time.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model.path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = model.graph["input"]["name"]
        self.output_name = model.graph["output"]["name"]
        self.threads = {
            "intra_op": settings.intra_op_threads,
            "inter_op": settings.inter_op_threads,
        }
        # The reference's sizes, as the model was exported with them (metadata.json).
        self.resize_size = model.contract.resize_size
        self.crop_size = model.contract.crop_size
        self.dct_scaling = settings.jpeg_dct_scaling
        # None: the any-size graph resizes in the graph, and RESIZER is ignored.
        self.resizer: Resizer | None = None
        if takes_batches(model, self.session):
            self.resizer = choose_resizer(settings.resizer)
        self.resizer_setting = settings.resizer

    def decode(self, image: bytes, limits: ImageLimits) -> np.ndarray:
        return decode_pixels(image, limits, self.dct_scaling, self.resize_size)

    def preprocess(self, decoded: np.ndarray) -> np.ndarray:
        if self.resizer is None:
            return decoded  # the graph resizes; its cost is in the inference stage
        return resize_crop(decoded, self.resizer, self.resize_size, self.crop_size)

    def predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        if self.resizer is not None:
            return self.session.run([self.output_name], {self.input_name: np.stack(batch)})[0]
        # The any-size graph takes one image of its own size per run.
        return np.stack(
            [self.session.run([self.output_name], {self.input_name: one})[0] for one in batch]
        )

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "providers": self.session.get_providers(),
            "threads": self.threads,
            "decoder": f"simplejpeg {simplejpeg.__version__} (JPEG), Pillow (PNG)",
            "pipeline": self.pipeline(),
        }

    def pipeline(self) -> dict[str, Any]:
        """What happens between decoding and the network, for /info (keys as in the Rust
        service's, plus the RESIZER setting)."""
        if self.resizer is None:
            resizer, extension, setting = "in graph", None, f"{self.resizer_setting} (ignored)"
        else:
            resizer, setting = describe_resizer(self.resizer), self.resizer_setting
            extension = simd_cpu_extension() if self.resizer == "simd" else None
        return {
            "graph": "fixed" if self.resizer else "any-size",
            "resizer": resizer,
            "resizer_cpu_extension": extension,
            "resizer_setting": setting,
            "jpeg_dct_scaling": self.dct_scaling,
        }
