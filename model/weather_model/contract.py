"""The model contract: the one place for labels, preprocessing constants and artifact names.

The exporter writes these into `metadata.json`; every service reads them from there, so a
user's fine-tuned model travels with its own contract.
"""

from typing import Final

# Output order of the 11-class head.
LABELS: Final = (
    "dew",
    "fogsmog",
    "frost",
    "glaze",
    "hail",
    "lightning",
    "rain",
    "rainbow",
    "rime",
    "sandstorm",
    "snow",
)
NUM_CLASSES: Final = len(LABELS)

# torchvision's MobileNet_V3_Small_Weights.DEFAULT.transforms(): shorter side to 256
# (bilinear, antialiased), centre crop 224, scale to [0, 1], ImageNet mean/std.
RESIZE_SIZE: Final = 256
CROP_SIZE: Final = 224
MEAN: Final = (0.485, 0.456, 0.406)
STD: Final = (0.229, 0.224, 0.225)

# The head replaced on torchvision's mobilenet_v3_small: classifier[-1] = Linear(1024, 11).
HEAD_IN_FEATURES: Final = 1024

# ONNX graph interface: uint8 RGB pixels in, logits and probabilities out. Each graph's
# exact input and output are written into metadata.json under "graphs".
ONNX_INPUT: Final = "image"
LOGITS_OUTPUT: Final = "logits"
PROBABILITIES_OUTPUT: Final = "probabilities"
ONNX_OUTPUTS: Final = (LOGITS_OUTPUT, PROBABILITIES_OUTPUT)

# Artifact file names, written side by side. A MODEL_URI names the model file; the
# services find `metadata.json` in the same folder (or gs:// prefix).
STATE_DICT_FILE: Final = "model.pt"
ONNX_FILE: Final = "model.onnx"
OPTIMIZED_ONNX_FILE: Final = "model.optimized.onnx"
# Fixed-size, batch-shaped graph: [N, CROP_SIZE, CROP_SIZE, 3] uint8 -> probabilities
# [N, 11]; normalisation inside, resize and centre crop done before it.
FIXED_ONNX_FILE: Final = "model.fixed.onnx"
METADATA_FILE: Final = "metadata.json"
