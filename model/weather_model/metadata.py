"""The model's contract as metadata.json carries it: the network's architecture, its labels
in output order, and the reference preprocessing.

The exporter writes it (`ModelContract.to_metadata`); every service, the fidelity report,
the harness and the tests read it back (`read_contract`), so that a model travels with its
own contract and nothing else retypes it. Torch-free: the ONNX services read it too.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weather_model.contract import METADATA_FILE

# The two choices of the reference transforms that no model changes, written out so that a
# reader of metadata.json sees them, and checked on reading.
INTERPOLATION = "bilinear, antialiased"
SCALE = "1/255"
CHANNELS = 3  # RGB: one mean and one std per channel


class ContractError(ValueError):
    """A model contract that cannot be served: a field metadata.json lacks or a bad value;
    the message, one line, names the field."""


@dataclass(frozen=True)
class ModelContract:
    """What a service needs to know about the model besides its file."""

    architecture: str  # torchvision's model name, e.g. "mobilenet_v3_small"
    labels: tuple[str, ...]  # the network's outputs, in order: one class per label
    resize_size: int  # the shorter side is resized to this (bilinear, antialiased)
    crop_size: int  # then the centre crop_size x crop_size is kept
    mean: tuple[float, ...]  # per RGB channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.architecture:
            raise ContractError("architecture must be a model name, e.g. mobilenet_v3_small")
        if not self.labels or not all(isinstance(label, str) and label for label in self.labels):
            raise ContractError("labels must be a non-empty list of non-empty strings")
        repeated = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if repeated:
            raise ContractError(f"labels must be distinct: {', '.join(repeated)} repeated")
        if not 0 < self.crop_size <= self.resize_size:
            raise ContractError(
                f"crop size {self.crop_size} must be at least 1 and at most the resize size "
                f"{self.resize_size} (the centre crop is cut from the resized image)"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != CHANNELS:
                raise ContractError(f"{name} must have {CHANNELS} values (R, G, B)")
        if not all(value > 0 for value in self.std):
            raise ContractError("std must be positive")

    def to_metadata(self) -> dict[str, Any]:
        """Its fields of metadata.json: "architecture", "labels" and "preprocessing"."""
        return {
            "architecture": self.architecture,
            "labels": list(self.labels),
            "preprocessing": {
                "resize_shorter_side": self.resize_size,
                "interpolation": INTERPOLATION,
                "center_crop": self.crop_size,
                "scale": SCALE,
                "mean": list(self.mean),
                "std": list(self.std),
            },
        }


def read_contract(metadata: Any) -> ModelContract:
    """The contract from metadata.json's parsed object; ContractError naming the first field
    that is missing or wrong."""

    def field(path: str, kind: type | tuple[type, ...], table: Any = metadata) -> Any:
        key = path.rpartition(".")[2]
        if not isinstance(table, dict) or key not in table:
            raise ContractError(f'no "{path}" (export the model again with weather-export)')
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ContractError(f'"{path}" has the wrong type: {json.dumps(value)[:80]}')
        return value

    def numbers(path: str, table: dict[str, Any]) -> tuple[float, ...]:
        values = field(path, list, table)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ContractError(f'"{path}" must be a list of numbers')
        return tuple(float(v) for v in values)

    architecture = field("architecture", str)
    labels = field("labels", list)
    preprocessing = field("preprocessing", dict)
    for key, supported in (("interpolation", INTERPOLATION), ("scale", SCALE)):
        value = field(f"preprocessing.{key}", str, preprocessing)
        if value != supported:
            raise ContractError(
                f'"preprocessing.{key}" is {value!r}; the services support {supported!r} only'
            )
    return ModelContract(
        architecture=architecture,
        labels=tuple(labels),
        resize_size=field("preprocessing.resize_shorter_side", int, preprocessing),
        crop_size=field("preprocessing.center_crop", int, preprocessing),
        mean=numbers("preprocessing.mean", preprocessing),
        std=numbers("preprocessing.std", preprocessing),
    )


def load_contract(artifacts: Path) -> ModelContract:
    """The contract of the model exported to the folder `artifacts`."""
    path = artifacts / METADATA_FILE
    try:
        return read_contract(json.loads(path.read_text()))
    except ContractError as exc:
        raise ContractError(f"{path}: {exc}") from None
