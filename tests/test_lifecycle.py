"""Process lifecycle: one-line fatal errors at startup, clean shutdown on SIGTERM."""

import pytest

from conftest import SERVICES, emulator_env, free_port, run_to_exit, start_service

SPECS = sorted(SERVICES)


def assert_fatal_line(result, service: str, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{service}: fatal:"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


@pytest.mark.parametrize("name", SPECS)
def test_missing_object_exits_with_one_line(name, gcs_emulator, gcs_model):
    uri = "gs://models/weather/absent.onnx"
    env = emulator_env(gcs_emulator, MODEL_URI=uri, PORT=str(free_port()))
    assert_fatal_line(run_to_exit(SERVICES[name], env), name, uri, "no such object")


@pytest.mark.parametrize("name", SPECS)
def test_missing_bucket_exits_with_one_line(name, gcs_emulator):
    uri = "gs://no-such-bucket/model.onnx"
    env = emulator_env(gcs_emulator, MODEL_URI=uri, PORT=str(free_port()))
    assert_fatal_line(run_to_exit(SERVICES[name], env), name, uri)


@pytest.mark.parametrize("name", SPECS)
def test_missing_model_uri_exits_with_one_line(name, gcs_emulator):
    env = emulator_env(gcs_emulator, PORT=str(free_port()))
    env.pop("MODEL_URI", None)
    assert_fatal_line(run_to_exit(SERVICES[name], env), name, "MODEL_URI is required")


@pytest.mark.parametrize("name", SPECS)
def test_corrupt_model_exits_with_one_line(name, gcs_emulator, gcs_model, artifacts):
    spec = SERVICES[name]
    corrupt = gcs_emulator.upload("models", f"corrupt/{spec.model_file}", b"garbage")
    gcs_emulator.upload(
        "models", "corrupt/metadata.json", (artifacts / "metadata.json").read_bytes()
    )
    env = emulator_env(gcs_emulator, MODEL_URI=corrupt, PORT=str(free_port()))
    assert_fatal_line(run_to_exit(spec, env), name, corrupt, "sha256")


@pytest.mark.parametrize("name", SPECS)
def test_sigterm_shuts_down_cleanly(name, gcs_emulator, gcs_model):
    spec = SERVICES[name]
    env = emulator_env(gcs_emulator, MODEL_URI=gcs_model[spec.model_file], WORKERS="2")
    running = start_service(spec, env)
    assert running.stop() == 0
