"""The model contract in metadata.json: written and read back whole; a missing or bad field
named in one line (what a service prints at startup, after the file's URI)."""

import copy
import re
from typing import Any

import pytest
from weather_model.metadata import ContractError, ModelContract, read_contract

CONTRACT = ModelContract(
    architecture="mobilenet_v3_small",
    labels=("calm", "storm", "haze"),
    resize_size=180,
    crop_size=160,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


def edited(path: str, value: Any = None) -> dict:
    """CONTRACT's metadata with the field at `path` ("a.b") set to `value`, or removed."""
    metadata = copy.deepcopy(CONTRACT.to_metadata())
    *parents, key = path.split(".")
    table = metadata
    for parent in parents:
        table = table[parent]
    if value is None:
        del table[key]
    else:
        table[key] = value
    return metadata


def test_written_and_read_back_whole():
    assert read_contract(CONTRACT.to_metadata()) == CONTRACT


@pytest.mark.parametrize(
    "path",
    [
        "architecture",
        "labels",
        "preprocessing",
        "preprocessing.resize_shorter_side",
        "preprocessing.center_crop",
        "preprocessing.interpolation",
        "preprocessing.scale",
        "preprocessing.mean",
        "preprocessing.std",
    ],
)
def test_a_missing_field_is_named(path):
    with pytest.raises(ContractError) as caught:
        read_contract(edited(path))
    assert str(caught.value) == f'no "{path}" (export the model again with weather-export)'


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("labels", "calm,storm", '"labels" has the wrong type: "calm,storm"'),
        ("labels", [], "labels must be a non-empty list of non-empty strings"),
        ("labels", ["calm", 3], "labels must be a non-empty list of non-empty strings"),
        ("labels", ["calm", "calm"], "labels must be distinct: calm repeated"),
        ("architecture", "", "architecture must be a model name"),
        ("preprocessing.center_crop", 160.0, '"preprocessing.center_crop" has the wrong type'),
        ("preprocessing.center_crop", True, '"preprocessing.center_crop" has the wrong type'),
        ("preprocessing.center_crop", 200, "crop size 200 must be at least 1 and at most"),
        ("preprocessing.center_crop", 0, "crop size 0 must be at least 1"),
        ("preprocessing.mean", [0.5, 0.5], "mean must have 3 values"),
        ("preprocessing.mean", [0.5, "a", 0.5], '"preprocessing.mean" must be a list of numbers'),
        ("preprocessing.std", [0.2, 0.0, 0.2], "std must be positive"),
        (
            "preprocessing.interpolation",
            "nearest",
            "\"preprocessing.interpolation\" is 'nearest'; the services support "
            "'bilinear, antialiased' only",
        ),
        ("preprocessing.scale", "1/127.5", "\"preprocessing.scale\" is '1/127.5'"),
    ],
)
def test_a_bad_field_is_named(path, value, message):
    with pytest.raises(ContractError, match="^" + re.escape(message)):
        read_contract(edited(path, value))


def test_not_an_object_is_named():
    with pytest.raises(ContractError, match=r'^no "architecture"'):
        read_contract(["labels"])
