//! Service configuration: one clap struct, the same environment variables as the Python
//! services (contract/README.md), read once at startup.

use clap::Parser;
use clap::builder::BoolishValueParser;

use crate::preprocess::ResizerKind;

/// The port this strategy listens on unless PORT says otherwise (contract/README.md), shared
/// by the clap default and the `healthcheck` subcommand.
pub const DEFAULT_PORT: u16 = 8082;

/// actix-web + ONNX Runtime serving the weather classifier.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Config {
    /// gs://bucket/object or a local path; metadata.json must sit in the same folder.
    #[arg(long, env = "MODEL_URI")]
    pub model_uri: String,

    /// Listening port, on 0.0.0.0.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Worker threads; each owns one ONNX Runtime session.
    #[arg(long, env = "WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// Threads inside one inference.
    #[arg(long, env = "INTRA_OP_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub intra_op_threads: u16,

    /// Threads across independent operators.
    #[arg(long, env = "INTER_OP_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub inter_op_threads: u16,

    /// Larger request bodies get 413 before they are read whole.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 10_000_000)]
    pub max_body_bytes: usize,

    /// Larger images get 413 before they are decoded.
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Images whose longer side exceeds this many times the shorter get 422 before they are
    /// decoded: the shorter side is resized to the model's size (metadata.json's
    /// preprocessing.resize_shorter_side), so elongation bounds the resize's memory.
    #[arg(long, env = "MAX_ASPECT_RATIO", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_aspect_ratio: u32,

    /// /predict/ requests in flight or queued per worker; one more gets 503 at once.
    #[arg(long, env = "MAX_PENDING_REQUESTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_requests: u32,

    /// 503s answered a second per worker at most under a flood; the rest wait their turn, at
    /// most 2 s (admission.rs, RefusalPacer). 0 = every refusal at once.
    #[arg(long, env = "REFUSALS_PER_SECOND", default_value_t = 100)]
    pub refusals_per_second: u32,

    /// A body not received whole within this many seconds of the headers gets 408.
    #[arg(long, env = "BODY_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub body_timeout_seconds: u32,

    /// The model download gives up (exit 1) after this many seconds of retries.
    #[arg(long, env = "STORAGE_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub storage_timeout_seconds: u32,

    /// Decode large JPEGs at 1/2, 1/4 or 1/8 of their size in the DCT domain, keeping the
    /// shorter side at least the model's resize size (true/false, 1/0, yes/no, on/off).
    #[arg(long, env = "JPEG_DCT_SCALING", default_value_t = false, action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub jpeg_dct_scaling: bool,

    /// What resizes the crop region for the fixed graph (ignored with the any-size graph):
    /// pillow (Pillow's arithmetic, the reference's pixels) or simd (fast_image_resize).
    #[arg(long, env = "RESIZER", default_value = "pillow", value_enum)]
    pub resizer: ResizerKind,

    /// debug, info, warning or error.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"])]
    pub log_level: String,
}

impl Config {
    /// /predict/ requests the whole service takes at a time: MAX_PENDING_REQUESTS per worker.
    pub fn max_pending_total(&self) -> usize {
        self.max_pending_requests as usize * usize::from(self.workers)
    }

    /// 503s the whole service answers a second at most: REFUSALS_PER_SECOND per worker.
    pub fn refusals_per_second_total(&self) -> u32 {
        self.refusals_per_second.saturating_mul(u32::from(self.workers))
    }

    /// The tracing filter for LOG_LEVEL (tracing calls it "warn").
    pub fn tracing_level(&self) -> &'static str {
        match self.log_level.to_ascii_lowercase().as_str() {
            "debug" => "debug",
            "warning" => "warn",
            "error" => "error",
            _ => "info",
        }
    }
}
