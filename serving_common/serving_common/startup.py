"""Startup, whatever hosts the service: its manifest, settings, the model download (sha256
checked against metadata.json) and the predictor, or one line naming what went wrong.

`serve.py` runs the result under uvicorn; a framework's launcher calls `prepare` in its main
process, hands the `Launch` to its workers (`handoff` / `Launch.from_handoff`), and each
worker calls `Launch.load`.
"""

import importlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image
from weather_model.storage import ArtifactError

from serving_common.images import ImageLimits
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

    @cached_property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.settings.max_image_pixels, self.settings.max_aspect_ratio)


@dataclass(frozen=True)
class Launch:
    """What a service's main process settles before any worker starts: the strategy, its
    settings and the downloaded model."""

    strategy: Strategy
    settings: Settings
    model: FetchedModel

    def load(self) -> ServiceState:
        """This process's predictor, warmed up; StartupError names what went wrong."""
        predictor = import_predictor(str(self.strategy.predictor))
        return build_state(self.strategy.name, self.settings, self.model, predictor)

    def handoff(self) -> str:
        """The launch as one string, for worker processes (an environment variable, an
        argument); the settings are re-read from the same environment there."""
        model = self.model
        return json.dumps(
            {
                "folder": str(self.strategy.folder),
                "uri": model.uri,
                "path": str(model.path),
                "metadata": model.metadata,
                "download_seconds": model.download_seconds,
            }
        )

    @classmethod
    def from_handoff(cls, text: str) -> "Launch":
        fields = json.loads(text)
        strategy = read_manifest(Path(fields["folder"]))
        model = FetchedModel(
            fields["uri"], Path(fields["path"]), fields["metadata"], fields["download_seconds"]
        )
        try:
            settings = load_settings(strategy.port)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        return cls(strategy, settings, model)


def prepare(folder: Path) -> Launch:
    """The main process's startup: manifest, settings (logged), the model downloaded once;
    any problem ends the process with one line naming it."""
    try:
        strategy = read_manifest(folder)
        if strategy.predictor is None:
            raise StartupError(f"{folder}/strategy.toml: `predictor` is not set")
    except StartupError as exc:
        fatal(folder.name, exc)
    try:
        settings = read_settings(strategy)
        cache = Path(tempfile.mkdtemp(prefix=f"{strategy.name}-model-"))
        return Launch(strategy, settings, download_model(settings, cache))
    except StartupError as exc:
        fatal(strategy.name, exc)
    except OSError as exc:  # a local file: the model cache, the temporary folder
        fatal(strategy.name, f"{exc.filename or 'local file'}: {exc.strerror or exc}")


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
    if os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"):
        return f"token file {os.environ['CLOUDSDK_AUTH_ACCESS_TOKEN_FILE']}"
    if os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN"):
        return "CLOUDSDK_AUTH_ACCESS_TOKEN (redacted)"
    return "application default credentials"


def download_model(settings: Settings, cache: Path) -> FetchedModel:
    try:
        return fetch_model(settings.model_uri, cache, settings.storage_timeout_seconds)
    except ArtifactError as exc:
        raise StartupError(str(exc)) from None


def build_state(
    service: str, settings: Settings, model: FetchedModel, load: LoadPredictor
) -> ServiceState:
    started = time.perf_counter()
    try:
        predictor = load(model, settings)
    except ConfigError as exc:  # a setting this predictor cannot honour: its own line
        raise StartupError(str(exc)) from None
    except Exception as exc:
        raise StartupError(f"{model.uri}: the runtime cannot load it ({exc})") from None
    seconds = time.perf_counter() - started
    log.info("model loaded in %.3f s", seconds)
    state = ServiceState(service, settings, model, predictor, seconds)
    warm_up(state)
    return state


def warm_up_image() -> bytes:
    """A 320x240 JPEG made here: colour gradients, so that nothing is read from disk."""
    columns = np.linspace(0, 255, 320, dtype=np.float32)
    rows = np.linspace(0, 255, 240, dtype=np.float32)[:, None]
    pixels = np.stack(
        np.broadcast_arrays(columns[None, :], rows, (columns[None, :] + rows) / 2), axis=-1
    ).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "JPEG", quality=90)
    return encoded.getvalue()


def warm_up(state: ServiceState) -> None:
    """One prediction before serving, through the same decode, preprocess and predict as a
    request: the first request is not the slow one, and a model whose output does not match
    metadata.json's labels stops the service here instead of answering wrongly."""
    started = time.perf_counter()
    try:
        decoded = state.predictor.decode(warm_up_image(), state.limits)
        output = np.asarray(state.predictor.predict([state.predictor.preprocess(decoded)]))
    except Exception as exc:
        raise StartupError(f"{state.model.uri}: the warm-up inference failed ({exc})") from None
    expected = (1, len(state.model.labels))
    if output.shape != expected:
        raise StartupError(
            f"{state.model.uri}: the warm-up inference gave output shape {list(output.shape)}; "
            f"expected {list(expected)}, one score per label of metadata.json"
        )
    if not np.isfinite(output).all():
        raise StartupError(f"{state.model.uri}: the warm-up inference gave non-finite scores")
    log.info("warm-up inference in %.3f s", time.perf_counter() - started)
