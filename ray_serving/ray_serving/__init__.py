"""ray_serving: Ray Serve hosting the shared ONNX Runtime predictor."""
