//! Fetching the model and its metadata.json from MODEL_URI (gs:// or a local path), with the
//! sha256 check against the metadata.
//!
//! GCS client: `gcloud-storage`. It supports Application Default Credentials (key file,
//! gcloud login, metadata server) and custom token sources, and it works against the Python
//! `gcp-storage-emulator` the tests use; `object_store` and Google's official crate need
//! response headers (ETag, x-goog-generation) that emulator does not send.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as GcsError;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use serde_json::Value;
use sha2::{Digest, Sha256};
use token_source::{TokenSource, TokenSourceProvider};

use crate::predictor::GraphSpec;

/// Transient errors (connection failures, 429, 5xx) are retried with backoff this long.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(30);
const METADATA_FILE: &str = "metadata.json";

/// A fetched model: its bytes, its metadata (with the graph's own entry), and how long the
/// download took.
pub struct FetchedModel {
    pub uri: String,
    pub bytes: Vec<u8>,
    pub metadata: Value,
    pub graph: GraphSpec,
    pub labels: Vec<String>,
    pub sha256: String,
    pub download_seconds: f64,
}

/// One line naming the URI and the cause.
pub type FetchError = String;

pub async fn fetch_model(uri: &str) -> Result<FetchedModel, FetchError> {
    let started = Instant::now();
    let metadata_uri = sibling_uri(uri, METADATA_FILE);
    let store = Store::for_uri(uri).await?;
    let bytes = store.read(uri).await?;
    let raw_metadata = store.read(&metadata_uri).await?;
    let metadata: Value = serde_json::from_slice(&raw_metadata)
        .map_err(|_| format!("{metadata_uri}: not the metadata.json written by weather-export"))?;
    let labels: Vec<String> = metadata
        .get("labels")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .filter(|l: &Vec<String>| !l.is_empty())
        .ok_or_else(|| format!("{metadata_uri}: labels must be a non-empty list of strings"))?;
    let name = file_name(uri);
    let expected = metadata["artifacts"][name.as_str()]["sha256"]
        .as_str()
        .ok_or_else(|| format!("{uri}: {name} is not listed in {metadata_uri}"))?
        .to_owned();
    let graph = graph_entry(&metadata, &name, uri, &metadata_uri)?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(format!(
            "{uri}: sha256 {}… differs from metadata.json (corrupt or mismatched)",
            &actual[..12]
        ));
    }
    let download_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        "model fetched from {uri} ({} bytes) in {download_seconds:.3} s",
        bytes.len()
    );
    Ok(FetchedModel {
        uri: uri.to_owned(),
        bytes,
        metadata,
        graph,
        labels,
        sha256: actual,
        download_seconds,
    })
}

/// `metadata["graphs"][name]`: the input and output names of the ONNX file `name`.
fn graph_entry(metadata: &Value, name: &str, uri: &str, metadata_uri: &str) -> Result<GraphSpec, FetchError> {
    let entry = metadata
        .get("graphs")
        .and_then(|graphs| graphs.get(name))
        .ok_or_else(|| format!("{uri}: {name} has no graph entry in {metadata_uri}"))?;
    serde_json::from_value(entry.clone()).map_err(|e| {
        format!("{uri}: the graph entry of {name} in {metadata_uri} needs input.name and output.name ({e})")
    })
}

pub fn sibling_uri(uri: &str, name: &str) -> String {
    match uri.rfind('/') {
        Some(i) => format!("{}/{name}", &uri[..i]),
        None => name.to_owned(),
    }
}

fn file_name(uri: &str) -> String {
    uri.rsplit('/').next().unwrap_or(uri).to_owned()
}

fn split_gcs_uri(uri: &str) -> Result<(String, String), FetchError> {
    let rest = uri.strip_prefix("gs://").unwrap_or(uri);
    match rest.split_once('/') {
        Some((bucket, object)) if !bucket.is_empty() && !object.is_empty() => {
            Ok((bucket.to_owned(), object.to_owned()))
        }
        _ => Err(format!("{uri}: not a gs://bucket/object URI")),
    }
}

enum Store {
    Local,
    Gcs(Box<Client>),
}

impl Store {
    async fn for_uri(uri: &str) -> Result<Self, FetchError> {
        if uri.starts_with("gs://") {
            Ok(Store::Gcs(Box::new(gcs_client().await?)))
        } else {
            Ok(Store::Local)
        }
    }

    async fn read(&self, uri: &str) -> Result<Vec<u8>, FetchError> {
        match self {
            Store::Local => std::fs::read(Path::new(uri)).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("{uri}: no such file"),
                _ => format!("{uri}: cannot read ({e})"),
            }),
            Store::Gcs(client) => read_gcs(client, uri).await,
        }
    }
}

