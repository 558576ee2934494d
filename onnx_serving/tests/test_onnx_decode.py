"""The ONNX service decodes JPEGs with libjpeg-turbo (simplejpeg) for speed, but the pixels
must be Pillow's, the reference every service follows (`weather_model.pixels`): exactly
Pillow's pixels, or Pillow's refusal, for every kind of JPEG."""

import base64
import io

import numpy as np
import pytest
from onnx_serving.preprocess import decode_jpeg_turbo, decode_pixels
from PIL import Image
from serving_common.errors import ServiceError
from serving_common.images import ImageLimits, decode_with_pil

from conftest import ROOT

LIMITS = ImageLimits(max_pixels=40_000_000, max_aspect_ratio=20)
# 24x16, arithmetic-coded (`jpegtran -arithmetic`): Pillow cannot write these.
ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcU"
    "FhYaHSUfGhsjHBYWICwgIyYnKSopGR8tMC0oMCUoKSj/2wBDAQcHBwoIChMKChMoGhYaKCgoKCgo"
    "KCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCj/yQARCAAQABgDASIA"
    "AhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD/ANGom/Tpv7JjnYg6K0i7rHPv1bqDHzW6"
    "Mewx/DZv5/MFmaUMhODIjxw0VKbZp8QvB8z5wP/Z"
)


def _photo() -> Image.Image:
    rows, columns = np.mgrid[0:173, 0:251]
    noise = np.random.default_rng(0).integers(-20, 20, (173, 251, 3))
    gradient = np.stack([columns, rows * 1.4, (columns + rows) * 3 % 256], axis=-1)
    return Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, **options: object) -> bytes:
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=85, **options)
    return encoded.getvalue()


def _cases() -> dict[str, bytes]:
    photo = _photo()
    baseline = _jpeg(photo, subsampling=2)
    scan = baseline.index(b"\xff\xda")
    return {
        "4:2:0": baseline,
        "4:2:2": _jpeg(photo, subsampling=1),
        "4:4:4": _jpeg(photo, subsampling=0),
        "progressive": _jpeg(photo, progressive=True),
        "greyscale": _jpeg(photo.convert("L")),
        "cmyk": _jpeg(photo.convert("CMYK")),
        "arithmetic": ARITHMETIC_JPEG,
        "odd size": _jpeg(photo.crop((0, 0, 5, 37))),
        # A recoverable libjpeg warning: extraneous bytes before the scan's marker.
        "garbage before a marker": baseline[:scan] + b"\x00\x01\x02" + baseline[scan:],
        "truncated": baseline[: len(baseline) * 6 // 10],
        "truncated progressive": _jpeg(photo, progressive=True)[:3000],
        "no end marker": baseline[:-2],
        "sample photo": (ROOT / "images" / "coffee.jpg").read_bytes(),
    }


CASES = _cases()


def _decoded(decode, data: bytes) -> np.ndarray | str:
    try:
        return np.asarray(decode(data, LIMITS))
    except ServiceError as exc:
        return exc.error_type


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_decode_gives_pillows_pixels_or_pillows_refusal(name):
    data = CASES[name]
    reference = _decoded(decode_with_pil, data)
    onnx = _decoded(lambda image, limits: decode_pixels(image, limits, dct_scaling=False), data)
    if isinstance(reference, str):
        assert onnx == reference == "unsupported_image"
    else:
        assert isinstance(onnx, np.ndarray) and onnx.dtype == np.uint8
        np.testing.assert_array_equal(onnx, reference)


def test_libjpeg_turbo_is_the_common_path_and_pillow_the_exception():
    fast = {name for name, data in CASES.items() if decode_jpeg_turbo(data, LIMITS) is not None}
    assert {"4:2:0", "progressive", "greyscale", "arithmetic", "sample photo"} <= fast
    assert not fast & {"cmyk", "garbage before a marker", "truncated"}
