"""bentoml_serving."""
