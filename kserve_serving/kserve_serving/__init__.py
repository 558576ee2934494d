"""kserve_serving."""
