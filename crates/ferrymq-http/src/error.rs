//! API errors: RabbitMQ's `{"error": ..., "reason": ...}` body with the matching status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short error class, as RabbitMQ names it.
    pub error: &'static str,
    /// Human-readable reason.
    pub reason: String,
}

/// Result of an API handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 400 with a reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }

    /// 404 for a missing object.
    pub fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
        }
    }

    /// 401: no or bad credentials, or not a management user.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    /// Authenticated but not allowed. RabbitMQ answers these with 401 as well
    /// (with `not_authorised` and a reason), and tools expect that status.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    /// 405 for a method the path does not support.
    pub fn method_not_allowed() -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "method_not_allowed",
            reason: "Method Not Allowed".into(),
        }
    }

    /// 409 for a request that conflicts with the current state.
    pub fn conflict(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            error: "conflict",
            reason: reason.into(),
        }
    }

    /// 500 for a failure inside the broker.
    pub fn internal(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal_error",
            reason: reason.into(),
        }
    }

    /// Maps an AMQP error from the domain to an HTTP status (404 → 404, 403 → 403,
    /// 405 (resource locked) → 409, the rest → 400).
    pub fn from_amqp(e: ferrymq_broker::error::AmqpError) -> Self {
        use ferrymq_broker::error::code;
        match e.code {
            code::NOT_FOUND => ApiError {
                status: StatusCode::NOT_FOUND,
                error: "not_found",
                reason: e.text,
            },
            code::ACCESS_REFUSED => ApiError::forbidden(e.text),
            code::RESOURCE_LOCKED => ApiError::conflict(e.text),
            _ => ApiError::bad_request(e.text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": self.error, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"FerryMQ Management\""),
            );
        }
        r
    }
}
