"""Model downloads give up at their deadline with one line, and retry what is transient,
against real sockets: a server that accepts and never answers, a closed port, a server
that fails twice with 503."""

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from weather_model import storage
from weather_model.storage import ArtifactError, read_artifact

URI = "gs://models/weather/model.onnx"


@pytest.fixture
def emulator_at(monkeypatch):
    def point_at(port: int) -> None:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")

    return point_at


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


def gives_up_within(seconds: float, bound: float) -> str:
    started = time.monotonic()
    with pytest.raises(ArtifactError) as caught:
        read_artifact(URI, seconds)
    elapsed = time.monotonic() - started
    assert seconds * 0.5 <= elapsed <= bound, elapsed
    message = str(caught.value)
    assert "\n" not in message and message.startswith(URI)
    return message


def test_a_server_that_never_answers_is_given_up_on_at_the_deadline(emulator_at, silent_port):
    emulator_at(silent_port)
    assert "no answer in time" in gives_up_within(2.0, bound=6.0)


def test_a_closed_port_is_retried_until_the_deadline(emulator_at, closed_port):
    emulator_at(closed_port)
    assert "Connection refused" in gives_up_within(2.0, bound=6.0)


class FailsTwice(BaseHTTPRequestHandler):
    """Downloads fail twice with 503, then succeed. (The storage library also fetches the
    bucket's metadata once, in a background thread of its own: answered 404.)"""

    attempts = 0

    def do_GET(self):
        if not self.path.startswith("/download/"):
            status, body = 404, b"{}"
        else:
            type(self).attempts += 1
            status, body = (503, b"busy") if self.attempts <= 2 else (200, b"model bytes")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_transient_errors_are_retried_with_backoff(emulator_at):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailsTwice)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        emulator_at(server.server_address[1])
        started = time.monotonic()
        assert read_artifact(URI, 20.0) == b"model bytes"
        # Two backoffs: 0.5 s, then 1 s.
        assert FailsTwice.attempts == 3
        assert 1.4 <= time.monotonic() - started < 10
    finally:
        server.shutdown()
        server.server_close()


def test_token_file_is_read_stripped_and_wins(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv(storage.TOKEN_ENV, "from-variable")
    token = tmp_path / "token"
    token.write_text("  from-file\n")
    monkeypatch.setenv(storage.TOKEN_FILE_ENV, str(token))
    assert storage.access_token() == "from-file"
    monkeypatch.setenv(storage.TOKEN_FILE_ENV, str(tmp_path))  # a folder: unreadable
    with pytest.raises(ArtifactError, match=r"CLOUDSDK_AUTH_ACCESS_TOKEN_FILE.*cannot read"):
        storage.access_token()
    monkeypatch.delenv(storage.TOKEN_FILE_ENV)
    assert storage.access_token() == "from-variable"


def test_local_files_fail_in_one_line(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        read_artifact(str(tmp_path / "missing.onnx"))
    with pytest.raises(ArtifactError, match="cannot read"):
        read_artifact(str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ArtifactError, match="cannot write"):
        storage.write_artifact(str(blocker / "model.onnx"), b"x")
