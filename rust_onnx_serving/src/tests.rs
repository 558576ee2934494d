//! In-process tests of what is specific to this service (actix_web::test, and a real actix
//! server on a loopback port where the socket matters): a smoke test of each route, the
//! batch-shaped predictor, both graph kinds, the warm-up check, the JSON body parser, the
//! streamed body limit, the aspect-ratio bound, the body deadline (408) and admission (503);
//! a model of other sizes in tests/other_sizes.rs. The contract itself (every error row,
//! 404/405, query errors, limits) and the probabilities against the PyTorch reference are
//! checked over real HTTP against every service by tests/test_contract.py; the decoder tests
//! are in decode.rs and jpeg.rs, the sizes and crop arithmetic in geometry.rs, the resize in
//! preprocess.rs.
//!
//! The model is MODEL_URI (a local path or gs://, with metadata.json beside it; a relative
//! path is read from the repository root, where make runs) and the ONNX Runtime library
//! ORT_DYLIB_PATH; the Makefile sets both. The graph-kind tests also load the other graphs
//! beside it (model.optimized.onnx, model.fixed.onnx).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use ort::environment::Environment;
use serde_json::{Value, json};

use crate::admission::{Admission, RefusalPacer};
use crate::config::Config;
use crate::decode::{ImageDecoder, RgbPixels};
use crate::errors::ErrorType;
use crate::http::{AppState, image_from_json, routes};
use crate::inference::InferencePool;
use crate::metrics::Metrics;
use crate::predictor::{GraphKind, GraphSpec, Predictor, TensorSpec, load_session};
use crate::preprocess::{PILLOW_RESIZER, ResizerKind, SIMD_RESIZER};
use crate::storage::FetchedModel;

mod other_sizes;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Fixture {
    environment: Environment,
    model: FetchedModel,
    config: Config,
    state: web::Data<AppState>,
    /// A session of its own for the tests that call the predictor directly (the pool's
    /// belongs to its inference thread).
    predictor: Mutex<Predictor>,
    pool: InferencePool,
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
                .block_on(crate::storage::fetch_model(&fetch_uri, Duration::from_secs(30)))
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("MODEL_URI={uri}: {e}"));
        let predictor = || {
            let session = load_session(&environment, &model.bytes, 1, 1).unwrap();
            Predictor::new(session, &model.graph, model.geometry, ResizerKind::Pillow).unwrap()
        };
        let (pool, _threads) =
            InferencePool::start(vec![predictor()], crate::image_limits(&config), false).unwrap();
        let own = predictor();
        let state = crate::app_state(
            &config,
            &model,
            Path::new(&library),
            0.0,
            own.kind(),
            pool.clone(),
        );
        Fixture {
            predictor: Mutex::new(own),
            environment,
            model,
            config,
            state: web::Data::new(state),
            pool,
        }
    })
}

/// The fixture's state with other admission and body-deadline settings.
fn state_with(max_pending: usize, body_timeout: Duration) -> web::Data<AppState> {
    let f = fixture();
    web::Data::new(AppState {
        labels: f.state.labels.clone(),
        model_name: f.state.model_name.clone(),
        max_body_bytes: f.state.max_body_bytes,
        body_timeout,
        info: Value::Null,
        metrics: Metrics::new(),
        admission: Admission::new(max_pending),
        refusals: RefusalPacer::new(100),
        inference: f.pool.clone(),
    })
}

async fn app()
-> impl Service<actix_http::Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error> {
    let f = fixture();
    test::init_service(App::new().app_data(f.state.clone()).configure(routes)).await
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
        "predict_stage_duration_seconds_count{stage=\"preprocess\"}",
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
    let limits = crate::image_limits(&fixture().config);
    let decode = |name: &str| {
        ImageDecoder::new(None)
            .unwrap()
            .decode(&image(name), &limits)
            .unwrap()
    };
    let images = [
        decode("coffee.jpg"),
        decode("camera_grey.png"),
        decode("hubble_wide.jpg"),
    ];
    let mut predictor = fixture().predictor.lock().unwrap();
    let alone: Vec<Vec<f32>> = images
        .iter()
        .map(|image| predictor.infer(std::slice::from_ref(image)).unwrap().remove(0))
        .collect();
    // The fixed graph runs the three as one [3, crop, crop, 3] tensor.
    let batch = predictor.infer(&images).unwrap();
    assert_eq!(batch.len(), 3);
    for (together, single) in batch.iter().zip(&alone) {
        assert_eq!(together.len(), fixture().state.labels.len());
        let worst = together
            .iter()
            .zip(single)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "batched and single runs differ by {worst}");
    }
    assert!(predictor.infer(&[]).unwrap().is_empty());
}

