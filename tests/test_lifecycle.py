"""Process lifecycle: one-line fatal errors at startup, clean shutdown on SIGTERM."""

import time

import psutil
import pytest
from benchmark.processes import run_to_exit

from conftest import STRATEGIES, free_port, start_service

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
    strategy = STRATEGIES["onnx_serving"]
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
