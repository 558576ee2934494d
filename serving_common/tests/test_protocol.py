"""The framework-free contract pieces every Python host shares (`protocol.py`), without a
web framework: admission control, the body deadline, the request's media type, query and
JSON, and how each request is counted."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from serving_common.errors import ErrorType, ServiceError
from serving_common.metrics import Metrics
from serving_common.settings import load_settings

from serving_common import protocol


def test_admission_refuses_the_request_over_the_limit_and_frees_slots():
    admission = protocol.Admission(limit=2)
    with admission.admitted(), admission.admitted():
        assert admission.pending == 2
        with pytest.raises(ServiceError) as caught, admission.admitted():
            pass
        assert caught.value.error_type == "overloaded"
        assert (caught.value.status, caught.value.headers) == (503, {"Retry-After": "1"})
        assert admission.pending == 2
    assert admission.pending == 0
    with pytest.raises(RuntimeError), admission.admitted():
        raise RuntimeError("a failed request frees its slot too")
    assert admission.pending == 0


def test_refusals_take_turns_up_to_the_longest_wait():
    pacer = protocol.RefusalPacer(rate=100)
    assert [pacer.delay(now=50.0) for _ in range(3)] == pytest.approx([0.0, 0.01, 0.02])
    # Two seconds of turns are taken; the next refusal is answered at once, its turn untaken.
    for _ in range(3, 201):
        pacer.delay(now=50.0)
    assert pacer.delay(now=50.0) == 0.0
    # Once the turns are past, a refusal waits no more; the next one waits its interval.
    assert pacer.delay(now=53.0) == 0.0
    assert pacer.delay(now=53.0) == pytest.approx(0.01)


def test_no_pacing_at_rate_zero():
    pacer = protocol.RefusalPacer(rate=0)
    assert {pacer.delay(now=1.0) for _ in range(1000)} == {0.0}


def test_a_client_that_left_is_counted_as_499_and_a_refusal_by_its_status():
    metrics = Metrics()
    with pytest.raises(protocol.ClientGone), protocol.counted_request(metrics):
        raise protocol.ClientGone
    with pytest.raises(ServiceError), protocol.counted_request(metrics):
        raise ServiceError(ErrorType.OVERLOADED, "busy")
    exposition = metrics.exposition().decode()
    assert 'predict_requests_total{status="499"} 1.0' in exposition
    assert 'predict_requests_total{status="503"} 1.0' in exposition


def test_a_cancelled_request_is_counted_as_499_never_500():
    """A host may cancel the handler when its client leaves (Ray Serve does)."""
    metrics = Metrics()

    async def cancelled() -> None:
        with protocol.counted_request(metrics):
            await asyncio.sleep(3600)

    async def cancel_it() -> None:
        task = asyncio.create_task(cancelled())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    exposition = metrics.exposition().decode()
    assert 'predict_requests_total{status="499"} 1.0' in exposition
    assert 'status="500"' not in exposition


async def chunks(
    *parts: bytes, pause: float = 0.0, then_stall: bool = False
) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(pause)
        yield part
    if then_stall:
        await asyncio.sleep(3600)


def read(stream: AsyncIterator[bytes], content_length: str | None, limit: int = 4, timeout=5.0):
    return asyncio.run(protocol.read_body(stream, content_length, limit, timeout))


def error_type(stream: AsyncIterator[bytes], content_length: str | None, **options) -> str:
    with pytest.raises(ServiceError) as caught:
        read(stream, content_length, **options)
    return caught.value.error_type


def test_read_body_within_the_limit_and_the_deadline():
    assert read(chunks(b"ab", b"cd"), "4") == b"abcd"
    assert read(chunks(b"ab", b"cd", pause=0.01), None) == b"abcd"


def test_a_body_that_stalls_or_trickles_past_the_deadline_is_408():
    # Declares 1000 bytes, sends 10, then nothing.
    assert error_type(chunks(b"x" * 10, then_stall=True), "1000", limit=2000, timeout=0.3) == (
        "request_timeout"
    )
    trickle = chunks(*[b"x"] * 100, pause=0.02)
    assert error_type(trickle, None, limit=2000, timeout=0.3) == "request_timeout"


def test_an_oversized_body_is_read_to_its_end_and_discarded_before_the_413():
    consumed = []

    async def tracked(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            consumed.append(len(part))
            yield part

    assert error_type(tracked(b"ab", b"cd", b"ef"), "6") == "body_too_large"
    assert consumed == [2, 2, 2]
    consumed.clear()
    assert error_type(tracked(b"abc", b"def", b"ghi"), None) == "body_too_large"
    assert consumed == [3, 3, 3]
    # The discarding is bounded by the same deadline; the answer is still 413.
    assert error_type(chunks(b"abcdef", then_stall=True), None, timeout=0.3) == "body_too_large"


def test_a_request_refused_for_its_query_has_its_body_read_first():
    """Its body is discarded before the 400: a connection closed with unread bytes is
    reset, and the client would never see the answer."""
    consumed = []

    async def tracked(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            consumed.append(len(part))
            yield part

    settings = load_settings(8080, model_uri="model.onnx")
    headers = {"content-type": "Image/JPEG; x=y", "content-length": "4"}

    async def read(query: dict[str, str]) -> protocol.PredictRequest:
        started = time.perf_counter()
        stream = tracked(b"ab", b"cd")
        return await protocol.read_predict_request(stream, headers, query, settings, started)

    with pytest.raises(ServiceError) as caught:
        asyncio.run(read({"probabilities": "maybe"}))
    assert caught.value.error_type == "invalid_request"
    assert consumed == [2, 2]
    request = asyncio.run(read({"probabilities": "yes"}))
    assert (request.media_type, request.body, request.with_probabilities) == (
        "image/jpeg",
        b"abcd",
        True,
    )
    assert request.read_seconds >= 0


def test_media_type_and_probabilities_flag():
    assert protocol.media_type("Image/JPEG; charset=x") == "image/jpeg"
    assert protocol.media_type(None) == ""
    assert protocol.probabilities_requested(None) is False
    assert protocol.probabilities_requested("Yes") is True
    assert protocol.probabilities_requested("off") is False
    with pytest.raises(ServiceError, match="not a boolean"):
        protocol.probabilities_requested("maybe")


def test_image_from_json_maps_each_mistake_to_its_row():
    assert protocol.image_from_json(b'{"image": "AAEC"}') == b"\x00\x01\x02"
    for body, error_type in (
        (b"{", "invalid_json"),
        (b'{"image": "@@"}', "invalid_base64"),
        (b'["image"]', "invalid_request"),
        (b'{"image": null}', "invalid_request"),
    ):
        with pytest.raises(ServiceError) as caught:
            protocol.image_from_json(body)
        assert caught.value.error_type == error_type, body
