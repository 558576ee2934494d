//! The Open Inference Protocol (KServe v2; Triton's HTTP API) beside the contract's routes,
//! answered as the Python hosts answer it (serving_common/serving_common/open_inference.py):
//! `GET /v2`, `/v2/health/live|ready`, `/v2/models/{model}[/versions/1][/ready]`, and
//! `POST /v2/models/{model}[/versions/1]/infer` with one input, `image` (BYTES `[N]`: base64
//! strings in JSON, raw in the binary tensor extension), and two outputs, `probabilities`
//! (FP32 `[N, labels]`) and `label` (BYTES `[N]`). An infer request is admitted like a
//! `/predict/` and its body read under the same limits; its images are scored one after the
//! other on the inference threads; errors are the contract's.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::{Map, Value, json};

use crate::admission::RequestRecord;
use crate::errors::{ErrorType, ServiceError};
use crate::http::{
    AppState, Failure, decode_base64, method_not_allowed, overloaded, prediction_document, read_body,
    read_only, score,
};

const VERSION: &str = "1";
const INPUT: &str = "image";
const PROBABILITIES: &str = "probabilities";
const LABEL: &str = "label";
const OUTPUTS: [&str; 2] = [PROBABILITIES, LABEL];
/// The binary tensor extension: the JSON part's length, the binary data after it.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Where an infer request is posted: admitted like a `/predict/` (http.rs).
pub(crate) const INFER_PATHS: [&str; 2] = [
    "/v2/models/{model}/infer",
    "/v2/models/{model}/versions/{version}/infer",
];

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(read_only(&["/v2"], server_metadata))
        .service(read_only(&["/v2/health/live"], live))
        .service(read_only(&["/v2/health/ready"], ready))
        .service(read_only(
            &["/v2/models/{model}", "/v2/models/{model}/versions/{version}"],
            model_metadata,
        ))
        .service(read_only(
            &[
                "/v2/models/{model}/ready",
                "/v2/models/{model}/versions/{version}/ready",
            ],
            model_ready,
        ))
        .service(
            web::resource(INFER_PATHS)
                .route(web::post().to(infer))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn server_metadata(state: web::Data<AppState>) -> HttpResponse {
    let service = state.info.get("service").cloned().unwrap_or(Value::Null);
    HttpResponse::Ok()
        .json(json!({"name": service, "version": VERSION, "extensions": ["binary_tensor_data"]}))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"live": true}))
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok().json(json!({"ready": true}))
}

async fn model_metadata(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(error) = served_model(&request, &state) {
        return error.error_response();
    }
    HttpResponse::Ok().json(json!({
        "name": state.model_name,
        "versions": [VERSION],
        "platform": state.info.get("service"),
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, state.labels.len()]},
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
    }))
}

async fn model_ready(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match served_model(&request, &state) {
        Ok(()) => HttpResponse::Ok().json(json!({"name": state.model_name, "ready": true})),
        Err(error) => error.error_response(),
    }
}

/// The path names the one model this service serves (its metadata.json's architecture),
/// in its one version; else 404.
fn served_model(request: &HttpRequest, state: &AppState) -> Result<(), ServiceError> {
    let name = request.match_info().get("model").unwrap_or("");
    let version = request.match_info().get("version").unwrap_or(VERSION);
    if name == state.model_name && version == VERSION {
        return Ok(());
    }
    Err(ServiceError::new(
        ErrorType::NotFound,
        format!(
            "unknown model {name:?} version {version:?}: this service serves {:?} version {VERSION:?}",
            state.model_name
        ),
    ))
}

/// POST .../infer: admitted or 503 as a `/predict/` is, then each image scored.
async fn infer(request: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let record = RequestRecord::start(&state.metrics);
    let Some(_permit) = state.admission.admit() else {
        return record.finish(overloaded(&state).await);
    };
    match infer_inner(&request, payload, &state, &record).await {
        Ok(response) => record.finish(response),
        Err(Failure::Refused(error)) => record.finish(error.error_response()),
        Err(Failure::ClientGone) => record.client_gone(),
    }
}

