"""The networks the project exports: each built by name with a head per label, and
preprocessed by default as torchvision publishes for it."""

import pytest
import torch
from helpers import ROOT
from torch import nn
from torchvision.models import get_model_weights, mobilenet_v3_small
from weather_model.architectures import ARCHITECTURES, WEATHER_LABELS, default_contract
from weather_model.demo import head_name
from weather_model.metadata import ContractError
from weather_model.network import build_network
from weather_model.reference import decode_rgb, reference_transforms


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_default_preprocessing_is_torchvisions(architecture):
    preset = get_model_weights(architecture).DEFAULT.transforms()
    model = default_contract(architecture)
    assert [model.resize_size] == preset.resize_size and [model.crop_size] == preset.crop_size
    assert list(model.mean) == preset.mean and list(model.std) == preset.std
    assert model.labels == WEATHER_LABELS
    image = decode_rgb((ROOT / "images" / "rocket_portrait.jpg").read_bytes())
    assert torch.equal(reference_transforms(model)(image), preset(image))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_network_has_one_output_per_label(architecture):
    model = default_contract(architecture, labels=("a", "b", "c"))
    network = build_network(model)
    head = network.get_submodule(head_name(network))
    assert isinstance(head, nn.Linear) and head.out_features == 3
    assert network(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_mobilenet_is_what_a_training_pipeline_builds():
    """By name, the same parameters (names, order, shapes) as the usual fine-tuning recipe:
    torchvision's network with classifier[-1] replaced."""
    usual = mobilenet_v3_small(weights=None)
    usual.classifier[-1] = nn.Linear(1024, len(WEATHER_LABELS))
    expected = {name: tensor.shape for name, tensor in usual.state_dict().items()}
    built = build_network(default_contract("mobilenet_v3_small")).state_dict()
    assert list(built) == list(expected)
    assert {name: tensor.shape for name, tensor in built.items()} == expected
    assert head_name(usual) == "classifier.3"


def test_sizes_can_be_overridden_and_unknown_networks_are_refused():
    model = default_contract(resize_size=180, crop_size=160)
    assert (model.resize_size, model.crop_size) == (180, 160)
    with pytest.raises(ContractError, match="unknown model 'vgg11'; one of: mobilenet_v3_small"):
        default_contract("vgg11")
