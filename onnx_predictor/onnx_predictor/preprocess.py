"""What the service does to one image before the graph, callable without a server (the
benchmark's fidelity report and in-process ceiling call these very functions):

* `decode_pixels`: JPEG or PNG bytes to uint8 RGB pixels, optionally scaled down in
  libjpeg-turbo's DCT domain (JPEG_DCT_SCALING);
* `resize_crop`: for the fixed graph, an antialiased bilinear resize of only the region that
  survives the reference's resize and centre crop (weather_model.crop), straight to the crop,
  by fast_image_resize (cykooz-resizer, "simd") or Pillow ("pillow", the reference's own
  resize). Both stay within one level of the reference's pixels (onnx_predictor/tests).
"""

import importlib.metadata
import math
import threading
from typing import Final, Literal

import numpy as np
import PIL
import simplejpeg
from PIL import Image
from serving_common.images import ImageLimits, decode_with_pil, sniff_image_format
from serving_common.settings import ConfigError
from weather_model.crop import crop_box, dct_scale_denominator

# Why cykooz-resizer cannot be imported, if it cannot: it has no wheel for Linux arm64,
# where Pillow resizes instead.
simd_import_error: ImportError | None = None
try:
    import cykooz_resizer as simd
except ImportError as exc:
    simd, simd_import_error = None, exc

# JPEG colour spaces libjpeg-turbo converts to RGB exactly as Pillow does. Not CMYK or
# YCCK: Pillow converts those itself, and libjpeg-turbo's result differs by one level.
TURBO_COLORSPACES = frozenset({"YCbCr", "Gray", "RGB"})

Resizer = Literal["simd", "pillow"]
RESIZERS: Final[tuple[Resizer, ...]] = ("simd", "pillow")


def dct_scale_options(width: int, height: int, resize_size: int) -> dict[str, int]:
    """simplejpeg.decode_jpeg's arguments that decode at exactly 1/d of full size, with d
    from weather_model.crop (none when d is 1).

    NOTE: simplejpeg picks the smallest of libjpeg-turbo's n/8 scales whose output is at
    least min_height x min_width and whose factor 8/n is at least min_factor (scale 1 if
    none is). At 1/d the output is ceil(h/d) x ceil(w/d), as libjpeg rounds: the minimum
    size rules out every smaller scale, the minimum factor every larger one.
    """
    denominator = dct_scale_denominator(width, height, resize_size)
    if denominator == 1:
        return {}
    return {
        "min_height": math.ceil(height / denominator),
        "min_width": math.ceil(width / denominator),
        "min_factor": denominator,
    }


def decode_jpeg_turbo(
    image: bytes, limits: ImageLimits, dct_scaling: bool, resize_size: int
) -> np.ndarray | None:
    """libjpeg-turbo straight to an RGB uint8 array (no copy, no float), or None where
    Pillow must decide: CMYK, YCCK, and anything libjpeg-turbo reports, even a recoverable
    warning (strict mode), which Pillow then decodes as libjpeg does or refuses. Pillow's
    reading is the reference; on every other JPEG the two give the same pixels (same
    libjpeg settings: accurate integer IDCT, fancy upsampling), checked case by case in
    onnx_predictor/tests. With `dct_scaling`, decoded at the scale `dct_scale_options` gives."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(image)
    except ValueError:
        return None
    limits.check(width, height)
    if colorspace not in TURBO_COLORSPACES:
        return None
    scale = dct_scale_options(width, height, resize_size) if dct_scaling else {}
    try:
        return simplejpeg.decode_jpeg(image, colorspace="RGB", strict=True, **scale)
    except ValueError:
        return None


def decode_pixels(
    image: bytes, limits: ImageLimits, dct_scaling: bool, resize_size: int
) -> np.ndarray:
    """JPEG or PNG bytes to uint8 RGB pixels [height, width, 3], `limits` checked from the
    header first (ServiceError). `dct_scaling` applies to the JPEGs libjpeg-turbo decodes;
    `resize_size` is the shorter side the reference resizes to (metadata.json)."""
    if sniff_image_format(image) == "jpeg":
        pixels = decode_jpeg_turbo(image, limits, dct_scaling, resize_size)
        if pixels is not None:
            return pixels
    return np.asarray(decode_with_pil(image, limits))


def resize_crop(
    pixels: np.ndarray, resizer: Resizer, resize_size: int, crop_size: int
) -> np.ndarray:
    """uint8 RGB pixels [height, width, 3] to the reference's crop [crop, crop, 3]: the
    fixed graph's input for one image."""
    height, width, _ = pixels.shape
    box = crop_box(width, height, resize_size, crop_size)
    if resizer == "simd":
        return _resize_simd(pixels, box, crop_size)
    if resizer == "pillow":
        return _resize_pillow(pixels, box, crop_size)
    raise ValueError(f"unknown resizer {resizer!r}; expected one of {RESIZERS}")


