"""`weather-export`: write model.pt, the ONNX graphs and metadata.json.

    weather-export --out artifacts                     # deterministic demo weights
    weather-export --out artifacts --state-dict gs://bucket/finetuned.pt
    weather-export --out artifacts --upload gs://bucket/weather   # then copy the five files

The graphs: model.onnx (any-size image, preprocessing inside), model.optimized.onnx (the
same after ONNX Runtime's offline optimisations, the default for the ONNX services) and
model.fixed.onnx (a batch of resized and centre-cropped images, normalisation inside,
optimised likewise).

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
from weather_model.demo import DEMO_SEED, SAMPLE_IMAGES, demo_state_dict
from weather_model.network import (
    StateDictError,
    load_network,
    state_dict_from_bytes,
    state_dict_to_bytes,
)
from weather_model.onnx_graph import (
    ANY_SIZE_INPUT_SHAPE,
    ANY_SIZE_OUTPUT_SHAPE,
    FIXED_INPUT_SHAPE,
    FIXED_OUTPUT_SHAPE,
    build_fixed_graph,
    build_serving_graph,
    export_network,
    optimize_offline,
)
from weather_model.parity import (
    MIN_DEMO_LABELS,
    MIN_DEMO_MARGIN,
    ImageCheck,
    ParityError,
    check_parity,
)
from weather_model.reference import preprocessing_metadata, sample_images
from weather_model.storage import (
    DOWNLOAD_DEADLINE_SECONDS,
    ArtifactError,
    read_artifact,
    write_artifact,
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def graph_spec(
    input_shape: tuple[str | int, ...], output_shape: tuple[str | int, ...], preprocessing: str
) -> dict[str, object]:
    """One graph's entry in metadata["graphs"]: what a service feeds it and reads back."""
    return {
        "input": {"name": contract.ONNX_INPUT, "dtype": "uint8", "shape": list(input_shape)},
        "output": {
            "name": contract.PROBABILITIES_OUTPUT,
            "dtype": "float32",
            "shape": list(output_shape),
        },
        "preprocessing": preprocessing,
    }


def graphs_metadata() -> dict[str, dict[str, object]]:
    """metadata["graphs"], keyed by ONNX file name."""
    any_size = graph_spec(
        ANY_SIZE_INPUT_SHAPE, ANY_SIZE_OUTPUT_SHAPE, "in graph: resize, centre crop, normalisation"
    )
    fixed = graph_spec(
        FIXED_INPUT_SHAPE,
        FIXED_OUTPUT_SHAPE,
        "in graph: normalisation; resize and centre crop before (uint8, as the reference)",
    )
    return {
        contract.ONNX_FILE: any_size,
        contract.OPTIMIZED_ONNX_FILE: any_size,
        contract.FIXED_ONNX_FILE: fixed,
    }


def build_metadata(artifacts: dict[str, bytes], weights_source: str) -> dict[str, object]:
    return {
        "model": "torchvision mobilenet_v3_small, classifier[-1] = Linear(1024, 11)",
        "weights": weights_source,
        "labels": list(contract.LABELS),
        "graphs": graphs_metadata(),
        "preprocessing": preprocessing_metadata(),
        "artifacts": {
            name: {"sha256": sha256(data), "bytes": len(data)} for name, data in artifacts.items()
        },
        "versions": {pkg: version(pkg) for pkg in ("torch", "torchvision", "onnx", "onnxruntime")},
    }


def build_graphs(model: nn.Module) -> dict[str, bytes]:
    """Every ONNX artifact, by file name, from one export of the network."""
    network = export_network(model)
    onnx_bytes = build_serving_graph(network).SerializeToString()
    return {
        contract.ONNX_FILE: onnx_bytes,
        contract.OPTIMIZED_ONNX_FILE: optimize_offline(onnx_bytes),
        contract.FIXED_ONNX_FILE: optimize_offline(build_fixed_graph(network).SerializeToString()),
    }


def export(
    out: Path, state_dict_uri: str | None, images: Path, deadline: float
) -> list[ImageCheck]:
    state_dict: dict[str, Tensor]
    if state_dict_uri is None:
        state_dict, source = demo_state_dict(), f"demo (seed {DEMO_SEED}, not trained)"
    else:
        state_dict, source = (
            state_dict_from_bytes(read_artifact(state_dict_uri, deadline)),
            state_dict_uri,
        )
    model = load_network(state_dict)
    graphs = build_graphs(model)
    checks = check_parity(model, graphs, sample_images(images))
    if state_dict_uri is None:
        for check in checks:
            if check.margin < MIN_DEMO_MARGIN:
                raise ParityError(
                    f"demo weights not decisive on {check.image}: margin {check.margin:.3f}"
                )
        labels = {check.top1 for check in checks}
        if len(labels) < MIN_DEMO_LABELS:
            raise ParityError(f"demo weights give {len(labels)} labels on the sample images")
    artifacts = {contract.STATE_DICT_FILE: state_dict_to_bytes(state_dict), **graphs}
    metadata = build_metadata(artifacts, source)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in artifacts.items():
        (out / name).write_bytes(data)
    (out / contract.METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weather-export", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts"), help="output folder")
    parser.add_argument(
        "--state-dict", help="a user's state_dict: local path or gs://bucket/object"
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
    try:
        checks = export(args.out, args.state_dict, args.images, args.download_deadline)
        if args.upload:
            for path in sorted(args.out.iterdir()):
                if path.is_file():
                    write_artifact(f"{args.upload.rstrip('/')}/{path.name}", path.read_bytes())
                    print(f"uploaded {args.upload.rstrip('/')}/{path.name}")
    except (ArtifactError, StateDictError, ParityError) as exc:
        print(f"weather-export: error: {exc}", file=sys.stderr)
        return 1
    for check in checks:
        deltas = ", ".join(f"{k} {v:.2e}" for k, v in check.max_delta.items())
        label = contract.LABELS[check.top1]
        print(f"parity ok {check.image}: {label}, margin {check.margin:.3f}, max |Δp| {deltas}")
    for name in (
        contract.STATE_DICT_FILE,
        contract.ONNX_FILE,
        contract.OPTIMIZED_ONNX_FILE,
        contract.FIXED_ONNX_FILE,
        contract.METADATA_FILE,
    ):
        print(f"wrote {args.out / name} {sha256((args.out / name).read_bytes())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
