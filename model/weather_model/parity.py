"""Export-time parity: every ONNX graph against the PyTorch reference on every sample image."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from torch import nn

from weather_model.onnx_graph import run_onnx
from weather_model.reference import decode_rgb, reference_probabilities

MAX_PROBABILITY_DELTA = 0.01
# Demo weights must beat the runner-up by this much, so that parity means something.
MIN_DEMO_MARGIN = 0.1


class ParityError(AssertionError):
    """An ONNX graph that disagrees with the PyTorch reference."""


@dataclass(frozen=True)
class ImageCheck:
    image: str
    top1: int
    margin: float  # reference top-1 minus runner-up probability
    max_delta: dict[str, float]  # per graph: max |ONNX - reference| probability


def check_parity(
    model: nn.Module, graphs: dict[str, bytes], images: list[Path]
) -> list[ImageCheck]:
    if not images:
        raise ParityError("no sample images to check parity on")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # unused-initializer notices are not news here
    sessions = {
        name: ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        for name, graph in graphs.items()
    }
    checks = []
    for path in images:
        image = decode_rgb(path.read_bytes())
        expected = reference_probabilities(model, image)
        pixels = np.asarray(image)
        deltas = {}
        for name, session in sessions.items():
            got = run_onnx(session, pixels)
            if int(got.argmax()) != int(expected.argmax()):
                raise ParityError(
                    f"{name} on {path.name}: top-1 {int(got.argmax())} != reference "
                    f"{int(expected.argmax())}"
                )
            deltas[name] = float(np.abs(got - expected).max())
            if deltas[name] > MAX_PROBABILITY_DELTA:
                raise ParityError(
                    f"{name} on {path.name}: max |Δprobability| {deltas[name]:.4f} > "
                    f"{MAX_PROBABILITY_DELTA}"
                )
        ranked = np.sort(expected)
        checks.append(
            ImageCheck(path.name, int(expected.argmax()), float(ranked[-1] - ranked[-2]), deltas)
        )
    return checks
