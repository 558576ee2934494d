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
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({"error": self.message, "error_type": self.error_type}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_maps_to_its_status() {
        for (error_type, status) in STATUS_BY_ERROR_TYPE.iter() {
            let error_type: &'static str = Box::leak(error_type.clone().into_boxed_str());
            let error = ServiceError::new(error_type, "x");
            assert_eq!(error.status_code().as_u16(), *status);
        }
        assert_eq!(STATUS_BY_ERROR_TYPE["invalid_json"], 400);
        assert_eq!(STATUS_BY_ERROR_TYPE["unsupported_image"], 415);
    }
}