def _resize_pillow(
    pixels: np.ndarray, box: tuple[float, float, float, float], crop_size: int
) -> np.ndarray:
    left, top, width, height = box
    # `box` keeps the whole image's scale and clips the filter at the image's own borders:
    # the same pixels as resizing everything, then cropping.
    resized = Image.fromarray(pixels).resize(
        (crop_size, crop_size),
        Image.Resampling.BILINEAR,
        box=(left, top, left + width, top + height),
    )
    return np.asarray(resized)


class _SimdState:
    """One thread's fast_image_resize objects, kept between calls: the Resizer (it keeps its
    scratch buffers) and the destination image. Per thread, because they are mutable."""

    def __init__(self, crop_size: int) -> None:
        assert simd is not None
        self.resizer = simd.Resizer()
        self.destination = Image.new("RGB", (crop_size, crop_size))
        self.algorithm = simd.ResizeAlg.convolution(simd.FilterType.bilinear)


_thread = threading.local()


def _simd_state(crop_size: int) -> _SimdState:
    """This thread's fast_image_resize objects for `crop_size`, made on first use."""
    states: dict[int, _SimdState] | None = getattr(_thread, "simd", None)
    if states is None:
        states = _thread.simd = {}
    if crop_size not in states:
        states[crop_size] = _SimdState(crop_size)
    return states[crop_size]


def _resize_simd(
    pixels: np.ndarray, box: tuple[float, float, float, float], crop_size: int
) -> np.ndarray:
    if simd is None:
        raise RuntimeError(simd_missing())
    state = _simd_state(crop_size)
    # NOTE: through a Pillow image, which fast_image_resize reads in place: one copy of the
    # pixels, and the GIL released while it resizes. cykooz-resizer's ImageData takes
    # `bytes` only (not an array or a memoryview) and copies them again: with the decoded
    # array, three photo-sized buffers per request, which glibc gave back to the system and
    # faulted in anew every time (about 1900 page faults, 10 ms, for a 1200x727 photo on a
    # 2-core VM), and the GIL held throughout.
    source = Image.fromarray(pixels)
    options = simd.ResizeOptions(resize_alg=state.algorithm, crop_box=simd.CropBox(*box))
    state.resizer.resize_pil(source, state.destination, options)
    return np.asarray(state.destination)  # a copy: the next resize does not change it


def simd_missing() -> str:
    """Why the SIMD resizer cannot be used, in one line."""
    return f"cykooz-resizer cannot be imported ({simd_import_error})"


def choose_resizer(setting: str) -> Resizer:
    """RESIZER's value to the resizer to use; ConfigError, one line, for "simd" where
    cykooz-resizer cannot be imported (no wheel for Linux arm64)."""
    if setting == "simd":
        if simd is None:
            raise ConfigError(f"RESIZER=simd: {simd_missing()}; set RESIZER=pillow")
        return "simd"
    if setting == "pillow":
        return "pillow"
    raise ConfigError(f"RESIZER: {setting!r} is not one of pillow, simd")


def describe_resizer(resizer: Resizer) -> str:
    """The resizer's library and version, for /info."""
    if resizer == "simd":
        version = importlib.metadata.version("cykooz-resizer")
        return f"cykooz-resizer {version} (fast_image_resize), bilinear"
    return f"Pillow {PIL.__version__}, bilinear"


def simd_cpu_extension() -> str:
    """The SIMD extension fast_image_resize uses on this machine (avx2, sse4_1, neon)."""
    if simd is None:
        raise RuntimeError(simd_missing())
    return str(simd.Resizer().cpu_extensions.name)
