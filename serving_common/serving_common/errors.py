"""The error table (`contract/errors.json`) and the one exception every handler raises."""

import json
from pathlib import Path
from typing import Final

CONTRACT_DIR = Path(__file__).resolve().parents[2] / "contract"
# Seconds an `overloaded` (503) client is told to wait, in its Retry-After header.
RETRY_AFTER_SECONDS = 1


def _load_statuses() -> dict[str, int]:
    table = json.loads((CONTRACT_DIR / "errors.json").read_text())
    return {error_type: row["status"] for error_type, row in table.items()}


STATUS_BY_ERROR_TYPE: Final = _load_statuses()


class ServiceError(Exception):
    """A request the service refuses; maps to one row of the error table."""

    def __init__(self, error_type: str, message: str) -> None:
        if error_type not in STATUS_BY_ERROR_TYPE:
            raise ValueError(f"unknown error_type {error_type!r}")
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        return STATUS_BY_ERROR_TYPE[self.error_type]

    @property
    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides its body."""
        return {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}
