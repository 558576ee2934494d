"""The ONNX graph: decoded uint8 pixels in, preprocessing and network inside, logits out.

Preprocessing is written with onnx.helper rather than traced from torch so that the
dynamic-shape arithmetic is explicit and identical to torchvision's:
  * shorter side to RESIZE_SIZE, longer side `RESIZE_SIZE * long // short` (truncating,
    as torchvision's `int(size * long / short)`), bilinear with antialiasing;
  * centre crop CROP_SIZE at `round((side - CROP_SIZE) / 2)`, rounding half to even like
    Python's round();
  * scale to [0, 1] and normalise with ImageNet mean/std.
"""

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from weather_model.contract import CROP_SIZE, MEAN, ONNX_INPUT, ONNX_OUTPUTS, RESIZE_SIZE, STD

OPSET = 18  # Resize gained `antialias` in opset 18.
IR_VERSION = 9
_NETWORK_INPUT = "normalized"


def export_network(model: nn.Module) -> onnx.ModelProto:
    """The eager network as ONNX: float [1, 3, 224, 224] -> logits [1, 11]."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # NOTE: the TorchScript exporter is deprecated but deterministic and needs no
        # onnxscript; the network has static shapes, which it handles fully.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, CROP_SIZE, CROP_SIZE),),
            buffer,
            dynamo=False,
            input_names=[_NETWORK_INPUT],
            output_names=["network_logits"],
            opset_version=OPSET,
        )
    return onnx.load_from_string(buffer.getvalue())


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def preprocessing_nodes() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    mean = np.array(MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(STD, np.float32).reshape(1, 3, 1, 1)
    constants = [
        _const("pre_zero", np.array([0], np.int64)),
        _const("pre_resize", np.array([RESIZE_SIZE], np.int64)),
        _const("pre_crop", np.array([CROP_SIZE, CROP_SIZE], np.int64)),
        _const("pre_one", np.array([1], np.int64)),
        _const("pre_three", np.array([3], np.int64)),
        _const("pre_half", np.array([0.5], np.float32)),
        _const("pre_crop_axes", np.array([1, 2], np.int64)),
        _const("pre_scale", (1.0 / (255.0 * std)).astype(np.float32)),
        _const("pre_shift", (mean / std).astype(np.float32)),
    ]
    node = helper.make_node
    # NOTE: resizing channels-last, before any transpose, is what keeps this cheap: ONNX
    # Runtime's NHWC resize is about twice as fast as NCHW here, and the transpose then
    # moves 224x224 pixels instead of the full photo.
    nodes = [
        # [H, W, 3] uint8 -> [1, H, W, 3] float
        node("Cast", [ONNX_INPUT], ["pre_float"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["pre_float", "pre_zero"], ["pre_nhwc"]),
        # resized [h, w] = RESIZE_SIZE * [H, W] // min(H, W)
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
        # top-left = round_half_even((new_hw - CROP_SIZE) / 2)
        node("Sub", ["pre_new_hw", "pre_crop"], ["pre_margin"]),
        node("Cast", ["pre_margin"], ["pre_margin_f"], to=TensorProto.FLOAT),
        node("Mul", ["pre_margin_f", "pre_half"], ["pre_offset_f"]),
        node("Round", ["pre_offset_f"], ["pre_offset_r"]),
        node("Cast", ["pre_offset_r"], ["pre_offset"], to=TensorProto.INT64),
        node("Add", ["pre_offset", "pre_crop"], ["pre_end"]),
        node("Slice", ["pre_resized", "pre_offset", "pre_end", "pre_crop_axes"], ["pre_crop_out"]),
        node("Transpose", ["pre_crop_out"], ["pre_nchw"], perm=[0, 3, 1, 2]),
        # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std
        node("Mul", ["pre_nchw", "pre_scale"], ["pre_scaled"]),
        node("Sub", ["pre_scaled", "pre_shift"], [_NETWORK_INPUT]),
    ]
    return nodes, constants


def build_serving_graph(network: onnx.ModelProto) -> onnx.ModelProto:
    """Preprocessing + network + softmax in one graph with a dynamic-size uint8 input."""
    pre_nodes, pre_constants = preprocessing_nodes()
    logits, probabilities = ONNX_OUTPUTS
    post_nodes = [
        helper.make_node("Flatten", ["network_logits"], ["logits_2d"], axis=0),
        helper.make_node("Squeeze", ["logits_2d", "pre_zero"], [logits]),
        helper.make_node("Softmax", [logits], [probabilities], axis=0),
    ]
    num_classes = network.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        pre_nodes + list(network.graph.node) + post_nodes,
        "mobilenet_v3_small_weather",
        inputs=[
            helper.make_tensor_value_info(ONNX_INPUT, TensorProto.UINT8, ["height", "width", 3])
        ],
        outputs=[
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [num_classes])
            for name in ONNX_OUTPUTS
        ],
        initializer=pre_constants + list(network.graph.initializer),
    )
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
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return out.read_bytes()


def run_onnx(session: ort.InferenceSession, pixels: np.ndarray) -> np.ndarray:
    """Probabilities for one decoded RGB image (uint8, [H, W, 3])."""
    return session.run([ONNX_OUTPUTS[1]], {ONNX_INPUT: pixels})[0]
