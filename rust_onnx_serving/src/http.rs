//! The HTTP layer of contract/README.md: routes, body limits, error mapping, metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::errors::ServiceError;
use crate::metrics::Metrics;
use crate::predictor::{Predictor, decode_image};

pub const SERVICE: &str = "rust_onnx_serving";

/// What every worker shares, read-only (the metrics are internally synchronised).
pub struct AppState {
    pub labels: Vec<String>,
    pub max_body_bytes: usize,
    pub max_image_pixels: u64,
    pub info: Value,
    pub metrics: Metrics,
}

/// This worker's own predictor (its own session). NOTE: `Session::run` takes `&mut self`, so
/// each actix worker gets a session of its own (see main.rs) and this mutex is never
/// contended: workers never queue behind each other, unlike one global session behind one lock.
pub type WorkerPredictor = Mutex<Predictor>;

pub fn routes(config: &mut web::ServiceConfig) {
    // GET routes answer HEAD too and 405 to any other method, as Starlette's do.
    config
        .service(read_only("/", health))
        .service(read_only("/info", info))
        .service(read_only("/metrics", metrics))
        .service(
            web::resource(["/predict/", "/predict"])
                .route(web::post().to(predict))
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(not_found));
}

/// `handler` on GET and HEAD of `path`; any other method gets 405.
fn read_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "healthy", "message": format!("{SERVICE} is ready")}))
}

async fn info(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.info)
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .body(state.metrics.exposition())
}

async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ServiceError::new("not_found", "Not Found"))
}

async fn method_not_allowed() -> HttpResponse {
    let error = ServiceError::new("method_not_allowed", "Method Not Allowed");
    actix_web::ResponseError::error_response(&error)
}

async fn predict(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    predictor: web::Data<WorkerPredictor>,
) -> Result<HttpResponse, ServiceError> {
    let started = Instant::now();
    let result = predict_inner(&request, payload, &state, &predictor, started).await;
    let status = match &result {
        Ok(_) => "200".to_owned(),
        Err(error) => actix_web::ResponseError::status_code(error).as_u16().to_string(),
    };
    state.metrics.requests.with_label_values(&[status.as_str()]).inc();
    state.metrics.latency.observe(started.elapsed().as_secs_f64());
    result
}

// NOTE: inference runs inline on the worker thread on purpose: the work is CPU bound and a
// worker owns its core, so a hop to a blocking pool would only add cost. Concurrency comes
// from WORKERS.
async fn predict_inner(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    predictor: &WorkerPredictor,
    started: Instant,
) -> Result<HttpResponse, ServiceError> {
    let with_probabilities = probabilities_requested(request.query_string())?;
    let body = read_body(request, payload, state.max_body_bytes).await?;
    let media = media_type(request);
    let decoded_base64;
    let image: &[u8] = match media.as_str() {
        "application/json" => {
            decoded_base64 = image_from_json(&body)?;
            &decoded_base64
        }
        "image/jpeg" | "image/png" => &body,
        other => {
            let shown = if other.is_empty() { "(none)" } else { other };
            return Err(ServiceError::new(
                "unsupported_media_type",
                format!("Content-Type {shown} is not application/json, image/jpeg or image/png"),
            ));
        }
    };
    let parsed = Instant::now();
    let pixels = decode_image(image, state.max_image_pixels)?;
    let decoded = Instant::now();
    // Decoding is per request; this request is a batch of one for the predictor.
    let probabilities = {
        let mut predictor = predictor.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        predictor.infer(std::slice::from_ref(&pixels))
    }
    .and_then(|batch| {
        batch
            .into_iter()
            .next()
            .ok_or_else(|| "no output for the image".to_owned())
    })
    .map_err(|e| {
        tracing::error!("inference failed: {e}");
        ServiceError::new("internal", "internal error")
    })?;
    let done = Instant::now();
    let stage = &state.metrics.stage;
    stage
        .with_label_values(&["parse"])
        .observe((parsed - started).as_secs_f64());
    stage
        .with_label_values(&["decode"])
        .observe((decoded - parsed).as_secs_f64());
    stage
        .with_label_values(&["inference"])
        .observe((done - decoded).as_secs_f64());
    let best = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let mut response = json!({"prediction": state.labels[best]});
    if with_probabilities {
        let map: serde_json::Map<String, Value> = state
            .labels
            .iter()
            .cloned()
            .zip(probabilities.iter().map(|p| json!(p)))
            .collect();
        response["probabilities"] = Value::Object(map);
    }
    Ok(HttpResponse::Ok().json(response))
}

/// `?probabilities=` parsed like the Python services (pydantic's booleans).
fn probabilities_requested(query: &str) -> Result<bool, ServiceError> {
    let pairs: HashMap<String, String> = web::Query::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| ServiceError::new("invalid_request", format!("query: {e}")))?;
    match pairs.get("probabilities").map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if ["true", "1", "yes", "on", "t", "y"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["false", "0", "no", "off", "f", "n"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(ServiceError::new(
            "invalid_request",
            format!("query.probabilities: {v:?} is not a boolean"),
        )),
    }
}

fn media_type(request: &HttpRequest) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The body, refused with 413 as soon as it is known to exceed `limit` bytes: from
/// Content-Length before reading anything, else while streaming.
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ServiceError> {
    let too_large = || {
        ServiceError::new(
            "body_too_large",
            format!("the body exceeds MAX_BODY_BYTES ({limit} bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ServiceError::new("invalid_request", format!("body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `{"image": "<base64>"}` to image bytes. Only a JSON object counts as a request body
/// (serde would also accept `["..."]` for a struct), as in the Python services.
pub(crate) fn image_from_json(body: &[u8]) -> Result<Vec<u8>, ServiceError> {
    let invalid_request = || {
        ServiceError::new(
            "invalid_request",
            r#"expected a JSON object with the string field "image""#,
        )
    };
    // Syntax first (400), then shape (422), as in the Python services: parsing straight into
    // a map would call `[` a shape error before noticing it is not JSON at all.
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ServiceError::new("invalid_json", format!("the body is not valid JSON: {e}")))?;
    let encoded = document
        .as_object()
        .and_then(|object| object.get("image"))
        .and_then(Value::as_str)
        .ok_or_else(invalid_request)?;
    decode_base64(encoded)
}

/// Standard base64. ASCII whitespace is not data (RFC 2045 wraps lines every 76 characters:
/// GNU `base64`, Python's `encodebytes`) and is skipped; anything else outside the alphabet
/// is refused. The common unwrapped case decodes without a copy.
fn decode_base64(encoded: &str) -> Result<Vec<u8>, ServiceError> {
    let invalid = || ServiceError::new("invalid_base64", r#""image" is not valid base64"#);
    STANDARD.decode(encoded).or_else(|_| {
        let compact: Vec<u8> = encoded.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        STANDARD.decode(compact).map_err(|_| invalid())
    })
}
