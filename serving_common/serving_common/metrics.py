"""Prometheus metrics, named as in contract/README.md for every service.

With several worker processes the values live in PROMETHEUS_MULTIPROC_DIR and every
scrape sums all workers; with one process they live in the app's own registry.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Inferences by how many requests each ran (1 unless a host batches: MAX_BATCH_SIZE).
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The labels of predict_stage_duration_seconds, in the order a request goes through them.
STAGES = ("parse", "decode", "preprocess", "inference")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self._multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        registry = None if self._multiprocess else CollectorRegistry()
        self._registry = registry
        self.requests = Counter(
            "predict_requests", "Prediction requests by HTTP status", ["status"], registry=registry
        )
        self.latency = Histogram(
            "predict_request_duration_seconds",
            "Time from request received to response ready",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage = Histogram(
            "predict_stage_duration_seconds",
            "Time per stage of a prediction",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "predict_batch_size",
            "Requests per inference",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )

    def exposition(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
