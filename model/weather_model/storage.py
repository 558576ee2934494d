"""Reading model artifacts from `gs://bucket/object` or a local path.

Credentials, in order: STORAGE_EMULATOR_HOST (a local emulator, no credentials),
CLOUDSDK_AUTH_ACCESS_TOKEN_FILE (a file holding a bearer token: a Compose or Kubernetes
secret), CLOUDSDK_AUTH_ACCESS_TOKEN (the token itself, the original study's way), then
Google's Application Default Credentials (service-account key file, gcloud login, metadata
server).

Every storage request has a connect and a read timeout; connection errors, timeouts, 408,
429 and 5xx answers are retried with exponential backoff until a deadline, then reported in
one line. The storage library's own retries are off, so that the deadline is the only one.
"""

import os
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Retried until this many seconds after a download started (services: STORAGE_TIMEOUT_SECONDS).
DOWNLOAD_DEADLINE_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 20.0
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 4.0
# requests refuses a timeout of zero; an attempt with less time left than this is not made.
_SHORTEST_ATTEMPT_SECONDS = 0.05
TOKEN_FILE_ENV = "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"
TOKEN_ENV = "CLOUDSDK_AUTH_ACCESS_TOKEN"


class ArtifactError(RuntimeError):
    """A model artifact that cannot be read; the message is one line naming URI and cause."""


@dataclass(frozen=True)
class Deadline:
    """The moment (time.monotonic()) a download, retries included, must be done by."""

    seconds: float  # the whole allowance, for messages
    at: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(seconds, time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()


def is_gcs_uri(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gcs_uri(uri: str) -> tuple[str, str]:
    bucket, _, blob = uri.removeprefix("gs://").partition("/")
    if not bucket or not blob:
        raise ArtifactError(f"{uri}: not a gs://bucket/object URI")
    return bucket, blob


def sibling_uri(uri: str, name: str) -> str:
    """The URI of `name` in the same folder (or gs:// prefix) as `uri`."""
    if is_gcs_uri(uri):
        bucket, blob = split_gcs_uri(uri)
        return f"gs://{bucket}/{posixpath.join(posixpath.dirname(blob), name)}"
    return str(Path(uri).parent / name)


def read_artifact(uri: str, deadline: float | Deadline = DOWNLOAD_DEADLINE_SECONDS) -> bytes:
    """The object's bytes; `deadline`: a Deadline shared by several reads, or seconds from now."""
    if is_gcs_uri(uri):
        if not isinstance(deadline, Deadline):
            deadline = Deadline.after(deadline)
        return _read_gcs(uri, deadline)
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{uri}: no such file") from None
    except OSError as exc:
        raise ArtifactError(f"{uri}: cannot read ({exc.strerror or exc})") from None


def write_artifact(uri: str, data: bytes) -> None:
    """Write to gs://bucket/object (creating nothing else) or a local path."""
    if not is_gcs_uri(uri):
        try:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(data)
        except OSError as exc:
            raise ArtifactError(f"{uri}: cannot write ({exc.strerror or exc})") from None
        return
    from google.api_core import exceptions

    bucket_name, blob_name = split_gcs_uri(uri)
    try:
        _client().bucket(bucket_name).blob(blob_name).upload_from_string(data)
    except exceptions.NotFound:
        raise ArtifactError(f"{uri}: no such bucket") from None
    except exceptions.Forbidden:
        raise ArtifactError(f"{uri}: access denied for these credentials") from None
    except exceptions.GoogleAPICallError as exc:
        raise ArtifactError(f"{uri}: storage error {exc.code}: {exc.message}") from None


def access_token() -> str | None:
    """The bearer token from CLOUDSDK_AUTH_ACCESS_TOKEN_FILE or CLOUDSDK_AUTH_ACCESS_TOKEN."""
    token_file = os.environ.get(TOKEN_FILE_ENV)
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            cause = getattr(exc, "strerror", None) or exc
            raise ArtifactError(f"{TOKEN_FILE_ENV}={token_file}: cannot read ({cause})") from None
        if not token:
            raise ArtifactError(f"{TOKEN_FILE_ENV}={token_file}: the file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def _client() -> Any:
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client.create_anonymous_client()
    token = access_token()
    if token:
        from google.oauth2.credentials import Credentials

        return storage.Client(credentials=Credentials(token), project="_")
    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise ArtifactError(
            "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS, "
            f"{TOKEN_FILE_ENV}, {TOKEN_ENV}, or STORAGE_EMULATOR_HOST"
        ) from None


def _read_gcs(uri: str, deadline: Deadline) -> bytes:
    from google.api_core import exceptions

    bucket_name, blob_name = split_gcs_uri(uri)
    blob = _client().bucket(bucket_name).blob(blob_name)
    backoff = FIRST_BACKOFF_SECONDS
    while True:
        remaining = max(deadline.remaining(), _SHORTEST_ATTEMPT_SECONDS)
        timeout = (min(CONNECT_TIMEOUT_SECONDS, remaining), min(READ_TIMEOUT_SECONDS, remaining))
        try:
            return blob.download_as_bytes(timeout=timeout, retry=None)  # type: ignore[no-any-return]
        except exceptions.NotFound:
            raise ArtifactError(f"{uri}: no such object (or no such bucket)") from None
        except exceptions.Forbidden:
            raise ArtifactError(f"{uri}: access denied for these credentials") from None
        except exceptions.Unauthorized:
            raise ArtifactError(f"{uri}: credentials rejected (expired or invalid token)") from None
        except Exception as exc:
            cause = _transient_cause(exc)
            if cause is None:
                raise ArtifactError(f"{uri}: cannot download ({_describe(exc)})") from None
        # NOTE: a retry that would start after the deadline is not made.
        if deadline.remaining() <= backoff + _SHORTEST_ATTEMPT_SECONDS:
            raise ArtifactError(
                f"{uri}: storage unreachable, gave up after {deadline.seconds:g} s of retries "
                f"(last: {cause})"
            )
        time.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _transient_cause(exc: Exception) -> str | None:
    """What went wrong, if it is worth retrying: connection errors, timeouts, 408, 429,
    5xx; None for anything a retry would not change."""
    import requests
    from google.api_core import exceptions
    from google.auth.exceptions import TransportError

    if isinstance(exc, exceptions.GoogleAPICallError):
        code = exc.code or 0
        return f"HTTP {code}" if code in (408, 429) or code >= 500 else None
    if isinstance(exc, requests.Timeout):
        return f"no answer in time ({type(exc).__name__})"
    broken = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, TransportError)
    if isinstance(exc, (*broken, ConnectionError)):
        return _describe(exc)
    return None


def _describe(exc: Exception) -> str:
    """A short cause: the OS error's words when there is one ("Connection refused"), not
    the transport's nested reprs."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found.group(1).strip()
    from google.api_core import exceptions

    if isinstance(exc, exceptions.GoogleAPICallError):
        return f"HTTP {exc.code}: {exc.message}"
    return type(exc).__name__
