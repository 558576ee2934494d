"""Starting and stopping the project's processes: the GCS emulator and the services.

Shared by the benchmark runner and the test fixtures, so both start things the same way.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# Built by `make setup`, with libonnxruntime.so next to it.
RUST_BINARY = (
    Path(__file__).resolve().parents[2]
    / "rust_onnx_serving" / "target" / "release" / "rust_onnx_serving"
)  # fmt: skip


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
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


def wait_until_healthy(
    url: str, process: subprocess.Popen | None = None, timeout: float = 180.0
) -> float:
    """Poll GET url/ until 200 (failing early if `process` exits); the monotonic time it
    first answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"exited with {process.returncode}: {stderr.strip()}")
        try:
            if httpx.get(url + "/", timeout=1.0).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@dataclass
class GcsEmulator:
    host: str  # http://127.0.0.1:PORT, the value for STORAGE_EMULATOR_HOST
    process: subprocess.Popen

    @classmethod
    def start(cls, data_dir: Path) -> "GcsEmulator":
        port = free_port()
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
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, process)
        return cls(f"http://127.0.0.1:{port}", process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def upload(self, bucket: str, name: str, data: bytes) -> str:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            credentials=AnonymousCredentials(),
            project="test",
            client_options={"api_endpoint": self.host},
        )
        target = client.bucket(bucket)
        if not target.exists():
            client.create_bucket(bucket)
        target.blob(name).upload_from_string(data)
        return f"gs://{bucket}/{name}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "STORAGE_EMULATOR_HOST": self.host, **extra}
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        return env


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    model_file: str


SERVICES = {
    "torch_serving": ServiceSpec(
        "torch_serving", (sys.executable, "-m", "torch_serving"), "model.pt"
    ),
    "onnx_serving": ServiceSpec(
        "onnx_serving", (sys.executable, "-m", "onnx_serving"), "model.optimized.onnx"
    ),
    "rust_onnx_serving": ServiceSpec(
        "rust_onnx_serving", (str(RUST_BINARY),), "model.optimized.onnx"
    ),
}


@dataclass
class RunningService:
    spec: ServiceSpec
    url: str
    process: subprocess.Popen
    started_at: float  # monotonic, just before the process was spawned
    healthy_at: float

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_service(
    spec: ServiceSpec, env: dict[str, str], cpus: str | None = None
) -> RunningService:
    """Start a service (pinned to `cpus` with taskset if given) and wait until healthy."""
    port = free_port()
    command = (*(("taskset", "-c", cpus) if cpus else ()), *spec.command)
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        healthy = wait_until_healthy(url, process)
    except Exception:
        process.kill()
        raise
    return RunningService(spec, url, process, started, healthy)
