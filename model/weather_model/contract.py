"""What the artifact format fixes, whatever the model: the ONNX graphs' tensor names and the
artifact file names.

Everything a model decides (its architecture, labels and preprocessing) is its own: the
exporter writes it into `metadata.json` and every service reads it from there
(`weather_model.metadata`), so a user's model travels with its own contract.
"""

from typing import Final

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
# Fixed-size, batch-shaped graph: [N, crop, crop, 3] uint8 -> probabilities [N, labels];
# normalisation inside, resize and centre crop done before it.
FIXED_ONNX_FILE: Final = "model.fixed.onnx"
METADATA_FILE: Final = "metadata.json"
