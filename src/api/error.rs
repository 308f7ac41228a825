//! The one error shape of the API (DESIGN.md §3): `{"error": {"code", "message", ...details}}`,
//! with the status code that goes with each code. Every failure of every layer below maps here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use storage_format::commit::CommitError;

use crate::store::{ReadError, Rejection, StoreError, WriteError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn with(mut self, name: &str, value: Value) -> ApiError {
        self.details.insert(name.to_owned(), value);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error: {error}"),
        )
    }
}

impl ApiError {
    /// The answer's body: `{"error": {"code", "message", ...details}}`.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), Value::String(self.code.into()));
        body.insert("message".into(), Value::String(self.message.clone()));
        body.extend(self.details.clone());
        json!({ "error": body })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> ApiError {
        let message = error.to_string();
        match error {
            ReadError::FutureRevision { .. } => ApiError::bad_request("future_point", message),
            ReadError::FutureTime { requested_us } => ApiError::bad_request(
                "future_point",
                format!(
                    "time {} is in the future",
                    crate::clock::format_timestamp_us(requested_us)
                ),
            ),
            ReadError::InvalidKey { .. } => ApiError::bad_request("invalid_key", message),
            ReadError::Invalid(_) => ApiError::bad_request("invalid_argument", message),
            ReadError::TooLarge { .. } => ApiError::too_large(message),
            ReadError::Compacted {
                earliest_revision,
                earliest_timestamp_us,
                ..
            } => ApiError::new(StatusCode::GONE, "compacted", message)
                .with("earliest_revision", json!(earliest_revision))
                .with(
                    "earliest_timestamp",
                    json!(crate::clock::format_timestamp_us(earliest_timestamp_us)),
                ),
            ReadError::Log(error) => StoreError::from(error).into(),
            ReadError::Index(_) => ApiError::internal(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let message = error.to_string();
        match error {
            StoreError::Rejected(rejection) => match rejection {
                Rejection::TooManyOps { .. }
                | Rejection::ValueTooLarge { .. }
                | Rejection::CommitTooLarge { .. } => ApiError::too_large(message),
                Rejection::InvalidJson { .. } => ApiError::bad_request("invalid_json", message),
                Rejection::Format(format) => match format {
                    CommitError::InvalidKey { .. } => ApiError::bad_request("invalid_key", message),
                    CommitError::DuplicateKey { .. } => {
                        ApiError::bad_request("duplicate_key", message)
                    }
                    CommitError::TooManyOps { .. } | CommitError::ValueTooLarge { .. } => {
                        ApiError::too_large(message)
                    }
                    _ => ApiError::bad_request("invalid_argument", message),
                },
            },
            StoreError::ReadOnly { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", message)
            }
            StoreError::Closed => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            _ => ApiError::internal(message),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        let message = error.to_string();
        match error {
            WriteError::Conflict(conflicts) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
                    .with("conflicts", json!(conflicts))
            }
            WriteError::NotFound { key } => ApiError::not_found(message).with("key", json!(key)),
            WriteError::SchemaViolation(violations) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "schema_violation",
                message,
            )
            .with("violations", json!(violations)),
            WriteError::InvalidSchema { violations, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema", message)
                    .with("violations", json!(violations))
            }
            WriteError::Contended => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            WriteError::Log(error) => StoreError::from(error).into(),
            WriteError::Read(error) => error.into(),
        }
    }
}
