//! The HTTP layer of contract/README.md: routes, admission, body limits and deadline, error
//! mapping, metrics. Nothing here decodes or infers (inference.rs does, on its own threads).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use actix_http::body::BoxBody;
use actix_http::{ConnectionType, Request, Response};
use actix_web::dev::ResourceDef;
use actix_web::error::PayloadError;
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::admission::{Admission, RefusalPacer, RequestRecord};
use crate::errors::{ErrorType, ServiceError};
use crate::inference::{InferencePool, Job, Scored};
use crate::metrics::Metrics;

pub const SERVICE: &str = "rust_onnx_serving";
/// Where a prediction is posted (the Open Inference Protocol's infer: open_inference.rs).
const PREDICT_PATHS: [&str; 2] = ["/predict/", "/predict"];

/// What every HTTP worker shares, read-only (the metrics and the admission count are
/// internally synchronised).
pub struct AppState {
    pub labels: Vec<String>,
    /// The model's name in the Open Inference Protocol: metadata.json's architecture.
    pub model_name: String,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub info: Value,
    pub metrics: Metrics,
    pub admission: Admission,
    pub refusals: RefusalPacer,
    pub inference: InferencePool,
}

pub fn routes(config: &mut web::ServiceConfig) {
    // GET routes answer HEAD too and 405 to any other method, as Starlette's do.
    config
        .service(read_only(&["/"], health))
        .service(read_only(&["/info"], info))
        .service(read_only(&["/metrics"], metrics))
        .service(
            web::resource(PREDICT_PATHS)
                .route(web::post().to(predict))
                .default_service(web::to(method_not_allowed)),
        )
        .configure(crate::open_inference::routes)
        .default_service(web::to(not_found));
}

/// `handler` on GET and HEAD of `paths`; any other method gets 405.
pub(crate) fn read_only<F, Args>(paths: &[&str], handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(paths.to_vec())
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
    actix_web::ResponseError::error_response(&ServiceError::new(ErrorType::NotFound, "Not Found"))
}

pub(crate) async fn method_not_allowed() -> HttpResponse {
    let error = ServiceError::new(ErrorType::MethodNotAllowed, "Method Not Allowed");
    actix_web::ResponseError::error_response(&error)
}

/// POST /predict/: admitted or 503 (paced under a flood, its body left to actix), the body read within BODY_TIMEOUT_SECONDS, then
/// handed to the inference threads; this thread only waits for the answer.
async fn predict(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let record = RequestRecord::start(&state.metrics);
    let Some(_permit) = state.admission.admit() else {
        return record.finish(overloaded(&state).await);
    };
    let response = match predict_inner(&request, payload, &state, record.started).await {
        Ok(response) => response,
        Err(Failure::Refused(error)) => error.error_response(),
        Err(Failure::ClientGone) => return record.client_gone(),
    };
    record.finish(response)
}

/// The 503 of a prediction over MAX_PENDING_REQUESTS, in its turn under a flood.
pub(crate) async fn overloaded(state: &AppState) -> HttpResponse {
    tokio::time::sleep(state.refusals.delay(Instant::now())).await;
    overloaded_now()
}

fn overloaded_now() -> HttpResponse {
    let error = ServiceError::new(
        ErrorType::Overloaded,
        "MAX_PENDING_REQUESTS requests are already in flight or queued; retry shortly",
    );
    error.error_response()
}

/// The server's `Expect: 100-continue` step, before any handler: a prediction that would
/// not be admitted is refused at once, its body never sent, and the connection closed (RFC
/// 9110, 10.1.1), as in the Python services; any other request gets `100 Continue`.
pub async fn continue_or_refuse(
    state: web::Data<AppState>,
    request: Request,
) -> Result<Request, Response<BoxBody>> {
    if state.admission.has_room() || !is_prediction(request.method(), request.path()) {
        return Ok(request);
    }
    let mut refusal = RequestRecord::start(&state.metrics).finish(overloaded_now());
    refusal.head_mut().set_connection_type(ConnectionType::Close);
    Err(refusal.into())
}

