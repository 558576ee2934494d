"""The fidelity set: the sample photos and inputs derived from them, reproducibly.

From each photo: the file itself; crops (centre, corners); scales (down to below the crop
size, and up); aspect ratios from 1:3 to 3:1; JPEG qualities 30 to 95; 4:4:4 chroma;
greyscale; PNG. What a service meets in the wild, on photos whose reference answers are
known. Pillow writes every derived file, so the set is the same wherever Pillow's bundled
codecs are the same version (uv.lock pins it).
"""

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from weather_model.demo import SAMPLE_IMAGES
from weather_model.reference import decode_rgb, sample_images

Derive = Callable[[Image.Image], Image.Image]


def _crop_fraction(left: float, top: float, fraction: float) -> Derive:
    """A crop of `fraction` of each side, its top-left corner at (left, top) of the slack."""

    def crop(image: Image.Image) -> Image.Image:
        w, h = round(image.width * fraction), round(image.height * fraction)
        x, y = round((image.width - w) * left), round((image.height - h) * top)
        return image.crop((x, y, x + w, y + h))

    return crop


def _aspect(ratio: float) -> Derive:
    """The largest centred crop whose width / height is `ratio`."""

    def crop(image: Image.Image) -> Image.Image:
        w = min(image.width, round(image.height * ratio))
        h = min(image.height, round(w / ratio))
        x, y = (image.width - w) // 2, (image.height - h) // 2
        return image.crop((x, y, x + w, y + h))

    return crop


def _scale(factor: float) -> Derive:
    def scale(image: Image.Image) -> Image.Image:
        size = (round(image.width * factor), round(image.height * factor))
        return image.resize(size, Image.Resampling.LANCZOS)

    return scale


def _same(image: Image.Image) -> Image.Image:
    return image


def _jpeg(quality: int = 90, subsampling: int = 2) -> Callable[[Image.Image], bytes]:
    def encode(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, subsampling=subsampling)
        return out.getvalue()

    return encode


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _grey_jpeg(image: Image.Image) -> bytes:
    return _jpeg()(image.convert("L"))


# name -> (derivation, encoding): 16 per photo, plus the photo's own file.
DERIVED: dict[str, tuple[Derive, Callable[[Image.Image], bytes]]] = {
    "crop_centre_60": (_crop_fraction(0.5, 0.5, 0.6), _jpeg()),
    "crop_top_left_50": (_crop_fraction(0.0, 0.0, 0.5), _jpeg()),
    "crop_bottom_right_75": (_crop_fraction(1.0, 1.0, 0.75), _jpeg()),
    "scale_0.35": (_scale(0.35), _jpeg()),
    "scale_0.7": (_scale(0.7), _jpeg()),
    "scale_1.4": (_scale(1.4), _jpeg()),
    "aspect_1x3": (_aspect(1 / 3), _jpeg()),
    "aspect_1x2": (_aspect(1 / 2), _jpeg()),
    "aspect_2x1": (_aspect(2), _jpeg()),
    "aspect_3x1": (_aspect(3), _jpeg()),
    "quality_30": (_same, _jpeg(30)),
    "quality_60": (_same, _jpeg(60)),
    "quality_95": (_same, _jpeg(95)),
    "chroma_444": (_same, _jpeg(90, subsampling=0)),
    "greyscale": (_same, _grey_jpeg),
    "png": (_scale(0.5), _png),
}


def fidelity_set(images: Path = SAMPLE_IMAGES) -> dict[str, bytes]:
    """{"<photo>/<derivation>": encoded bytes}, the photos' own files as "<photo>/original"."""
    inputs: dict[str, bytes] = {}
    for path in sample_images(images):
        data = path.read_bytes()
        inputs[f"{path.name}/original"] = data
        photo = decode_rgb(data)
        for name, (derive, encode) in DERIVED.items():
            inputs[f"{path.name}/{name}"] = encode(derive(photo))
    return inputs
