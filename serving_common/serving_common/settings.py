"""Service configuration: one typed object read from the environment once, at startup."""

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(ValueError):
    """Invalid configuration; the message is one line naming the variable."""


class Settings(BaseSettings):
    """Environment variables shared by every service (contract/README.md); the last four
    only matter to some, as their comments say."""

    model_config = SettingsConfigDict(protected_namespaces=(), extra="ignore")

    model_uri: str = Field(min_length=1, description="gs://bucket/object or a local path")
    port: int = Field(ge=1, le=65535, description="default: the strategy's manifest")
    workers: int = Field(1, ge=1, le=256)
    intra_op_threads: int = Field(1, ge=1, le=256)
    inter_op_threads: int = Field(1, ge=1, le=256)
    max_body_bytes: int = Field(10_000_000, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_aspect_ratio: int = Field(20, ge=1)
    # Per worker process: in flight or queued, counted from when the headers are read.
    max_pending_requests: int = Field(64, ge=1)
    # Per worker process: 503s answered a second at most under a flood; the rest wait their
    # turn, at most 2 s (protocol.RefusalPacer). 0 = every refusal at once.
    refusals_per_second: int = Field(100, ge=0)
    body_timeout_seconds: int = Field(30, ge=1)
    storage_timeout_seconds: int = Field(60, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The ONNX services only: JPEGs decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
    # where the shorter side stays at least the resize size (weather_model.crop).
    jpeg_dct_scaling: bool = False
    # The ONNX services with the fixed graph only: what resizes the crop region. Pillow by
    # default: the only resize that keeps to the fidelity bound (docs/preprocessing.md);
    # "simd" (fast_image_resize) is faster and misses it narrowly. The Rust service reads
    # the same setting (src/config.rs).
    resizer: Literal["pillow", "simd"] = "pillow"
    # The framework strategies only (a manifest's `framework`, with `[variants.batched]`):
    # dynamic batching. Up to MAX_BATCH_SIZE requests run as one inference; the first of a
    # batch waits at most BATCH_WAIT_MS for others to join (BentoML has no such window).
    # 1 = no batching (the default, as in the services that do not batch).
    max_batch_size: int = Field(1, ge=1, le=256)
    batch_wait_ms: float = Field(5.0, ge=0, le=1000)

    @field_validator("log_level", "resizer", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def load_settings(default_port: int, **overrides: object) -> Settings:
    """Settings from the environment, or one ConfigError line saying what is wrong."""

    class ServiceSettings(Settings):
        port: int = Field(default_port, ge=1, le=65535)

    try:
        return ServiceSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = str(error["loc"][0]).upper() if error["loc"] else "configuration"
        if error["type"] == "missing":
            raise ConfigError(f"{variable} is required and not set") from None
        raise ConfigError(f"{variable}: {error['msg']} (got {error.get('input')!r})") from None
