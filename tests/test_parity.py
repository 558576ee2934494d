"""Every service against the PyTorch reference, on every sample image, over HTTP."""

import functools

import httpx
import pytest
from weather_model.contract import LABELS
from weather_model.network import demo_state_dict, load_network
from weather_model.parity import MAX_PROBABILITY_DELTA
from weather_model.reference import decode_rgb, reference_probabilities, sample_images

from conftest import ROOT

IMAGES = sample_images(ROOT / "images")


@functools.cache
def reference(name: str) -> tuple[float, ...]:
    model = _reference_model()
    return tuple(reference_probabilities(model, decode_rgb((ROOT / "images" / name).read_bytes())))


@functools.cache
def _reference_model():
    return load_network(demo_state_dict())


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_service_matches_reference(service, image):
    media = "image/png" if image.suffix == ".png" else "image/jpeg"
    response = httpx.post(
        f"{service.url}/predict/?probabilities=true",
        content=image.read_bytes(),
        headers={"Content-Type": media},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    got = response.json()["probabilities"]
    expected = dict(zip(LABELS, reference(image.name), strict=True))
    assert response.json()["prediction"] == max(expected, key=expected.get)
    worst = max(abs(got[label] - expected[label]) for label in LABELS)
    assert worst <= MAX_PROBABILITY_DELTA, f"{service.spec.name} on {image.name}: {worst:.4f}"
