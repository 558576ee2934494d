"""The fixed graph's preprocessing, in-process: each resizer against the reference's resize
and centre crop on every sample image, and JPEG decoding at exactly 1/d in the DCT domain."""

import io
import math
import threading

import numpy as np
import pytest
import simplejpeg
from onnx_serving.preprocess import (
    RESIZERS,
    choose_resizer,
    decode_pixels,
    describe_resizer,
    resize_crop,
    simd_cpu_extension,
)
from PIL import Image
from serving_common.images import ImageLimits
from weather_model.crop import dct_scale_denominator
from weather_model.reference import decode_rgb, reference_crop, sample_images

from conftest import ROOT

LIMITS = ImageLimits(max_pixels=40_000_000, max_aspect_ratio=20)
IMAGES = sample_images(ROOT / "images")
# Most |Δpixel| from the reference's crop: fast_image_resize rounds its fixed-point
# weights its own way; Pillow with `box` computes the same weights from a differently
# rounded scale, which can tip a pixel by one level.
MAX_PIXEL_DELTA = {"simd": 1, "pillow": 1}


@pytest.mark.parametrize("resizer", RESIZERS)
@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_resize_crop_gives_the_reference_crop(path, resizer):
    image = decode_rgb(path.read_bytes())
    crop = resize_crop(np.asarray(image), resizer)
    expected = reference_crop(image)
    assert crop.shape == expected.shape == (224, 224, 3) and crop.dtype == np.uint8
    delta = np.abs(crop.astype(np.int16) - expected)
    assert delta.max() <= MAX_PIXEL_DELTA[resizer]
    assert delta.mean() < 0.25  # the odd pixel, not a shifted or blurred crop


def test_simd_resizes_alike_from_several_threads():
    """Each thread keeps its own fast_image_resize objects; results never mix."""
    pixels = [np.asarray(decode_rgb(path.read_bytes())) for path in IMAGES[:4]]
    expected = [resize_crop(one, "simd") for one in pixels]
    got: dict[int, list[np.ndarray]] = {}

    def work(index: int) -> None:
        got[index] = [resize_crop(one, "simd") for one in pixels * 5]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for crops in got.values():
        for crop, reference in zip(crops, expected * 5, strict=True):
            np.testing.assert_array_equal(crop, reference)


def test_resizer_setting_and_description():
    assert choose_resizer("pillow") == "pillow"
    assert choose_resizer("simd") == "simd"  # installed here
    assert describe_resizer("simd").startswith("cykooz-resizer 4.0.1 (fast_image_resize)")
    assert describe_resizer("pillow").startswith("Pillow ")
    assert simd_cpu_extension() in ("avx2", "sse4_1", "neon", "none")


def _jpeg(width: int, height: int) -> bytes:
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([columns % 256, rows % 256, (rows + columns) % 256], axis=-1)
    return simplejpeg.encode_jpeg(pixels.astype(np.uint8), quality=80)


# (width, height) -> the DCT scale denominator weather_model.crop gives.
SIZES = {
    (600, 400): 1,
    (700, 510): 1,  # ceil(510 / 2) = 255 < 256
    (700, 511): 2,  # ceil(511 / 2) = 256: exactly the resize size
    (1200, 727): 2,
    (727, 1200): 2,
    (2049, 1025): 4,
    (4100, 2100): 8,
}


@pytest.mark.parametrize(("width", "height"), SIZES, ids=lambda v: str(v))
def test_dct_scaling_decodes_at_exactly_one_over_d(width, height):
    denominator = SIZES[width, height]
    assert dct_scale_denominator(width, height) == denominator
    data = _jpeg(width, height)
    scaled = decode_pixels(data, LIMITS, dct_scaling=True)
    expected = (math.ceil(height / denominator), math.ceil(width / denominator), 3)
    assert scaled.shape == expected
    # The same pixels as Pillow's own DCT scaling (draft) at 1/d: the same libjpeg scale.
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (width // denominator, height // denominator))
    np.testing.assert_array_equal(scaled, np.asarray(drafted.convert("RGB")))
    assert decode_pixels(data, LIMITS, dct_scaling=False).shape == (height, width, 3)


def test_dct_scaling_leaves_what_pillow_decodes_at_full_size():
    cmyk = io.BytesIO()
    Image.new("CMYK", (1200, 727), (10, 20, 30, 0)).save(cmyk, "JPEG")
    assert decode_pixels(cmyk.getvalue(), LIMITS, dct_scaling=True).shape == (727, 1200, 3)
