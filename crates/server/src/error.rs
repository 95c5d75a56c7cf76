//! The one error type of the HTTP API, and its JSON form `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::error;

use crate::store::StoreError;

/// Everything a request can fail with. Internal causes are logged here, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not readable (400).
    #[error("{0}")]
    BadRequest(String),
    /// No valid token (401). The message never says which part was wrong.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid token asking for something it may not do (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request contradicts what is stored (409): a delta on a base not held.
    #[error("{0}")]
    Conflict(String),
    /// The body, compressed or not, is over the limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A content type or encoding the server does not read (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// JSON of the wrong shape, or values out of bounds (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The agent is over its rate limit (429, with `Retry-After`).
    #[error("too many requests; retry in {retry_after_s} s")]
    TooManyRequests { retry_after_s: u64 },
    /// The database is overloaded or down (503, with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a broken database (500). The cause is logged; the client sees a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable(_) => "invalid_request",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(&e)
    }
}

/// The answer to a store error that several requests share (a heartbeat group's write).
impl From<&StoreError> for ApiError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Conflict(message) => ApiError::Conflict(message.clone()),
            StoreError::Stale => ApiError::Conflict(e.to_string()),
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Enrolment(refusal) => ApiError::Unauthorized(refusal.message()),
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                ApiError::Unavailable("the database is busy".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                error!(error = %cause, "request failed");
                "internal error".to_owned()
            }
            ApiError::Unavailable(cause) => {
                error!(error = %cause, "request refused");
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = muster_proto::api::ApiError::new(self.code(), message);
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after_s } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
