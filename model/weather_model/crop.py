"""Where the reference's resize and centre crop land in the source image: the arithmetic a
service needs to resize only the region that survives the crop, with any resizer.

torchvision resizes the shorter side to the resize size (the longer to `int(resize * long /
short)`), then crops crop x crop at `round((side - crop) / 2)`, both sizes from the model's
metadata.json. An antialiased resize of just that region, to crop x crop, with the
whole-image scale and the filter clipped at the image's own borders (Pillow's `box`,
fast_image_resize's crop box), gives the same pixels at a fraction of the cost. A service
in another language ports the same arithmetic; the fidelity report compares every port
with the reference.

Torch-free, so the services can use it.
"""

import math

# libjpeg-turbo decodes at n/8 of full size in the DCT domain; 1/2, 1/4 and 1/8 have fast
# (SIMD or trivial) inverse DCTs, the other eighths do not.
DCT_SCALE_DENOMINATORS = (8, 4, 2)


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """torchvision's Resize(resize) output size: shorter side to `resize`."""
    short, long = min(width, height), max(width, height)
    new_long = resize * long // short  # == int(resize * long / short) for these sizes
    return (resize, new_long) if width <= height else (new_long, resize)


def crop_box(width: int, height: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """(left, top, width, height), in source pixels, of the region that becomes the crop."""
    new_width, new_height = resized_size(width, height, resize)
    scale_x, scale_y = width / new_width, height / new_height
    # Python's round(): half to even, as torchvision's CenterCrop.
    left, top = round((new_width - crop) / 2), round((new_height - crop) / 2)
    return (left * scale_x, top * scale_y, crop * scale_x, crop * scale_y)


def dct_scale_denominator(width: int, height: int, resize: int) -> int:
    """The largest d in 8, 4, 2 (else 1) such that decoding at 1/d keeps the shorter side at
    least `resize`: the resize still only shrinks, so its antialiasing still applies."""
    short = min(width, height)
    for denominator in DCT_SCALE_DENOMINATORS:
        if math.ceil(short / denominator) >= resize:
            return denominator
    return 1
