"""The Compose stack: base images, builds, and each service as a container.

Used by the harness (`--mode compose`) and by the Docker tests, so both drive Docker alike.
"""

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serving_common.strategy import Strategy, discover_strategies

from benchmark.processes import wait_until_healthy
from benchmark.resources import DockerStatsSampler, ResourceSampler

ROOT = Path(__file__).resolve().parents[2]
# Builds base images, the shared Python build image and every Compose service's image,
# printing its progress; fast when all are built (`make images` runs it).
BUILD_IMAGES = ROOT / "docker" / "build-images.sh"
# PyTorch's CPU index is out of reach on machines that only reach PyPI; PyPI's CUDA wheels
# run on the CPU too, at the cost of a larger image.
DEFAULT_TORCH_INDEX = "https://pypi.org/simple"


def containerised_strategies() -> dict[str, Strategy]:
    """The strategies with a [docker] table in their manifest: Compose services too."""
    return {name: s for name, s in discover_strategies().items() if s.docker is not None}


def docker_unavailable() -> str | None:
    """None when a Docker daemon and Compose answer, else why not."""
    if not shutil.which("docker"):
        return "no docker client on PATH"
    if not compose_command():
        return "neither `docker compose` nor docker-compose is installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"Docker daemon not reachable: {probe.stderr.strip()[:200]}"
    return None


def compose_command() -> list[str]:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else []


def build_images() -> None:
    """Every image the stack needs (its progress goes to this process's output)."""
    if subprocess.run([str(BUILD_IMAGES)], timeout=5400).returncode != 0:
        raise RuntimeError(f"{BUILD_IMAGES.relative_to(ROOT)} failed (its output above)")


def build_environment() -> dict[str, str]:
    """The variables that select the locally built images (docker/build-images.sh)."""
    args = subprocess.run(
        [str(BUILD_IMAGES), "--print-build-args"], capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        "TORCH_INDEX_URL": DEFAULT_TORCH_INDEX,
        **os.environ,
        **dict(arg.split("=", 1) for arg in args),
    }


@dataclass
class Stack:
    project: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*compose_command(), "-p", self.project, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def check(self, *args: str, timeout: float = 3600) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args)}: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def image(self, service: str) -> str:
        docker = discover_strategies()[service].docker
        assert docker is not None, f"{service} has no [docker] table"
        return docker.image

    def inspect_image(self, service: str, template: str) -> str:
        """`docker image inspect -f template` of a service's image."""
        return subprocess.run(
            ["docker", "image", "inspect", "-f", template, self.image(service)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def image_size_mb(self, service: str) -> float:
        return int(self.inspect_image(service, "{{.Size}}")) / 1e6

    def container_id(self, service: str) -> str:
        return self.check("ps", "-q", service).strip()

    def container_pid(self, service: str) -> int:
        pid = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", self.container_id(service)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(pid)

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", timeout=600)


@dataclass
class ContainerService:
    """A service running as a Compose container: a benchmark.measure.StartedService, like a
    native RunningService."""

    name: str
    stack: Stack
    url: str
    container: str
    pid: int  # in the Docker host's PID namespace: this machine's only on Linux
    started_at: float
    healthy_at: float

    def sampler(self) -> ResourceSampler | DockerStatsSampler:
        if sys.platform == "linux":
            return ResourceSampler(self.pid)
        return DockerStatsSampler(self.container)

    def stop(self) -> int:
        self.stack.check("rm", "--stop", "--force", self.name, timeout=120)
        return 0


def start_container(stack: Stack, name: str) -> ContainerService:
    """`compose up` one service (its dependencies already done) and wait for its first 200."""
    started = time.monotonic()
    stack.check("up", "-d", "--no-deps", name, timeout=600)
    url = f"http://127.0.0.1:{discover_strategies()[name].port}"
    healthy = wait_until_healthy(url, timeout=300)
    container = stack.container_id(name)
    return ContainerService(
        name, stack, url, container, stack.container_pid(name), started, healthy
    )
