"""The ONNX graphs: uint8 pixels in, preprocessing and network inside, logits and
probabilities out.

* The any-size graph (model.onnx): one decoded image [height, width, 3], resize, centre crop
  and normalisation inside.
* The fixed graph (model.fixed.onnx): a batch of already resized and centre-cropped images
  [batch, crop, crop, 3] (as `reference.reference_crop` gives them), normalisation inside.

The sizes, mean and std are the model contract's (metadata.json). Preprocessing is written
with onnx.helper rather than traced from torch so that the dynamic-shape arithmetic is
explicit and identical to torchvision's:
  * shorter side to the resize size, longer side `resize * long // short` (truncating, as
    torchvision's `int(size * long / short)`), bilinear with antialiasing;
  * centre crop at `round((side - crop) / 2)`, rounding half to even like Python's round();
  * scale to [0, 1] and normalise with the contract's mean and std.
"""

import tempfile
import warnings
from pathlib import Path
from typing import Final

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from weather_model.contract import LOGITS_OUTPUT, ONNX_INPUT, ONNX_OUTPUTS, PROBABILITIES_OUTPUT
from weather_model.metadata import CHANNELS, ModelContract

OPSET = 18  # Resize gained `antialias` in opset 18.
IR_VERSION = 9
_NETWORK_INPUT = "normalized"
_NETWORK_OUTPUT = "network_logits"
BATCH: Final = "batch"
# The fixed graph's input is [batch, crop, crop, channels]; the any-size graph's, one image.
FIXED_INPUT_RANK: Final = 4
Shape = tuple[str | int, ...]


def any_size_shapes(contract: ModelContract) -> tuple[Shape, Shape]:
    """The any-size graph's input and output shapes (metadata.json is written from these):
    one RGB image, channels last, in; a score per label out."""
    return ("height", "width", CHANNELS), (len(contract.labels),)


def fixed_shapes(contract: ModelContract) -> tuple[Shape, Shape]:
    """The fixed graph's: a batch of crops, channels last, in; a row of scores per crop out."""
    crop = contract.crop_size
    return (BATCH, crop, crop, CHANNELS), (BATCH, len(contract.labels))


def export_network(model: nn.Module, contract: ModelContract) -> onnx.ModelProto:
    """The eager network as ONNX: float [batch, 3, crop, crop] -> logits [batch, labels]."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        path = Path(tmp) / "network.onnx"
        # NOTE: the TorchScript exporter is deprecated but deterministic and needs no
        # onnxscript; apart from the batch axis the network has static shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, CHANNELS, contract.crop_size, contract.crop_size),),
            path,
            dynamo=False,
            input_names=[_NETWORK_INPUT],
            output_names=[_NETWORK_OUTPUT],
            dynamic_axes={_NETWORK_INPUT: {0: BATCH}, _NETWORK_OUTPUT: {0: BATCH}},
            opset_version=OPSET,
        )
        return onnx.load(path)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def normalisation_constants(contract: ModelContract) -> list[onnx.TensorProto]:
    """1 / (255 std) and mean / std, shaped [1, 3, 1, 1] for NCHW."""
    mean = np.array(contract.mean, np.float32).reshape(1, CHANNELS, 1, 1)
    std = np.array(contract.std, np.float32).reshape(1, CHANNELS, 1, 1)
    return [
        _const("pre_scale", (1.0 / (255.0 * std)).astype(np.float32)),
        _const("pre_shift", (mean / std).astype(np.float32)),
    ]


def normalisation_nodes(nchw: str) -> list[onnx.NodeProto]:
    """float pixels in [0, 255], NCHW -> the network's input."""
    return [
        # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std
        helper.make_node("Mul", [nchw, "pre_scale"], ["pre_scaled"]),
        helper.make_node("Sub", ["pre_scaled", "pre_shift"], [_NETWORK_INPUT]),
    ]


