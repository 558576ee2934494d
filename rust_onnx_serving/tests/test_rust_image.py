"""The Rust service's image, as `make images` built it: small. Skipped, with the reason, when
no Docker daemon is reachable (as tests/test_docker.py is); needs no running container."""

import subprocess
from pathlib import Path

import pytest
from benchmark.compose import Stack, build_environment, docker_unavailable
from serving_common.strategy import load_strategy

STRATEGY = load_strategy(Path(__file__).resolve().parents[1])
UNAVAILABLE = docker_unavailable()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE)),
]


def test_the_image_is_small():
    stack = Stack("model-serving-test", build_environment())
    image = stack.image(STRATEGY.name)
    inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
    assert inspect.returncode == 0, f"{image} not built: `make images` builds it"
    # A distroless C/C++ base (16.5 MB), ONNX Runtime's library (29.4 MB) and the binary
    # (15.2 MB since the Pillow port; 12.0 MB before, built in the image's toolchain).
    assert stack.image_size_mb(STRATEGY.name) < 64
