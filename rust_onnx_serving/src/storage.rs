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

use crate::geometry::Geometry;
use crate::predictor::GraphSpec;

const METADATA_FILE: &str = "metadata.json";
/// Per storage request (contract/README.md); each is also capped by what remains of
/// STORAGE_TIMEOUT_SECONDS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Retries of transient errors wait this long first, doubling up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// A fetched model: its bytes, its metadata (with the graph's own entry and the
/// preprocessing sizes), and how long the download took.
pub struct FetchedModel {
    pub uri: String,
    pub bytes: Vec<u8>,
    pub metadata: Value,
    pub graph: GraphSpec,
    pub geometry: Geometry,
    pub labels: Vec<String>,
    pub sha256: String,
    pub download_seconds: f64,
}

/// One line naming the URI and the cause.
pub type FetchError = String;

/// The model at `uri` and its metadata.json, giving up `timeout` after the start (storage
/// down or not answering).
pub async fn fetch_model(uri: &str, timeout: Duration) -> Result<FetchedModel, FetchError> {
    let started = Instant::now();
    let deadline = Deadline {
        at: started + timeout,
        timeout,
    };
    let metadata_uri = sibling_uri(uri, METADATA_FILE);
    let store = Store::for_uri(uri, &deadline).await?;
    let bytes = store.read(uri, &deadline).await?;
    let raw_metadata = store.read(&metadata_uri, &deadline).await?;
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
    let geometry = Geometry::from_metadata(&metadata, &name).map_err(|e| format!("{metadata_uri}: {e}"))?;
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
        geometry,
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

/// STORAGE_TIMEOUT_SECONDS, counted from the start of the download.
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn expired(&self, uri: &str, cause: &str) -> FetchError {
        format!(
            "{uri}: storage did not deliver within STORAGE_TIMEOUT_SECONDS ({} s): {cause}",
            self.timeout.as_secs()
        )
    }
}

enum Store {
    Local,
    Gcs(Box<Client>),
}

impl Store {
    async fn for_uri(uri: &str, deadline: &Deadline) -> Result<Self, FetchError> {
        if uri.starts_with("gs://") {
            Ok(Store::Gcs(Box::new(gcs_client(deadline).await?)))
        } else {
            Ok(Store::Local)
        }
    }

    async fn read(&self, uri: &str, deadline: &Deadline) -> Result<Vec<u8>, FetchError> {
        match self {
            Store::Local => std::fs::read(Path::new(uri)).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("{uri}: no such file"),
                _ => format!("{uri}: cannot read ({e})"),
            }),
            Store::Gcs(client) => read_gcs(client, uri, deadline).await,
        }
    }
}

