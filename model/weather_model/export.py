"""`weather-export`: write model.pt, the ONNX graphs and metadata.json.

    weather-export                       # demo weights -> artifacts/mobilenet_v3_small/
    weather-export --model resnet50      # demo weights -> artifacts/resnet50/
    weather-export --state-dict gs://bucket/finetuned.pt
    weather-export --out mine --state-dict mine.pt \\
        --labels cat,dog,fox --resize-size 160 --crop-size 128   # a user's own classifier
    weather-export --upload gs://bucket/weather   # then copy the five files

The graphs: model.onnx (any-size image, preprocessing inside), model.optimized.onnx (the
same after ONNX Runtime's offline optimisations, the default for the ONNX services) and
model.fixed.onnx (a batch of resized and centre-cropped images, normalisation inside,
optimised likewise). metadata.json carries the model's contract (architecture, labels,
preprocessing: weather_model.metadata), which every service reads.

Every ONNX graph is checked against the PyTorch reference on the sample images before
anything is written; any failure exits non-zero with one line and no traceback.
"""

import argparse
import hashlib
import json
import sys
from importlib.metadata import version
from pathlib import Path

from torch import Tensor, nn

from weather_model import contract
from weather_model.architectures import (
    ARCHITECTURES,
    ARTIFACTS_ROOT,
    DEFAULT_ARCHITECTURE,
    WEATHER_LABELS,
    default_contract,
)
from weather_model.demo import DEMO_SEED, SAMPLE_IMAGES, demo_state_dict
from weather_model.metadata import ContractError, ModelContract
from weather_model.network import (
    StateDictError,
    load_network,
    state_dict_from_bytes,
    state_dict_to_bytes,
)
from weather_model.onnx_graph import (
    Shape,
    any_size_shapes,
    build_fixed_graph,
    build_serving_graph,
    export_network,
    fixed_shapes,
    optimize_offline,
)
from weather_model.parity import (
    MIN_DEMO_LABELS,
    MIN_DEMO_MARGIN,
    ImageCheck,
    ParityError,
    check_parity,
)
from weather_model.reference import sample_images
from weather_model.storage import (
    DOWNLOAD_DEADLINE_SECONDS,
    ArtifactError,
    read_artifact,
    write_artifact,
)

