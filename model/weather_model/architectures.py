"""The networks the project exports, by torchvision name, and what a model of each is by
default: torchvision's published preprocessing for that network, and the weather labels.

Demo weights (demo.py) are calibrated and parity-checked for each of them by the export; a
user's own weights of any of them export with `--state-dict`. Each model's artifacts go to
a folder of its own name (`artifacts/<name>/`, `make export MODEL=<name>`).

Torch-free until a contract is asked for: the Compose files are rendered from these names
with the standard library alone.
"""

from collections.abc import Sequence

from weather_model.metadata import ContractError, ModelContract

# The demo model's classes, in output order: the weather photos the project's model stands
# for (a user's model names its own: `weather-export --labels`).
WEATHER_LABELS = (
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

# torchvision model names; the first is the default everywhere. mobilenet_v3_small: 0.06
# GFLOPs per image, light enough that decoding and resizing cost more than the network;
# resnet50: 4.1 GFLOPs (about 70 times more), the network dominates, the canonical CPU
# inference benchmark (MLPerf's). torchvision's weights metadata has both figures ("_ops").
ARCHITECTURES = ("mobilenet_v3_small", "resnet50")
DEFAULT_ARCHITECTURE = ARCHITECTURES[0]
# The repository's exported models, one folder each: artifacts/<architecture>/.
ARTIFACTS_ROOT = "artifacts"


def default_contract(
    architecture: str = DEFAULT_ARCHITECTURE,
    labels: Sequence[str] = WEATHER_LABELS,
    resize_size: int | None = None,
    crop_size: int | None = None,
) -> ModelContract:
    """`architecture` with `labels`, preprocessed as torchvision's DEFAULT weights for it are
    (their `transforms()`: nothing is downloaded), unless `resize_size` or `crop_size` say
    otherwise. ContractError for a network the project does not export."""
    if architecture not in ARCHITECTURES:
        raise ContractError(f"unknown model {architecture!r}; one of: {', '.join(ARCHITECTURES)}")
    from torchvision.models import get_model_weights
    from torchvision.transforms import InterpolationMode

    preset = get_model_weights(architecture).DEFAULT.transforms()
    # NOTE: the reference (and every service's resize) is bilinear and antialiased; a preset
    # resizing otherwise would be served wrongly, so registering one fails here.
    if preset.interpolation != InterpolationMode.BILINEAR or not preset.antialias:
        raise ContractError(f"{architecture}: torchvision's preset does not resize bilinear")
    return ModelContract(
        architecture=architecture,
        labels=tuple(labels),
        resize_size=resize_size or preset.resize_size[0],
        crop_size=crop_size or preset.crop_size[0],
        mean=tuple(preset.mean),
        std=tuple(preset.std),
    )
