//! A model with sizes other than the demo model's: Resize(180), CenterCrop(160), three
//! labels. Its fixed graph is built here with ONNX Runtime's model editor: uint8
//! `[batch, 160, 160, 3]` in, each crop's mean red, green and blue out, so the output says
//! which pixels reached the graph (ONNX Runtime refuses a tensor of any other size).

use actix_web::{App, test, web};
use ort::editor::{Graph, Model, Node, ONNX_DOMAIN, Opset};
use ort::operator::Attribute;
use ort::session::Session;
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, ValueType};
use serde_json::Value;

use super::fixture;
use crate::admission::{Admission, RefusalPacer};
use crate::decode::RgbPixels;
use crate::geometry::Geometry;
use crate::http::{AppState, routes};
use crate::inference::InferencePool;
use crate::metrics::Metrics;
use crate::predictor::{GraphInput, GraphKind, GraphSpec, Predictor, TensorSpec};
use crate::preprocess::ResizerKind;

const SMALL: Geometry = Geometry {
    resize: 180,
    crop: 160,
};
const LABELS: [&str; 3] = ["red", "green", "blue"];
/// ONNX's TensorProto.FLOAT, Cast's `to` for float32.
const ONNX_FLOAT: i64 = 1;

/// `[batch, side, side, 3]` uint8 "image" to `[batch, 3]` float "probabilities": the mean of
/// each channel (ReduceMean at opset 17, where its axes are an attribute).
fn channel_means_graph(side: i64) -> ort::Result<Session> {
    let tensor = |ty, shape: Vec<i64>, names: &[&str]| ValueType::Tensor {
        ty,
        shape: Shape::new(shape),
        dimension_symbols: SymbolicDimensions::new(names.iter().map(|name| (*name).to_owned())),
    };
    let mut graph = Graph::new()?;
    graph.set_inputs([Outlet::new(
        "image",
        tensor(
            TensorElementType::Uint8,
            vec![-1, side, side, 3],
            &["batch", "", "", ""],
        ),
    )])?;
    graph.set_outputs([Outlet::new(
        "probabilities",
        tensor(TensorElementType::Float32, vec![-1, 3], &["batch", ""]),
    )])?;
    graph.add_node(Node::new(
        "Cast",
        ONNX_DOMAIN,
        "cast",
        ["image"],
        ["pixels"],
        [Attribute::new("to", ONNX_FLOAT)?],
    )?)?;
    graph.add_node(Node::new(
        "ReduceMean",
        ONNX_DOMAIN,
        "mean",
        ["pixels"],
        ["probabilities"],
        [
            Attribute::new("axes", vec![1i64, 2])?,
            Attribute::new("keepdims", 0i64)?,
        ],
    )?)?;
    let mut model = Model::new([Opset::new(ONNX_DOMAIN, 17)?])?;
    model.set_graph(graph)?;
    model.into_session(&Session::builder(&fixture().environment)?)
}

fn spec() -> GraphSpec {
    GraphSpec {
        input: TensorSpec { name: "image".into() },
        output: TensorSpec {
            name: "probabilities".into(),
        },
    }
}

fn small_predictor(kind: ResizerKind) -> Predictor {
    let session = channel_means_graph(160).unwrap();
    let mut predictor = Predictor::new(session, &spec(), SMALL, kind).unwrap();
    let labels: Vec<String> = LABELS.map(String::from).into();
    predictor.warm_up(&labels).unwrap();
    predictor
}

/// 640x480, red 255 on the right half, green 255 on the bottom half, blue 99: a crop centred
/// as torchvision centres it averages to about (127.5, 127.5, 99).
fn halves() -> RgbPixels {
    let (width, height) = (640u32, 480u32);
    let data = (0..height)
        .flat_map(|y| {
            (0..width).flat_map(move |x| [if x >= 320 { 255 } else { 0 }, if y >= 240 { 255 } else { 0 }, 99])
        })
        .collect();
    RgbPixels { width, height, data }
}

fn uniform(width: u32, height: u32) -> RgbPixels {
    let data = [200, 17, 99].repeat(width as usize * height as usize);
    RgbPixels { width, height, data }
}

/// Crops of 160 x 160 x 3 bytes, one per image, reach the graph, in order, centred.
#[actix_web::test]
async fn crops_of_the_models_size_reach_the_graph() {
    for kind in [ResizerKind::Pillow, ResizerKind::Simd] {
        let mut predictor = small_predictor(kind);
        assert_eq!(predictor.kind(), GraphKind::Fixed);
        let images = [uniform(1200, 727), halves()];
        let GraphInput::Crops { count, pixels } = predictor.preprocess(&images).unwrap() else {
            panic!("the fixed graph takes crops");
        };
        assert_eq!((count, pixels.len()), (2, 2 * 160 * 160 * 3));
        let means = predictor.infer(&images).unwrap();
        assert_eq!(means[0], [200.0, 17.0, 99.0], "{kind:?}");
        for (mean, expected) in means[1].iter().zip([127.5, 127.5, 99.0]) {
            assert!((mean - expected).abs() < 0.5, "{kind:?} {:?}", means[1]);
        }
    }
}

/// A session for another crop than the model's metadata says is refused at load.
#[actix_web::test]
async fn a_graph_for_another_crop_is_refused() {
    let session = channel_means_graph(224).unwrap();
    let error = Predictor::new(session, &spec(), SMALL, ResizerKind::Pillow)
        .err()
        .unwrap();
    assert!(
        error
            .contains("uint8 [batch, 160, 160, 3] (the fixed graph, for metadata.json's center_crop of 160)"),
        "{error}"
    );
}

/// Over HTTP, a PNG through the whole pipeline: decoded, cropped to 160, scored, labelled.
#[actix_web::test]
async fn the_service_answers_with_the_models_labels() {
    let (pool, _threads) = InferencePool::start(
        vec![small_predictor(ResizerKind::Pillow)],
        crate::image_limits(&fixture().config),
        false,
    )
    .unwrap();
    let state = web::Data::new(AppState {
        labels: LABELS.map(String::from).into(),
        model_name: "other_sizes".into(),
        max_body_bytes: 1_000_000,
        body_timeout: std::time::Duration::from_secs(10),
        info: Value::Null,
        metrics: Metrics::new(),
        admission: Admission::new(4),
        refusals: RefusalPacer::new(100),
        inference: pool,
    });
    let app = test::init_service(App::new().app_data(state).configure(routes)).await;
    let request = test::TestRequest::post()
        .uri("/predict/?probabilities=true")
        .insert_header(("Content-Type", "image/png"))
        .set_payload(rgb_png(&uniform(300, 200)))
        .to_request();
    let body: Value = test::call_and_read_body_json(&app, request).await;
    assert_eq!(
        body,
        serde_json::json!({"prediction": "red", "probabilities": {"red": 200.0, "green": 17.0, "blue": 99.0}})
    );
}

fn rgb_png(image: &RgbPixels) -> Vec<u8> {
    let mut data = Vec::new();
    let mut encoder = png::Encoder::new(&mut data, image.width, image.height);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&image.data).unwrap();
    writer.finish().unwrap();
    data
}