/// A request that takes a place in admission: `POST /predict/`, or the Open Inference
/// Protocol's infer.
fn is_prediction(method: &Method, path: &str) -> bool {
    // Built once: a pattern with segments compiles a regex, and a flood of `Expect`
    // requests is answered through here.
    static PREDICTIONS: LazyLock<[ResourceDef; 2]> = LazyLock::new(|| {
        [
            ResourceDef::new(PREDICT_PATHS),
            ResourceDef::new(crate::open_inference::INFER_PATHS),
        ]
    });
    method == Method::POST && PREDICTIONS.iter().any(|paths| paths.is_match(path))
}

/// Why a prediction ended without an answer for the client.
pub(crate) enum Failure {
    Refused(ServiceError),
    /// The connection closed before the body arrived whole.
    ClientGone,
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Failure::Refused(error)
    }
}

async fn predict_inner(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    started: Instant,
) -> Result<HttpResponse, Failure> {
    let with_probabilities = probabilities_requested(request.query_string())?;
    let body = read_body(
        request,
        payload,
        state.max_body_bytes,
        started,
        state.body_timeout,
    )
    .await?;
    let json = match media_type(request).as_str() {
        "application/json" => true,
        "image/jpeg" | "image/png" => false,
        other => {
            let shown = if other.is_empty() { "(none)" } else { other };
            return Err(ServiceError::new(
                ErrorType::UnsupportedMediaType,
                format!("Content-Type {shown} is not application/json, image/jpeg or image/png"),
            )
            .into());
        }
    };
    let scored = score(state, body, json, started.elapsed()).await?;
    Ok(HttpResponse::Ok().json(prediction_document(
        &state.labels,
        &scored.probabilities,
        with_probabilities,
    )?))
}

/// One body through the inference threads, its stages timed (`read`: the body's reading,
/// part of the parse stage).
pub(crate) async fn score(
    state: &AppState,
    body: Vec<u8>,
    json: bool,
    read: Duration,
) -> Result<Scored, Failure> {
    let (reply, answer) = oneshot::channel();
    state.inference.submit(Job { body, json, reply })?;
    // If the client leaves now, actix drops this future and with it `answer`: the inference
    // thread sees the closed channel and skips the work.
    let scored = answer.await.map_err(|_| {
        tracing::error!("an inference thread dropped a request");
        ServiceError::new(ErrorType::Internal, "internal error")
    })??;
    let stage = &state.metrics.stage;
    stage
        .with_label_values(&["parse"])
        .observe((read + scored.parse).as_secs_f64());
    stage
        .with_label_values(&["decode"])
        .observe(scored.decode.as_secs_f64());
    stage
        .with_label_values(&["preprocess"])
        .observe(scored.preprocess.as_secs_f64());
    stage
        .with_label_values(&["inference"])
        .observe(scored.inference.as_secs_f64());
    Ok(scored)
}

/// The answer: `{"prediction": label}`, with every label's probability when asked.
#[derive(serde::Serialize)]
pub(crate) struct PredictionDocument<'a> {
    pub prediction: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<LabelledScores<'a>>,
}

/// Each label with its probability, one JSON object in metadata.json's label order (the
/// model's output order), as every service answers: serde_json's Map would sort the keys.
struct LabelledScores<'a> {
    labels: &'a [String],
    scores: &'a [f32],
}

impl serde::Serialize for LabelledScores<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As f64, the number the Python services write for the same float32.
        serializer.collect_map(self.labels.iter().zip(self.scores.iter().map(|&p| f64::from(p))))
    }
}

/// The answer to one image. The warm-up checked that the graph gives one score per label; a
/// mismatch here is a bug, answered 500.
pub(crate) fn prediction_document<'a>(
    labels: &'a [String],
    probabilities: &'a [f32],
    with_probabilities: bool,
) -> Result<PredictionDocument<'a>, ServiceError> {
    let best = probabilities
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    let label = best
        .and_then(|i| labels.get(i))
        .filter(|_| probabilities.len() == labels.len());
    let Some(label) = label else {
        tracing::error!(
            "the model gave {} scores for {} labels",
            probabilities.len(),
            labels.len()
        );
        return Err(ServiceError::new(ErrorType::Internal, "internal error"));
    };
    Ok(PredictionDocument {
        prediction: label,
        probabilities: with_probabilities.then_some(LabelledScores {
            labels,
            scores: probabilities,
        }),
    })
}