/// One object, retrying connection errors, timeouts, 408, 429 and 5xx with exponential
/// backoff until the deadline.
async fn read_gcs(client: &Client, uri: &str, deadline: &Deadline) -> Result<Vec<u8>, FetchError> {
    let (bucket, object) = split_gcs_uri(uri)?;
    let request = GetObjectRequest {
        bucket,
        object,
        ..Default::default()
    };
    let whole = Range::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = client.download_object(&request, &whole);
        let error = match tokio::time::timeout(deadline.remaining(), attempt).await {
            Ok(Ok(bytes)) => return Ok(bytes),
            Ok(Err(error)) => error,
            Err(_) => return Err(deadline.expired(uri, "no answer")),
        };
        let transient = match (status_of(&error), &error) {
            (Some(code), _) => matches!(code, 408 | 429 | 500..=599),
            // No answer at all: refused, reset, timed out.
            (None, GcsError::HttpClient(_) | GcsError::HttpMiddleware(_)) => true,
            (None, _) => false,
        };
        if !transient {
            return Err(describe(uri, &error));
        }
        let cause = with_causes(&error);
        let wait = backoff.min(deadline.remaining());
        if wait.is_zero() {
            return Err(deadline.expired(uri, &cause));
        }
        tracing::warn!("{uri}: transient storage error, retrying in {wait:?}: {cause}");
        tokio::time::sleep(wait).await;
        if deadline.remaining().is_zero() {
            return Err(deadline.expired(uri, &cause));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The error and its sources on one line: reqwest's own text omits the cause that matters
/// ("Connection refused").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    one_line(&text)
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

/// The HTTP client of every storage request: the contract's connect and read timeouts.
fn http_client() -> Result<reqwest_middleware::ClientWithMiddleware, FetchError> {
    // TLS's crypto, ring (Cargo.toml), for this client and the credential clients built after
    // it: reqwest has none of its own here. An error means it is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up the storage client ({})", one_line(&e.to_string())))?;
    Ok(reqwest_middleware::ClientBuilder::new(client).build())
}

/// Where storage credentials come from, for the startup log (never the token itself).
pub fn credentials_source() -> String {
    if let Some(host) = non_empty_env("STORAGE_EMULATOR_HOST") {
        format!("emulator at {host}")
    } else if let Some(path) = non_empty_env(TOKEN_FILE_VARIABLE) {
        format!("{TOKEN_FILE_VARIABLE}={path}")
    } else if non_empty_env(TOKEN_VARIABLE).is_some() {
        format!("{TOKEN_VARIABLE} (redacted)")
    } else {
        "application default credentials".to_owned()
    }
}

const TOKEN_FILE_VARIABLE: &str = "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE";
const TOKEN_VARIABLE: &str = "CLOUDSDK_AUTH_ACCESS_TOKEN";

/// A bearer token from CLOUDSDK_AUTH_ACCESS_TOKEN_FILE (a Compose or Kubernetes secret),
/// else CLOUDSDK_AUTH_ACCESS_TOKEN; None when neither is set.
fn bearer_token() -> Result<Option<String>, FetchError> {
    if let Some(path) = non_empty_env(TOKEN_FILE_VARIABLE) {
        return token_from_file(&path).map(Some);
    }
    Ok(non_empty_env(TOKEN_VARIABLE).map(|token| token.trim().to_owned()))
}

/// The file's content without surrounding whitespace (secrets often end in a newline).
fn token_from_file(path: &str) -> Result<String, FetchError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("{TOKEN_FILE_VARIABLE}={path}: cannot read the token ({e})"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("{TOKEN_FILE_VARIABLE}={path}: the file is empty"));
    }
    Ok(token.to_owned())
}

