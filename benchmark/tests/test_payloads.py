import base64
import json

from benchmark.payloads import PAYLOAD_IMAGES, write_payloads
from PIL import Image


def test_payloads_are_reproducible_and_in_the_study_format(tmp_path):
    first = write_payloads(tmp_path / "a")
    second = write_payloads(tmp_path / "b")
    assert set(first) == set(PAYLOAD_IMAGES) == {"small", "study", "large"}
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes()
        body = json.loads(path.read_bytes())
        assert list(body) == ["image"]
        jpeg = base64.b64decode(body["image"], validate=True)
        assert jpeg == path.with_suffix(".jpg").read_bytes()
        assert Image.open(path.with_suffix(".jpg")).format == "JPEG"


def test_study_payload_matches_the_original_study_size(tmp_path):
    study = write_payloads(tmp_path)["study"].with_suffix(".jpg")
    assert Image.open(study).size == (1200, 727)
    assert 180_000 <= study.stat().st_size <= 280_000


def test_size_sweep_grows(tmp_path):
    paths = write_payloads(tmp_path)
    pixels = {n: Image.open(p.with_suffix(".jpg")).size for n, p in paths.items()}
    area = {n: w * h for n, (w, h) in pixels.items()}
    assert area["small"] < area["study"] < area["large"] and area["large"] >= 3_000_000
