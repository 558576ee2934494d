"""`python -m onnx_serving`: FastAPI + ONNX Runtime on PORT (default 8080)."""

from serving_common.serve import run_service

if __name__ == "__main__":
    run_service("onnx_serving", 8080, "onnx_serving.predictor:OnnxPredictor")