def preprocessing_nodes(
    contract: ModelContract,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Resize, centre crop and normalisation of one [H, W, 3] uint8 image."""
    crop = contract.crop_size
    constants = [
        _const("pre_zero", np.array([0], np.int64)),
        _const("pre_resize", np.array([contract.resize_size], np.int64)),
        _const("pre_crop", np.array([crop, crop], np.int64)),
        _const("pre_one", np.array([1], np.int64)),
        _const("pre_three", np.array([3], np.int64)),
        _const("pre_half", np.array([0.5], np.float32)),
        _const("pre_crop_axes", np.array([1, 2], np.int64)),
        *normalisation_constants(contract),
    ]
    node = helper.make_node
    # NOTE: resizing channels-last, before any transpose, is what keeps this cheap: ONNX
    # Runtime's NHWC resize is about twice as fast as NCHW here, and the transpose then
    # moves the crop's pixels instead of the full photo.
    nodes = [
        # [H, W, 3] uint8 -> [1, H, W, 3] float
        node("Cast", [ONNX_INPUT], ["pre_float"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["pre_float", "pre_zero"], ["pre_nhwc"]),
        # resized [h, w] = resize * [H, W] // min(H, W)
        node("Shape", [ONNX_INPUT], ["pre_hw"], start=0, end=2),
        node("ReduceMin", ["pre_hw"], ["pre_short"], keepdims=1),
        node("Mul", ["pre_hw", "pre_resize"], ["pre_hw_scaled"]),
        node("Div", ["pre_hw_scaled", "pre_short"], ["pre_new_hw"]),
        node("Concat", ["pre_one", "pre_new_hw", "pre_three"], ["pre_sizes"], axis=0),
        node(
            "Resize",
            ["pre_nhwc", "", "", "pre_sizes"],
            ["pre_resized"],
            mode="linear",
            antialias=1,
            coordinate_transformation_mode="half_pixel",
            # Weights renormalised inside the image, as PIL does at the borders.
            exclude_outside=1,
        ),
        # top-left = round_half_even((new_hw - crop) / 2)
        node("Sub", ["pre_new_hw", "pre_crop"], ["pre_margin"]),
        node("Cast", ["pre_margin"], ["pre_margin_f"], to=TensorProto.FLOAT),
        node("Mul", ["pre_margin_f", "pre_half"], ["pre_offset_f"]),
        node("Round", ["pre_offset_f"], ["pre_offset_r"]),
        node("Cast", ["pre_offset_r"], ["pre_offset"], to=TensorProto.INT64),
        node("Add", ["pre_offset", "pre_crop"], ["pre_end"]),
        node("Slice", ["pre_resized", "pre_offset", "pre_end", "pre_crop_axes"], ["pre_crop_out"]),
        node("Transpose", ["pre_crop_out"], ["pre_nchw"], perm=[0, 3, 1, 2]),
        *normalisation_nodes("pre_nchw"),
    ]
    return nodes, constants


def fixed_preprocessing_nodes(
    contract: ModelContract,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Normalisation of a [N, crop, crop, 3] uint8 batch, already cropped."""
    nodes = [
        helper.make_node("Cast", [ONNX_INPUT], ["pre_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pre_float"], ["pre_nchw"], perm=[0, 3, 1, 2]),
        *normalisation_nodes("pre_nchw"),
    ]
    return nodes, normalisation_constants(contract)


def build_serving_graph(network: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Preprocessing + network + softmax in one graph with a dynamic-size uint8 input."""
    pre_nodes, pre_constants = preprocessing_nodes(contract)
    input_shape, output_shape = any_size_shapes(contract)
    post_nodes = [
        helper.make_node("Flatten", [_NETWORK_OUTPUT], ["logits_2d"], axis=0),
        helper.make_node("Squeeze", ["logits_2d", "pre_zero"], [LOGITS_OUTPUT]),
        helper.make_node("Softmax", [LOGITS_OUTPUT], [PROBABILITIES_OUTPUT], axis=0),
    ]
    return _checked_model(
        helper.make_graph(
            pre_nodes + list(network.graph.node) + post_nodes,
            f"{contract.architecture}_weather",
            inputs=[_uint8_input(input_shape)],
            outputs=_float_outputs(output_shape),
            initializer=pre_constants + list(network.graph.initializer),
        )
    )


def build_fixed_graph(network: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Normalisation + network + softmax for a batch of cropped uint8 images."""
    pre_nodes, pre_constants = fixed_preprocessing_nodes(contract)
    input_shape, output_shape = fixed_shapes(contract)
    post_nodes = [
        helper.make_node("Identity", [_NETWORK_OUTPUT], [LOGITS_OUTPUT]),
        helper.make_node("Softmax", [LOGITS_OUTPUT], [PROBABILITIES_OUTPUT], axis=1),
    ]
    return _checked_model(
        helper.make_graph(
            pre_nodes + list(network.graph.node) + post_nodes,
            f"{contract.architecture}_weather_fixed",
            inputs=[_uint8_input(input_shape)],
            outputs=_float_outputs(output_shape),
            initializer=pre_constants + list(network.graph.initializer),
        )
    )


def _uint8_input(shape: Shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(ONNX_INPUT, TensorProto.UINT8, list(shape))


def _float_outputs(shape: Shape) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name in ONNX_OUTPUTS
    ]


def _checked_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="model-serving",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def optimize_offline(model_bytes: bytes) -> bytes:
    """Apply ONNX Runtime's graph optimisations once and save the result.

    ORT_ENABLE_EXTENDED stops short of the layout level (NCHWc blocking chosen for this
    machine's vector width), so the saved graph stays portable between x86-64 machines.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return out.read_bytes()


def takes_batches(session: ort.InferenceSession) -> bool:
    """Whether the session runs the fixed graph ([batch, crop, crop, 3] in)."""
    return len(session.get_inputs()[0].shape) == FIXED_INPUT_RANK


def run_onnx(session: ort.InferenceSession, pixels: np.ndarray) -> np.ndarray:
    """Probabilities: [labels] for one decoded RGB image (uint8, [H, W, 3]) on the any-size
    graph, [N, labels] for a batch of cropped images (uint8, [N, crop, crop, 3]) on the
    fixed one."""
    return session.run([PROBABILITIES_OUTPUT], {ONNX_INPUT: pixels})[0]
