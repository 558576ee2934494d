//! In-process tests of what is specific to this service (actix_web::test): a smoke test of
//! each route, the batch-shaped predictor, the JSON body parser and the streamed body limit.
//! The contract itself (every error row, 404/405, query errors, limits) is checked over real
//! HTTP against every service by tests/test_contract.py; the decoder tests are in
//! predictor.rs.
//!
//! The model is MODEL_URI (a local path or gs://, with metadata.json beside it; a relative
//! path is read from the repository root, where make runs) and the ONNX Runtime library
//! ORT_DYLIB_PATH; the Makefile sets both.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use ort::environment::Environment;
use serde_json::{Value, json};

use crate::config::Config;
use crate::http::{AppState, WorkerPredictor, image_from_json, routes};
use crate::predictor::{GraphSpec, Predictor, TensorSpec, decode_image, load_session};
use crate::storage::FetchedModel;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Fixture {
    environment: Environment,
    model: FetchedModel,
    state: web::Data<AppState>,
    predictor: Arc<WorkerPredictor>,
}

/// MODEL_URI as given when it exists from here (the crate folder, cargo's working
/// directory) or is gs://, else relative to the repository root.
fn model_uri() -> String {
    let uri = std::env::var("MODEL_URI")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "MODEL_URI is not set: name the ONNX model to test (`make test` sets it to the graph \
             `make export` writes)"
            )
        });
    if uri.starts_with("gs://") || Path::new(&uri).exists() {
        uri
    } else {
        Path::new(ROOT).join(&uri).display().to_string()
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let library = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH names libonnxruntime.so");
        let environment = ort::init_from(&library)
            .expect("ONNX Runtime loads")
            .build()
            .expect("environment");
        let uri = model_uri();
        let config = Config::parse_from([
            "test",
            "--model-uri",
            uri.as_str(),
            "--max-body-bytes",
            "2000000",
            "--max-image-pixels",
            "4000000",
        ]);
        // Fetched on a thread of its own: the fixture is first built inside a test's runtime.
        let fetch_uri = uri.clone();
        let model = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(crate::storage::fetch_model(&fetch_uri))
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("MODEL_URI={uri}: {e}"));
        let session = load_session(&environment, &model.bytes, 1, 1).unwrap();
        let predictor = Predictor::new(session, &model.graph).unwrap();
        let state = crate::app_state(&config, &model, Path::new(&library), 0.0);
        Fixture {
            environment,
            model,
            state: web::Data::new(state),
            predictor: Arc::new(Mutex::new(predictor)),
        }
    })
}

async fn app()
-> impl Service<actix_http::Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    let f = fixture();
    test::init_service(
        App::new()
            .app_data(f.state.clone())
            .app_data(web::Data::from(f.predictor.clone()))
            .configure(routes),
    )
    .await
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/images/{name}")).unwrap()
}

fn as_json(data: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({"image": STANDARD.encode(data)})).unwrap()
}

fn post(uri: &str, content_type: &str, body: Vec<u8>) -> actix_http::Request {
    test::TestRequest::post()
        .uri(uri)
        .insert_header(("Content-Type", content_type))
        .set_payload(body)
        .to_request()
}

