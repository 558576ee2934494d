//! The error table of contract/errors.json, compiled in, and the one error every handler
//! returns.

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    status: u16,
}

static STATUS_BY_ERROR_TYPE: LazyLock<HashMap<String, u16>> = LazyLock::new(|| {
    let table: HashMap<String, Row> = serde_json::from_str(include_str!("../../contract/errors.json"))
        .expect("contract/errors.json is valid");
    table.into_iter().map(|(k, row)| (k, row.status)).collect()
});

/// A request the service refuses; one row of the error table.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ServiceError {
    pub error_type: &'static str,
    pub message: String,
}

impl ServiceError {
    pub fn new(error_type: &'static str, message: impl Into<String>) -> Self {
        assert!(
            STATUS_BY_ERROR_TYPE.contains_key(error_type),
            "{error_type} is not in contract/errors.json"
        );
        Self {
            error_type,
            message: message.into(),
        }
    }
}

impl ResponseError for ServiceError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(STATUS_BY_ERROR_TYPE[self.error_type])
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if self.error_type == "overloaded" {
            // The queue drains in well under a second at the study's load.
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({"error": self.message, "error_type": self.error_type}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_row_maps_to_its_status_and_body() {
        let response = ServiceError::new("unsupported_image", "not a photo").error_response();
        assert_eq!(response.status().as_u16(), 415);
        let body = actix_web::body::to_bytes(response.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "not a photo", "error_type": "unsupported_image"})
        );
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let response = ServiceError::new("overloaded", "busy").error_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    }

    #[test]
    #[should_panic(expected = "is not in contract/errors.json")]
    fn unknown_error_type_is_a_bug() {
        ServiceError::new("no_such_row", "x");
    }
}
