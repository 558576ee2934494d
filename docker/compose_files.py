"""Render docker-compose.yml, its two GCP overlays and .env.example from the manifests.

Each containerised strategy (a strategy.toml with a [docker] table) is a Compose service:
its image, port, model artifact, memory limit, /dev/shm size and health-check start period
come from its manifest, and so do the build arguments of the Python service Dockerfile
(docker/python-service.Dockerfile) for a strategy without a Dockerfile of its own. Its
variables are <PREFIX>_MODEL_URI and <PREFIX>_MEMORY_LIMIT ([docker] env_prefix).

Usage (`make render` writes, `make test` checks):
    python docker/compose_files.py           write the files
    python docker/compose_files.py --check   exit 1, naming each file that differs
"""

import argparse
import json
import shlex
import sys
import tomllib
from pathlib import Path

from serving_common.strategy import (
    PYTHON_SERVICE_DOCKERFILE,
    DockerSpec,
    Strategy,
    discover_strategies,
)
from weather_model.architectures import DEFAULT_ARCHITECTURE

ROOT = Path(__file__).resolve().parents[1]
# Where the Compose stack's export job uploads the model, and the services read it: the
# network MODEL names (weather_model/architectures.py; `make up MODEL=resnet50`).
MODEL_PREFIX = "gs://models/weather"
HEADER = """\
# Rendered by `make render` (docker/compose_files.py) from each strategy's strategy.toml; do
# not edit: change the manifest ([docker]) or docker/compose_files.py, then `make render`.
"""

COMPOSE_HEAD = """\
# One service per containerised strategy, a local GCS emulator and a one-shot job that
# exports the demo model into it (MODEL names the network, e.g. MODEL=resnet50):
# docker/build-images.sh, then `docker compose up` (or docker-compose), then `ab` against
# each port. Against real Google Cloud Storage, see .env.example.
#
# Base images are build arguments whose defaults are the public images; machines without
# a registry build them locally with docker/build-base-images.sh (`make up` does).

# BUILD_IMAGE, the Python Dockerfiles' build stage (uv, the workspace manifests, uv.lock), is
# built first from docker/python-build.Dockerfile: docker/build-images.sh builds it, then
# these services; `docker/build-images.sh --print-build-args` prints the variables below.
x-build-args: &build-args
  PYTHON_IMAGE: ${PYTHON_IMAGE:-python:3.11-slim}
  BUILD_IMAGE: ${BUILD_IMAGE:-model-serving/python-build}
  RUST_IMAGE: ${RUST_IMAGE:-rust:1-slim-trixie}
  RUNTIME_IMAGE: ${RUNTIME_IMAGE:-gcr.io/distroless/cc-debian13}
  TORCH_INDEX_URL: ${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

x-service-env: &service-env
  STORAGE_EMULATOR_HOST: ${STORAGE_EMULATOR_HOST-http://gcs:9023}
  WORKERS: ${WORKERS:-1}
  INTRA_OP_THREADS: ${INTRA_OP_THREADS:-1}
  INTER_OP_THREADS: ${INTER_OP_THREADS:-1}
  LOG_LEVEL: ${LOG_LEVEL:-info}
  # The framework strategies' dynamic batching (contract/README.md); the others ignore it.
  MAX_BATCH_SIZE: ${MAX_BATCH_SIZE:-1}
  BATCH_WAIT_MS: ${BATCH_WAIT_MS:-5}

# What every serving container shares: its CPU budget; restarted if it dies (a crash, the
# memory limit), never if stopped; SIGKILL only after the services' 30 s drain of in-flight
# requests. Memory limits (per service, below) leave headroom over the peak measured with
# the default limits (docs/hosts.md, "Memory, and the Compose limits").
x-serving: &serving
  cpus: ${SERVICE_CPUS:-1}
  cpuset: "${SERVICE_CPUSET:-}"
  restart: unless-stopped
  stop_grace_period: 40s

services:
  gcs:
    build: {context: ., dockerfile: docker/gcs.Dockerfile, network: host, args: *build-args}
    image: model-serving/gcs
    pull_policy: build

  model:
    build:
      context: .
      dockerfile: docker/exporter.Dockerfile
      network: host
      args:
        <<: *build-args
        # The dependencies its image starts from, shared with that strategy's image.
        PACKAGE: {exporter_base}
    image: model-serving/exporter
    pull_policy: build
    command: ["--model", "${MODEL:-{default_model}}", "--upload", "{model_prefix}"]
    environment:
      STORAGE_EMULATOR_HOST: http://gcs:9023
    depends_on:
      gcs: {condition: service_healthy}
"""