async fn call(request: actix_http::Request) -> (u16, Value) {
    let app = app().await;
    let response = test::call_service(&app, request).await;
    let status = response.status().as_u16();
    let body = test::read_body(response).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn health_answers() {
    let (status, body) = call(test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
}

#[actix_web::test]
async fn json_and_raw_agree() {
    let coffee = image("coffee.jpg");
    let (s1, by_json) = call(post("/predict/", "application/json", as_json(&coffee))).await;
    let (s2, raw) = call(post("/predict", "image/jpeg", coffee)).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(by_json, raw);
    assert!(fixture().state.labels.iter().any(|l| by_json["prediction"] == *l));
}

#[actix_web::test]
async fn probabilities_cover_every_label() {
    let (status, body) = call(post(
        "/predict/?probabilities=true",
        "image/jpeg",
        image("coffee.jpg"),
    ))
    .await;
    assert_eq!(status, 200);
    let probabilities = body["probabilities"].as_object().unwrap();
    let mut labels: Vec<&String> = probabilities.keys().collect();
    let mut expected: Vec<&String> = fixture().state.labels.iter().collect();
    labels.sort();
    expected.sort();
    assert_eq!(labels, expected);
    let total: f64 = probabilities.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
}

#[actix_web::test]
async fn an_error_maps_to_its_status_and_body() {
    let (status, body) = call(post("/predict/", "application/json", b"{".to_vec())).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    assert!(!body["error"].as_str().unwrap_or("").is_empty());
}

#[actix_web::test]
async fn info_and_metrics() {
    let (status, info) = call(test::TestRequest::get().uri("/info").to_request()).await;
    assert_eq!(status, 200);
    assert_eq!(info["labels"].as_array().unwrap().len(), 11);
    assert_eq!(info["model_sha256"].as_str().unwrap().len(), 64);
    call(post("/predict/", "image/jpeg", image("coffee.jpg"))).await;
    call(post("/predict/", "application/json", b"{".to_vec())).await;
    let app = app().await;
    let response = test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    for expected in [
        "predict_requests_total{status=\"200\"}",
        "predict_requests_total{status=\"400\"}",
        "predict_stage_duration_seconds_count{stage=\"decode\"}",
        "predict_stage_duration_seconds_count{stage=\"inference\"}",
        "predict_stage_duration_seconds_count{stage=\"parse\"}",
        "predict_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(expected), "{expected} missing");
    }
}

/// decode → batch → predict → unbatch: one vector per image, in order, each what the image
/// gets alone.
#[actix_web::test]
async fn a_batch_gives_one_vector_per_image() {
    let decode = |name: &str| decode_image(&image(name), 40_000_000).unwrap();
    let (coffee, grey) = (decode("coffee.jpg"), decode("camera_grey.png"));
    let mut predictor = fixture().predictor.lock().unwrap();
    let alone = [
        predictor.infer(std::slice::from_ref(&coffee)).unwrap(),
        predictor.infer(std::slice::from_ref(&grey)).unwrap(),
    ];
    let batch = predictor.infer(&[coffee, grey]).unwrap();
    assert_eq!(batch, [alone[0][0].clone(), alone[1][0].clone()]);
    assert_eq!(batch[0].len(), fixture().state.labels.len());
    assert!(predictor.infer(&[]).unwrap().is_empty());
}

#[actix_web::test]
async fn names_missing_from_the_graph_fail_at_load() {
    let f = fixture();
    let load = |input: &str, output: &str| {
        let session = load_session(&f.environment, &f.model.bytes, 1, 1).unwrap();
        let graph = GraphSpec {
            input: TensorSpec { name: input.into() },
            output: TensorSpec { name: output.into() },
        };
        Predictor::new(session, &graph).err()
    };
    let (input, output) = (&f.model.graph.input.name, &f.model.graph.output.name);
    assert!(load(input, output).is_none());
    assert!(load("pixels", output).unwrap().contains("no input \"pixels\""));
    assert!(load(input, "scores").unwrap().contains("no output \"scores\""));
}

/// serde's specifics: a struct would also accept an array, a missing field and a
/// non-string are data errors (422), not syntax errors (400).
#[actix_web::test]
async fn json_body_parser() {
    let error_type = |body: &[u8]| image_from_json(body).err().map(|e| e.error_type);
    assert_eq!(image_from_json(br#"{"image": "AAAA"}"#).unwrap(), [0, 0, 0]);
    for body in [
        &br#"["AAAA"]"#[..],
        br#"["image"]"#,
        br#""image""#,
        b"null",
        br#"{"img": "AAAA"}"#,
        br#"{"image": 42}"#,
        br#"{"image": null}"#,
    ] {
        assert_eq!(
            error_type(body),
            Some("invalid_request"),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [
        &b"{not json"[..],
        b"",
        b"[",
        br#""x" junk"#,
        br#"{"image": "AAAA"} trailing"#,
    ] {
        assert_eq!(
            error_type(body),
            Some("invalid_json"),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(error_type(br#"{"image": "%%%"}"#), Some("invalid_base64"));
    // RFC 2045 line breaks are skipped; other characters outside the alphabet are not.
    assert_eq!(
        image_from_json(b"{\"image\": \"AA\\r\\nAA\\n\"}").unwrap(),
        [0, 0, 0]
    );
    assert_eq!(error_type(br#"{"image": "AA!AA"}"#), Some("invalid_base64"));
}

/// The limit is enforced while streaming, too, when no Content-Length announces the size.
#[actix_web::test]
async fn body_limit_applies_without_content_length() {
    let mut request = post("/predict/", "image/jpeg", vec![b'x'; 3_000_000]);
    request.headers_mut().remove("content-length");
    let (status, body) = call(request).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );
}