# What the export writes, in the order it reports them.
WRITTEN_FILES = (
    contract.STATE_DICT_FILE,
    contract.ONNX_FILE,
    contract.OPTIMIZED_ONNX_FILE,
    contract.FIXED_ONNX_FILE,
    contract.METADATA_FILE,
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def graph_spec(shapes: tuple[Shape, Shape], preprocessing: str) -> dict[str, object]:
    """One graph's entry in metadata["graphs"]: what a service feeds it and reads back."""
    input_shape, output_shape = shapes
    return {
        "input": {"name": contract.ONNX_INPUT, "dtype": "uint8", "shape": list(input_shape)},
        "output": {
            "name": contract.PROBABILITIES_OUTPUT,
            "dtype": "float32",
            "shape": list(output_shape),
        },
        "preprocessing": preprocessing,
    }


def graphs_metadata(model_contract: ModelContract) -> dict[str, dict[str, object]]:
    """metadata["graphs"], keyed by ONNX file name."""
    any_size = graph_spec(
        any_size_shapes(model_contract), "in graph: resize, centre crop, normalisation"
    )
    fixed = graph_spec(
        fixed_shapes(model_contract),
        "in graph: normalisation; resize and centre crop before (uint8, as the reference)",
    )
    return {
        contract.ONNX_FILE: any_size,
        contract.OPTIMIZED_ONNX_FILE: any_size,
        contract.FIXED_ONNX_FILE: fixed,
    }


def build_metadata(
    model_contract: ModelContract, artifacts: dict[str, bytes], weights_source: str
) -> dict[str, object]:
    fields = model_contract.to_metadata()
    return {
        "architecture": fields["architecture"],
        "weights": weights_source,
        "labels": fields["labels"],
        "graphs": graphs_metadata(model_contract),
        "preprocessing": fields["preprocessing"],
        "artifacts": {
            name: {"sha256": sha256(data), "bytes": len(data)} for name, data in artifacts.items()
        },
        "versions": {pkg: version(pkg) for pkg in ("torch", "torchvision", "onnx", "onnxruntime")},
    }


def build_graphs(model: nn.Module, model_contract: ModelContract) -> dict[str, bytes]:
    """Every ONNX artifact, by file name, from one export of the network."""
    network = export_network(model, model_contract)
    onnx_bytes = build_serving_graph(network, model_contract).SerializeToString()
    fixed = build_fixed_graph(network, model_contract).SerializeToString()
    return {
        contract.ONNX_FILE: onnx_bytes,
        contract.OPTIMIZED_ONNX_FILE: optimize_offline(onnx_bytes),
        contract.FIXED_ONNX_FILE: optimize_offline(fixed),
    }


def check_demo_weights(checks: list[ImageCheck], labels: int) -> None:
    """The demo weights must be decisive on every sample image and pick several labels
    (all of them, for a model of fewer than MIN_DEMO_LABELS)."""
    for check in checks:
        if check.margin < MIN_DEMO_MARGIN:
            raise ParityError(
                f"demo weights not decisive on {check.image}: margin {check.margin:.3f}"
            )
    picked = {check.top1 for check in checks}
    if len(picked) < min(MIN_DEMO_LABELS, labels):
        raise ParityError(f"demo weights give {len(picked)} labels on the sample images")


def export(
    out: Path,
    model_contract: ModelContract,
    state_dict_uri: str | None,
    images: Path,
    deadline: float,
) -> list[ImageCheck]:
    state_dict: dict[str, Tensor]
    if state_dict_uri is None:
        state_dict = demo_state_dict(model_contract)
        source = f"demo (seed {DEMO_SEED}, not trained)"
    else:
        state_dict = state_dict_from_bytes(read_artifact(state_dict_uri, deadline))
        source = state_dict_uri
    model = load_network(state_dict, model_contract)
    graphs = build_graphs(model, model_contract)
    checks = check_parity(model, model_contract, graphs, sample_images(images))
    if state_dict_uri is None:
        check_demo_weights(checks, len(model_contract.labels))
    artifacts = {contract.STATE_DICT_FILE: state_dict_to_bytes(state_dict), **graphs}
    metadata = build_metadata(model_contract, artifacts, source)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in artifacts.items():
        (out / name).write_bytes(data)
    (out / contract.METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return checks


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="weather-export", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        choices=ARCHITECTURES,
        default=DEFAULT_ARCHITECTURE,
        help="the torchvision network (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default: {ARTIFACTS_ROOT}/<model>)"
    )
    parser.add_argument(
        "--state-dict", help="a user's state_dict: local path or gs://bucket/object"
    )
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels",
        help="the network's classes in output order, comma-separated (default: the weather labels)",
    )
    labels.add_argument("--labels-file", type=Path, help="the same, one label per line")
    parser.add_argument(
        "--resize-size", type=int, help="shorter side to resize to (default: torchvision's)"
    )
    parser.add_argument(
        "--crop-size", type=int, help="centre crop, square (default: torchvision's)"
    )
    parser.add_argument("--images", type=Path, default=SAMPLE_IMAGES, help="parity images")
    parser.add_argument("--upload", help="also copy the artifacts to this gs:// prefix or folder")
    parser.add_argument(
        "--download-deadline",
        type=float,
        default=DOWNLOAD_DEADLINE_SECONDS,
        help="seconds to retry transient storage errors",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(ARTIFACTS_ROOT, args.model)
    return args


def contract_from_arguments(args: argparse.Namespace) -> ModelContract:
    """The model contract the options describe: the network's defaults, overridden."""
    labels: tuple[str, ...] = WEATHER_LABELS
    if args.labels is not None:
        labels = tuple(label.strip() for label in args.labels.split(","))
    elif args.labels_file is not None:
        try:
            lines = args.labels_file.read_text().splitlines()
        except OSError as exc:
            raise ContractError(f"{args.labels_file}: cannot read ({exc.strerror})") from None
        labels = tuple(line.strip() for line in lines if line.strip())
    return default_contract(args.model, labels, args.resize_size, args.crop_size)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        model_contract = contract_from_arguments(args)
        checks = export(
            args.out, model_contract, args.state_dict, args.images, args.download_deadline
        )
        if args.upload:
            for path in sorted(args.out.iterdir()):
                if path.is_file():
                    write_artifact(f"{args.upload.rstrip('/')}/{path.name}", path.read_bytes())
                    print(f"uploaded {args.upload.rstrip('/')}/{path.name}")
    except (ArtifactError, ContractError, StateDictError, ParityError) as exc:
        print(f"weather-export: error: {exc}", file=sys.stderr)
        return 1
    for check in checks:
        deltas = ", ".join(f"{k} {v:.2e}" for k, v in check.max_delta.items())
        label = model_contract.labels[check.top1]
        print(f"parity ok {check.image}: {label}, margin {check.margin:.3f}, max |Δp| {deltas}")
    for name in WRITTEN_FILES:
        print(f"wrote {args.out / name} {sha256((args.out / name).read_bytes())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
