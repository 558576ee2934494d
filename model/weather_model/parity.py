"""Export-time parity: every ONNX graph against the PyTorch reference on every sample image.

The any-size graphs run one decoded image at a time; the fixed graph runs all the sample
images' reference crops as one batch, so that a batch of several is what gets checked.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from torch import nn

from weather_model.metadata import ModelContract
from weather_model.onnx_graph import run_onnx, takes_batches
from weather_model.reference import decode_rgb, reference_crop, reference_probabilities

MAX_PROBABILITY_DELTA = 0.01
# Demo weights must beat the runner-up by this much on every sample image (far above the
# graphs' float differences, ~1e-5), and give this many different labels over them, so
# that agreeing on top-1 means something.
MIN_DEMO_MARGIN = 0.03
MIN_DEMO_LABELS = 5


class ParityError(AssertionError):
    """An ONNX graph that disagrees with the PyTorch reference."""


@dataclass(frozen=True)
class ImageCheck:
    image: str
    top1: int
    margin: float  # reference top-1 minus runner-up probability
    max_delta: dict[str, float]  # per graph: max |ONNX - reference| probability


def check_parity(
    model: nn.Module, contract: ModelContract, graphs: dict[str, bytes], images: list[Path]
) -> list[ImageCheck]:
    """Each graph's probabilities on each image against the reference's (the eager `model`
    with the contract's preprocessing); ParityError on a different top-1 or a max
    |Δprobability| over MAX_PROBABILITY_DELTA."""
    if not images:
        raise ParityError("no sample images to check parity on")
    decoded = [decode_rgb(path.read_bytes()) for path in images]
    expected = np.stack([reference_probabilities(model, image, contract) for image in decoded])
    got = {name: graph_probabilities(graph, decoded, contract) for name, graph in graphs.items()}
    checks = []
    for row, (path, reference) in enumerate(zip(images, expected, strict=True)):
        deltas = {name: _compare(name, path, probs[row], reference) for name, probs in got.items()}
        ranked = np.sort(reference)
        checks.append(
            ImageCheck(path.name, int(reference.argmax()), float(ranked[-1] - ranked[-2]), deltas)
        )
    return checks


def graph_probabilities(
    graph: bytes, images: list[Image.Image], contract: ModelContract
) -> np.ndarray:
    """[N, labels]: the fixed graph on all reference crops as one batch, an any-size graph
    on each decoded image in turn."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # unused-initializer notices are not news here
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    if takes_batches(session):
        return run_onnx(session, np.stack([reference_crop(image, contract) for image in images]))
    return np.stack([run_onnx(session, np.asarray(image)) for image in images])


def _compare(name: str, path: Path, got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected|, or ParityError naming the graph and the image."""
    if int(got.argmax()) != int(expected.argmax()):
        raise ParityError(
            f"{name} on {path.name}: top-1 {int(got.argmax())} != reference "
            f"{int(expected.argmax())}"
        )
    delta = float(np.abs(got - expected).max())
    if delta > MAX_PROBABILITY_DELTA:
        raise ParityError(
            f"{name} on {path.name}: max |Δprobability| {delta:.4f} > {MAX_PROBABILITY_DELTA}"
        )
    return delta
