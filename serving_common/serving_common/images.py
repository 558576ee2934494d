"""Image checks every decoder makes before spending time on an image, and Pillow decoding
by the one rule of `weather_model.pixels`."""

from dataclasses import dataclass

from PIL import Image
from weather_model.pixels import open_image, to_rgb

from serving_common.errors import ErrorType, ServiceError

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# NOTE: Pillow's own decompression-bomb check refuses (as an error we would report as 415)
# images over twice its default pixel count, inside Image.open; ours runs right after
# Image.open has read the header, with the limit the service is configured with.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be, checked from its header before it is decoded."""

    max_pixels: int
    max_aspect_ratio: int

    def check(self, width: int, height: int) -> None:
        """The pixel count first (413), then the aspect ratio (422)."""
        if width <= 0 or height <= 0:
            raise ServiceError(
                ErrorType.UNSUPPORTED_IMAGE, f"the image has no pixels ({width}x{height})"
            )
        if width * height > self.max_pixels:
            raise ServiceError(
                ErrorType.IMAGE_TOO_LARGE,
                f"the image is {width}x{height} = {width * height} pixels; "
                f"the limit (MAX_IMAGE_PIXELS) is {self.max_pixels}",
            )
        # The shorter side is resized to 256: the ratio bounds that resize's memory.
        if max(width, height) > self.max_aspect_ratio * min(width, height):
            raise ServiceError(
                ErrorType.EXTREME_ASPECT_RATIO,
                f"the image is {width}x{height}; its longer side may be at most "
                f"MAX_ASPECT_RATIO ({self.max_aspect_ratio}) times its shorter side",
            )


def sniff_image_format(data: bytes) -> str:
    """'jpeg' or 'png' from the leading bytes, whatever Content-Type claimed."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    raise ServiceError(ErrorType.UNSUPPORTED_IMAGE, "the image is neither JPEG nor PNG")


def decode_with_pil(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode to 8-bit RGB with Pillow, refusing images over the limits before decoding."""
    sniff_image_format(data)
    try:
        image = open_image(data)
        limits.check(image.width, image.height)
        return to_rgb(image)
    except ServiceError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ServiceError(
            ErrorType.UNSUPPORTED_IMAGE, f"the image cannot be decoded ({exc})"
        ) from None