/// A predictor for the graph `file` beside MODEL_URI (same folder, same metadata.json).
fn sibling_predictor(file: &str) -> Predictor {
    let uri = model_uri();
    let sibling = format!(
        "{}/{file}",
        uri.rsplit_once('/').map_or(".", |(folder, _)| folder)
    );
    let model = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::storage::fetch_model(&sibling, Duration::from_secs(30)))
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("{file} beside MODEL_URI: {e}"));
    let session = load_session(&fixture().environment, &model.bytes, 1, 1).unwrap();
    Predictor::new(session, &model.graph, model.geometry, ResizerKind::Pillow).unwrap()
}

/// The input shape picks the pipeline; both give nearly the same probabilities on the
/// study photo (the crop resize here is uint8, the graph's float: pixels differ by at most
/// one level). tests/test_contract.py holds both to the PyTorch reference.
#[actix_web::test]
async fn both_graph_kinds_are_recognised_and_agree() {
    let mut any_size = sibling_predictor("model.optimized.onnx");
    let mut fixed = sibling_predictor("model.fixed.onnx");
    assert_eq!(
        (any_size.kind(), fixed.kind()),
        (GraphKind::AnySize, GraphKind::Fixed)
    );
    let photo = ImageDecoder::new(None)
        .unwrap()
        .decode(&image("hubble_wide.jpg"), &crate::image_limits(&fixture().config))
        .unwrap();
    let a = any_size.infer(std::slice::from_ref(&photo)).unwrap().remove(0);
    let b = fixed.infer(std::slice::from_ref(&photo)).unwrap().remove(0);
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 0.01, "any-size {a:?}\nfixed    {b:?}");
    // The any-size graph takes no crops of the service's making, the fixed one no photo.
    assert!(matches!(
        any_size.preprocess(std::slice::from_ref(&photo)).unwrap(),
        crate::predictor::GraphInput::Images(_)
    ));
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
        Predictor::new(session, &graph, f.model.geometry, ResizerKind::Pillow).err()
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
            Some(ErrorType::InvalidRequest),
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
            Some(ErrorType::InvalidJson),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(error_type(br#"{"image": "%%%"}"#), Some(ErrorType::InvalidBase64));
    // RFC 2045 line breaks are skipped; other characters outside the alphabet are not.
    assert_eq!(
        image_from_json(b"{\"image\": \"AA\\r\\nAA\\n\"}").unwrap(),
        [0, 0, 0]
    );
    assert_eq!(
        error_type(br#"{"image": "AA!AA"}"#),
        Some(ErrorType::InvalidBase64)
    );
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

#[actix_web::test]
async fn info_says_the_pipeline() {
    let (_, info) = call(test::TestRequest::get().uri("/info").to_request()).await;
    let pipeline = &info["runtime"]["pipeline"];
    let kind = fixture().predictor.lock().unwrap().kind();
    assert_eq!(pipeline["graph"], kind.name());
    assert_eq!(pipeline["jpeg_dct_scaling"], false);
    match kind {
        GraphKind::Fixed => {
            assert_eq!(pipeline["resizer"], PILLOW_RESIZER);
            assert_eq!(pipeline["resizer_setting"], "pillow");
            assert!(pipeline["resizer_cpu_extension"].is_null(), "{pipeline}");
        }
        GraphKind::AnySize => {
            assert_eq!(pipeline["resizer"], "in graph");
            assert_eq!(pipeline["resizer_setting"], "pillow (ignored)");
        }
    }
}

/// RESIZER=simd names fast_image_resize and the SIMD extension it found on this CPU.
#[actix_web::test]
async fn info_names_the_simd_resizer_and_its_extension() {
    let config = Config::parse_from(["test", "--model-uri", "unused", "--resizer", "simd"]);
    let pipeline = crate::pipeline_info(GraphKind::Fixed, &config);
    assert_eq!(pipeline["resizer"], SIMD_RESIZER);
    assert_eq!(pipeline["resizer_setting"], "simd");
    assert!(pipeline["resizer_cpu_extension"].is_string(), "{pipeline}");
}

#[actix_web::test]
async fn info_lists_the_limits() {
    let (_, info) = call(test::TestRequest::get().uri("/info").to_request()).await;
    for (key, value) in [
        ("max_aspect_ratio", 20),
        ("max_pending_requests", 64),
        ("refusals_per_second", 100),
        ("body_timeout_seconds", 30),
        ("storage_timeout_seconds", 60),
    ] {
        assert_eq!(info[key], value, "{key}");
    }
}

/// A PNG of `width` x `height` flat pixels, a few KB however large.
fn flat_png(width: u32, height: u32) -> Vec<u8> {
    let mut data = Vec::new();
    let mut encoder = png::Encoder::new(&mut data, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![90u8; (width * height) as usize])
        .unwrap();
    writer.finish().unwrap();
    data
}

#[actix_web::test]
async fn elongated_images_get_422_before_decoding() {
    for (width, height) in [(40_000, 2), (2, 60_000), (3000, 20)] {
        let (status, body) = call(post("/predict/", "image/png", flat_png(width, height))).await;
        assert_eq!(
            (status, body["error_type"].as_str()),
            (422, Some("extreme_aspect_ratio")),
            "{width}x{height}: {body}"
        );
    }
    // The pixel count is checked first.
    let (status, body) = call(post("/predict/", "image/png", flat_png(40_000, 200))).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (413, Some("image_too_large"))
    );
    let (status, _) = call(post("/predict/", "image/png", flat_png(400, 20))).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn warm_up_checks_the_output_against_the_labels() {
    let mut predictor = fixture().predictor.lock().unwrap();
    let labels = &fixture().state.labels;
    predictor.warm_up(labels).unwrap();
    let mut more = labels.clone();
    more.push("extra".to_owned());
    assert_eq!(
        predictor.warm_up(&more).unwrap_err(),
        format!(
            "model output has {} scores, metadata.json lists {} labels",
            labels.len(),
            more.len()
        )
    );
}

/// `state` served by a real actix server on a loopback port, for what needs a socket.
fn serve(state: web::Data<AppState>) -> (actix_web::dev::ServerHandle, u16) {
    let server = actix_web::HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (handle, port)
}

/// Send `head` (and nothing more) on a new connection, on a thread of its own; the answer,
/// and how long its first byte took.
fn raw_request(port: u16, head: String) -> std::thread::JoinHandle<(String, Duration)> {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = vec![0u8; 1];
        let first = stream.read(&mut answer).unwrap_or(0);
        let waited = started.elapsed();
        answer.truncate(first);
        let _ = stream.read_to_end(&mut answer);
        (String::from_utf8_lossy(&answer).into_owned(), waited)
    })
}

async fn answer_of(request: std::thread::JoinHandle<(String, Duration)>) -> (String, Duration) {
    actix_web::rt::task::spawn_blocking(move || request.join().unwrap())
        .await
        .unwrap()
}

fn declared_but_unsent(port: u16) -> std::thread::JoinHandle<(String, Duration)> {
    raw_request(
        port,
        "POST /predict/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n0123456789"
            .to_owned(),
    )
}

/// A body that does not arrive whole in time gets 408, and while it holds the only pending
/// place, the next request gets 503 with Retry-After at once; GET / still answers.
#[actix_web::test]
async fn slow_bodies_time_out_and_admission_refuses_at_once() {
    let state = state_with(1, Duration::from_secs(2));
    let (server, port) = serve(state.clone());
    let slow = declared_but_unsent(port);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let (refused, waited) = answer_of(declared_but_unsent(port)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("\"overloaded\""), "{refused}");
    assert!(waited < Duration::from_millis(500), "{waited:?}");
    let (health, _) = answer_of(raw_request(port, "GET / HTTP/1.0\r\n\r\n".to_owned())).await;
    assert!(health.contains(" 200 OK"), "{health}");
    let (timed_out, waited) = answer_of(slow).await;
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(timed_out.contains("\"request_timeout\""), "{timed_out}");
    let metrics = String::from_utf8(state.metrics.exposition()).unwrap();
    assert!(
        metrics.contains("predict_requests_total{status=\"503\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("predict_requests_total{status=\"408\"} 1"),
        "{metrics}"
    );
    server.stop(false).await;
}

/// A client that leaves mid-body is counted 499, never 4xx or 500.
#[actix_web::test]
async fn a_client_leaving_mid_body_counts_as_499() {
    let state = state_with(4, Duration::from_secs(10));
    let (server, port) = serve(state.clone());
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"POST /predict/ HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n0123")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    })
    .await
    .unwrap();
    let counted = |state: &AppState| String::from_utf8(state.metrics.exposition()).unwrap();
    for _ in 0..50 {
        if counted(&state).contains("status=\"499\"") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = counted(&state);
    assert!(
        metrics.contains("predict_requests_total{status=\"499\"} 1"),
        "{metrics}"
    );
    server.stop(false).await;
}

#[actix_web::test]
async fn decoded_pixels_feed_the_graph_as_they_are() {
    let pixels = RgbPixels {
        width: 2,
        height: 1,
        data: vec![0, 0, 0, 255, 255, 255],
    };
    let scores = fixture().predictor.lock().unwrap().infer(&[pixels]).unwrap();
    assert_eq!(scores[0].len(), fixture().state.labels.len());
}
