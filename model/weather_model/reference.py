"""The PyTorch reference pipeline: PIL decode -> torchvision transforms -> eager model."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from weather_model.contract import CROP_SIZE, MEAN, RESIZE_SIZE, STD

# The reference decodes as the services do: one rule, in `pixels.py`.
from weather_model.pixels import decode_rgb as decode_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# How metadata.json names the two fixed choices of the reference transforms.
INTERPOLATION = "bilinear, antialiased"
SCALE = "1/255"


def crop_transforms(
    resize_size: int = RESIZE_SIZE, crop_size: int = CROP_SIZE
) -> list[torch.nn.Module]:
    """The reference's first two transforms: shorter side to `resize_size` (bilinear,
    antialiased), then centre crop `crop_size`; PIL image in, PIL image out."""
    return [
        transforms.Resize(
            resize_size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True
        ),
        transforms.CenterCrop(crop_size),
    ]


def reference_transforms(
    resize_size: int = RESIZE_SIZE,
    crop_size: int = CROP_SIZE,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> transforms.Compose:
    """Equal to torchvision's MobileNet_V3_Small_Weights.DEFAULT.transforms() (tested) with
    the contract's constants."""
    return transforms.Compose(
        [
            *crop_transforms(resize_size, crop_size),
            transforms.ToTensor(),
            transforms.Normalize(list(mean), list(std)),
        ]
    )


def preprocessing_metadata() -> dict[str, object]:
    """metadata.json's "preprocessing" object: the contract's constants."""
    return {
        "resize_shorter_side": RESIZE_SIZE,
        "interpolation": INTERPOLATION,
        "center_crop": CROP_SIZE,
        "scale": SCALE,
        "mean": list(MEAN),
        "std": list(STD),
    }


def transforms_from_metadata(preprocessing: dict) -> transforms.Compose:
    """The reference transforms from metadata.json's "preprocessing" object."""
    for key, supported in (("interpolation", INTERPOLATION), ("scale", SCALE)):
        if preprocessing[key] != supported:
            raise ValueError(f"unsupported preprocessing {key} {preprocessing[key]!r}")
    return reference_transforms(
        resize_size=preprocessing["resize_shorter_side"],
        crop_size=preprocessing["center_crop"],
        mean=preprocessing["mean"],
        std=preprocessing["std"],
    )


def reference_crop(
    image: Image.Image, resize_size: int = RESIZE_SIZE, crop_size: int = CROP_SIZE
) -> np.ndarray:
    """The uint8 [crop_size, crop_size, 3] pixels the reference sees before ToTensor: the
    fixed graph's input for one image."""
    return np.array(transforms.Compose(crop_transforms(resize_size, crop_size))(image))


def reference_probabilities(model: nn.Module, image: Image.Image) -> np.ndarray:
    batch = reference_transforms()(image).unsqueeze(0)
    with torch.inference_mode():
        return model(batch).softmax(dim=-1)[0].numpy()


def sample_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