async fn read_gcs(client: &Client, uri: &str) -> Result<Vec<u8>, FetchError> {
    let (bucket, object) = split_gcs_uri(uri)?;
    let request = GetObjectRequest {
        bucket,
        object,
        ..Default::default()
    };
    let deadline = Instant::now() + DOWNLOAD_DEADLINE;
    let mut backoff = Duration::from_millis(200);
    loop {
        let error = match client.download_object(&request, &Range::default()).await {
            Ok(bytes) => return Ok(bytes),
            Err(error) => error,
        };
        let transient = match (status_of(&error), &error) {
            (Some(code), _) => code == 429 || code >= 500,
            (None, GcsError::HttpClient(_) | GcsError::HttpMiddleware(_)) => true, // no answer
            (None, _) => false,
        };
        if !transient {
            return Err(describe(uri, &error));
        }
        if Instant::now() + backoff > deadline {
            return Err(format!(
                "{uri}: storage unreachable after {} s of retries ({})",
                DOWNLOAD_DEADLINE.as_secs(),
                one_line(&error.to_string())
            ));
        }
        tracing::warn!("{uri}: transient storage error, retrying: {error}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The HTTP status of a storage error, wherever the client put it (a parsed error body,
/// or a bare status when the server sent no JSON body, as emulators may).
fn status_of(error: &GcsError) -> Option<u16> {
    match error {
        GcsError::Response(r) => Some(r.code),
        GcsError::HttpClient(e) | GcsError::RawResponse(e, _) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

fn describe(uri: &str, error: &GcsError) -> FetchError {
    match status_of(error) {
        Some(404) => format!("{uri}: no such object (or no such bucket)"),
        Some(403) => format!("{uri}: access denied for these credentials"),
        Some(401) => format!("{uri}: credentials rejected (expired or invalid token)"),
        _ => format!("{uri}: storage error: {}", one_line(&error.to_string())),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Credentials, in order: STORAGE_EMULATOR_HOST (no credentials), CLOUDSDK_AUTH_ACCESS_TOKEN
/// (a bearer token), then Application Default Credentials.
async fn gcs_client() -> Result<Client, FetchError> {
    if let Some(host) = non_empty_env("STORAGE_EMULATOR_HOST") {
        let mut config = ClientConfig::default().anonymous();
        config.storage_endpoint = if host.contains("://") {
            host
        } else {
            format!("http://{host}")
        };
        return Ok(Client::new(config));
    }
    if let Some(token) = non_empty_env("CLOUDSDK_AUTH_ACCESS_TOKEN") {
        let config = ClientConfig {
            token_source_provider: Some(Box::new(StaticToken(Arc::new(BearerToken(token))))),
            ..Default::default()
        };
        return Ok(Client::new(config));
    }
    let config = tokio::time::timeout(Duration::from_secs(15), ClientConfig::default().with_auth())
        .await
        .map_err(|_| "no Google Cloud credentials found in 15 s (metadata server unreachable)".to_owned())?
        .map_err(|e| {
            format!(
                "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS, \
                 CLOUDSDK_AUTH_ACCESS_TOKEN, or STORAGE_EMULATOR_HOST ({})",
                one_line(&e.to_string())
            )
        })?;
    Ok(Client::new(config))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// CLOUDSDK_AUTH_ACCESS_TOKEN as a token source; Debug never prints the token.
struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(redacted)")
    }
}

#[async_trait::async_trait]
impl TokenSource for BearerToken {
    async fn token(&self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(format!("Bearer {}", self.0))
    }
}

#[derive(Debug)]
struct StaticToken(Arc<BearerToken>);

impl TokenSourceProvider for StaticToken {
    fn token_source(&self) -> Arc<dyn TokenSource> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_of_gcs_and_local_uris() {
        assert_eq!(
            sibling_uri("gs://b/w/model.onnx", "metadata.json"),
            "gs://b/w/metadata.json"
        );
        assert_eq!(sibling_uri("/a/model.onnx", "metadata.json"), "/a/metadata.json");
    }

    #[test]
    fn gcs_uri_needs_bucket_and_object() {
        assert!(split_gcs_uri("gs://bucket").is_err());
        assert_eq!(split_gcs_uri("gs://b/o/p").unwrap(), ("b".into(), "o/p".into()));
    }

    #[test]
    fn graph_entry_is_read_by_file_name() {
        let metadata = serde_json::json!({"graphs": {"model.optimized.onnx": {
            "input": {"name": "pixels", "dtype": "uint8", "shape": ["height", "width", 3]},
            "output": {"name": "scores", "dtype": "float32", "shape": [11]},
        }}});
        let graph = graph_entry(&metadata, "model.optimized.onnx", "m", "meta").unwrap();
        assert_eq!(
            (graph.input.name.as_str(), graph.output.name.as_str()),
            ("pixels", "scores")
        );
        let malformed = serde_json::json!({"graphs": {"model.onnx": {"input": {"name": "image"}}}});
        let error = graph_entry(&malformed, "model.onnx", "m", "meta").err().unwrap();
        assert!(
            error.starts_with("m: the graph entry of model.onnx in meta needs"),
            "{error}"
        );
    }

    #[actix_rt::test]
    async fn missing_graph_entry_fails_in_one_line() {
        let dir = std::env::temp_dir().join(format!("rust_onnx_serving-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("model.optimized.onnx");
        std::fs::write(&model, b"not really a graph").unwrap();
        let metadata = serde_json::json!({
            "labels": ["a", "b"],
            "artifacts": {"model.optimized.onnx": {"sha256": hex::encode(Sha256::digest(b"not really a graph"))}},
            "graphs": {"model.onnx": {"input": {"name": "image"}, "output": {"name": "probabilities"}}},
        });
        std::fs::write(dir.join(METADATA_FILE), metadata.to_string()).unwrap();
        let uri = model.display().to_string();
        let error = fetch_model(&uri).await.err().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let metadata_uri = sibling_uri(&uri, METADATA_FILE);
        assert_eq!(
            error,
            format!("{uri}: model.optimized.onnx has no graph entry in {metadata_uri}")
        );
    }

    #[actix_rt::test]
    async fn missing_local_file_is_one_line() {
        let error = fetch_model("/nonexistent/model.onnx").await.err().unwrap();
        assert_eq!(error, "/nonexistent/model.onnx: no such file");
    }
}
