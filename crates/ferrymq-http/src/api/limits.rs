//! `/api/vhost-limits` and `/api/user-limits`: RabbitMQ's paths and shapes. Vhost
//! limits live in the `vhost-limits` runtime parameter (so definitions carry them as
//! RabbitMQ's do); user limits live on the user.

use super::{no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::{require_object, JsonBody};
use crate::error::{ApiError, ApiResult};
use axum::extract::Path;
use axum::response::Response;
use axum::Json;
use ferrymq_broker::limits::{self, USER_KEYS, VHOST_LIMITS, VHOST_LIMITS_NAME};
use serde_json::{json, Map, Value};

/// The limit value of a PUT body `{"value": N}`, checked against `keys`.
fn limit_value(name: &str, body: &Value, keys: &[&str]) -> ApiResult<Value> {
    require_object(body)?;
    let value = body
        .get("value")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("value is required"))?;
    // rabbitmqadmin sends numbers as strings.
    let value = match value {
        Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| {
            ApiError::bad_request(format!("limit '{name}' must be an integer, not \"{s}\""))
        })?,
        other => other,
    };
    limits::validate(&json!({ name: value }), keys).map_err(ApiError::bad_request)?;
    Ok(value)
}

fn vhost_limits(st: &St, vhost: &str) -> Map<String, Value> {
    st.0.broker
        .parameters
        .get(VHOST_LIMITS, vhost, VHOST_LIMITS_NAME)
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

fn vhost_rows(st: &St, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    super::visible_vhosts(&st.0, caller, only)
        .iter()
        .filter_map(|v| {
            let l = vhost_limits(st, &v.name);
            (!l.is_empty()).then(|| json!({"vhost": v.name, "value": l}))
        })
        .collect()
}

/// `GET /api/vhost-limits`.
pub async fn vhost_list(st: St, caller: Caller) -> JsonResult {
    Ok(Json(Value::Array(vhost_rows(&st, &caller, None))))
}

/// `GET /api/vhost-limits/{vhost}`.
pub async fn vhost_show(st: St, caller: Caller, Path(vhost): Path<String>) -> JsonResult {
    caller.require_vhost(&st.0, &vhost)?;
    if st.0.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(vhost_rows(&st, &caller, Some(&vhost)))))
}

/// `PUT /api/vhost-limits/{vhost}/{name}`: `{"value": N}` (negative: no limit).
pub async fn vhost_set(
    st: St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if st.0.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found());
    }
    let value = limit_value(&name, &body, &limits::VHOST_KEYS)?;
    let mut l = vhost_limits(&st, &vhost);
    l.insert(name, value);
    st.0.broker
        .put_parameter(VHOST_LIMITS, &vhost, VHOST_LIMITS_NAME, Value::Object(l))
        .map_err(ApiError::bad_request)?;
    Ok(no_content())
}

/// `DELETE /api/vhost-limits/{vhost}/{name}`.
pub async fn vhost_clear(
    st: St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let mut l = vhost_limits(&st, &vhost);
    if l.remove(&name).is_none() {
        return Err(ApiError::not_found());
    }
    if l.is_empty() {
        st.0.broker
            .delete_parameter(VHOST_LIMITS, &vhost, VHOST_LIMITS_NAME);
    } else {
        st.0.broker
            .put_parameter(VHOST_LIMITS, &vhost, VHOST_LIMITS_NAME, Value::Object(l))
            .map_err(ApiError::bad_request)?;
    }
    Ok(no_content())
}

fn user_rows(st: &St, only: Option<&str>) -> Vec<Value> {
    let mut users = st.0.broker.users();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    users
        .into_iter()
        .filter(|u| only.is_none_or(|o| o == u.name) && !u.limits.is_empty())
        .map(|u| json!({"user": u.name, "value": u.limits}))
        .collect()
}

/// `GET /api/user-limits`.
pub async fn user_list(st: St, caller: Caller) -> JsonResult {
    caller.require_admin()?;
    Ok(Json(Value::Array(user_rows(&st, None))))
}

/// `GET /api/user-limits/{user}`.
pub async fn user_show(st: St, caller: Caller, Path(user): Path<String>) -> JsonResult {
    caller.require_admin()?;
    if st.0.broker.user(&user).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(user_rows(&st, Some(&user)))))
}

/// `PUT /api/user-limits/{user}/{name}`: `{"value": N}` (negative: no limit).
pub async fn user_set(
    st: St,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let mut u = st.0.broker.user(&user).ok_or_else(ApiError::not_found)?;
    let value = limit_value(&name, &body, &USER_KEYS)?;
    u.limits.insert(name, value);
    st.0.broker.put_user(u);
    Ok(no_content())
}

/// `DELETE /api/user-limits/{user}/{name}`.
pub async fn user_clear(
    st: St,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let mut u = st.0.broker.user(&user).ok_or_else(ApiError::not_found)?;
    if u.limits.remove(&name).is_none() {
        return Err(ApiError::not_found());
    }
    st.0.broker.put_user(u);
    Ok(no_content())
}
