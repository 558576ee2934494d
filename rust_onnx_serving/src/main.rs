//! rust_onnx_serving: actix-web + ONNX Runtime (`ort`, loaded dynamically) on the HTTP
//! contract of contract/README.md.
//!
//! Startup: configuration, the ONNX Runtime library, one model download (sha256-checked),
//! one session per worker, each warmed up on a built-in image and handed to an inference
//! thread of its own, then the HTTP server (whose threads never decode or infer). Any
//! startup problem ends the process with status 1 and one line naming the cause.
//!
//! The graph MODEL_URI names picks the pipeline (predictor.rs): the any-size graph resizes
//! inside, the fixed graph takes crops this service resizes (preprocess.rs). The sizes are
//! the model's own, from its metadata.json (geometry.rs).

mod admission;
mod config;
mod decode;
mod errors;
mod geometry;
mod http;
mod inference;
mod jpeg;
mod metrics;
mod open_inference;
mod pillow_resize;
mod predictor;
mod preprocess;
mod storage;
#[cfg(test)]
mod tests;

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};
use clap::Parser;
use clap::error::ErrorKind;
use serde_json::json;

use crate::admission::{Admission, RefusalPacer};
use crate::config::{Config, DEFAULT_PORT};
use crate::decode::ImageLimits;
use crate::http::{AppState, SERVICE, continue_or_refuse, routes};
use crate::inference::InferencePool;
use crate::predictor::{GraphKind, Predictor};

fn fatal(message: impl std::fmt::Display) -> ! {
    eprintln!("{SERVICE}: fatal: {message}");
    std::process::exit(1)
}

fn parse_config() -> Config {
    match Config::try_parse() {
        Ok(config) => config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == ErrorKind::MissingRequiredArgument => {
            fatal("MODEL_URI is required and not set")
        }
        Err(e) => fatal(
            e.to_string()
                .lines()
                .next()
                .unwrap_or("invalid configuration")
                .trim_start_matches("error: "),
        ),
    }
}

/// ORT_DYLIB_PATH, else the library next to the binary under the platform's name for it
/// (libonnxruntime.so, libonnxruntime.dylib on macOS): the library from the same pinned
/// onnxruntime wheel the Python service uses, so both run the identical build.
fn onnxruntime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let name = format!("{DLL_PREFIX}onnxruntime{DLL_SUFFIX}");
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(&name)));
    match beside {
        Some(path) if path.exists() => path,
        _ => fatal(format!(
            "ONNX Runtime library not found: set ORT_DYLIB_PATH or put {name} next to the binary"
        )),
    }
}

/// `rust_onnx_serving healthcheck`: exit 0 when GET / on PORT answers 200. The container
/// image has no shell or curl, so the binary checks itself.
fn healthcheck() -> ! {
    use std::io::{Read, Write};
    let port = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(DEFAULT_PORT);
    let healthy = std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut stream| {
            stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head)?;
            Ok(head.ends_with(b"200"))
        })
        .unwrap_or(false);
    std::process::exit(if healthy { 0 } else { 1 })
}

