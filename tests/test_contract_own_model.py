"""The canonical contract suite (tests/test_contract.py), every test of it, against a model
of one's own: other labels, another resize and crop (helpers.OWN_MODEL_OPTIONS), served by
the first plain Python host of the shared predictor and by the compiled service. What
differs from the demo model reaches the services and the suite through its metadata.json
alone."""

from collections.abc import Iterator

import pytest
from benchmark.processes import RunningService
from helpers import STRATEGIES, ServedModel, compiled, plain_hosts, serve_from_gcs, upload_model

# NOTE: the suite's tests, collected again in this module, where the two fixtures below
# stand in for conftest.py's: the same tests, another model.
from test_contract import *  # noqa: F403

# Its services serve a model exported here (conftest.py: tiers).
pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def served_model(own_model: ServedModel) -> ServedModel:
    return own_model


@pytest.fixture(scope="module", params=[plain_hosts()[0].name, compiled()[0].name])
def service(request, gcs_emulator, served_model: ServedModel) -> Iterator[RunningService]:
    """The strategy as a process with WORKERS=2, the model of one's own pulled from gs://."""
    uris = upload_model(gcs_emulator, served_model.artifacts, "own")
    yield from serve_from_gcs(STRATEGIES[request.param], gcs_emulator, uris)
