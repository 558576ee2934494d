"""HTTP clients the suites share: well-behaved (httpx) and not (raw sockets that declare a
body and stall, or send everything before reading)."""

import asyncio
import base64
import http.client
import json
import re
import socket
import time

import httpx
from benchmark.processes import RunningService
from helpers import ROOT, TEST_LIMITS

COFFEE = (ROOT / "images" / "coffee.jpg").read_bytes()
JSON, JPEG, PNG = "application/json", "image/jpeg", "image/png"
BODY_TIMEOUT_SECONDS = float(TEST_LIMITS["BODY_TIMEOUT_SECONDS"])


def post(service, content, content_type: str | None, query: str = "") -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return httpx.post(
        f"{service.url}/predict/{query}", content=content, headers=headers, timeout=60
    )


def b64_json(data: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(data).decode()}).encode()


def start_predict(service: RunningService, declared: int, sent: bytes = b"") -> socket.socket:
    """A client that declares a `declared`-byte JPEG body and sends only `sent` of it."""
    client = socket.create_connection(("127.0.0.1", service.port), timeout=30)
    client.sendall(
        b"POST /predict/ HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + sent
    )
    return client


def read_response(client: socket.socket) -> httpx.Response:
    answer = http.client.HTTPResponse(client)  # type: ignore[arg-type]
    answer.begin()
    return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())


def predict_request(body: bytes, content_type: str) -> bytes:
    return (
        b"POST /predict/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def one_request(port: int, request: bytes) -> int:
    """Status of one request sent on its own connection (0 when the connection failed)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=120)
        writer.close()
    except (OSError, TimeoutError):
        return 0
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else 0


async def many_requests(port: int, request: bytes, count: int) -> list[int]:
    return await asyncio.gather(*(one_request(port, request) for _ in range(count)))


def assert_serves_again(service: RunningService) -> None:
    """A good request is answered once the clients of a case are gone (their pending slots
    free as soon as the service notices, at worst after BODY_TIMEOUT_SECONDS)."""
    deadline = time.monotonic() + BODY_TIMEOUT_SECONDS + 5
    while (status := post(service, COFFEE, JPEG).status_code) == 503:
        assert time.monotonic() < deadline, "still overloaded after its clients left"
        time.sleep(0.2)
    assert status == 200
