# The front door. `make bench` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
# uv's one pin is `required-version` in pyproject.toml.
UV_VERSION := $(shell sed -n 's/^required-version = "==\(.*\)"/\1/p' pyproject.toml)
VENV := .venv
RUN := $(VENV)/bin/
RUST := rust_onnx_serving
RUST_BIN := $(RUST)/target/release/rust_onnx_serving
# k8s/rayservice.yaml's RayService against KubeRay's types (tests/test_kuberay_manifest.py).
KUBERAY_CHECK := k8s/check
# The ONNX Runtime library of the pinned onnxruntime wheel (libonnxruntime.so.<version> on
# Linux, libonnxruntime.<version>.dylib on macOS): the Rust service loads the very build the
# Python service runs (ort's load-dynamic), found next to its binary under the platform's
# name for it, libonnxruntime.so or libonnxruntime.dylib (rust_onnx_serving/src/main.rs).
ORT_CAPI := $(VENV)/lib/python3.11/site-packages/onnxruntime/capi
ORT_LIB = $(firstword $(wildcard $(ORT_CAPI)/libonnxruntime.so.* $(ORT_CAPI)/libonnxruntime.*.dylib))
ORT_BESIDE_BINARY := $(RUST)/target/release/libonnxruntime$(if $(filter Darwin,$(shell uname -s)),.dylib,.so)
ARTIFACTS := artifacts

.PHONY: readme setup setup-system setup-python setup-rust setup-tools export payloads sample-images images images-background images-wait test-rust lint format test bench bench-compose bench-cluster up down up-ray down-ray

setup: setup-system setup-python setup-rust setup-tools

# The system commands (ab, cmake, nasm on x86-64, debootstrap on Linux), installed only when
# one is missing, with apt-get or else Homebrew (idempotent, fast when done).
setup-system:
	@scripts/install-system-packages.sh

# uv, then the locked Python environment (a no-op in about a second when nothing changed).
setup-python:
	@command -v uv >/dev/null && [ "$$(uv --version | cut -d' ' -f2)" = "$(UV_VERSION)" ] \
		|| python3 -m pip install -q "uv==$(UV_VERSION)" \
		|| { echo "setup: install uv $(UV_VERSION) (e.g. pipx install uv==$(UV_VERSION)) and run make again" >&2; exit 1; }
	uv sync --locked --all-packages --python 3.11 -q

# The Rust release binary with the ONNX Runtime library beside it, and the KubeRay checker
# (incremental: fast when built). The checker in the dev profile: KubeRay's generated types
# take half the CPU time there that they take optimised, and it reads one small file.
setup-rust: setup-system setup-python
	cargo build --release --locked --quiet --manifest-path $(RUST)/Cargo.toml
	@cmp -s $(ORT_LIB) $(ORT_BESIDE_BINARY) || cp $(ORT_LIB) $(ORT_BESIDE_BINARY)
	cargo build --locked --quiet --manifest-path $(KUBERAY_CHECK)/Cargo.toml

# oha, the open-loop load generator, built from crates.io into .tools/ (once).
OHA_VERSION := 1.16.0
setup-tools: setup-system
	@.tools/bin/oha --version 2>/dev/null | grep -q "$(OHA_VERSION)" \
		|| cargo install --locked --quiet oha --version $(OHA_VERSION) --root .tools

# Demo model (or WEIGHTS=path|gs://... for a user's state_dict) -> $(ARTIFACTS)/
export: setup-python
	$(RUN)weather-export --out $(ARTIFACTS) $(if $(WEIGHTS),--state-dict $(WEIGHTS))

payloads: setup-python
	$(RUN)python -m benchmark.payloads --out $(ARTIFACTS)/payloads

# Re-derive the committed sample photos from scikit-image (only when changing them).
sample-images: setup-python
	$(RUN)python images/derive_from_skimage.py

# Every Docker image: base images from Debian packages, the shared Python build image, each
# Compose service. Set-up, not a test: it prints its progress, and is fast once built.
images:
	docker/build-images.sh

# `make test` builds the images where a Docker daemon answers (elsewhere the Docker tests
# skip, saying why), in the background while it sets up, lints and runs the Rust tests: the
# image builds wait mostly on downloads, the native steps on the CPU. pytest starts once
# the images are built; their exit status lands in IMAGES_STATUS.
IMAGES_STATUS := .images-status
images-background:
	@rm -f $(IMAGES_STATUS); if docker info >/dev/null 2>&1; then \
		(docker/build-images.sh; echo $$? > $(IMAGES_STATUS)) & \
	else echo "no Docker daemon: images not built, the Docker tests will skip"; \
		echo 0 > $(IMAGES_STATUS); fi

