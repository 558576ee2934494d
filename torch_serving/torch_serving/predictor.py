"""PyTorch eager strategy, as people usually write it: PIL, torchvision transforms, eager."""

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from serving_common.images import ImageLimits, decode_with_pil
from serving_common.model_source import FetchedModel
from serving_common.settings import Settings
from weather_model.network import load_network, state_dict_from_bytes
from weather_model.reference import reference_transforms


class TorchPredictor:
    def __init__(self, model: FetchedModel, settings: Settings) -> None:
        # Threads per worker from the settings, so WORKERS x threads does not
        # oversubscribe the cores (torch would otherwise take every core in each worker).
        torch.set_num_threads(settings.intra_op_threads)
        # Settable once per process; tests build several apps in one.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(settings.inter_op_threads)
        # The network and preprocessing the model was exported with, from its metadata.json.
        state_dict = state_dict_from_bytes(model.path.read_bytes())
        self.network = load_network(state_dict, model.contract)
        self.transforms = reference_transforms(model.contract)

    def decode(self, image: bytes, limits: ImageLimits) -> Image.Image:
        return decode_with_pil(image, limits)

    def preprocess(self, decoded: Image.Image) -> torch.Tensor:
        with torch.inference_mode():
            return self.transforms(decoded)  # type: ignore[no-any-return]

    def predict(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            return self.network(torch.stack(list(batch))).softmax(dim=-1).numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "pytorch eager",
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "decoder": "Pillow",
        }
