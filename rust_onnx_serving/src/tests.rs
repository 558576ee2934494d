//! In-process tests of every contract route and error row (actix_web::test), on the model
//! `make export` writes to ../artifacts and the ONNX Runtime library named by ORT_DYLIB_PATH
//! (the Makefile sets both).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use serde_json::{Value, json};

use crate::config::Config;
use crate::http::{AppState, WorkerSession, routes};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Fixture {
    state: web::Data<AppState>,
    session: Arc<WorkerSession>,
}

fn model_path() -> PathBuf {
    let dir = std::env::var("MODEL_DIR").unwrap_or_else(|_| format!("{ROOT}/artifacts"));
    let path = Path::new(&dir).join("model.optimized.onnx");
    assert!(
        path.exists(),
        "{} is missing: run `make export` first",
        path.display()
    );
    path
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let library = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH names libonnxruntime.so");
        let environment = ort::init_from(&library)
            .expect("ONNX Runtime loads")
            .build()
            .expect("environment");
        let uri = model_path().display().to_string();
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
        .unwrap();
        let session = crate::predictor::load_session(&environment, &model.bytes, 1, 1).unwrap();
        let state = crate::app_state(&config, &model, Path::new(&library), 0.0);
        Fixture {
            state: web::Data::new(state),
            session: Arc::new(Mutex::new(session)),
        }
    })
}

async fn app()
-> impl Service<actix_http::Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    let f = fixture();
    test::init_service(
        App::new()
            .app_data(f.state.clone())
            .app_data(web::Data::from(f.session.clone()))
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

async fn assert_error(request: actix_http::Request, status: u16, error_type: &str) {
    let (got, body) = call(request).await;
    assert_eq!(
        (got, body["error_type"].as_str()),
        (status, Some(error_type)),
        "{body}"
    );
    assert!(!body["error"].as_str().unwrap_or("").is_empty());
}

#[actix_web::test]
async fn health_answers() {
    let (status, body) = call(test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
}

#[actix_web::test]
async fn json_raw_and_both_paths_agree() {
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
    let labels: Vec<&String> = probabilities.keys().collect();
    assert_eq!(labels.len(), 11);
    let total: f64 = probabilities.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
}

#[actix_web::test]
async fn png_alpha_and_greyscale_decode() {
    for (name, media) in [
        ("coffee_alpha.png", "image/png"),
        ("camera_grey.png", "image/png"),
        ("gravel_grey.jpg", "image/jpeg"),
    ] {
        let (status, _) = call(post("/predict/", media, image(name))).await;
        assert_eq!(status, 200, "{name}");
    }
}

#[actix_web::test]
async fn study_payload_unchanged() {
    let path = format!("{ROOT}/../shared/reference/rime_5868.json");
    let Ok(payload) = std::fs::read(&path) else {
        eprintln!("skipped: the original study's payload is not at {path}");
        return;
    };
    let (status, body) = call(post("/predict/", "application/json", payload)).await;
    assert_eq!(status, 200, "{body}");
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

#[actix_web::test]
async fn every_error_row() {
    let coffee = image("coffee.jpg");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", b"{not json".to_vec(), 400, "invalid_json"),
        (
            "application/json",
            br#"{"image": "%%%"}"#.to_vec(),
            400,
            "invalid_base64",
        ),
        (
            "application/json",
            br#"{"img": "AAAA"}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "application/json",
            br#"{"image": 42}"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "application/json",
            br#"["image"]"#.to_vec(),
            422,
            "invalid_request",
        ),
        (
            "application/json",
            as_json(b"GIF89a not a photo"),
            415,
            "unsupported_image",
        ),
        ("application/json", as_json(b""), 415, "unsupported_image"),
        (
            "image/jpeg",
            coffee[..coffee.len() / 3].to_vec(),
            415,
            "unsupported_image",
        ),
        (
            "image/png",
            [b"\x89PNG\r\n\x1a\n".as_slice(), &[0u8; 64]].concat(),
            415,
            "unsupported_image",
        ),
        ("text/plain", coffee.clone(), 415, "unsupported_media_type"),
        ("application/json", vec![b'x'; 2_000_001], 413, "body_too_large"),
    ];
    for (media, body, status, error_type) in cases {
        assert_error(post("/predict/", media, body), status, error_type).await;
    }
    let (status, _) = call(post("/predict/", "image/jpeg", coffee.clone())).await;
    assert_eq!(status, 200, "the worker lives on");
}

#[actix_web::test]
async fn body_limit_applies_without_content_length() {
    let mut request = post("/predict/", "image/jpeg", vec![b'x'; 3_000_000]);
    request.headers_mut().remove("content-length");
    assert_error(request, 413, "body_too_large").await;
}

#[actix_web::test]
async fn image_over_pixel_limit_is_refused() {
    // 2500x2000 = 5 MP > 4 MP: a flat image compresses to almost nothing (a bomb).
    let flat = image::RgbImage::new(2500, 2000);
    let mut png = Vec::new();
    flat.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(png.len() < 100_000);
    assert_error(post("/predict/", "image/png", png), 413, "image_too_large").await;
}

#[actix_web::test]
async fn unknown_route_method_and_query() {
    assert_error(
        test::TestRequest::get().uri("/nope").to_request(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        test::TestRequest::get().uri("/predict/").to_request(),
        405,
        "method_not_allowed",
    )
    .await;
    assert_error(
        post("/predict/?probabilities=maybe", "image/jpeg", image("coffee.jpg")),
        422,
        "invalid_request",
    )
    .await;
}