GCP_KEY_HEAD = """\
# Real Google Cloud Storage instead of the emulator, with a service-account key as a
# Compose secret (a file mounted at /run/secrets/, never an environment variable, a build
# argument or an image layer):
#
#   cp .env.example .env   # set the model URIs and GCP_CREDENTIALS_FILE
#   docker compose -f docker-compose.yml -f docker-compose.gcp.yml up
#
# With a short-lived access token instead of a key, use docker-compose.gcp-token.yml.
# The emulator and the demo export job still start (the services wait for them) but the
# services no longer read from them.
x-gcp: &gcp
  secrets: [gcp_credentials]
  environment:
    STORAGE_EMULATOR_HOST: ""
    GOOGLE_APPLICATION_CREDENTIALS: /run/secrets/gcp_credentials
"""
GCP_KEY_SECRET = """\
secrets:
  gcp_credentials:
    file: ${GCP_CREDENTIALS_FILE:?set GCP_CREDENTIALS_FILE in .env to a service-account key file}
"""

GCP_TOKEN_HEAD = """\
# Real Google Cloud Storage with a short-lived access token, as a Compose secret (a file
# mounted at /run/secrets/; an environment variable would show in `docker inspect`):
#
#   gcloud auth print-access-token > gcs-token   # valid for about an hour
#   GCP_TOKEN_FILE=gcs-token docker compose -f docker-compose.yml -f docker-compose.gcp-token.yml up
#
# The services read it through CLOUDSDK_AUTH_ACCESS_TOKEN_FILE (contract/README.md).
x-gcp: &gcp
  secrets: [gcp_token]
  environment:
    STORAGE_EMULATOR_HOST: ""
    CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: /run/secrets/gcp_token
"""
GCP_TOKEN_SECRET = """\
secrets:
  gcp_token:
    file: ${GCP_TOKEN_FILE:?set GCP_TOKEN_FILE to a file holding an access token}
"""

ENV_HEAD = """\
# Copy to .env for `docker compose` against real Google Cloud Storage (docker-compose.gcp.yml).
# Each service pulls its model at startup; metadata.json must sit next to the model file
# (`make export WEIGHTS=...` then upload artifacts/<model>/, or `weather-export --upload gs://...`).
"""
ENV_MIDDLE = """
# A service-account key file on this machine, mounted into the services as a Compose secret.
GCP_CREDENTIALS_FILE=/path/to/service-account.json

# Alternatively a file holding a short-lived token (`gcloud auth print-access-token > f`),
# mounted as a secret by docker-compose.gcp-token.yml instead of docker-compose.gcp.yml.
# GCP_TOKEN_FILE=/path/to/token

# Cores per service container, workers and threads per service.
SERVICE_CPUS=1
# Memory limit per service container (Compose syntax: 1500m, 2g), over the measured peak.
"""
ENV_TAIL = """\
WORKERS=1
INTRA_OP_THREADS=1
INTER_OP_THREADS=1
# The framework strategies' dynamic batching: 1 = off.
MAX_BATCH_SIZE=1
BATCH_WAIT_MS=5
"""


def quote(value: str) -> str:
    """A YAML double-quoted scalar (JSON's syntax), with Compose's `$` escaped."""
    return json.dumps(value.replace("$", "$$"))


def package_name(strategy: Strategy) -> str:
    """The project name in the strategy's pyproject.toml (what uv.lock knows it as)."""
    path = strategy.folder / "pyproject.toml"
    return str(tomllib.loads(path.read_text())["project"]["name"])


def service_build_args(strategy: Strategy, docker: DockerSpec) -> dict[str, str]:
    """The python-service Dockerfile's build arguments, from the manifest."""
    return {
        "STRATEGY": strategy.name,
        "PACKAGE": package_name(strategy),
        "PORT": str(strategy.port),
        "COMMAND": shlex.join(strategy.run),
        "COMPILE_BYTECODE": "1" if docker.compile_bytecode else "0",
        "HOME_DIR": docker.home,
    }


