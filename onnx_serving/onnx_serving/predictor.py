"""ONNX Runtime strategy: the service decodes to uint8 pixels; the graph does the rest."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import simplejpeg
from serving_common.images import ImageLimits, decode_with_pil, sniff_image_format
from serving_common.model_source import FetchedModel
from serving_common.settings import Settings

# JPEG colour spaces libjpeg-turbo converts to RGB exactly as Pillow does. Not CMYK or
# YCCK: Pillow converts those itself, and libjpeg-turbo's result differs by one level.
TURBO_COLORSPACES = frozenset({"YCbCr", "Gray", "RGB"})


def decode_jpeg_turbo(image: bytes, limits: ImageLimits) -> np.ndarray | None:
    """libjpeg-turbo straight to an RGB uint8 array (no copy, no float), or None where
    Pillow must decide: CMYK, YCCK, and anything libjpeg-turbo reports, even a recoverable
    warning (strict mode), which Pillow then decodes as libjpeg does or refuses. Pillow's
    reading is the reference; on every other JPEG the two give the same pixels (same
    libjpeg settings: accurate integer IDCT, fancy upsampling), checked case by case in
    onnx_serving/tests."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(image)
    except ValueError:
        return None
    limits.check(width, height)
    if colorspace not in TURBO_COLORSPACES:
        return None
    try:
        return simplejpeg.decode_jpeg(image, colorspace="RGB", strict=True)
    except ValueError:
        return None


def decode_pixels(image: bytes, limits: ImageLimits) -> np.ndarray:
    """JPEG or PNG bytes to the graph's input: uint8 RGB pixels [height, width, 3]."""
    if sniff_image_format(image) == "jpeg":
        pixels = decode_jpeg_turbo(image, limits)
        if pixels is not None:
            return pixels
    return np.asarray(decode_with_pil(image, limits))


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

    def decode(self, image: bytes, limits: ImageLimits) -> np.ndarray:
        return decode_pixels(image, limits)

    def predict(self, batch: Sequence[np.ndarray]) -> np.ndarray:
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
        }
