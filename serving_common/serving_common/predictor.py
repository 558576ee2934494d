"""What a strategy supplies: a Predictor, batch-shaped as in LitServe's
decode -> batch -> predict -> unbatch and TEI's `predict(batch)`.

Decoding and preprocessing are per request; inference takes a list, so a host that batches
requests hands over several at once, and a single request is a batch of one.
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from serving_common.images import ImageLimits
from serving_common.model_source import FetchedModel
from serving_common.settings import Settings


class Predictor(Protocol):
    def decode(self, image: bytes, limits: ImageLimits) -> Any:
        """Image bytes to pixels, by the rule of `weather_model.pixels`; checks `limits`
        from the header first. ServiceError for a bad or oversized image. Decoding only:
        whatever is done to the pixels afterwards is `preprocess`."""

    def preprocess(self, decoded: Any) -> Any:
        """One decoded image to the network's input for it (resize, crop, normalisation,
        whatever of these the model does not do itself)."""

    def predict(self, batch: Sequence[Any]) -> np.ndarray:
        """Probabilities in label order, one row per preprocessed input:
        [len(batch), labels]."""

    def describe(self) -> dict[str, Any]:
        """Runtime, versions, threads, decoder and pipeline, for /info and the benchmark's
        records."""


# A Predictor class: built once per worker from the fetched model and the settings.
LoadPredictor = Callable[[FetchedModel, Settings], Predictor]
