"""Fetching a model and its metadata from MODEL_URI, checked against the metadata's sha256."""

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from weather_model.contract import METADATA_FILE
from weather_model.metadata import ContractError, ModelContract, read_contract
from weather_model.storage import (
    DOWNLOAD_DEADLINE_SECONDS,
    ArtifactError,
    Deadline,
    is_gcs_uri,
    read_artifact,
    sibling_uri,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedModel:
    uri: str  # as configured
    path: Path  # local file the runtime loads
    metadata: dict[str, Any]
    download_seconds: float

    @cached_property
    def contract(self) -> ModelContract:
        """The model's architecture, labels and preprocessing (checked by `fetch_model`)."""
        return read_contract(self.metadata)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def graph(self) -> dict[str, Any]:
        """An ONNX model's interface from metadata.json: input and output names and shapes."""
        return self.metadata["graphs"][self.path.name]  # type: ignore[no-any-return]

    @property
    def sha256(self) -> str:
        return self.metadata["artifacts"][self.path.name]["sha256"]


def fetch_model(
    uri: str, cache_dir: Path, timeout_seconds: float = DOWNLOAD_DEADLINE_SECONDS
) -> FetchedModel:
    """Read the model and metadata.json beside it, both within `timeout_seconds` of the
    start; copy gs:// objects into `cache_dir`."""
    started = time.perf_counter()
    metadata_uri = sibling_uri(uri, METADATA_FILE)
    deadline = Deadline.after(timeout_seconds)
    model_bytes = read_artifact(uri, deadline)
    metadata_bytes = read_artifact(metadata_uri, deadline)
    try:
        metadata = json.loads(metadata_bytes)
        artifacts = metadata["artifacts"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(
            f"{metadata_uri}: not the metadata.json written by weather-export"
        ) from None
    name = Path(uri).name
    if name not in artifacts:
        raise ArtifactError(f"{uri}: {name} is not listed in {metadata_uri}")
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != artifacts[name]["sha256"]:
        raise ArtifactError(
            f"{uri}: sha256 {actual[:12]}… differs from metadata.json (corrupt or mismatched)"
        )
    if name.endswith(".onnx") and name not in metadata.get("graphs", {}):
        raise ArtifactError(f"{uri}: {name} has no graph entry in {metadata_uri}")
    try:
        read_contract(metadata)
    except ContractError as exc:
        raise ArtifactError(f"{metadata_uri}: {exc}") from None
    path = Path(uri)
    if is_gcs_uri(uri):
        path = cache_dir / name
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(model_bytes)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot write the model cache ({exc.strerror})") from None
    seconds = time.perf_counter() - started
    log.info("model fetched from %s (%d bytes) in %.3f s", uri, len(model_bytes), seconds)
    return FetchedModel(uri, path, metadata, seconds)
