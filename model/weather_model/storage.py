"""Reading model artifacts from `gs://bucket/object` or a local path.

Credentials, in order: STORAGE_EMULATOR_HOST (a local emulator, no credentials),
CLOUDSDK_AUTH_ACCESS_TOKEN (a bearer token, the original study's way), then Google's
Application Default Credentials (service-account key file, gcloud login, metadata server).
"""

import os
import posixpath
from pathlib import Path

# Transient errors (connection resets, 429, 5xx) are retried with backoff for this long.
DOWNLOAD_DEADLINE_SECONDS = 30.0


class ArtifactError(RuntimeError):
    """A model artifact that cannot be read; the message is one line naming URI and cause."""


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


def read_artifact(uri: str, deadline: float = DOWNLOAD_DEADLINE_SECONDS) -> bytes:
    if is_gcs_uri(uri):
        return _read_gcs(uri, deadline)
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{uri}: no such file") from None
    except OSError as exc:
        raise ArtifactError(f"{uri}: cannot read ({exc.strerror})") from None


def write_artifact(uri: str, data: bytes) -> None:
    """Write to gs://bucket/object (creating nothing else) or a local path."""
    if not is_gcs_uri(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)
        return
    from google.api_core import exceptions

    bucket_name, blob_name = split_gcs_uri(uri)
    try:
        _client().bucket(bucket_name).blob(blob_name).upload_from_string(data)  # type: ignore[attr-defined]
    except exceptions.NotFound:
        raise ArtifactError(f"{uri}: no such bucket") from None
    except exceptions.Forbidden:
        raise ArtifactError(f"{uri}: access denied for these credentials") from None
    except exceptions.GoogleAPICallError as exc:
        raise ArtifactError(f"{uri}: storage error {exc.code}: {exc.message}") from None


def _client() -> "object":
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client.create_anonymous_client()
    token = os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN")
    if token:
        from google.oauth2.credentials import Credentials

        return storage.Client(credentials=Credentials(token), project="_")
    try:
        return storage.Client()
    except DefaultCredentialsError:
        raise ArtifactError(
            "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS, "
            "CLOUDSDK_AUTH_ACCESS_TOKEN, or STORAGE_EMULATOR_HOST"
        ) from None


def _read_gcs(uri: str, deadline: float) -> bytes:
    from google.api_core import exceptions
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket_name, blob_name = split_gcs_uri(uri)
    client = _client()
    blob = client.bucket(bucket_name).blob(blob_name)  # type: ignore[attr-defined]
    try:
        return blob.download_as_bytes(retry=DEFAULT_RETRY.with_timeout(deadline))
    except exceptions.NotFound:
        raise ArtifactError(f"{uri}: no such object (or no such bucket)") from None
    except exceptions.Forbidden:
        raise ArtifactError(f"{uri}: access denied for these credentials") from None
    except exceptions.Unauthorized:
        raise ArtifactError(f"{uri}: credentials rejected (expired or invalid token)") from None
    except exceptions.RetryError:
        raise ArtifactError(
            f"{uri}: storage unreachable after {deadline:.0f} s of retries"
        ) from None
    except exceptions.GoogleAPICallError as exc:
        raise ArtifactError(f"{uri}: storage error {exc.code}: {exc.message}") from None
    except Exception as exc:  # transport errors raised outside api_core's hierarchy
        raise ArtifactError(f"{uri}: cannot download ({type(exc).__name__}: {exc})") from None
