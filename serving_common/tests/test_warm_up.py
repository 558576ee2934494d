"""Before it serves, a service predicts once on a built-in image and checks the output
against metadata.json's labels: a mismatched model stops startup with one line."""

from pathlib import Path

import numpy as np
import pytest
from serving_common.images import ImageLimits, decode_with_pil
from serving_common.model_source import FetchedModel
from serving_common.settings import load_settings
from serving_common.startup import StartupError, build_state, warm_up_image
from weather_model.metadata import ModelContract

CONTRACT = ModelContract(
    architecture="any",
    labels=tuple(f"label{i}" for i in range(11)),
    resize_size=256,
    crop_size=224,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)


def fake_predictor(output: np.ndarray):
    """A Predictor class whose model answers `output` whatever it is shown."""

    class FakePredictor:
        def __init__(self, model, settings):
            self.seen = []

        def decode(self, image: bytes, limits: ImageLimits):
            return np.asarray(decode_with_pil(image, limits))

        def preprocess(self, decoded):
            return decoded[::2, ::2]  # something the predictions can be told apart by

        def predict(self, batch):
            self.seen.extend(one.shape for one in batch)
            return output

        def describe(self):
            return {"runtime": "fake"}

    return FakePredictor


def start(output: np.ndarray):
    metadata = CONTRACT.to_metadata()
    model = FetchedModel("fake://model.onnx", Path("model.onnx"), metadata, 0.0)
    return build_state(
        "fake", load_settings(8080, model_uri="fake://model.onnx"), model, fake_predictor(output)
    )


def test_the_warm_up_predicts_once_on_a_built_in_image_decoded_and_preprocessed():
    state = start(np.full((1, 11), 1 / 11, np.float32))
    assert state.predictor.seen == [(120, 160, 3)]
    assert warm_up_image()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (np.zeros((1, 10)), r"output shape \[1, 10\]; expected \[1, 11\]"),
        (np.zeros((11,)), r"output shape \[11\]; expected \[1, 11\]"),
        (np.array([[np.nan] * 11]), "non-finite"),
    ],
)
def test_an_output_that_does_not_match_the_labels_stops_startup(output, message):
    with pytest.raises(StartupError, match=message) as caught:
        start(output)
    assert "\n" not in str(caught.value)