async fn infer_inner(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    record: &RequestRecord<'_>,
) -> Result<HttpResponse, Failure> {
    // Read first, as every refusal's body: a connection closed with unread bytes is reset,
    // and a client that sends before it reads would see no 404.
    let body = read_body(
        request,
        payload,
        state.max_body_bytes,
        record.started,
        state.body_timeout,
    )
    .await?;
    served_model(request, state)?;
    let header_length = request
        .headers()
        .get(HEADER_LENGTH)
        .map(|v| v.to_str().unwrap_or("?"));
    let mut parsed = parse_infer_request(&body, header_length)?;
    let mut read = record.started.elapsed();
    let mut rows = Vec::with_capacity(parsed.images.len());
    // Each image is handed over to the inference threads, not copied.
    for image in std::mem::take(&mut parsed.images) {
        rows.push(score(state, image, false, read).await?.probabilities);
        read = std::time::Duration::ZERO; // the body's reading counts once
    }
    let mut labels = Vec::with_capacity(rows.len());
    for row in &rows {
        labels.push(prediction_document(&state.labels, row, false)?.prediction);
    }
    Ok(infer_response(state, &parsed, &rows, &labels))
}

/// An infer request's images, and which outputs to answer, each as binary data or not.
#[derive(Debug)]
pub(crate) struct InferRequest {
    pub images: Vec<Vec<u8>>,
    pub outputs: Vec<(&'static str, bool)>,
    pub id: Option<String>,
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorType::InvalidRequest, message)
}

