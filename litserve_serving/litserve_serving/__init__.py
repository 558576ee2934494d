"""litserve_serving."""
