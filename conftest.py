"""Fixtures shared by every test suite: exported models, a local GCS emulator, the study
payload, and every discovered strategy as a real process pulling its model from it; and
each test's tier (its marker). Helpers that are not fixtures live in tests/helpers.py."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from benchmark.processes import GcsEmulator, RunningService
from helpers import (
    OWN_MODEL_OPTIONS,
    ROOT,
    STRATEGIES,
    ServedModel,
    export_model,
    serve_from_gcs,
    upload_model,
)
from weather_model.architectures import DEFAULT_ARCHITECTURE
from weather_model.metadata import ModelContract, load_contract

REFERENCE = ROOT.parent / "shared" / "reference"

# Test tiers, selected with `-m` (markers are registered in pyproject.toml): a test's tier
# is the most expensive thing it starts.
#   docker  - containers: Docker Compose stacks and the images they run;
#   cluster - the Ray cluster scenario: its containers, or KubeRay's checker (a Rust crate,
#             minutes of CPU when cold);
#   service - the project's own programs as processes: a strategy's service, the harness
#             running several, the exporter (each export is seconds of CPU);
#   unit    - the rest: in-process, at most a short command or a helper process (the GCS
#             emulator, the session's one model export).
# Set here from the fixtures a test uses (directly or through other fixtures), so a new
# test gets its tier without a decorator; a module (or test) whose tests start processes
# themselves says so with a marker (`pytestmark = pytest.mark.service`), which wins.
TIERS = ("unit", "service", "docker", "cluster")
# Most expensive first: a Docker test also uses `service` (a strategy's name there).
TIER_FIXTURES = {
    "stack": "docker",
    "cluster": "cluster",
    "kuberay_check": "cluster",
    "service": "service",
    "quick_run": "service",
}


# Beside the tiers, `alone` (pyproject.toml): `make test` runs those tests with no other
# test beside them (scripts/test-tiers.sh). A test that runs the harness says so with the
# marker; so does every test of a module fixture that runs it, given the marker here, so
# that the run is made once, in one pytest.
ALONE_FIXTURES = ("quick_run",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if any(name in fixtures for name in ALONE_FIXTURES):
            item.add_marker("alone")
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        tier = next(
            (TIER_FIXTURES[name] for name in TIER_FIXTURES if name in fixtures),
            "unit",
        )
        item.add_marker(tier)


@pytest.fixture(scope="session")
def demo_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ServedModel]:
    """The demo model of a network (weather_model.architectures), exported the first time a
    test asks for it, once per test session."""
    exported: dict[str, ServedModel] = {}

    def demo(architecture: str) -> ServedModel:
        if architecture not in exported:
            out = tmp_path_factory.mktemp(architecture)
            exported[architecture] = ServedModel(export_model(out, "--model", architecture))
        return exported[architecture]

    return demo


@pytest.fixture(scope="session")
def artifacts(demo_of: Callable[[str], ServedModel]) -> Path:
    """The demo model of the default network, exported once per test session."""
    return demo_of(DEFAULT_ARCHITECTURE).artifacts


@pytest.fixture(scope="session")
def model_contract(artifacts: Path) -> ModelContract:
    """The demo model's contract, as its metadata.json says: labels, sizes, architecture."""
    return load_contract(artifacts)


@pytest.fixture(scope="session")
def served_model(artifacts: Path) -> ServedModel:
    """The model the `service` fixture's strategies serve: the demo export."""
    return ServedModel(artifacts)


@pytest.fixture(scope="session")
def own_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """A model of one's own (helpers.OWN_MODEL_OPTIONS: other labels, other sizes), exported
    once per test session."""
    return ServedModel(export_model(tmp_path_factory.mktemp("own_model"), *OWN_MODEL_OPTIONS))


@pytest.fixture(scope="session")
def study_payload() -> bytes:
    """The original study's request body (JSON + base64), read in place from ../shared."""
    payload = REFERENCE / "rime_5868.json"
    if not payload.exists():
        pytest.skip(f"the original study's payload is not at {payload}")
    return payload.read_bytes()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A real GCS emulator process on a free port, its data in a temporary folder."""
    emulator = GcsEmulator.start(tmp_path_factory.mktemp("gcs"))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def gcs_model(gcs_emulator: GcsEmulator, artifacts: Path) -> dict[str, str]:
    """The exported artifacts uploaded to gs://models/weather/; file name -> URI."""
    return upload_model(gcs_emulator, artifacts, "weather")


@pytest.fixture(scope="session", params=sorted(STRATEGIES))
def service(request, gcs_emulator, gcs_model) -> Iterator[RunningService]:
    """Each strategy as a process with WORKERS=2, its model pulled from gs:// at startup."""
    yield from serve_from_gcs(STRATEGIES[request.param], gcs_emulator, gcs_model)
