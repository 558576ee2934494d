"""The network: torchvision's mobilenet_v3_small with an 11-class head (demo weights: demo.py)."""

import io

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small

from weather_model.contract import HEAD_IN_FEATURES, NUM_CLASSES


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
