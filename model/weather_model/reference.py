"""The PyTorch reference pipeline: PIL decode -> torchvision transforms -> eager model."""

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from weather_model.contract import CROP_SIZE, MEAN, RESIZE_SIZE, STD

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def reference_transforms() -> transforms.Compose:
    """Equal to torchvision's MobileNet_V3_Small_Weights.DEFAULT.transforms() (tested)."""
    return transforms.Compose(
        [
            transforms.Resize(
                RESIZE_SIZE, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True
            ),
            transforms.CenterCrop(CROP_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def decode_rgb(data: bytes) -> Image.Image:
    """Decode JPEG/PNG bytes to RGB; greyscale is expanded and alpha is dropped."""
    return Image.open(io.BytesIO(data)).convert("RGB")


def reference_probabilities(model: nn.Module, image: Image.Image) -> np.ndarray:
    batch = reference_transforms()(image).unsqueeze(0)
    with torch.inference_mode():
        return model(batch).softmax(dim=-1)[0].numpy()


def sample_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
