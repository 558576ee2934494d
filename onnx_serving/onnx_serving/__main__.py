"""`python -m onnx_serving`: the strategy described by ../strategy.toml."""

from pathlib import Path

from serving_common.serve import run_service

if __name__ == "__main__":
    run_service(Path(__file__).resolve().parents[1])
