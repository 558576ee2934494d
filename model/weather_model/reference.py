"""The PyTorch reference pipeline: PIL decode -> torchvision transforms -> eager model, with
the preprocessing of the model's contract (metadata.json)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from weather_model.metadata import ModelContract

# The reference decodes as the services do: one rule, in `pixels.py`.
from weather_model.pixels import decode_rgb as decode_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def crop_transforms(contract: ModelContract) -> list[torch.nn.Module]:
    """The reference's first two transforms: shorter side to the resize size (bilinear,
    antialiased), then the centre crop; PIL image in, PIL image out."""
    return [
        transforms.Resize(
            contract.resize_size,
            interpolation=transforms.InterpolationMode.BILINEAR,
            antialias=True,
        ),
        transforms.CenterCrop(contract.crop_size),
    ]


def reference_transforms(contract: ModelContract) -> transforms.Compose:
    """Equal to torchvision's `<Weights>.DEFAULT.transforms()` for the contract's
    architecture when the contract keeps its defaults (tested)."""
    return transforms.Compose(
        [
            *crop_transforms(contract),
            transforms.ToTensor(),
            transforms.Normalize(list(contract.mean), list(contract.std)),
        ]
    )


def reference_crop(image: Image.Image, contract: ModelContract) -> np.ndarray:
    """The uint8 [crop, crop, 3] pixels the reference sees before ToTensor: the fixed
    graph's input for one image."""
    return np.array(transforms.Compose(crop_transforms(contract))(image))


def reference_probabilities(
    model: nn.Module, image: Image.Image, contract: ModelContract
) -> np.ndarray:
    batch = reference_transforms(contract)(image).unsqueeze(0)
    with torch.inference_mode():
        return model(batch).softmax(dim=-1)[0].numpy()


def sample_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
