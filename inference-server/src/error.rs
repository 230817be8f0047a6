//! One error type for everything a request can hit, mapped to an HTTP status and a
//! `{"error": "..."}` body (the Open Inference Protocol's error shape).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Conflict(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("server overloaded: too many requests in flight, retry later")]
    Overloaded,
    #[error("model not ready: {0}")]
    NotReady(String),
    #[error("model execution failed: {0}")]
    Backend(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServerError {
    /// The message without the category prefix (for reports that give their own context).
    pub fn detail(&self) -> String {
        match self {
            Self::BadRequest(m)
            | Self::NotFound(m)
            | Self::Unauthorized(m)
            | Self::Conflict(m)
            | Self::PayloadTooLarge(m)
            | Self::UnsupportedMediaType(m)
            | Self::NotReady(m)
            | Self::Backend(m)
            | Self::Storage(m)
            | Self::Internal(m) => m.clone(),
            Self::Overloaded => self.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Backend(_) | Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }
}

/// A tensor that does not fit the model is the caller's mistake; the rest is the model's.
impl From<crate::backend::BackendError> for ServerError {
    fn from(e: crate::backend::BackendError) -> Self {
        match e {
            crate::backend::BackendError::Input(_) => Self::BadRequest(e.to_string()),
            e => Self::Backend(e.to_string()),
        }
    }
}

/// A URI that does not resolve is the caller's mistake; everything else storage does wrong
/// is the server's.
impl From<flywheel_storage::StorageError> for ServerError {
    fn from(e: flywheel_storage::StorageError) -> Self {
        match e {
            flywheel_storage::StorageError::InvalidUri { .. } => Self::BadRequest(e.to_string()),
            e => Self::Storage(e.to_string()),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ServerError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(e.body_text())
        } else {
            Self::BadRequest(e.body_text())
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