/// An infer request's body: JSON, or JSON then binary data (`header_length`: the JSON
/// part's length, the binary tensor extension's header).
pub(crate) fn parse_infer_request(
    body: &[u8],
    header_length: Option<&str>,
) -> Result<InferRequest, ServiceError> {
    let (text, binary) = match header_length {
        None => (body, &body[body.len()..]),
        Some(length) => match length.parse::<usize>() {
            Ok(n) if n <= body.len() && length.bytes().all(|b| b.is_ascii_digit()) => body.split_at(n),
            _ => {
                return Err(ServiceError::new(
                    ErrorType::InvalidJson,
                    format!("Inference-Header-Content-Length {length:?} is not a length within the body"),
                ));
            }
        },
    };
    let document: Value = serde_json::from_slice(text)
        .map_err(|e| ServiceError::new(ErrorType::InvalidJson, format!("the body is not valid JSON: {e}")))?;
    let document = document
        .as_object()
        .ok_or_else(|| invalid(r#"expected a JSON object with "inputs""#))?;
    let tensor = match document
        .get("inputs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([Value::Object(tensor)]) => tensor,
        _ => {
            return Err(invalid(format!(
                r#""inputs" must hold exactly one input, {INPUT:?}"#
            )));
        }
    };
    if tensor.get("name").and_then(Value::as_str) != Some(INPUT) {
        let name = tensor.get("name").cloned().unwrap_or(Value::Null);
        return Err(invalid(format!(
            "unknown input {name}: the model takes {INPUT:?}"
        )));
    }
    if tensor.get("datatype").and_then(Value::as_str) != Some("BYTES") {
        let datatype = tensor.get("datatype").cloned().unwrap_or(Value::Null);
        return Err(invalid(format!(
            "input image: datatype must be BYTES, not {datatype}"
        )));
    }
    let count = element_count(tensor.get("shape"))?;
    let size = tensor
        .get("parameters")
        .and_then(Value::as_object)
        .and_then(|p| p.get("binary_data_size"));
    let images = match size {
        Some(size) => {
            if size.as_u64() != Some(binary.len() as u64) {
                return Err(invalid(format!(
                    "input image: binary_data_size {size} is not the {} bytes sent",
                    binary.len()
                )));
            }
            bytes_elements(binary)?
        }
        None => {
            if !binary.is_empty() {
                return Err(invalid(
                    "binary data was sent, but input image has no binary_data_size",
                ));
            }
            let not_strings = || invalid(r#"input image: "data" must be a list of base64 strings"#);
            let data = tensor
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(not_strings)?;
            let mut elements = Vec::new();
            flatten(data, &mut elements);
            elements
                .into_iter()
                .map(|e| e.as_str().ok_or_else(not_strings).and_then(decode_base64))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if images.len() != count || count == 0 {
        return Err(invalid(format!(
            "input image: shape says {count} elements, the data holds {}",
            images.len()
        )));
    }
    Ok(InferRequest {
        images,
        outputs: requested_outputs(document)?,
        id: document.get("id").and_then(Value::as_str).map(str::to_owned),
    })
}

fn element_count(shape: Option<&Value>) -> Result<usize, ServiceError> {
    let invalid_shape = || invalid(r#"input image: "shape" must be a list of sizes, e.g. [1]"#);
    let sizes = shape
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or_else(invalid_shape)?;
    sizes.iter().try_fold(1usize, |product, size| {
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(invalid_shape)?;
        product.checked_mul(size).ok_or_else(invalid_shape)
    })
}

/// A tensor's JSON `data`, row-major, nested or not.
fn flatten<'a>(data: &'a [Value], into: &mut Vec<&'a Value>) {
    for item in data {
        match item {
            Value::Array(inner) => flatten(inner, into),
            other => into.push(other),
        }
    }
}

/// Triton's serialisation of a BYTES tensor: each element as a little-endian u32 length,
/// then its bytes.
fn bytes_elements(mut data: &[u8]) -> Result<Vec<Vec<u8>>, ServiceError> {
    let mut elements = Vec::new();
    while !data.is_empty() {
        let Some((length, rest)) = data.split_first_chunk::<4>() else {
            return Err(invalid(
                "the binary data of input image ends inside an element's length",
            ));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if length > rest.len() {
            return Err(invalid("the binary data of input image ends inside an element"));
        }
        let (element, rest) = rest.split_at(length);
        elements.push(element.to_vec());
        data = rest;
    }
    Ok(elements)
}

fn requested_outputs(document: &Map<String, Value>) -> Result<Vec<(&'static str, bool)>, ServiceError> {
    let Some(requested) = document.get("outputs") else {
        let binary = document
            .get("parameters")
            .and_then(|p| p.get("binary_data_output"))
            .and_then(Value::as_bool)
            == Some(true);
        return Ok(OUTPUTS.iter().map(|&name| (name, binary)).collect());
    };
    let list = requested
        .as_array()
        .filter(|list| !list.is_empty())
        .ok_or_else(|| invalid(r#""outputs" must be a list of {"name": ...}"#))?;
    list.iter()
        .map(|output| {
            let name = output.get("name").and_then(Value::as_str).unwrap_or("");
            let Some(&known) = OUTPUTS.iter().find(|&&o| o == name) else {
                return Err(invalid(format!(
                    "unknown output {name:?}: the outputs are {}",
                    OUTPUTS.join(", ")
                )));
            };
            let binary = output
                .get("parameters")
                .and_then(|p| p.get("binary_data"))
                .and_then(Value::as_bool)
                == Some(true);
            Ok((known, binary))
        })
        .collect()
}

/// The scores and the top labels as the protocol's outputs: JSON, or JSON then the binary
/// data of the outputs asked as binary.
fn infer_response(
    state: &AppState,
    request: &InferRequest,
    rows: &[Vec<f32>],
    labels: &[&str],
) -> HttpResponse {
    let mut outputs = Vec::new();
    let mut binary = Vec::new();
    for &(name, as_binary) in &request.outputs {
        let (datatype, shape, raw, data) = if name == PROBABILITIES {
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let raw: Vec<u8> = flat.iter().flat_map(|p| p.to_le_bytes()).collect();
            let width = rows.first().map_or(0, Vec::len);
            ("FP32", json!([rows.len(), width]), raw, json!(flat))
        } else {
            let raw: Vec<u8> = labels
                .iter()
                .flat_map(|l| (l.len() as u32).to_le_bytes().into_iter().chain(l.bytes()))
                .collect();
            ("BYTES", json!([labels.len()]), raw, json!(labels))
        };
        let mut output = json!({"name": name, "datatype": datatype, "shape": shape});
        if as_binary {
            output["parameters"] = json!({"binary_data_size": raw.len()});
            binary.extend_from_slice(&raw);
        } else {
            output["data"] = data;
        }
        outputs.push(output);
    }
    let mut document = json!({"model_name": state.model_name, "model_version": VERSION, "outputs": outputs});
    if let Some(id) = &request.id {
        document["id"] = json!(id);
    }
    let text = document.to_string();
    if binary.is_empty() {
        return HttpResponse::Ok().content_type("application/json").body(text);
    }
    let length = text.len();
    let mut body = text.into_bytes();
    body.extend_from_slice(&binary);
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((header::HeaderName::from_static(HEADER_LENGTH), length))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_body(images: &[&[u8]]) -> (Vec<u8>, String) {
        let data: Vec<u8> = images
            .iter()
            .flat_map(|i| {
                (i.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(i.iter().copied())
            })
            .collect();
        let header = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [images.len()],
            "parameters": {"binary_data_size": data.len()}}]})
        .to_string();
        let length = header.len().to_string();
        let mut body = header.into_bytes();
        body.extend_from_slice(&data);
        (body, length)
    }

    #[test]
    fn binary_elements_are_split_by_their_lengths() {
        let (body, length) = binary_body(&[b"first", b"", b"third"]);
        let request = parse_infer_request(&body, Some(&length)).unwrap();
        assert_eq!(request.images, [b"first".to_vec(), vec![], b"third".to_vec()]);
        assert_eq!(request.outputs, [(PROBABILITIES, false), (LABEL, false)]);
    }

    #[test]
    fn json_elements_are_base64_and_may_nest() {
        let body = json!({"id": "7", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 1],
            "data": [["aGk="], ["eW8="]]}], "outputs": [{"name": "label", "parameters": {"binary_data": true}}]});
        let request = parse_infer_request(body.to_string().as_bytes(), None).unwrap();
        assert_eq!(request.images, [b"hi".to_vec(), b"yo".to_vec()]);
        assert_eq!(request.outputs, [(LABEL, true)]);
        assert_eq!(request.id.as_deref(), Some("7"));
    }

    #[test]
    fn malformed_requests_are_the_contracts_errors() {
        let refused =
            |body: &[u8], length: Option<&str>| parse_infer_request(body, length).unwrap_err().error_type;
        assert_eq!(refused(b"{", None), ErrorType::InvalidJson);
        assert_eq!(refused(b"{}", Some("99")), ErrorType::InvalidJson);
        let tensor = |extra: Value| {
            let mut input = json!({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]});
            input
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"inputs": [input]}).to_string()
        };
        for extra in [
            json!({"name": "pixels"}),
            json!({"datatype": "FP32"}),
            json!({"shape": [2]}),
            json!({"shape": [-1]}),
            json!({"data": [1]}),
        ] {
            assert_eq!(
                refused(tensor(extra.clone()).as_bytes(), None),
                ErrorType::InvalidRequest,
                "{extra}"
            );
        }
        assert_eq!(
            refused(tensor(json!({"data": ["!!"]})).as_bytes(), None),
            ErrorType::InvalidBase64
        );
        let (mut body, length) = binary_body(&[b"abc"]);
        body.pop();
        assert_eq!(refused(&body, Some(&length)), ErrorType::InvalidRequest);
    }
}
