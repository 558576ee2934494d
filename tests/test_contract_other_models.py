"""The canonical contract suite (tests/test_contract.py), every test of it, against models
other than the default demo: a model of one's own (other labels, another resize and crop:
helpers.OWN_MODEL_OPTIONS), served by the first plain Python host of the shared predictor
and by the compiled service; and the demo model of each other network the export knows
(weather_model.architectures: resnet50), served by the plain host. What differs from the
default demo reaches the services and the suite through the model's metadata.json alone."""

from collections.abc import Callable, Iterator

import pytest
from benchmark.processes import RunningService
from helpers import STRATEGIES, ServedModel, compiled, plain_hosts, serve_from_gcs, upload_model

# NOTE: the suite's tests, collected again in this module, where `served_model` and
# `service` below stand in for conftest.py's: the same tests, other models.
from test_contract import *  # noqa: F403
from weather_model.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE

# Its services serve models exported here (conftest.py: tiers).
pytestmark = pytest.mark.service

OWN = "own"
PLAIN, COMPILED = plain_hosts()[0].name, compiled()[0].name
# (model, strategy): OWN or a network's name, and the strategy serving it.
SERVED = [
    (OWN, PLAIN),
    (OWN, COMPILED),
    *((network, PLAIN) for network in ARCHITECTURES if network != DEFAULT_ARCHITECTURE),
]


@pytest.fixture(scope="module", params=SERVED, ids="-".join)
def served(request, demo_of: Callable[[str], ServedModel]) -> tuple[ServedModel, str]:
    """A model, exported once per session, and the strategy to serve it."""
    model, strategy = request.param
    return (request.getfixturevalue("own_model") if model == OWN else demo_of(model)), strategy


@pytest.fixture(scope="module")
def served_model(served: tuple[ServedModel, str]) -> ServedModel:
    return served[0]


@pytest.fixture(scope="module")
def service(served: tuple[ServedModel, str], gcs_emulator) -> Iterator[RunningService]:
    """The strategy as a process with WORKERS=2, the model pulled from gs://."""
    model, strategy = served
    uris = upload_model(gcs_emulator, model.artifacts, model.artifacts.name)
    yield from serve_from_gcs(STRATEGIES[strategy], gcs_emulator, uris)
