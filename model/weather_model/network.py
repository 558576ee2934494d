"""The network: a torchvision classifier with one output per label (demo weights: demo.py)."""

import io

import torch
from torch import nn
from torchvision.models import get_model

from weather_model.metadata import ModelContract


class StateDictError(ValueError):
    """A state_dict that does not fit the network."""


def build_network(contract: ModelContract) -> nn.Module:
    """torchvision's `contract.architecture`, untrained, its head sized to the labels: as a
    training pipeline builds it before fine-tuning (for mobilenet_v3_small, classifier[-1] =
    Linear(1024, labels); for resnet50, fc = Linear(2048, labels))."""
    return get_model(contract.architecture, weights=None, num_classes=len(contract.labels))


def load_network(state_dict: dict[str, torch.Tensor], contract: ModelContract) -> nn.Module:
    model = build_network(contract)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise StateDictError(
            f"state_dict does not fit {contract.architecture} with {len(contract.labels)} "
            f"labels: {detail}"
        ) from None
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
