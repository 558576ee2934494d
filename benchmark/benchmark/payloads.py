"""Benchmark request bodies in the original study's format: {"image": "<base64 JPEG>"}.

The JPEG bytes are the committed sample files, embedded unchanged, so the same files give
the same bodies byte for byte on every run.
"""

import argparse
import base64
import json
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[2] / "images"

# name -> sample image. "study" is close to the study's payload (1200x727, ~220 KB JPEG);
# small / study / large form the size sweep.
PAYLOAD_IMAGES = {
    "small": "rocket.jpg",
    "study": "hubble_wide.jpg",
    "large": "hubble_portrait.jpg",
}


def json_body(jpeg: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(jpeg).decode("ascii")}).encode()


def write_payloads(out: Path, images: Path = IMAGES) -> dict[str, Path]:
    """Write `<name>.json` (JSON + base64) and `<name>.jpg` (raw body) for every payload."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, image in PAYLOAD_IMAGES.items():
        jpeg = (images / image).read_bytes()
        (out / f"{name}.json").write_bytes(json_body(jpeg))
        (out / f"{name}.jpg").write_bytes(jpeg)
        written[name] = out / f"{name}.json"
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/payloads"))
    args = parser.parse_args()
    for name, path in write_payloads(args.out).items():
        print(f"{name}: {path} ({path.stat().st_size} B)")


if __name__ == "__main__":
    main()
