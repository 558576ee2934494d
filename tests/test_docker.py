"""The Compose stack, for real: start it from the images `make images` built (on base images
built here from Debian packages), predict on every strategy's port, and leave nothing
running, on every way out. Skipped, with the reason, when no Docker daemon is reachable."""

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from benchmark.compose import (
    Stack,
    build_environment,
    containerised_strategies,
    docker_unavailable,
)
from benchmark.modes import COMPOSE_PROJECT, configurations, expected_prediction
from benchmark.processes import wait_until_healthy
from benchmark.resources import DockerStatsSampler
from benchmark.tables import render_deployment
from clients import COFFEE, b64_json, many_requests, one_request, predict_request
from helpers import ROOT, compiled, plain_hosts
from serving_common.strategy import PYTHON_SERVICE_DOCKERFILE

UNAVAILABLE = docker_unavailable()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE)),
]
STRATEGIES = containerised_strategies()


def missing_images(stack: Stack) -> list[str]:
    images = [stack.image(name) for name in STRATEGIES]
    return [i for i in images if subprocess.run(["docker", "image", "inspect", i],
                                                capture_output=True).returncode != 0]  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    stack = Stack("model-serving-test", build_environment())
    missing = missing_images(stack)
    assert not missing, f"{missing} not built: `make images` builds them (make test does)"
    try:
        stack.check("up", "-d", "--no-build", timeout=900)
        yield stack
    finally:
        stack.down()


@pytest.mark.parametrize("service", sorted(STRATEGIES))
def test_service_answers_on_its_port(stack, service, artifacts):
    url = f"http://127.0.0.1:{STRATEGIES[service].port}"
    wait_until_healthy(url, timeout=300)
    image = ROOT / "images" / "coffee.jpg"
    response = httpx.post(
        url + "/predict/",
        content=image.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    # The compose job exported the demo weights, as `artifacts` holds them: the PyTorch
    # reference on those says what is right.
    assert response.json()["prediction"] == expected_prediction(artifacts, image)
    info = httpx.get(url + "/info", timeout=10).json()
    assert info["model_uri"].startswith("gs://models/weather/")


def test_images_are_small_non_root_and_healthchecked(stack):
    for service in STRATEGIES:
        config = stack.inspect_image(service, "{{json .Config}}")
        assert '"User":"65532:65532"' in config and '"Healthcheck"' in config, service
    # A strategy's own size bound, if any, is a test in its folder's tests/.


PYTHON_SERVICES = sorted(
    name
    for name, strategy in STRATEGIES.items()
    if strategy.docker and strategy.docker.dockerfile == PYTHON_SERVICE_DOCKERFILE
)
# In a Python service image: the strategy's manifest found from its installed package.
FIND_MANIFEST = """
import importlib, os, sys
from serving_common.strategy import load_strategy, strategy_folder
package = importlib.import_module(sys.argv[1])
print(load_strategy(strategy_folder(package.__file__)).name, os.environ.get("PYTHONPATH"))
"""


@pytest.mark.parametrize("service", PYTHON_SERVICES)
def test_python_image_installs_the_workspace_as_packages(stack, service):
    """docker/python-service.Dockerfile: the strategy's package, holding its manifest, in the
    venv (no source tree, no PYTHONPATH), and the venv first on a login shell's PATH too
    (KubeRay starts `ray start` through `bash -lc`)."""
    script = f"python -c '{FIND_MANIFEST}' {service}; command -v python; ls /app || echo no-app"
    output = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "bash", stack.image(service), "-lc", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert output.stdout.split() == [service, "None", "/opt/venv/bin/python", "no-app"], output


@pytest.mark.parametrize("service", sorted(STRATEGIES))
def test_stop_under_load_answers_every_request(stack, service):
    """`compose stop` (SIGTERM, then SIGKILL after stop_grace_period) 150 ms after 30
    requests were sent: every one is answered and the container exits 0."""
    port = STRATEGIES[service].port
    wait_until_healthy(f"http://127.0.0.1:{port}", timeout=300)
    request = predict_request(b64_json(COFFEE), "application/json")

    async def stop_under_load() -> list[int]:
        clients = [asyncio.create_task(one_request(port, request)) for _ in range(30)]
        await asyncio.sleep(0.15)
        await asyncio.to_thread(stack.check, "stop", service)
        return list(await asyncio.gather(*clients))

    try:
        statuses = asyncio.run(stop_under_load())
        container = stack.check("ps", "-aq", service).strip()
        exit_code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", container],
            capture_output=True,
            text=True,
        ).stdout.strip()
    finally:
        stack.check("start", service)
    assert statuses == [200] * 30, statuses
    assert exit_code == "0"


def test_docker_stats_sampler_reads_a_loaded_container(stack):
    """The sampler compose mode uses where container processes are out of the host's sight
    (Docker Desktop): CPU and memory of the container, from `docker stats`. On the smallest
    image's service: any would do, and that one is the cheapest to load."""
    service = min(STRATEGIES, key=stack.image_size_mb)
    port = STRATEGIES[service].port
    wait_until_healthy(f"http://127.0.0.1:{port}", timeout=300)
    request = predict_request(COFFEE, "image/jpeg")
    with DockerStatsSampler(stack.container_id(service)) as sampler:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            # Eight at a time: one client after another left it mostly idle when another
            # test took the other core (make test runs two pytests side by side).
            assert asyncio.run(many_requests(port, request, 8)) == [200] * 8
    summary = sampler.summary()
    assert summary["samples"] >= 2, summary
    assert summary["cpu_percent_peak"] > 5 and 10 < summary["rss_mb_peak"] < 2048, summary
    assert summary["method"].startswith("docker stats")


def test_down_leaves_nothing_running(stack):
    for strategy in STRATEGIES.values():
        wait_until_healthy(f"http://127.0.0.1:{strategy.port}", timeout=300)
    stack.down()
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == []


@pytest.mark.timeout(1500)
@pytest.mark.alone  # it loads every core
def test_harness_measures_the_containers(tmp_path, artifacts):
    """`benchmark.runner --mode compose` in quick mode, then the deployment table from it.
    Runs after the test stack is down: the harness brings up its own on the same ports.
    Two strategies, an interpreter's and a compiled binary's (with their variants): every
    image is started and asked above; here the harness's compose mode is what is tested."""
    measured = {plain_hosts()[0].name, compiled()[0].name}
    command = [sys.executable, "-m", "benchmark.runner", "--mode", "compose", "--plan", "quick"]
    command += ["--out", str(tmp_path), "--artifacts", str(artifacts)]
    command += ["--services", ",".join(sorted(measured))]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    finally:
        # Whatever happened to the harness, its stack goes (it removes it itself on SIGTERM).
        Stack(COMPOSE_PROJECT, build_environment()).down()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "compose-quick.json").read_text())
    selected = {name: STRATEGIES[name] for name in measured}
    assert set(record["deployment"]) == {key for key, _, _ in configurations(selected)}
    for name, deployment in record["deployment"].items():
        assert deployment["image_mb"] > 10, name
        service = record["services"][name]
        assert service["main"]["ab"]["non_2xx"] == 0 and service["startup"][0]["ready_seconds"] > 0
        assert service["runtime"]["runtime"], name
    table = render_deployment(record)
    assert all(f"| {name} |" in table for name in measured), table
