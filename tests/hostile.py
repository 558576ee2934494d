"""Images a hostile or merely unusual client sends, built in memory from the sample photos.

PNGs are written by hand (`png`) so every colour type and bit depth PNG allows can be
made, including those Pillow does not write (16-bit RGB, 2/4-bit greyscale) and oversized
ancillary chunks. Every service must give each the same status and, for a 200, the
PyTorch reference's answer (contract/README.md: Pillow's reading is the reference).

`fixtures/coffee_arithmetic.jpg` is the one stored image: `jpeg(photo("coffee.jpg"))`
re-coded losslessly by `jpegtran -arithmetic -copy none` (Debian's libjpeg-turbo-progs),
since Pillow cannot write arithmetic-coded JPEGs.
"""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES = Path(__file__).parent.parent / "images"
FIXTURES = Path(__file__).parent / "fixtures"

GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6  # PNG colour types


def photo(name: str = "gravel_grey.jpg", size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A sample photo, RGB, resized: real content, so a wrong decode changes the answer."""
    return Image.open(IMAGES / name).convert("RGB").resize(size)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(
    pixels: np.ndarray,
    colour_type: int,
    bit_depth: int = 8,
    palette: bytes = b"",
    extra: tuple[bytes, ...] = (),
) -> bytes:
    """A PNG of `pixels` ([h, w] or [h, w, c] integers that fit `bit_depth`); `extra`
    chunks go between IHDR and the image data."""
    height, width = pixels.shape[:2]
    samples = pixels.reshape(height, -1).astype(np.uint32)
    if bit_depth == 16:
        rows = samples.astype(">u2").view(np.uint8).reshape(height, -1)
    elif bit_depth == 8:
        rows = samples.astype(np.uint8)
    else:  # several samples per byte, the first in the high bits
        per_byte = 8 // bit_depth
        padded = np.zeros((height, -(-samples.shape[1] // per_byte) * per_byte), np.uint32)
        padded[:, : samples.shape[1]] = samples
        groups = padded.reshape(height, -1, per_byte)
        shifts = np.arange(per_byte - 1, -1, -1, dtype=np.uint32) * bit_depth
        rows = (groups << shifts).sum(axis=2).astype(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    parts = [chunk(b"IHDR", header), *extra]
    if palette:
        parts.append(chunk(b"PLTE", palette))
    parts += [chunk(b"IDAT", zlib.compress(raw)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(parts)


def grey(bit_depth: int) -> bytes:
    """Greyscale at `bit_depth`, values spread over the depth's whole range."""
    levels = (1 << bit_depth) - 1
    values = np.asarray(photo().convert("L"), np.uint32) * levels // 255
    return png(values, GREY, bit_depth)


def rgb16(alpha: bool = False) -> bytes:
    pixels = np.asarray(photo("coffee.jpg"), np.uint32) * 257  # 8 bits -> 16 bits exactly
    if alpha:
        pixels = np.dstack([pixels, np.full(pixels.shape[:2], 40000, np.uint32)])
    return png(pixels, RGBA if alpha else RGB, 16)


def palette(transparency: bool = False) -> bytes:
    image = photo("coffee.jpg").quantize(64)
    colours = bytes(image.getpalette()[: 64 * 3])
    trns = (chunk(b"tRNS", bytes(range(0, 256, 4))),) if transparency else ()
    return png(np.asarray(image), PALETTE, 8, colours, trns)


def grey_alpha() -> bytes:
    values = np.asarray(photo().convert("L"), np.uint32)
    return png(np.dstack([values, 255 - values]), GREY_ALPHA)


def plain_png() -> bytes:
    return png(np.asarray(photo("coffee.jpg"), np.uint32), RGB)


def with_ancillary(kind: bytes, data: bytes) -> bytes:
    """`plain_png` carrying one large ancillary chunk."""
    pixels = np.asarray(photo("coffee.jpg"), np.uint32)
    return png(pixels, RGB, extra=(chunk(kind, data),))


def text_chunk(size: int) -> bytes:
    return with_ancillary(b"tEXt", b"Comment\0" + b"x" * size)


def compressed_text_bomb(expanded: int) -> bytes:
    """A zTXt chunk of a few hundred KB that inflates to `expanded` bytes."""
    return with_ancillary(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * expanded, 9))


def icc_profile(size: int) -> bytes:
    return with_ancillary(b"iCCP", b"big\0\0" + zlib.compress(bytes(size), 9))


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def jpeg_with_warning() -> bytes:
    """Extraneous bytes before the end marker: libjpeg warns and decodes the image whole."""
    data = jpeg(photo("coffee.jpg"))
    return data[:-2] + b"\x00\x13\x37" + data[-2:]


def header_only_png(width: int, height: int) -> bytes:
    """A PNG header declaring `width` x `height` and a few bytes of image data: the limits
    must refuse it from the header alone."""
    header = struct.pack(">IIBBBBB", width, height, 8, RGB, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def elongated(size: tuple[int, int], image_format: str) -> bytes:
    """A flat image of extreme aspect ratio: a few KB on the wire."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, image_format)
    return buffer.getvalue()


# Unusual but valid: each must be served, with the reference's answer.
VALID = {
    "palette PNG": lambda: palette(),
    "palette PNG with tRNS": lambda: palette(transparency=True),
    "1-bit greyscale PNG": lambda: grey(1),
    "2-bit greyscale PNG": lambda: grey(2),
    "4-bit greyscale PNG": lambda: grey(4),
    "8-bit greyscale PNG": lambda: grey(8),
    "16-bit greyscale PNG": lambda: grey(16),
    "greyscale + alpha PNG": grey_alpha,
    "16-bit RGB PNG": lambda: rgb16(),
    "16-bit RGBA PNG": lambda: rgb16(alpha=True),
    "1.5 MB tEXt chunk": lambda: text_chunk(1_500_000),
    "zTXt chunk inflating to 50 MB": lambda: compressed_text_bomb(50_000_000),
    "iCCP chunk inflating to 50 MB": lambda: icc_profile(50_000_000),
    "CMYK JPEG": lambda: jpeg(photo("coffee.jpg").convert("CMYK")),
    "progressive JPEG": lambda: jpeg(photo("coffee.jpg"), progressive=True),
    "greyscale JPEG": lambda: jpeg(photo().convert("L")),
    "4:4:4 JPEG": lambda: jpeg(photo("coffee.jpg"), subsampling=0),
    "arithmetic-coded JPEG": lambda: (FIXTURES / "coffee_arithmetic.jpg").read_bytes(),
    "JPEG with extraneous bytes": jpeg_with_warning,
    "400x20 PNG, at MAX_ASPECT_RATIO": lambda: elongated((400, 20), "PNG"),
    "20x400 JPEG, at MAX_ASPECT_RATIO": lambda: elongated((20, 400), "JPEG"),
}
# The image whose reference answer a VALID one must get, where it is not the image itself:
# ancillary chunks are ignored.
SAME_PIXELS_AS = {
    "1.5 MB tEXt chunk": plain_png,
    "zTXt chunk inflating to 50 MB": plain_png,
    "iCCP chunk inflating to 50 MB": plain_png,
}

# A few KB each that ask for a resize of gigabytes if the aspect ratio is not bounded.
ASPECT_RATIO_BOMBS = {
    "40000x2 PNG": lambda: elongated((40000, 2), "PNG"),
    "2x60000 JPEG": lambda: elongated((2, 60000), "JPEG"),
    "421x20 PNG, just over MAX_ASPECT_RATIO": lambda: elongated((421, 20), "PNG"),
}


def media_type(data: bytes) -> str:
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