def render_service(strategy: Strategy, root: Path) -> str:
    docker = strategy.docker
    assert docker is not None
    shared = docker.dockerfile == PYTHON_SERVICE_DOCKERFILE
    dockerfile = (
        Path("docker", PYTHON_SERVICE_DOCKERFILE.name)
        if shared
        else docker.dockerfile.relative_to(root)
    )
    lines = [
        f"  {strategy.name}:",
        "    build:",
        "      context: .",
        f"      dockerfile: {dockerfile.as_posix()}",
    ]
    if docker.target:
        lines.append(f"      target: {docker.target}")
    lines.append("      network: host")
    if shared:
        lines += ["      args:", "        <<: *build-args"]
        args = service_build_args(strategy, docker)
        lines += [f"        {key}: {quote(value)}" for key, value in args.items()]
    else:
        lines.append("      args: *build-args")
    prefix, port = docker.env_prefix, strategy.port
    lines += [
        f"    image: {docker.image}",
        "    pull_policy: build",
        f'    ports: ["{port}:{port}"]',
        "    <<: *serving",
        f"    mem_limit: ${{{prefix}_MEMORY_LIMIT:-{docker.memory_limit}}}",
    ]
    if docker.shm_size:
        lines.append(f"    shm_size: {docker.shm_size}")
    if shared:
        # The Dockerfile's HEALTHCHECK cannot take a build argument: its start period here.
        lines.append(f"    healthcheck: {{start_period: {docker.start_period}s}}")
    lines += [
        "    environment:",
        "      <<: *service-env",
        f"      MODEL_URI: ${{{prefix}_MODEL_URI:-{MODEL_PREFIX}/{strategy.model_file}}}",
        "    depends_on:",
        "      model: {condition: service_completed_successfully}",
    ]
    return "\n".join(lines) + "\n"


def render(root: Path = ROOT) -> dict[str, str]:
    """Each rendered file's path under `root` -> its text."""
    strategies = [s for s in discover_strategies([root]).values() if s.docker is not None]
    bases = [s for s in strategies if s.docker is not None and s.docker.exporter_base]
    if len(bases) > 1:
        sys.exit(f"more than one strategy sets [docker] exporter_base: {[s.name for s in bases]}")
    # Without one, the export job installs the model package's own dependencies first.
    exporter_base = package_name(bases[0]) if bases else "weather-model"
    head = (
        COMPOSE_HEAD.replace("{exporter_base}", quote(exporter_base))
        .replace("{default_model}", DEFAULT_ARCHITECTURE)
        .replace("{model_prefix}", MODEL_PREFIX)
    )
    services = "".join("\n" + render_service(s, root) for s in strategies)
    overlay = "".join(f"  {s.name}: *gcp\n" for s in strategies)
    prefixes = [(s.docker.env_prefix, s) for s in strategies if s.docker is not None]
    uris = "".join(f"{p}_MODEL_URI=gs://your-bucket/weather/{s.model_file}\n" for p, s in prefixes)
    limits = "".join(f"{p}_MEMORY_LIMIT={s.docker.memory_limit}\n" for p, s in prefixes if s.docker)
    return {
        "docker-compose.yml": HEADER + head + services,
        "docker-compose.gcp.yml": HEADER + GCP_KEY_HEAD + "\nservices:\n" + overlay + "\n"
        + GCP_KEY_SECRET,
        "docker-compose.gcp-token.yml": HEADER + GCP_TOKEN_HEAD + "\nservices:\n" + overlay
        + "\n" + GCP_TOKEN_SECRET,
        ".env.example": HEADER + ENV_HEAD + uris + ENV_MIDDLE + limits + ENV_TAIL,
    }  # fmt: skip


def stale(root: Path = ROOT) -> list[str]:
    """The rendered files whose committed text differs from a fresh render."""
    return [
        name
        for name, text in render(root).items()
        if not (root / name).is_file() or (root / name).read_text() != text
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: here)")
    args = parser.parse_args()
    if args.check:
        differ = stale(args.root)
        for name in differ:
            print(f"{name} differs from its render: run `make render`", file=sys.stderr)
        sys.exit(1 if differ else 0)
    for name, text in render(args.root).items():
        (args.root / name).write_text(text)


if __name__ == "__main__":
    main()
