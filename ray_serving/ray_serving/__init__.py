"""ray_serving."""