/// Credentials, in order: STORAGE_EMULATOR_HOST (no credentials),
/// CLOUDSDK_AUTH_ACCESS_TOKEN_FILE, CLOUDSDK_AUTH_ACCESS_TOKEN, then Application Default
/// Credentials.
async fn gcs_client(deadline: &Deadline) -> Result<Client, FetchError> {
    let http = Some(http_client()?);
    if let Some(host) = non_empty_env("STORAGE_EMULATOR_HOST") {
        let mut config = ClientConfig::default().anonymous();
        config.storage_endpoint = if host.contains("://") {
            host
        } else {
            format!("http://{host}")
        };
        config.http = http;
        return Ok(Client::new(config));
    }
    if let Some(token) = bearer_token()? {
        let config = ClientConfig {
            token_source_provider: Some(Box::new(StaticToken(Arc::new(BearerToken(token))))),
            http,
            ..Default::default()
        };
        return Ok(Client::new(config));
    }
    let seconds = deadline.timeout.as_secs();
    let mut config = tokio::time::timeout(deadline.remaining(), ClientConfig::default().with_auth())
        .await
        .map_err(|_| {
            format!("no Google Cloud credentials found within STORAGE_TIMEOUT_SECONDS ({seconds} s): metadata server unreachable")
        })?
        .map_err(|e| {
            format!(
                "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS, \
                 {TOKEN_FILE_VARIABLE}, {TOKEN_VARIABLE}, or STORAGE_EMULATOR_HOST ({})",
                one_line(&e.to_string())
            )
        })?;
    config.http = http;
    Ok(Client::new(config))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A bearer token as a token source; Debug never prints the token.
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

    #[actix_web::test]
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
        let error = fetch_model(&uri, Duration::from_secs(5)).await.err().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let metadata_uri = sibling_uri(&uri, METADATA_FILE);
        assert_eq!(
            error,
            format!("{uri}: model.optimized.onnx has no graph entry in {metadata_uri}")
        );
    }

    /// A size that does not hold is refused naming metadata.json, the field, and the range.
    #[actix_web::test]
    async fn bad_preprocessing_sizes_name_the_metadata_file() {
        let dir = std::env::temp_dir().join(format!("rust_onnx_serving-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("model.fixed.onnx");
        std::fs::write(&model, b"not really a graph").unwrap();
        let mut metadata = serde_json::json!({
            "labels": ["a", "b"],
            "artifacts": {"model.fixed.onnx": {"sha256": hex::encode(Sha256::digest(b"not really a graph"))}},
            "graphs": {"model.fixed.onnx": {
                "input": {"name": "image", "shape": ["batch", 160, 160, 3]},
                "output": {"name": "probabilities"},
            }},
            "preprocessing": {"resize_shorter_side": 180, "center_crop": 160},
        });
        let uri = model.display().to_string();
        let metadata_uri = sibling_uri(&uri, METADATA_FILE);
        let fetch = |metadata: &Value| {
            std::fs::write(dir.join(METADATA_FILE), metadata.to_string()).unwrap();
            let uri = uri.clone();
            async move { fetch_model(&uri, Duration::from_secs(5)).await }
        };
        let fetched = fetch(&metadata).await.unwrap();
        assert_eq!(
            fetched.geometry,
            Geometry {
                resize: 180,
                crop: 160
            }
        );
        metadata["preprocessing"]["center_crop"] = serde_json::json!(200);
        let error = fetch(&metadata).await.err().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            error,
            format!(
                "{metadata_uri}: preprocessing.center_crop is 200, more than \
                 preprocessing.resize_shorter_side (180); expected a whole number of pixels from 1 to 180"
            )
        );
    }

    #[test]
    fn token_file_is_trimmed_and_refused_when_unreadable_or_empty() {
        let dir = std::env::temp_dir().join(format!("rust_onnx_serving-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, " ya29.secret\n").unwrap();
        let path = file.display().to_string();
        assert_eq!(token_from_file(&path).unwrap(), "ya29.secret");
        std::fs::write(&file, "\n").unwrap();
        assert!(token_from_file(&path).unwrap_err().ends_with("the file is empty"));
        std::fs::remove_dir_all(&dir).unwrap();
        let error = token_from_file(&path).unwrap_err();
        assert!(
            error.contains("cannot read the token") && !error.contains('\n'),
            "{error}"
        );
    }

    /// A client of the emulator API at `endpoint`, as STORAGE_EMULATOR_HOST would give.
    fn emulator_client(endpoint: String) -> Client {
        let mut config = ClientConfig::default().anonymous();
        config.storage_endpoint = endpoint;
        config.http = Some(http_client().unwrap());
        Client::new(config)
    }

    async fn read_within(endpoint: String, seconds: u64) -> (FetchError, Duration) {
        let timeout = Duration::from_secs(seconds);
        let started = Instant::now();
        let deadline = Deadline {
            at: started + timeout,
            timeout,
        };
        let error = read_gcs(&emulator_client(endpoint), "gs://b/model.onnx", &deadline)
            .await
            .unwrap_err();
        (error, started.elapsed())
    }

    /// Storage that accepts connections and never answers, and storage that is down: both
    /// give up at STORAGE_TIMEOUT_SECONDS, in one line.
    #[actix_web::test]
    async fn stalled_or_down_storage_gives_up_at_the_deadline() {
        let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts
        let (error, took) = read_within(format!("http://{}", stalled.local_addr().unwrap()), 2).await;
        assert!(
            error.contains("STORAGE_TIMEOUT_SECONDS (2 s): no answer"),
            "{error}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(3),
            "{took:?}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let (error, took) = read_within(format!("http://{address}"), 2).await;
        assert!(error.contains("STORAGE_TIMEOUT_SECONDS (2 s)"), "{error}");
        assert!(error.contains("onnection refused"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[actix_web::test]
    async fn missing_local_file_is_one_line() {
        let error = fetch_model("/nonexistent/model.onnx", Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(error, "/nonexistent/model.onnx: no such file");
    }
}
