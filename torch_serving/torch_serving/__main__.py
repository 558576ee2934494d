"""`python -m torch_serving`: FastAPI + PyTorch eager on PORT (default 8081)."""

from serving_common.serve import run_service

if __name__ == "__main__":
    run_service("torch_serving", 8081, "torch_serving.predictor:TorchPredictor")
