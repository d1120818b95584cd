//! Request bodies: JSON parsed leniently about the content type (RabbitMQ's tools
//! do not always send one), with a 400 and a JSON reason when it is not JSON.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::Value;

/// A JSON request body (an empty body reads as `{}`).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Default::default())));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "body is not valid JSON: {e}"
            ))),
        }
    }
}

/// A boolean field that tools send as `true`, `"true"` or omit.
pub fn flag(body: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "{key} must be a boolean, not {v}"
        ))),
    }
}

/// An object field (`arguments`); missing is empty.
pub fn object(body: &Value, key: &str) -> Result<Value, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(v) => Err(ApiError::bad_request(format!(
            "{key} must be an object, not {v}"
        ))),
    }
}

/// The body must be a JSON object.
pub fn require_object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request("body must be a JSON object"))
    }
}
