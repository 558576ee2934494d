"""Fixtures shared by every test suite: exported artifacts, a local GCS emulator, and every
service as a real process pulling its model from it."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parent
REFERENCE = ROOT.parent / "shared" / "reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model exported once per test session."""
    out = tmp_path_factory.mktemp("artifacts")
    subprocess.run(
        [sys.executable, "-m", "weather_model.export", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


@dataclass
class GcsEmulator:
    host: str  # http://127.0.0.1:PORT, the value for STORAGE_EMULATOR_HOST

    def upload(self, bucket: str, name: str, data: bytes) -> str:
        client = self._client()
        target = client.bucket(bucket)
        if not target.exists():
            client.create_bucket(bucket)
        target.blob(name).upload_from_string(data)
        return f"gs://{bucket}/{name}"

    def _client(self):  # noqa: ANN202
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            credentials=AnonymousCredentials(),
            project="test",
            client_options={"api_endpoint": self.host},
        )


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A real GCS emulator process on a free port, its data in a temporary folder."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("gcs")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "--data-dir",
            str(data_dir),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-bucket",
            "default",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield GcsEmulator(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def gcs_model(gcs_emulator: GcsEmulator, artifacts: Path) -> dict[str, str]:
    """The exported artifacts uploaded to gs://models/weather/; file name -> URI."""
    return {
        path.name: gcs_emulator.upload("models", f"weather/{path.name}", path.read_bytes())
        for path in sorted(artifacts.iterdir())
    }


def emulator_env(gcs_emulator: GcsEmulator, **extra: str) -> dict[str, str]:
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator.host, **extra}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return env


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    model_file: str


SERVICES = {
    "onnx_serving": ServiceSpec(
        "onnx_serving", (sys.executable, "-m", "onnx_serving"), "model.optimized.onnx"
    ),
    "torch_serving": ServiceSpec(
        "torch_serving", (sys.executable, "-m", "torch_serving"), "model.pt"
    ),
}


@dataclass
class RunningService:
    spec: ServiceSpec
    url: str
    process: subprocess.Popen

    def stop(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(url + "/", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


def start_service(spec: ServiceSpec, env: dict[str, str]) -> RunningService:
    port = free_port()
    process = subprocess.Popen(
        spec.command,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
    except Exception:
        process.kill()
        raise
    return RunningService(spec, url, process)


def run_to_exit(spec: ServiceSpec, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(spec.command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session", params=sorted(SERVICES))
def service(request, gcs_emulator, gcs_model) -> Iterator[RunningService]:
    """Each service as a process with WORKERS=2, its model pulled from gs:// at startup."""
    spec = SERVICES[request.param]
    env = emulator_env(gcs_emulator, MODEL_URI=gcs_model[spec.model_file], WORKERS="2")
    running = start_service(spec, env)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
