"""Starting and stopping the project's processes: the GCS emulator and the services.

Shared by the benchmark runner and the test fixtures, so both start things the same way.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from serving_common.strategy import Strategy

from benchmark.machine import taskset_prefix
from benchmark.resources import ResourceSampler


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
    url: str,
    process: subprocess.Popen | None = None,
    timeout: float = 180.0,
    log: IO[str] | None = None,
) -> float:
    """Poll GET url/ until 200 (failing early, with the end of its `log`, if `process`
    exits); the monotonic time it first answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            stderr = ""
            if log is not None:
                log.seek(0)
                stderr = log.read()[-2000:]
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


@dataclass
class RunningService:
    """A strategy running as a local process: a benchmark.measure.StartedService."""

    strategy: Strategy
    url: str
    process: subprocess.Popen
    started_at: float  # monotonic, just before the process was spawned
    healthy_at: float
    log: IO[str]  # the service's stderr, kept in a file: a pipe nobody reads would fill

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def sampler(self) -> ResourceSampler:
        return ResourceSampler(self.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit status. Past `timeout`, the whole group is killed."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the service's whole process group (its workers too); idempotent."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_service(
    strategy: Strategy, env: dict[str, str], cpus: str | None = None
) -> RunningService:
    """Start a strategy natively, in a process group of its own (pinned to `cpus` with
    taskset where it exists), and wait until healthy."""
    port = free_port()
    command = [*taskset_prefix(cpus), *strategy.command()]
    started = time.monotonic()
    # Lives as long as the RunningService: a file, not a pipe nobody drains.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen(
        command,
        cwd=strategy.folder,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    running = RunningService(strategy, url, process, started, started, log)
    try:
        running.healthy_at = wait_until_healthy(url, process, log=log)
    except BaseException:
        running.kill()
        raise
    return running


def run_to_exit(strategy: Strategy, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a strategy that is expected to stop by itself (startup failures)."""
    return subprocess.run(
        strategy.command(),
        cwd=strategy.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
