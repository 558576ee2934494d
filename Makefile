# The front door. `make bench` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
UV_VERSION := 0.13.8
VENV := .venv
RUN := $(VENV)/bin/
ARTIFACTS := artifacts
APT_PACKAGES := apache2-utils

.PHONY: setup setup-system setup-python export payloads images lint format test bench

setup: setup-system setup-python

# Debian packages, installed only when a command is missing (idempotent, fast when done).
setup-system:
	@command -v ab >/dev/null || { apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES); }

# uv, then the locked Python environment (a no-op in about a second when nothing changed).
setup-python:
	@command -v uv >/dev/null && [ "$$(uv --version | cut -d' ' -f2)" = "$(UV_VERSION)" ] \
		|| python3 -m pip install -q "uv==$(UV_VERSION)"
	uv sync --locked --all-packages --python 3.11 -q

# Demo model (or WEIGHTS=path|gs://... for a user's state_dict) -> $(ARTIFACTS)/
export: setup-python
	$(RUN)weather-export --out $(ARTIFACTS) $(if $(WEIGHTS),--state-dict $(WEIGHTS))

payloads: setup-python
	$(RUN)python -m benchmark.payloads --out $(ARTIFACTS)/payloads

# Re-derive the committed sample photos from scikit-image (only when changing them).
images: setup-python
	$(RUN)python images/derive_from_skimage.py

lint: setup-python
	$(RUN)ruff check .
	$(RUN)ruff format --check .

format: setup-python
	$(RUN)ruff format .
	$(RUN)ruff check --fix .

test: setup lint
	$(RUN)pytest

# The main job: demo model -> GCS emulator -> each service in turn under ab -> README tables.
bench: setup export
	$(RUN)python -m benchmark.runner $(BENCH_ARGS)
	$(RUN)python -m benchmark.report results/raw/native-full.json