#[actix_web::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        healthcheck();
    }
    let config = parse_config();
    tracing_subscriber::fmt()
        .with_env_filter(config.tracing_level())
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::info!(
        "{SERVICE} config: {config:?}; credentials: {}",
        storage::credentials_source()
    );

    let library = onnxruntime_library();
    let environment = match ort::init_from(&library) {
        Ok(builder) => builder.with_name(SERVICE).build().unwrap_or_else(|e| fatal(e)),
        Err(e) => fatal(format!("ONNX Runtime library {}: {e}", library.display())),
    };

    let storage_timeout = Duration::from_secs(u64::from(config.storage_timeout_seconds));
    let model = storage::fetch_model(&config.model_uri, storage_timeout)
        .await
        .unwrap_or_else(|e| fatal(e));
    let load_started = Instant::now();
    let workers = usize::from(config.workers);
    let predictors: Vec<Predictor> = (0..workers)
        .map(|_| {
            let session = predictor::load_session(
                &environment,
                &model.bytes,
                usize::from(config.intra_op_threads),
                usize::from(config.inter_op_threads),
            )
            .unwrap_or_else(|e| fatal(format!("{}: the runtime cannot load it ({e})", model.uri)));
            let mut predictor = Predictor::new(session, &model.graph, model.geometry, config.resizer)
                .unwrap_or_else(|e| fatal(format!("{}: {e}", model.uri)));
            predictor
                .warm_up(&model.labels)
                .unwrap_or_else(|e| fatal(format!("{}: {e}", model.uri)));
            predictor
        })
        .collect();
    let load_seconds = load_started.elapsed().as_secs_f64();
    // Every session loads the same graph: one kind for all.
    let kind = predictors[0].kind();
    tracing::info!(
        "{workers} session(s) loaded and warmed up in {load_seconds:.3} s; {} graph, input {:?}, output {:?}; \
         resize {}, crop {}",
        kind.name(),
        model.graph.input.name,
        model.graph.output.name,
        model.geometry.resize,
        model.geometry.crop
    );

    let (inference, inference_threads) =
        InferencePool::start(predictors, image_limits(&config), config.jpeg_dct_scaling)
            .unwrap_or_else(|e| fatal(e));
    let state = web::Data::new(app_state(
        &config,
        &model,
        &library,
        load_seconds,
        kind,
        inference,
    ));
    drop(model);

    // actix-web's HttpServer, built from its parts as HttpServer builds it (its defaults
    // below), for the one step it does not expose: the answer to `Expect: 100-continue`
    // (http::continue_or_refuse).
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let server = builder
        .backlog(1024)
        .workers(workers)
        .shutdown_timeout(30)
        .bind(SERVICE, ("0.0.0.0", config.port), move || {
            let expecting = state.clone();
            let shutdown = shutdown.clone();
            let app = App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(usize::MAX)) // limits are enforced in read_body
                .configure(routes);
            HttpService::build()
                // SIGTERM closes idle keep-alive connections at once.
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                // 5 s to send the headers (else 408 and close), so a slow-headers client
                // never reaches a handler nor holds a pending place; 5 s of keep-alive
                // idleness (actix's default).
                .client_request_timeout(Duration::from_secs(5))
                // An answer sent before its body was read (a 503 from the headers) lingers
                // up to 1 s reading the rest, so that the client sees it rather than a reset.
                .client_disconnect_timeout(Duration::from_secs(1))
                // A client that closes its connection has left: its handler is dropped
                // (counted 499) and its queued work skipped, rather than computed for nobody.
                .h1_allow_half_closed(false)
                .expect(fn_service(move |request| {
                    continue_or_refuse(expecting.clone(), request)
                }))
                .h1(map_config(app, |_| AppConfig::default()))
                .tcp()
        })
        .unwrap_or_else(|e| fatal(format!("PORT {}: cannot listen ({e})", config.port)))
        .run();
    if let Err(e) = server.await {
        fatal(format!("server stopped: {e}"));
    }
    // Every handler is gone with the server, and with them the queue's senders: the
    // inference threads finish what is queued and end.
    inference_threads.join();
    tracing::info!("{SERVICE} stopped");
}

fn image_limits(config: &Config) -> ImageLimits {
    ImageLimits {
        max_pixels: config.max_image_pixels,
        max_aspect_ratio: config.max_aspect_ratio,
    }
}

/// Everything the handlers share, with the /info document built once.
fn app_state(
    config: &Config,
    model: &storage::FetchedModel,
    library: &Path,
    load_seconds: f64,
    kind: GraphKind,
    inference: InferencePool,
) -> AppState {
    let info = json!({
        "service": SERVICE,
        "model_uri": model.uri,
        "model_sha256": model.sha256,
        "labels": model.labels,
        "metadata": model.metadata,
        "runtime": {
            "runtime": "onnxruntime via ort",
            "ort": "2.0.0-rc.15",
            "library": library.display().to_string(),
            "decoder": "libjpeg-turbo 3 via the TurboJPEG API (JPEG), png (PNG)",
            "pipeline": pipeline_info(kind, config),
        },
        "workers": config.workers,
        "intra_op_threads": config.intra_op_threads,
        "inter_op_threads": config.inter_op_threads,
        "max_body_bytes": config.max_body_bytes,
        "max_image_pixels": config.max_image_pixels,
        "max_aspect_ratio": config.max_aspect_ratio,
        "max_pending_requests": config.max_pending_requests,
        "refusals_per_second": config.refusals_per_second,
        "body_timeout_seconds": config.body_timeout_seconds,
        "storage_timeout_seconds": config.storage_timeout_seconds,
        "startup": {"download_seconds": model.download_seconds, "load_seconds": load_seconds},
    });
    AppState {
        labels: model.labels.clone(),
        model_name: model.metadata["architecture"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        max_body_bytes: config.max_body_bytes,
        body_timeout: Duration::from_secs(u64::from(config.body_timeout_seconds)),
        info,
        metrics: metrics::Metrics::new(),
        admission: Admission::new(config.max_pending_total()),
        refusals: RefusalPacer::new(config.refusals_per_second_total()),
        inference,
    }
}

/// /info's account of the preprocessing: which graph, who resizes (and with which SIMD
/// extension), whether JPEGs are decoded smaller; the keys the Python service uses too.
fn pipeline_info(kind: GraphKind, config: &Config) -> serde_json::Value {
    let setting = config.resizer.name();
    let ((resizer, cpu_extension), setting) = match kind {
        GraphKind::AnySize => (("in graph", None), format!("{setting} (ignored)")),
        GraphKind::Fixed => (
            preprocess::CropResizer::new(config.resizer).describe(),
            setting.into(),
        ),
    };
    json!({
        "graph": kind.name(),
        "resizer": resizer,
        "resizer_cpu_extension": cpu_extension,
        "resizer_setting": setting,
        "jpeg_dct_scaling": config.jpeg_dct_scaling,
    })
}
