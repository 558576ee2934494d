"""ONNX Runtime strategy: the service decodes to uint8 pixels; the graph does the rest."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import simplejpeg
from serving_common.errors import ServiceError
from serving_common.images import check_pixels, decode_with_pil, sniff_image_format
from serving_common.model_source import FetchedModel
from serving_common.settings import Settings


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

    def decode(self, image: bytes, max_pixels: int) -> np.ndarray:
        if sniff_image_format(image) == "jpeg":
            try:
                height, width, _, _ = simplejpeg.decode_jpeg_header(image)
            except ValueError as exc:
                raise ServiceError(
                    "unsupported_image", f"the JPEG cannot be read ({exc})"
                ) from None
            check_pixels(width, height, max_pixels)
            try:
                # libjpeg-turbo straight to an RGB uint8 array: no copy, no float.
                return simplejpeg.decode_jpeg(image, colorspace="RGB")
            except ValueError:
                pass  # e.g. CMYK or arithmetic-coded JPEG: Pillow below decides
        return np.asarray(decode_with_pil(image, max_pixels))

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
