"""Startup, whatever hosts the service: its manifest, settings, the model download (sha256
checked against metadata.json) and the predictor, or one line naming what went wrong.

`serve.py` runs the result under uvicorn; another framework calls the same functions.
"""

import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from weather_model.storage import ArtifactError

from serving_common.metrics import Metrics
from serving_common.model_source import FetchedModel, fetch_model
from serving_common.predictor import LoadPredictor, Predictor
from serving_common.settings import ConfigError, Settings, load_settings
from serving_common.strategy import ManifestError, Strategy, load_strategy

log = logging.getLogger("serving")


class StartupError(RuntimeError):
    """Anything that stops a service from starting; the message is one line."""


@dataclass
class ServiceState:
    name: str
    settings: Settings
    model: FetchedModel
    predictor: Predictor
    load_seconds: float
    metrics: Metrics = field(default_factory=Metrics)


def fatal(service: str, message: object) -> NoReturn:
    print(f"{service}: fatal: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def import_predictor(path: str) -> LoadPredictor:
    """'package.module:Class' -> the class; imported late so that the main process of a
    multi-worker service never loads the runtime (torch alone is hundreds of MB)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def read_manifest(folder: Path) -> Strategy:
    try:
        return load_strategy(folder)
    except ManifestError as exc:
        raise StartupError(str(exc)) from None


def read_settings(strategy: Strategy) -> Settings:
    """Settings from the environment, the manifest's port as the default; logs them."""
    try:
        settings = load_settings(strategy.port)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info(
        "%s config: %s; credentials: %s",
        strategy.name,
        settings.model_dump(),
        credentials_source(),
    )
    return settings


def credentials_source() -> str:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return f"emulator at {os.environ['STORAGE_EMULATOR_HOST']}"
    if os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN"):
        return "CLOUDSDK_AUTH_ACCESS_TOKEN (redacted)"
    return "application default credentials"


def download_model(settings: Settings, cache: Path) -> FetchedModel:
    try:
        return fetch_model(settings.model_uri, cache)
    except ArtifactError as exc:
        raise StartupError(str(exc)) from None


def build_state(
    service: str, settings: Settings, model: FetchedModel, load: LoadPredictor
) -> ServiceState:
    started = time.perf_counter()
    try:
        predictor = load(model, settings)
    except Exception as exc:
        raise StartupError(f"{model.uri}: the runtime cannot load it ({exc})") from None
    seconds = time.perf_counter() - started
    log.info("model loaded in %.3f s", seconds)
    return ServiceState(service, settings, model, predictor, seconds)