/// `?probabilities=` parsed like the Python services (pydantic's booleans).
fn probabilities_requested(query: &str) -> Result<bool, ServiceError> {
    let pairs: HashMap<String, String> = web::Query::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| ServiceError::new(ErrorType::InvalidRequest, format!("query: {e}")))?;
    match pairs.get("probabilities").map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if ["true", "1", "yes", "on", "t", "y"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["false", "0", "no", "off", "f", "n"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(ServiceError::new(
            ErrorType::InvalidRequest,
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

/// The body, whole, within `timeout` of `started` (else 408), refused with 413 once it is
/// known to exceed `limit` bytes: from Content-Length before keeping anything, else while
/// streaming.
pub(crate) async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    started: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, Failure> {
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let too_large = || {
        ServiceError::new(
            ErrorType::BodyTooLarge,
            format!("the body exceeds MAX_BODY_BYTES ({limit} bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let collect = async {
        if declared.is_some_and(|n| n > limit) {
            return Err(BodyEnd::TooLarge);
        }
        // Reserved, not touched: pages cost memory only as the body arrives.
        let mut body = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(BodyEnd::Failed)?;
            if body.len() + chunk.len() > limit {
                return Err(BodyEnd::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout_at(deadline, collect).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(BodyEnd::Failed(error))) => Err(payload_failure(error)),
        Ok(Err(BodyEnd::TooLarge)) => {
            // Read the rest and discard it first (same deadline): clients that send the
            // whole body before reading the answer (urllib, requests) would otherwise see a
            // reset connection, not this 413.
            let drained = tokio::time::timeout_at(deadline, async {
                while let Some(chunk) = payload.next().await {
                    chunk?;
                }
                Ok::<(), PayloadError>(())
            })
            .await;
            match drained {
                Ok(Err(error)) => Err(payload_failure(error)),
                _ => Err(too_large().into()),
            }
        }
        Err(_) => Err(ServiceError::new(
            ErrorType::RequestTimeout,
            format!(
                "the body did not arrive whole within BODY_TIMEOUT_SECONDS ({} s)",
                timeout.as_secs()
            ),
        )
        .into()),
    }
}

/// How reading a body stopped short.
enum BodyEnd {
    TooLarge,
    Failed(PayloadError),
}

/// A connection closed mid-body is the client leaving (499), not a bad request.
fn payload_failure(error: PayloadError) -> Failure {
    match error {
        PayloadError::Incomplete(_) => Failure::ClientGone,
        other => ServiceError::new(ErrorType::InvalidRequest, format!("body: {other}")).into(),
    }
}

/// `{"image": "<base64>"}` to image bytes. Only a JSON object counts as a request body
/// (serde would also accept `["..."]` for a struct), as in the Python services.
pub(crate) fn image_from_json(body: &[u8]) -> Result<Vec<u8>, ServiceError> {
    let invalid_request = || {
        ServiceError::new(
            ErrorType::InvalidRequest,
            r#"expected a JSON object with the string field "image""#,
        )
    };
    // Syntax first (400), then shape (422), as in the Python services: parsing straight into
    // a map would call `[` a shape error before noticing it is not JSON at all.
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ServiceError::new(ErrorType::InvalidJson, format!("the body is not valid JSON: {e}")))?;
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
pub(crate) fn decode_base64(encoded: &str) -> Result<Vec<u8>, ServiceError> {
    let invalid = || ServiceError::new(ErrorType::InvalidBase64, r#""image" is not valid base64"#);
    STANDARD.decode(encoded).or_else(|_| {
        let compact: Vec<u8> = encoded.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        STANDARD.decode(compact).map_err(|_| invalid())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prediction_is_a_post_to_predict_or_to_an_infer_route() {
        for path in [
            "/predict/",
            "/predict",
            "/v2/models/m/infer",
            "/v2/models/m/versions/1/infer",
        ] {
            assert!(is_prediction(&Method::POST, path), "{path}");
            assert!(!is_prediction(&Method::GET, path), "{path}");
        }
        for path in [
            "/",
            "/info",
            "/v2/models/m",
            "/v2/models/m/ready",
            "/predict/x",
            "/v2/infer",
        ] {
            assert!(!is_prediction(&Method::POST, path), "{path}");
        }
    }
}
