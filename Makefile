# The front door. `make bench` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
# uv's one pin is `required-version` in pyproject.toml.
UV_VERSION := $(shell sed -n 's/^required-version = "==\(.*\)"/\1/p' pyproject.toml)
VENV := .venv
RUN := $(VENV)/bin/
# Rust crates that are tools, not services (a strategy's own checker, built by the test that
# runs it), found by glob two or three folders deep: formatted and clippy-clean in the dev
# profile their tests build. A strategy's own crate lints itself (its strategy.mk).
RUST_TOOLS = $(filter-out %/target/%,$(patsubst %/Cargo.toml,%,$(wildcard */*/Cargo.toml */*/*/Cargo.toml)))
# The ONNX Runtime library of the pinned onnxruntime wheel (libonnxruntime.so.<version> on
# Linux, libonnxruntime.<version>.dylib on macOS), for a compiled service that loads the very
# build the Python services run (ort's load-dynamic), and its platform's file name.
ORT_CAPI := $(VENV)/lib/python3.11/site-packages/onnxruntime/capi
ORT_LIB = $(firstword $(wildcard $(ORT_CAPI)/libonnxruntime.so.* $(ORT_CAPI)/libonnxruntime.*.dylib))
ORT_LIB_NAME := libonnxruntime$(if $(filter Darwin,$(shell uname -s)),.dylib,.so)
# The network `make export`, `make up` and the strategies' own tests use: one of
# weather_model/architectures.py's, each exported to a folder of its own name
# (`make export MODEL=resnet50`). The default is architectures.py's (tests/test_layout.py).
DEFAULT_MODEL := mobilenet_v3_small
MODEL := $(DEFAULT_MODEL)
ARTIFACTS := artifacts/$(MODEL)

# A strategy with build steps of its own (a compiled service) writes them in its folder's
# strategy.mk, and adds its targets to these lists: `make setup`, `lint`, `format` and `test`
# run them. The Makefile names no strategy.
STRATEGY_SETUP :=
STRATEGY_LINT :=
STRATEGY_FORMAT :=
STRATEGY_TEST :=
include $(wildcard */strategy.mk)

.PHONY: render report readme setup setup-system setup-python setup-strategies setup-tools export payloads sample-images images images-background images-wait test-strategies lint lint-python format test test-fast bench bench-compose bench-cluster up down up-cluster down-cluster

setup: setup-system setup-python setup-strategies setup-tools

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

# Each strategy's own build (strategy.mk; e.g. a release binary), incremental: fast when built.
setup-strategies: $(STRATEGY_SETUP)

# oha, the open-loop load generator, built from crates.io into .tools/ (once).
OHA_VERSION := 1.16.0
setup-tools: setup-system
	@.tools/bin/oha --version 2>/dev/null | grep -q "$(OHA_VERSION)" \
		|| cargo install --locked --quiet oha --version $(OHA_VERSION) --root .tools

# Demo weights of MODEL (or WEIGHTS=path|gs://... for a user's state_dict) -> $(ARTIFACTS)/
export: setup-python
	$(RUN)weather-export --model $(MODEL) --out $(ARTIFACTS) $(if $(WEIGHTS),--state-dict $(WEIGHTS))

payloads: setup-python
	$(RUN)python -m benchmark.payloads --out artifacts/payloads

# Re-derive the committed sample photos from scikit-image (only when changing them).
sample-images: setup-python
	$(RUN)python images/derive_from_skimage.py

# Every Docker image: base images from Debian packages, the shared Python build image, each
# Compose service. Set-up, not a test: it prints its progress, and is fast once built.
images:
	docker/build-images.sh

# `make test` builds the images where a Docker daemon answers (elsewhere the Docker tests
# skip, saying why), in the background while it sets up, lints and runs the Rust tests.
# The build's exit status lands in IMAGES_STATUS.
IMAGES_STATUS := .images-status
images-background:
	@rm -f $(IMAGES_STATUS); if docker info >/dev/null 2>&1; then \
		(docker/build-images.sh; echo $$? > $(IMAGES_STATUS)) & \
	else echo "no Docker daemon: images not built, the Docker tests will skip"; \
		echo 0 > $(IMAGES_STATUS); fi

images-wait:
	@echo "waiting for docker/build-images.sh"; while [ ! -f $(IMAGES_STATUS) ]; do sleep 2; done; \
		status=$$(cat $(IMAGES_STATUS)); rm -f $(IMAGES_STATUS); exit $$status

# Everything: the Python code, each strategy's own (strategy.mk), the Rust tools.
lint: lint-python $(STRATEGY_LINT)
	@for crate in $(RUST_TOOLS); do set -x; \
		cargo fmt --manifest-path $$crate/Cargo.toml --check && \
		cargo clippy --locked --quiet --manifest-path $$crate/Cargo.toml --all-targets -- -D warnings \
		|| exit 1; done

lint-python: setup-python
	$(RUN)ruff check .
	$(RUN)ruff format --check .
	$(RUN)mypy

format: setup-python $(STRATEGY_FORMAT)
	$(RUN)ruff format .
	$(RUN)ruff check --fix .
	@for crate in $(RUST_TOOLS); do set -x; cargo fmt --manifest-path $$crate/Cargo.toml || exit 1; done

# Sub-makes, in order: ORT_LIB exists only once `setup` has run. `-j2 setup` builds oha
# while uv downloads PyTorch. The unit tier (in-process: no timing bound) runs while the
# images finish; the other tiers once they are built, in two pytests side by side, then
# the tests that load every core or bound their own timing with nothing beside them
# (scripts/test-tiers.sh says why).
test: setup-system
	@$(MAKE) --no-print-directory images-background
	@$(MAKE) --no-print-directory -j2 setup
	@$(MAKE) --no-print-directory lint export
	@$(MAKE) --no-print-directory test-strategies
	$(RUN)pytest -m unit
	@$(MAKE) --no-print-directory images-wait
	scripts/test-tiers.sh $(RUN)pytest

# The quick tier, under 5 minutes: the unit tests (in-process; conftest.py says what is
# one) and the contract suite against one Python strategy, no Rust build and no image: the
# first plain host of the shared predictor (tests/helpers.py, fast_selection).
# After `make setup-python`; `make test` is everything, what CI runs.
FAST_SELECTION = $$(PYTHONPATH=tests $(RUN)python -c 'import helpers; print(helpers.fast_selection())')
test-fast: setup-python
	$(RUN)pytest -m unit
	$(RUN)pytest -m service tests/test_contract.py -k "$(FAST_SELECTION)"

# Each strategy's own test command (strategy.mk; e.g. cargo test), after `make export`.
test-strategies: $(STRATEGY_TEST)

# The files written from the manifests, the strategy folders and contract/errors.json,
# committed and checked equal to a fresh render by `make test` (tests/test_layout.py): the uv
# workspace's members, the Compose files and .env.example, the Python error types. Run it
# after adding, renaming or removing a strategy, or editing a manifest or the error table.
# Standard library only (no `make setup` needed): a new strategy is rendered before `uv lock`.
RENDER := PYTHONPATH=model:serving_common python3
render:
	$(RENDER) scripts/workspace_members.py
	$(RENDER) docker/compose_files.py
	$(RENDER) -m serving_common.render_errors

# Everything rendered from the manifests and the raw results (results/*/), re-rendered: the
# README's strategy table and headline and docs/results.md (benchmark.report), then the
# results page, results/index.html, one static file with every machine's tables and plots
# (benchmark.page). All committed.
report: setup-python
	$(RUN)python -m benchmark.report
	$(RUN)python -m benchmark.page

# The former name of `make report`.
readme: report

# The main job: demo model -> GCS emulator -> each service in turn under ab, then every
# preprocessing variant against the PyTorch reference on the fidelity set -> `make report`.
# SHORT=1: a first look in about 5 minutes (fewer requests and repeats, marked as such).
# MODEL=resnet50: the second network, its results in results/<machine>/resnet50/; its
# fidelity step counts no instructions (under callgrind one of its requests takes minutes,
# and the count runs 24 of them: more than 6 minutes, unfinished, on an AMD EPYC VM).
# PLAN=overload: the overload phase alone (docs/overload.md).
PLAN := $(if $(SHORT),short,full)
bench: setup export
	$(RUN)python -m benchmark.runner --plan $(PLAN) --artifacts $(ARTIFACTS) $(BENCH_ARGS)
	$(RUN)python -m benchmark.fidelity --artifacts $(ARTIFACTS) $(if $(SHORT),--seconds 2) \
		$(if $(filter-out $(DEFAULT_MODEL),$(MODEL)),--no-instructions)
	@$(MAKE) --no-print-directory report

# The same measurements on the containers, plus image sizes and container start times.
bench-compose: setup export
	$(RUN)python -m benchmark.runner --mode compose --plan $(PLAN) --artifacts $(ARTIFACTS) $(BENCH_ARGS)
	@$(MAKE) --no-print-directory report

# Each strategy that declares a cluster scenario in its manifest ([scenarios.cluster]):
# its single-node container, then its cluster as the scenario says (docs/ray-cluster.md).
bench-cluster: setup export
	$(RUN)python -m benchmark.runner --mode cluster --plan $(PLAN) --artifacts $(ARTIFACTS) $(BENCH_ARGS)
	@$(MAKE) --no-print-directory report

# The Compose stack, on base images built here from Debian packages on Linux (no registry
# needed), the public ones elsewhere (docker/build-images.sh, BASE_IMAGES).
# Where PyTorch's CPU index is unreachable: make up TORCH_INDEX_URL=https://pypi.org/simple
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
up: images
	env $$(docker/build-images.sh --print-build-args) $(COMPOSE) up --detach
	$(COMPOSE) ps

down:
	$(COMPOSE) down --volumes --remove-orphans

# The multi-node cluster a strategy declares in its manifest ([scenarios.cluster];
# docs/ray-cluster.md), a Compose project of its own, ready once its one published port answers
# GET / (benchmark/benchmark/scenario.py). CLUSTER_STRATEGY=name where several declare one.
CLUSTER_PORT ?= 8086
CLUSTER_ARGS = $(if $(CLUSTER_STRATEGY),--strategy $(CLUSTER_STRATEGY))
up-cluster: images setup-python
	$(RUN)python -m benchmark.scenario up --port $(CLUSTER_PORT) $(CLUSTER_ARGS)

down-cluster: setup-python
	$(RUN)python -m benchmark.scenario down $(CLUSTER_ARGS)
