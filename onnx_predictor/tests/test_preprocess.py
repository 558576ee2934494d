"""The fixed graph's preprocessing, in-process: each resizer against the reference's resize
and centre crop on every sample image, JPEG decoding at exactly 1/d in the DCT domain, and
libjpeg-turbo's pixels against Pillow's on every kind of JPEG."""

import base64
import io
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import simplejpeg
from helpers import ROOT
from onnx_predictor.preprocess import (
    RESIZERS,
    choose_resizer,
    decode_jpeg_turbo,
    decode_pixels,
    describe_resizer,
    resize_crop,
    simd_cpu_extension,
)
from PIL import Image
from serving_common.errors import ServiceError
from serving_common.images import ImageLimits, decode_with_pil
from weather_model.architectures import default_contract
from weather_model.crop import dct_scale_denominator
from weather_model.reference import decode_rgb, reference_crop, sample_images

LIMITS = ImageLimits(max_pixels=40_000_000, max_aspect_ratio=20)
IMAGES = sample_images(ROOT / "images")
# The default model's sizes (resize 256, crop 224), and smaller ones a model of one's own
# may declare: the preprocessing follows whichever metadata.json says.
DEFAULT = default_contract()
CONTRACTS = [DEFAULT, default_contract(resize_size=180, crop_size=160)]
RESIZE, CROP = DEFAULT.resize_size, DEFAULT.crop_size
# Most |Δpixel| from the reference's crop: fast_image_resize rounds its fixed-point
# weights its own way; Pillow with `box` computes the same weights from a differently
# rounded scale, which can tip a pixel by one level.
MAX_PIXEL_DELTA = {"simd": 1, "pillow": 1}


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: f"{c.resize_size}-{c.crop_size}")
@pytest.mark.parametrize("resizer", RESIZERS)
@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_resize_crop_gives_the_reference_crop(path, resizer, contract):
    image = decode_rgb(path.read_bytes())
    crop = resize_crop(np.asarray(image), resizer, contract.resize_size, contract.crop_size)
    expected = reference_crop(image, contract)
    size = contract.crop_size
    assert crop.shape == expected.shape == (size, size, 3) and crop.dtype == np.uint8
    delta = np.abs(crop.astype(np.int16) - expected)
    assert delta.max() <= MAX_PIXEL_DELTA[resizer]
    assert delta.mean() < 0.25  # the odd pixel, not a shifted or blurred crop


def test_simd_resizes_alike_from_several_threads():
    """Each thread keeps its own fast_image_resize objects; results never mix."""
    pixels = [np.asarray(decode_rgb(path.read_bytes())) for path in IMAGES[:4]]
    expected = [resize_crop(one, "simd", RESIZE, CROP) for one in pixels]
    # All three resize at once: no thread finishes before the others have started.
    start = threading.Barrier(3, timeout=30)

    def work() -> list[np.ndarray]:
        start.wait()
        return [resize_crop(one, "simd", RESIZE, CROP) for one in pixels * 5]

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(work) for _ in range(3)]
    # `.result()` re-raises what a worker raised: a thread that fails fails the test.
    results = [future.result() for future in futures]
    for crops in results:
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


# (width, height) -> the DCT scale denominator weather_model.crop gives for RESIZE (256).
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
    assert dct_scale_denominator(width, height, RESIZE) == denominator
    data = _jpeg(width, height)
    scaled = decode_pixels(data, LIMITS, True, RESIZE)
    expected = (math.ceil(height / denominator), math.ceil(width / denominator), 3)
    assert scaled.shape == expected
    # The same pixels as Pillow's own DCT scaling (draft) at 1/d: the same libjpeg scale.
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (width // denominator, height // denominator))
    np.testing.assert_array_equal(scaled, np.asarray(drafted.convert("RGB")))
    assert decode_pixels(data, LIMITS, False, RESIZE).shape == (height, width, 3)


def test_dct_scaling_leaves_what_pillow_decodes_at_full_size():
    cmyk = io.BytesIO()
    Image.new("CMYK", (1200, 727), (10, 20, 30, 0)).save(cmyk, "JPEG")
    assert decode_pixels(cmyk.getvalue(), LIMITS, True, RESIZE).shape == (727, 1200, 3)


# --- JPEG decoding: libjpeg-turbo (simplejpeg) for speed, Pillow's pixels ---------------
# The pixels must be Pillow's, the reference every service follows (`weather_model.pixels`):
# exactly Pillow's pixels, or Pillow's refusal, for every kind of JPEG.

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


def _pillow_jpeg(image: Image.Image, **options: object) -> bytes:
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=85, **options)
    return encoded.getvalue()


def _cases() -> dict[str, bytes]:
    photo = _photo()
    baseline = _pillow_jpeg(photo, subsampling=2)
    scan = baseline.index(b"\xff\xda")
    return {
        "4:2:0": baseline,
        "4:2:2": _pillow_jpeg(photo, subsampling=1),
        "4:4:4": _pillow_jpeg(photo, subsampling=0),
        "progressive": _pillow_jpeg(photo, progressive=True),
        "greyscale": _pillow_jpeg(photo.convert("L")),
        "cmyk": _pillow_jpeg(photo.convert("CMYK")),
        "arithmetic": ARITHMETIC_JPEG,
        "odd size": _pillow_jpeg(photo.crop((0, 0, 5, 37))),
        # A recoverable libjpeg warning: extraneous bytes before the scan's marker.
        "garbage before a marker": baseline[:scan] + b"\x00\x01\x02" + baseline[scan:],
        "truncated": baseline[: len(baseline) * 6 // 10],
        "truncated progressive": _pillow_jpeg(photo, progressive=True)[:3000],
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
    onnx = _decoded(lambda image, limits: decode_pixels(image, limits, False, RESIZE), data)
    if isinstance(reference, str):
        assert onnx == reference == "unsupported_image"
    else:
        assert isinstance(onnx, np.ndarray) and onnx.dtype == np.uint8
        np.testing.assert_array_equal(onnx, reference)


def test_libjpeg_turbo_is_the_common_path_and_pillow_the_exception():
    fast = {
        name
        for name, data in CASES.items()
        if decode_jpeg_turbo(data, LIMITS, False, RESIZE) is not None
    }
    assert {"4:2:0", "progressive", "greyscale", "arithmetic", "sample photo"} <= fast
    assert not fast & {"cmyk", "garbage before a marker", "truncated"}
