"""The network: torchvision's mobilenet_v3_small with an 11-class head, and its demo weights."""

import io
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small

from weather_model.contract import HEAD_IN_FEATURES, NUM_CLASSES

DEMO_SEED = 20240229
# Multiplies the demo head so its logits spread far enough for a decisive top-1 on every
# sample image (checked at export), which is what makes cross-service parity meaningful.
DEMO_HEAD_GAIN = 60.0


class StateDictError(ValueError):
    """A state_dict that does not fit the network."""


def build_network() -> nn.Module:
    """mobilenet_v3_small with classifier[-1] replaced, as a training pipeline builds it."""
    model = mobilenet_v3_small(weights=None)
    model.classifier[-1] = nn.Linear(HEAD_IN_FEATURES, NUM_CLASSES)
    return model


def load_network(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    model = build_network()
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise StateDictError(f"state_dict does not fit mobilenet_v3_small/11: {detail}") from None
    return model.eval()


def state_dict_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StateDictError(f"not a torch state_dict file ({type(exc).__name__})") from None
    if not isinstance(loaded, dict):
        raise StateDictError(
            f"expected a state_dict (dict of tensors), got {type(loaded).__name__}"
        )
    return loaded


def state_dict_to_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def demo_state_dict(seed: int = DEMO_SEED) -> "OrderedDict[str, torch.Tensor]":
    """Deterministic demo weights, identical bytes on every machine.

    NumPy's PCG64 generator is platform-independent, unlike torch's vectorised samplers,
    so the weights are drawn there with torchvision's initialisation scheme.
    """
    rng = np.random.default_rng(seed)
    template = build_network().state_dict()
    weights: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, tensor in template.items():
        weights[name] = torch.from_numpy(_demo_value(rng, name, tensor)).to(tensor.dtype)
    classifier = build_network().classifier
    assert isinstance(classifier, nn.Sequential)
    head = f"classifier.{len(classifier) - 1}.weight"
    weights[head] = weights[head] * DEMO_HEAD_GAIN
    return weights


def _demo_value(rng: np.random.Generator, name: str, tensor: torch.Tensor) -> np.ndarray:
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
