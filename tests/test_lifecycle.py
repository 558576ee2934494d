"""Process lifecycle: one-line fatal errors at startup, clean shutdown on SIGTERM."""

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
from benchmark.processes import free_port, run_to_exit, start_service
from helpers import STRATEGIES, plain_hosts

# Its tests start services of their own (conftest.py: tiers).
pytestmark = pytest.mark.service

NAMES = sorted(STRATEGIES)


def assert_fatal_line(result, service: str, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{service}: fatal:"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


@pytest.mark.parametrize("name", NAMES)
def test_missing_object_exits_with_one_line(name, gcs_emulator, gcs_model):
    uri = "gs://models/weather/absent.onnx"
    env = gcs_emulator.env(MODEL_URI=uri, PORT=str(free_port()))
    assert_fatal_line(run_to_exit(STRATEGIES[name], env), name, uri, "no such object")


@pytest.mark.parametrize("name", NAMES)
def test_missing_bucket_exits_with_one_line(name, gcs_emulator):
    uri = "gs://no-such-bucket/model.onnx"
    env = gcs_emulator.env(MODEL_URI=uri, PORT=str(free_port()))
    assert_fatal_line(run_to_exit(STRATEGIES[name], env), name, uri)


@pytest.mark.parametrize("name", NAMES)
def test_missing_model_uri_exits_with_one_line(name, gcs_emulator):
    env = gcs_emulator.env(PORT=str(free_port()))
    env.pop("MODEL_URI", None)
    assert_fatal_line(run_to_exit(STRATEGIES[name], env), name, "MODEL_URI is required")


@pytest.mark.parametrize("name", NAMES)
def test_corrupt_model_exits_with_one_line(name, gcs_emulator, gcs_model, artifacts):
    strategy = STRATEGIES[name]
    corrupt = gcs_emulator.upload("models", f"corrupt/{strategy.model_file}", b"garbage")
    gcs_emulator.upload(
        "models", "corrupt/metadata.json", (artifacts / "metadata.json").read_bytes()
    )
    env = gcs_emulator.env(MODEL_URI=corrupt, PORT=str(free_port()))
    assert_fatal_line(run_to_exit(strategy, env), name, corrupt, "sha256")


@pytest.mark.parametrize("name", NAMES)
def test_sigterm_shuts_down_cleanly(name, gcs_emulator, gcs_model):
    strategy = STRATEGIES[name]
    env = gcs_emulator.env(MODEL_URI=gcs_model[strategy.model_file], WORKERS="2")
    running = start_service(strategy, env)
    assert running.stop() == 0


def test_workers_end_with_a_killed_supervisor(gcs_emulator, gcs_model):
    """SIGKILL to the supervisor of a WORKERS=2 Python service: its workers exit too."""
    strategy = plain_hosts()[0]
    env = gcs_emulator.env(MODEL_URI=gcs_model[strategy.model_file], WORKERS="2")
    running = start_service(strategy, env)
    workers = psutil.Process(running.pid).children(recursive=True)
    assert len(workers) >= 2
    running.process.kill()
    running.process.wait()
    deadline = time.monotonic() + 15
    while (alive := [p for p in workers if running_still(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    running.kill()
    assert alive == [], [p.pid for p in alive]


def running_still(process: psutil.Process) -> bool:
    """Alive and not a zombie (an exited orphan that no init process has reaped yet)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# Storage that fails at startup: each service gives up within STORAGE_TIMEOUT_SECONDS
# (plus its last attempt's timeouts and process start) with one line.
STORAGE_TIMEOUT_SECONDS = 3
GIVE_UP_BOUND_SECONDS = STORAGE_TIMEOUT_SECONDS + 12


@pytest.fixture
def stalled_storage() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung storage endpoint."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("storage", ["down", "stalled"])
@pytest.mark.parametrize("name", NAMES)
def test_storage_down_or_stalled_exits_in_time(name, storage, stalled_storage):
    host = stalled_storage if storage == "stalled" else f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": host,
        "STORAGE_TIMEOUT_SECONDS": str(STORAGE_TIMEOUT_SECONDS),
        "MODEL_URI": "gs://models/weather/model.onnx",
        "PORT": str(free_port()),
    }
    started = time.monotonic()
    result = run_to_exit(STRATEGIES[name], env)
    assert_fatal_line(result, name, "gs://models/weather/model.onnx")
    assert time.monotonic() - started < GIVE_UP_BOUND_SECONDS


@pytest.mark.parametrize("name", NAMES)
def test_unreadable_token_file_exits_with_one_line(name, tmp_path):
    missing = tmp_path / "no-such-token"
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    env |= {
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(missing),
        "MODEL_URI": "gs://models/weather/model.onnx",
        "PORT": str(free_port()),
    }
    assert_fatal_line(run_to_exit(STRATEGIES[name], env), name, str(missing))


@pytest.mark.parametrize("name", NAMES)
def test_unreadable_model_file_exits_with_one_line(name, tmp_path):
    model = tmp_path / STRATEGIES[name].model_file
    model.mkdir()  # a directory where the model file should be
    env = {**os.environ, "MODEL_URI": str(model), "PORT": str(free_port())}
    assert_fatal_line(run_to_exit(STRATEGIES[name], env), name, str(model))


@pytest.mark.parametrize("name", NAMES)
def test_model_not_matching_its_labels_fails_warm_up(name, artifacts, tmp_path):
    """sha256 and metadata check out, but the model has 11 outputs where metadata.json lists
    10 labels: the warm-up inference catches it before the service says it is healthy."""
    for path in artifacts.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    metadata = json.loads((artifacts / "metadata.json").read_text())
    metadata["labels"] = metadata["labels"][:-1]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    model = tmp_path / STRATEGIES[name].model_file
    env = {**os.environ, "MODEL_URI": str(model), "PORT": str(free_port())}
    assert_fatal_line(run_to_exit(STRATEGIES[name], env), name, "label")


@pytest.mark.parametrize("name", NAMES)
def test_metadata_without_a_field_it_needs_exits_with_one_line(name, artifacts, tmp_path):
    """A metadata.json that lacks the crop size (every service preprocesses with it): the
    service names the file and the field, before it loads anything."""
    for path in artifacts.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    metadata = json.loads((artifacts / "metadata.json").read_text())
    del metadata["preprocessing"]["center_crop"]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    model = tmp_path / STRATEGIES[name].model_file
    env = {**os.environ, "MODEL_URI": str(model), "PORT": str(free_port())}
    result = run_to_exit(STRATEGIES[name], env)
    assert_fatal_line(result, name, str(tmp_path / "metadata.json"), "center_crop")
