"""Re-create the sample photographs in this folder from the photos bundled in scikit-image.

Run by hand (`make images`); the outputs are committed, so nothing else needs scikit-image.
Every output is a plain function of a bundled photo (crop, resize, re-encode), so rerunning
with the pinned versions gives the same bytes.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

HERE = Path(__file__).parent


def _img(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)())


def _scaled(img: Image.Image, factor: float) -> Image.Image:
    size = (round(img.width * factor), round(img.height * factor))
    return img.resize(size, Image.Resampling.LANCZOS)


def _with_radial_alpha(img: Image.Image) -> Image.Image:
    h, w = img.height, img.width
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    alpha = (np.clip(1.3 - r, 0, 1) * 255).astype(np.uint8)
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def main() -> None:
    hubble = _img("hubble_deep_field")  # 1000x872
    rocket = _img("rocket")  # 640x427
    outputs: dict[str, Image.Image] = {
        "astronaut.jpg": _img("astronaut"),
        "chelsea.jpg": _scaled(_img("chelsea"), 2),
        "coffee.jpg": _img("coffee"),
        "rocket.jpg": rocket,
        "rocket_portrait.jpg": _scaled(rocket.crop((170, 0, 470, 427)), 2),
        "retina.jpg": _img("retina"),
        "gravel_grey.jpg": _img("gravel"),
        # Close to the study's payload: 1200x727 landscape.
        "hubble_wide.jpg": _scaled(hubble, 1.4).crop((100, 250, 1300, 977)),
        # The large end of the size sweep: about 3.5 megapixels, portrait.
        "hubble_portrait.jpg": _scaled(hubble.crop((120, 0, 880, 872)), 2.3),
        "astronaut.png": _img("astronaut"),
        "camera_grey.png": _img("camera"),
        "coffee_alpha.png": _with_radial_alpha(_img("coffee")),
        "chelsea_large.jpg": _scaled(_img("chelsea"), 3),
    }
    for name, img in outputs.items():
        img.save(HERE / name, quality=90) if name.endswith(".jpg") else img.save(HERE / name)
        print(f"{name}: {img.width}x{img.height} {img.mode} {(HERE / name).stat().st_size} B")


if __name__ == "__main__":
    main()
