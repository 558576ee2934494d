//! Prometheus metrics, with the names of contract/README.md shared by every service.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: Histogram,
    pub stage: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("predict_requests_total", "Prediction requests by HTTP status"),
            &["status"],
        )
        .expect("valid metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "predict_request_duration_seconds",
                "Time from request received to response ready",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let stage = HistogramVec::new(
            HistogramOpts::new("predict_stage_duration_seconds", "Time per stage of a prediction")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        registry
            .register(Box::new(stage.clone()))
            .expect("registered once");
        Self {
            registry,
            requests,
            latency,
            stage,
        }
    }

    pub fn exposition(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding");
        buffer
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
