"""How image bytes become 8-bit RGB pixels: one rule for every Python decode, the services'
and the export's parity reference alike (contract/README.md describes it).

Pillow's `Image.open(...).convert("RGB")` is the reference, with two corrections:

- 16-bit greyscale keeps the high byte of each sample, as Pillow already does for 16-bit
  RGB, RGBA and LA; its own conversion clips every value above 255 to white.
- PNG ancillary chunks (text, ICC profiles, gamma, ...) are dropped before Pillow reads the
  file. None of them changes the 8-bit RGB pixels, and Pillow refuses files whose text or
  ICC chunks exceed its own limits (`PngImagePlugin.MAX_TEXT_CHUNK`); raising those limits
  instead would let a compressed text chunk inflate without bound.

Torch-free, so the services can use it without loading the export's dependencies.
"""

import io
import struct

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A chunk is its 4-byte length and 4-byte type, the data, then a 4-byte CRC.
_CHUNK_HEADER = struct.Struct(">I4s")
_CHUNK_OVERHEAD = _CHUNK_HEADER.size + 4
# Bit 5 of a chunk type's first byte (a lowercase letter) marks it ancillary.
_ANCILLARY_BIT = 0x20
_END_CHUNK = b"IEND"
# The modes Pillow gives 16-bit greyscale samples.
SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def without_ancillary_chunks(data: bytes) -> bytes:
    """A PNG with only its critical chunks (IHDR, PLTE, IDAT, IEND); anything else, or a
    PNG that stops being well formed, is returned from that point on unchanged, for Pillow
    to judge. Returns `data` itself, uncopied, when there is nothing to drop."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    kept: list[memoryview] = []
    view = memoryview(data)
    start, position = 0, len(PNG_SIGNATURE)  # `start`: the first byte not yet kept
    dropped = False
    while position + _CHUNK_OVERHEAD <= len(data):
        length, kind = _CHUNK_HEADER.unpack_from(data, position)
        end = position + _CHUNK_OVERHEAD + length
        if end > len(data):
            break  # truncated: left as it is
        if kind[0] & _ANCILLARY_BIT:
            kept.append(view[start:position])
            start, dropped = end, True
        position = end
        if kind == _END_CHUNK:
            break
    if not dropped:
        return data
    kept.append(view[start:])
    return b"".join(kept)


def open_image(data: bytes) -> Image.Image:
    """Pillow's lazy open: the header is read (size and mode known), no pixel decoded yet."""
    return Image.open(io.BytesIO(without_ancillary_chunks(data)))


def to_rgb(image: Image.Image) -> Image.Image:
    """Decode an opened image to 8-bit RGB: greyscale and palette expanded, alpha dropped
    (not composited), 16-bit samples to their high byte."""
    if image.mode in SIXTEEN_BIT_GREY_MODES:
        # Big-endian whatever the source order, so every even byte is a high byte.
        high_bytes = image.tobytes("raw", "I;16B")[::2]
        return Image.frombytes("L", image.size, high_bytes).convert("RGB")
    return image.convert("RGB")


def decode_rgb(data: bytes) -> Image.Image:
    """JPEG or PNG bytes to 8-bit RGB, by the rule above."""
    return to_rgb(open_image(data))
