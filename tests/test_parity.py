"""Every service against the PyTorch reference, on every sample image, over HTTP."""

import os
from collections.abc import Iterator

import httpx
import pytest
from benchmark.processes import RunningService, start_service
from helpers import ROOT, compiled, plain_hosts
from serving_common.strategy import Strategy
from weather_model.parity import MAX_PROBABILITY_DELTA
from weather_model.reference import sample_images

# Its tests start services of their own (conftest.py: tiers).
pytestmark = pytest.mark.service

IMAGES = sample_images(ROOT / "images")


def predict(service: RunningService, image) -> httpx.Response:
    media = "image/png" if image.suffix == ".png" else "image/jpeg"
    return httpx.post(
        f"{service.url}/predict/?probabilities=true",
        content=image.read_bytes(),
        headers={"Content-Type": media},
        timeout=60,
    )


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_service_matches_reference(service, served_model, image):
    response = predict(service, image)
    assert response.status_code == 200, response.text
    got = response.json()["probabilities"]
    expected = served_model.reference_answer(image.read_bytes())
    assert response.json()["prediction"] == max(expected, key=expected.get)
    worst = max(abs(got[label] - expected[label]) for label in served_model.labels)
    assert worst <= MAX_PROBABILITY_DELTA, f"{service.name} on {image.name}: {worst:.4f}"


def same_pipeline() -> list[Strategy]:
    """The Python host without a framework and the compiled service that run the same ONNX
    graph (`model`) through the same in-process pipeline (`ceiling`): the same decoder,
    resizer and runtime in two languages."""
    python = plain_hosts()[0]
    key = (python.model_constant, python.ceiling)
    twins = [s for s in compiled() if (s.model_constant, s.ceiling) == key]
    assert python.model_file.endswith(".onnx") and len(twins) == 1, (python.name, twins)
    return [python, *twins]


@pytest.fixture(scope="module", params=["pillow", "simd"])
def onnx_services(artifacts, request) -> Iterator[list[RunningService]]:
    """Both ONNX strategies on the same exported graph, from a local path, with the same
    RESIZER: Pillow's resize (the Python service's Pillow, the Rust service's port of it)
    or fast_image_resize (cykooz-resizer's build of it, the crate)."""
    strategies = same_pipeline()
    running = []
    try:
        for s in strategies:
            env = {**os.environ, "MODEL_URI": str(artifacts / s.model_file)}
            running.append(start_service(s, {**env, "RESIZER": request.param}))
        yield running
    finally:
        for service in running:
            service.kill()


@pytest.mark.parametrize("image", [p for p in IMAGES if p.suffix == ".jpg"], ids=lambda p: p.name)
def test_onnx_services_agree_exactly_on_jpeg(onnx_services, image):
    # Same libjpeg-turbo decode, same resizer, same ONNX Runtime build, same graph: the same
    # numbers.
    python, rust = (predict(service, image).json()["probabilities"] for service in onnx_services)
    assert python == pytest.approx(rust, rel=0, abs=1e-6)