images-wait:
	@echo "waiting for docker/build-images.sh"; while [ ! -f $(IMAGES_STATUS) ]; do sleep 2; done; \
		status=$$(cat $(IMAGES_STATUS)); rm -f $(IMAGES_STATUS); exit $$status

lint: setup-python
	$(RUN)ruff check .
	$(RUN)ruff format --check .
	$(RUN)mypy
	cargo fmt --manifest-path $(RUST)/Cargo.toml --check
	cargo clippy --release --locked --quiet --manifest-path $(RUST)/Cargo.toml --all-targets -- -D warnings
	cargo fmt --manifest-path $(KUBERAY_CHECK)/Cargo.toml --check
	cargo clippy --locked --quiet --manifest-path $(KUBERAY_CHECK)/Cargo.toml --all-targets -- -D warnings

format: setup-python
	$(RUN)ruff format .
	$(RUN)ruff check --fix .
	cargo fmt --manifest-path $(RUST)/Cargo.toml
	cargo fmt --manifest-path $(KUBERAY_CHECK)/Cargo.toml

# Sub-makes, in order: ORT_LIB exists only once `setup` has run. `-j2 setup` builds oha
# while uv downloads PyTorch.
test: setup-system
	@$(MAKE) --no-print-directory images-background
	@$(MAKE) --no-print-directory -j2 setup
	@$(MAKE) --no-print-directory lint export
	@$(MAKE) --no-print-directory test-rust
	@$(MAKE) --no-print-directory images-wait
	$(RUN)pytest

test-rust:
	MODEL_URI=$(abspath $(ARTIFACTS))/$$($(RUN)python -m serving_common.strategy $(RUST) model_file) \
		ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) cargo test --release --locked --manifest-path $(RUST)/Cargo.toml

# The README's strategy table and results (every machine's, from results/*/), re-rendered.
readme: setup-python
	$(RUN)python -m benchmark.report

# The main job: demo model -> GCS emulator -> each service in turn under ab, then every
# preprocessing variant against the PyTorch reference on the fidelity set -> README tables.
# SHORT=1: a first look in about 5 minutes (fewer requests and repeats, marked as such).
PLAN := $(if $(SHORT),short,full)
bench: setup export
	$(RUN)python -m benchmark.runner --plan $(PLAN) $(BENCH_ARGS)
	$(RUN)python -m benchmark.fidelity $(if $(SHORT),--seconds 2)
	$(RUN)python -m benchmark.report

# The same measurements on the containers, plus image sizes and container start times.
bench-compose: setup export
	$(RUN)python -m benchmark.runner --mode compose --plan $(PLAN) $(BENCH_ARGS)
	$(RUN)python -m benchmark.report

# ray_serving on the Ray cluster of docker-compose.ray.yml with 1, 2 and 3 replicas, against
# its single-node container, then a worker killed under load (README, "A Ray cluster").
bench-cluster: setup export
	$(RUN)python -m benchmark.runner --mode cluster --plan $(PLAN) $(BENCH_ARGS)
	$(RUN)python -m benchmark.report

# The Compose stack, on base images built here from Debian packages on Linux (no registry
# needed), the public ones elsewhere (docker/build-images.sh, BASE_IMAGES).
# Where PyTorch's CPU index is unreachable: make up TORCH_INDEX_URL=https://pypi.org/simple
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
up: images
	env $$(docker/build-images.sh --print-build-args) $(COMPOSE) up --detach
	$(COMPOSE) ps

down:
	$(COMPOSE) down --volumes --remove-orphans

# ray_serving on a multi-node Ray cluster (README, "A Ray cluster"): a head and two worker
# nodes as containers (docker-compose.ray.yml, a Compose project of its own), ready once the
# head's one published port answers GET /.
RAY_CLUSTER_PORT ?= 8086
RAY_COMPOSE = $(COMPOSE) -p model-serving-ray -f docker-compose.ray.yml
up-ray: images setup-python
	env $$(docker/build-images.sh --print-build-args) RAY_CLUSTER_PORT=$(RAY_CLUSTER_PORT) \
		$(RAY_COMPOSE) up --detach --no-build
	$(RUN)python -c "from benchmark.processes import wait_until_healthy; \
		wait_until_healthy('http://127.0.0.1:$(RAY_CLUSTER_PORT)', timeout=600)"
	$(RAY_COMPOSE) ps
	@echo "ready: http://127.0.0.1:$(RAY_CLUSTER_PORT)/predict/"

down-ray:
	$(RAY_COMPOSE) down --volumes --remove-orphans
