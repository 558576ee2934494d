"""Image checks every decoder makes before spending time on an image, and Pillow decoding."""

import io
import warnings

from PIL import Image

from serving_common.errors import ServiceError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sniff_image_format(data: bytes) -> str:
    """'jpeg' or 'png' from the leading bytes, whatever Content-Type claimed."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    raise ServiceError("unsupported_image", "the image is neither JPEG nor PNG")


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ServiceError("unsupported_image", f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ServiceError(
            "image_too_large",
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit (MAX_IMAGE_PIXELS) is {max_pixels}",
        )


def decode_with_pil(data: bytes, max_pixels: int) -> Image.Image:
    """Decode to RGB with Pillow, refusing oversized images before decompressing them."""
    sniff_image_format(data)
    try:
        with warnings.catch_warnings():
            # Pillow warns on large images; MAX_IMAGE_PIXELS is the limit that counts here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            check_pixels(image.width, image.height, max_pixels)
            return image.convert("RGB")
    except ServiceError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ServiceError("unsupported_image", f"the image cannot be decoded ({exc})") from None
