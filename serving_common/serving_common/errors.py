"""The error table's types and the one exception every handler raises.

`ErrorType` and its statuses are generated from `contract/errors.json` into `error_types.py`
(`python -m serving_common.render_errors`), so nothing reads the table at run time and an
error type the table lacks fails mypy and import, never a request.
"""

from serving_common.error_types import STATUS_BY_ERROR_TYPE, ErrorType

__all__ = ["RETRY_AFTER_SECONDS", "STATUS_BY_ERROR_TYPE", "ErrorType", "ServiceError"]

# Seconds an `overloaded` (503) client is told to wait, in its Retry-After header.
RETRY_AFTER_SECONDS = 1


class ServiceError(Exception):
    """A request the service refuses; maps to one row of the error table."""

    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        return self.error_type.status

    @property
    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides its body."""
        return {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 503 else {}

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type.value}
