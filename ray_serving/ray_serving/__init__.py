"""ray_serving: Ray Serve hosting onnx_serving's ONNX Runtime predictor."""
