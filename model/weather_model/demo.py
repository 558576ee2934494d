"""Deterministic demo weights: the network drawn from a fixed seed, its head calibrated on the
sample photos so that the demo model behaves like a trained one where it matters here.

A head drawn at random sees mostly what every photo has in common: on the sample photos it
picks the same label for nearly all of them, with p close to 1, and any two pipelines then
agree trivially. The calibrated head looks along the directions in which the sample photos'
features differ most (the leading principal components, whitened), through a random mixing
drawn from the same seed: several labels, probabilities spread (top-1 typically 0.3-0.9),
as a fine-tuned model's are. Fidelity checks (parity, the fidelity report) then bite.

Identical bytes on machines whose float arithmetic agrees: the weights are rounded to a
grid well above float32's last bits, so tiny differences in the features do not reach them.
"""

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weather_model.metadata import ModelContract
from weather_model.network import build_network, load_network
from weather_model.reference import decode_rgb, reference_transforms, sample_images

DEMO_SEED = 20240229
# The photos the head is calibrated on (and the export checks parity on by default): the
# repository's images/, or $WEATHER_SAMPLE_IMAGES where the package is installed without the
# repository around it (the exporter image, docker/exporter.Dockerfile).
SAMPLE_IMAGES = Path(
    os.environ.get("WEATHER_SAMPLE_IMAGES") or Path(__file__).resolve().parents[2] / "images"
)
# Principal components the head looks along: the sixth and later mostly tell near-copies
# (astronaut.jpg and .png) apart, which would make the head react to re-encoding noise.
DEMO_HEAD_COMPONENTS = 5
# Logit scale: top-1 probability 0.26-0.99 on the sample photos, median 0.75.
DEMO_HEAD_GAIN = 2.0
# Significant bits kept in the head's weights (float32 has 24).
_HEAD_BITS = 16


def demo_state_dict(
    contract: ModelContract, seed: int = DEMO_SEED
) -> "OrderedDict[str, torch.Tensor]":
    """The demo weights of the contract's network: drawn from `seed`, the head (the last
    nn.Linear) calibrated on SAMPLE_IMAGES through the contract's preprocessing."""
    weights = drawn_state_dict(contract, seed)
    model = load_network(weights, contract)
    head_weight, head_bias = calibrated_head(
        penultimate_features(model, sample_images(SAMPLE_IMAGES), contract),
        len(contract.labels),
        np.random.default_rng(seed),
    )
    head = head_name(model)
    weights[f"{head}.weight"] = torch.from_numpy(head_weight)
    weights[f"{head}.bias"] = torch.from_numpy(head_bias)
    return weights


def drawn_state_dict(contract: ModelContract, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """Every weight drawn with NumPy's PCG64 generator, which is platform-independent,
    unlike torch's vectorised samplers; torchvision's initialisation scheme otherwise."""
    rng = np.random.default_rng(seed)
    weights: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, tensor in build_network(contract).state_dict().items():
        weights[name] = torch.from_numpy(_drawn_value(rng, name, tensor)).to(tensor.dtype)
    return weights


def head_name(model: nn.Module) -> str:
    """The classifier's head: the model's last nn.Linear (`classifier.3` in
    mobilenet_v3_small, `fc` in resnet50)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to calibrate")
    return linears[-1]


def penultimate_features(
    model: nn.Module, images: list[Path], contract: ModelContract
) -> np.ndarray:
    """[images, head inputs]: what the head sees for each image, through the reference
    pipeline (the head's input, caught on its way in)."""
    batch = torch.stack(
        [reference_transforms(contract)(decode_rgb(p.read_bytes())) for p in images]
    )
    seen: list[torch.Tensor] = []
    hook = model.get_submodule(head_name(model)).register_forward_pre_hook(
        lambda _, inputs: seen.append(inputs[0])
    )
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        hook.remove()
    return seen[0].double().numpy()


def calibrated_head(
    features: np.ndarray, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Head weight [classes, features] and bias [classes] (float32): logits = gain x mixing
    x whitened leading principal components of the centred features."""
    mean = features.mean(axis=0)
    _, singular, directions = np.linalg.svd(features - mean, full_matrices=False)
    components = directions[:DEMO_HEAD_COMPONENTS]
    # An SVD's signs are arbitrary: fix them (largest entry positive) so that every LAPACK
    # gives the same head.
    rows = np.arange(len(components))
    components = components * np.sign(components[rows, np.abs(components).argmax(axis=1)])[:, None]
    # Whitened: each component with unit variance over the sample photos.
    whitened = components / singular[:DEMO_HEAD_COMPONENTS, None] * np.sqrt(len(features))
    mixing = rng.standard_normal((num_classes, DEMO_HEAD_COMPONENTS))
    weight = _rounded(DEMO_HEAD_GAIN * mixing @ whitened)
    return weight, _rounded(-weight.astype(np.float64) @ mean)


def _rounded(values: np.ndarray) -> np.ndarray:
    """To _HEAD_BITS significant bits of the largest value: exact in float32."""
    step = 2.0 ** (np.floor(np.log2(np.abs(values).max())) - _HEAD_BITS)
    return (np.round(values / step) * step).astype(np.float32)


def _drawn_value(rng: np.random.Generator, name: str, tensor: torch.Tensor) -> np.ndarray:
    shape = tuple(tensor.shape)
    if name.endswith("running_var"):
        return np.ones(shape, np.float32)
    if name.endswith(("running_mean", "num_batches_tracked", "bias")):
        return np.zeros(shape, np.int64 if tensor.dtype == torch.int64 else np.float32)
    if tensor.dim() == 1:  # batch-norm scale
        return np.ones(shape, np.float32)
    # Kaiming normal over fan-in keeps activations alive through identity batch norms
    # (torchvision's fan-out scheme assumes trained statistics and fades to zero here).
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
