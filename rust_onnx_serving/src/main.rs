//! rust_onnx_serving: actix-web + ONNX Runtime (`ort`, loaded dynamically) on the HTTP
//! contract of contract/README.md.
//!
//! Startup: configuration, the ONNX Runtime library, one model download (sha256-checked),
//! one session per worker, then the server. Any startup problem ends the process with
//! status 1 and one line naming the cause.

mod config;
mod errors;
mod http;
mod metrics;
mod predictor;
mod storage;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{App, HttpServer, web};
use clap::Parser;
use clap::error::ErrorKind;
use serde_json::json;

use crate::config::{Config, DEFAULT_PORT};
use crate::http::{AppState, SERVICE, WorkerPredictor, routes};
use crate::predictor::Predictor;

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

/// ORT_DYLIB_PATH, else libonnxruntime.so next to the binary: the library from the same
/// pinned onnxruntime wheel the Python service uses, so both run the identical build.
fn onnxruntime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("libonnxruntime.so")));
    match beside {
        Some(path) if path.exists() => path,
        _ => fatal(
            "ONNX Runtime library not found: set ORT_DYLIB_PATH or put libonnxruntime.so next to the binary",
        ),
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
        credentials_source()
    );

    let library = onnxruntime_library();
    let environment = match ort::init_from(&library) {
        Ok(builder) => builder.with_name(SERVICE).build().unwrap_or_else(|e| fatal(e)),
        Err(e) => fatal(format!("ONNX Runtime library {}: {e}", library.display())),
    };

    let model = storage::fetch_model(&config.model_uri)
        .await
        .unwrap_or_else(|e| fatal(e));
    let load_started = Instant::now();
    let workers = usize::from(config.workers);
    let predictors: Vec<Arc<WorkerPredictor>> = (0..workers)
        .map(|_| {
            let session = predictor::load_session(
                &environment,
                &model.bytes,
                usize::from(config.intra_op_threads),
                usize::from(config.inter_op_threads),
            )
            .unwrap_or_else(|e| fatal(format!("{}: the runtime cannot load it ({e})", model.uri)));
            let predictor = Predictor::new(session, &model.graph)
                .unwrap_or_else(|e| fatal(format!("{}: {e}", model.uri)));
            Arc::new(Mutex::new(predictor))
        })
        .collect();
    let load_seconds = load_started.elapsed().as_secs_f64();
    tracing::info!(
        "{workers} session(s) loaded in {load_seconds:.3} s; input {:?}, output {:?}",
        model.graph.input.name,
        model.graph.output.name
    );

    let state = web::Data::new(app_state(&config, &model, &library, load_seconds));
    drop(model);

    // actix calls the factory once per worker: hand each its own predictor (its own session).
    let next_predictor = Arc::new(AtomicUsize::new(0));
    let server = HttpServer::new(move || {
        let index = next_predictor.fetch_add(1, Ordering::Relaxed) % predictors.len();
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::from(predictors[index].clone()))
            .app_data(web::PayloadConfig::new(usize::MAX)) // limits are enforced in read_body
            .configure(routes)
    })
    .workers(workers)
    .shutdown_timeout(30)
    .bind(("0.0.0.0", config.port))
    .unwrap_or_else(|e| fatal(format!("PORT {}: cannot listen ({e})", config.port)));
    if let Err(e) = server.run().await {
        fatal(format!("server stopped: {e}"));
    }
    tracing::info!("{SERVICE} stopped");
}

/// Everything the handlers share, with the /info document built once.
fn app_state(config: &Config, model: &storage::FetchedModel, library: &Path, load_seconds: f64) -> AppState {
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
            "decoder": "libjpeg-turbo 3 via turbojpeg (JPEG; zune-jpeg for CMYK), image (PNG)",
        },
        "workers": config.workers,
        "intra_op_threads": config.intra_op_threads,
        "inter_op_threads": config.inter_op_threads,
        "max_body_bytes": config.max_body_bytes,
        "max_image_pixels": config.max_image_pixels,
        "startup": {"download_seconds": model.download_seconds, "load_seconds": load_seconds},
    });
    AppState {
        labels: model.labels.clone(),
        max_body_bytes: config.max_body_bytes,
        max_image_pixels: config.max_image_pixels,
        info,
        metrics: metrics::Metrics::new(),
    }
}

fn credentials_source() -> String {
    if let Ok(host) = std::env::var("STORAGE_EMULATOR_HOST") {
        format!("emulator at {host}")
    } else if std::env::var_os("CLOUDSDK_AUTH_ACCESS_TOKEN").is_some() {
        "CLOUDSDK_AUTH_ACCESS_TOKEN (redacted)".to_owned()
    } else {
        "application default credentials".to_owned()
    }
}
