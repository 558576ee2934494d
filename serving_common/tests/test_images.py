"""The decoding rule (`weather_model.pixels`) and the header limits every Python service
applies (`serving_common.images`), on images made here byte by byte."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from serving_common.errors import ServiceError
from serving_common.images import ImageLimits, decode_with_pil
from weather_model.pixels import decode_rgb, without_ancillary_chunks

LIMITS = ImageLimits(max_pixels=40_000_000, max_aspect_ratio=20)
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, *extra: bytes):
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        SIGNATURE
        + chunk(b"IHDR", header)
        + b"".join(extra)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def raw_rows(samples: np.ndarray) -> bytes:
    """PNG scanlines (filter type 0) of big-endian samples."""
    return b"".join(b"\0" + row.tobytes() for row in samples)


def error_type(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ServiceError) as caught:
        decode_with_pil(data, limits)
    return caught.value.error_type


def test_sixteen_bit_grey_keeps_the_high_byte_like_sixteen_bit_rgb():
    grey = np.random.default_rng(1).integers(0, 65536, (9, 7)).astype(">u2")
    rgb = np.random.default_rng(2).integers(0, 65536, (9, 7, 3)).astype(">u2")
    decoded_grey = np.asarray(decode_rgb(png(7, 9, 16, 0, raw_rows(grey))))
    decoded_rgb = np.asarray(decode_rgb(png(7, 9, 16, 2, raw_rows(rgb))))
    np.testing.assert_array_equal(decoded_grey, np.repeat((grey >> 8)[..., None], 3, axis=-1))
    np.testing.assert_array_equal(decoded_rgb, rgb >> 8)
    # What the rule corrects: Pillow's own conversion clips to white.
    clipped = Image.open(io.BytesIO(png(7, 9, 16, 0, raw_rows(grey)))).convert("RGB")
    assert (np.asarray(clipped) == 255).mean() > 0.9


@pytest.mark.parametrize(
    "ancillary",
    [
        chunk(b"tEXt", b"comment\0" + b"x" * 5_000_000),
        chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"x" * 5_000_000)),
        chunk(b"iTXt", b"comment\0\0\0\0\0" + b"x" * 5_000_000),
        chunk(b"iCCP", b"profile\0\0" + zlib.compress(b"x" * 5_000_000)),
    ],
    ids=["tEXt", "zTXt", "iTXt", "iCCP"],
)
def test_large_ancillary_chunks_are_ignored(ancillary):
    pixels = np.random.default_rng(3).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    data = png(6, 5, 8, 2, raw_rows(pixels), ancillary, chunk(b"gAMA", struct.pack(">I", 45455)))
    np.testing.assert_array_equal(np.asarray(decode_with_pil(data, LIMITS)), pixels)
    assert len(without_ancillary_chunks(data)) < 200


# Pillow warns when it converts a palette image with transparency, the reference here.
@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_dropping_ancillary_chunks_changes_no_pixel():
    palette = bytes(range(48))
    indices = np.random.default_rng(4).integers(0, 16, (4, 8)).astype(np.uint8)
    data = png(8, 4, 8, 3, raw_rows(indices), chunk(b"PLTE", palette), chunk(b"tRNS", b"\0" * 16))
    with_chunks = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(decode_rgb(data)), with_chunks)
    plain = png(6, 5, 8, 0, raw_rows(np.zeros((5, 6), np.uint8)))
    assert without_ancillary_chunks(plain) is plain
    truncated = plain[:-20] + chunk(b"tEXt", b"k\0v")[:5]
    assert without_ancillary_chunks(truncated) == truncated


def test_pixel_count_is_checked_before_pillows_own_bomb_check():
    header_only = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    assert error_type(header_only + chunk(b"IDAT", b"") + chunk(b"IEND", b"")) == "image_too_large"


def test_extreme_aspect_ratios_are_refused_after_the_pixel_count():
    strip = png(40000, 2, 8, 0, raw_rows(np.zeros((2, 40000), np.uint8)))
    assert error_type(strip) == "extreme_aspect_ratio"
    tall = png(1, 21, 8, 0, raw_rows(np.zeros((21, 1), np.uint8)))
    assert error_type(tall) == "extreme_aspect_ratio"
    at_the_limit = png(1, 20, 8, 0, raw_rows(np.zeros((20, 1), np.uint8)))
    assert decode_with_pil(at_the_limit, LIMITS).size == (1, 20)
    # Both over the limits: the pixel count is reported.
    assert error_type(strip, ImageLimits(max_pixels=1000, max_aspect_ratio=20)) == (
        "image_too_large"
    )


def test_not_an_image_and_broken_images_are_unsupported():
    assert error_type(b"GIF89a....") == "unsupported_image"
    assert error_type(SIGNATURE + b"\0\0") == "unsupported_image"
