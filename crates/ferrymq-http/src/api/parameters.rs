//! `/api/parameters` (runtime parameters such as federation upstreams) and
//! `/api/global-parameters`.

use super::{created_or_updated, no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::{require_object, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use ferrymq_broker::parameters::{global_json, parameter_json};
use serde_json::Value;

fn listed(st: &St, caller: &Caller, component: Option<&str>, vhost: Option<&str>) -> Vec<Value> {
    st.0.broker
        .parameters
        .list(component, vhost)
        .iter()
        .filter(|(k, _)| caller.is_policymaker() && caller.sees_vhost(&st.0, &k.1))
        .map(|(k, v)| parameter_json(k, &redacted(k, v)))
        .collect()
}

/// Hides passwords in upstream URIs (`amqp://user:***@host`): unlike RabbitMQ, FerryMQ
/// never shows upstream credentials through the API. The definitions export, an
/// administrator's backup, keeps them so it can be imported again.
fn redacted(key: &ferrymq_broker::parameters::ParamKey, value: &Value) -> Value {
    if key.0 != "federation-upstream" {
        return value.clone();
    }
    let hide = |u: &Value| match u.as_str() {
        Some(s) => Value::from(hide_password(s)),
        None => u.clone(),
    };
    let mut out = value.clone();
    if let Some(uri) = out.get_mut("uri") {
        let shown = match &*uri {
            Value::Array(list) => Value::Array(list.iter().map(hide).collect()),
            other => hide(other),
        };
        *uri = shown;
    }
    out
}

/// An edited upstream comes back with the URIs as the API showed them: each
/// `user:***@` URI equal to a stored one once hidden gets the stored URI back, so
/// editing other fields (in the UI, or GET-modify-PUT in a script) keeps the password.
fn keep_hidden_passwords(mut value: Value, old: &Value) -> Value {
    let stored: Vec<&str> = match old.get("uri") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    };
    let restore = |u: &mut Value| {
        if let Some(s) = u.as_str().filter(|s| s.contains(":***@")) {
            if let Some(original) = stored.iter().find(|o| hide_password(o) == s) {
                *u = Value::from(*original);
            }
        }
    };
    match value.get_mut("uri") {
        Some(Value::Array(list)) => list.iter_mut().for_each(restore),
        Some(uri) => restore(uri),
        None => {}
    }
    value
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…`.
pub fn hide_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => uri.to_owned(),
    }
}

/// `GET /api/parameters`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    Ok(Json(respond(
        listed(&st, &caller, None, None),
        &q,
        &["vhost", "name"],
    )?))
}

/// `GET /api/parameters/{component}`.
pub async fn list_component(
    st: St,
    caller: Caller,
    Path(c): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    Ok(Json(respond(
        listed(&st, &caller, Some(&c), None),
        &q,
        &["vhost", "name"],
    )?))
}

/// `GET /api/parameters/{component}/{vhost}`.
pub async fn list_component_vhost(
    st: St,
    caller: Caller,
    Path((c, v)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(respond(
        listed(&st, &caller, Some(&c), Some(&v)),
        &q,
        &["name"],
    )?))
}

/// `GET /api/parameters/{component}/{vhost}/{name}`.
pub async fn show(
    st: St,
    caller: Caller,
    Path((c, v, n)): Path<(String, String, String)>,
) -> JsonResult {
    caller.require_policymaker(&st.0, &v)?;
    let value =
        st.0.broker
            .parameters
            .get(&c, &v, &n)
            .ok_or_else(ApiError::not_found)?;
    let key = (c, v, n);
    let shown = redacted(&key, &value);
    Ok(Json(parameter_json(&key, &shown)))
}

/// `PUT /api/parameters/{component}/{vhost}/{name}`: `{"value": ...}`.
pub async fn set(
    st: St,
    caller: Caller,
    Path((c, v, n)): Path<(String, String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    require_object(&body)?;
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::not_found());
    }
    caller.require_policymaker(&st.0, &v)?;
    let value = body
        .get("value")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("value is required"))?;
    // rabbitmqadmin sends the value as a JSON string holding the object.
    let value = match value {
        Value::String(s) if s.trim_start().starts_with(['{', '[']) => serde_json::from_str(&s)
            .map_err(|e| ApiError::bad_request(format!("value is not valid JSON: {e}")))?,
        other => other,
    };
    let old = st.0.broker.parameters.get(&c, &v, &n);
    let existed = old.is_some();
    let value = match (&*c, old) {
        ("federation-upstream", Some(old)) => keep_hidden_passwords(value, &old),
        _ => value,
    };
    st.0.broker
        .put_parameter(&c, &v, &n, value)
        .map_err(ApiError::bad_request)?;
    Ok(created_or_updated(!existed))
}

/// `DELETE /api/parameters/{component}/{vhost}/{name}`.
pub async fn remove(
    st: St,
    caller: Caller,
    Path((c, v, n)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_policymaker(&st.0, &v)?;
    if !st.0.broker.delete_parameter(&c, &v, &n) {
        return Err(ApiError::not_found());
    }
    Ok(no_content())
}

/// `GET /api/global-parameters`.
pub async fn globals(st: St, caller: Caller) -> JsonResult {
    caller.require_admin()?;
    let items =
        st.0.broker
            .parameters
            .globals()
            .iter()
            .map(|(k, v)| global_json(k, v))
            .collect();
    Ok(Json(Value::Array(items)))
}

/// `GET /api/global-parameters/{name}`.
pub async fn global(st: St, caller: Caller, Path(name): Path<String>) -> JsonResult {
    caller.require_admin()?;
    st.0.broker
        .parameters
        .globals()
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(k, v)| Json(global_json(k, v)))
        .ok_or_else(ApiError::not_found)
}

/// `PUT /api/global-parameters/{name}`: `{"value": ...}`.
pub async fn set_global(
    st: St,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    require_object(&body)?;
    let value = body
        .get("value")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("value is required"))?;
    let existed =
        st.0.broker
            .parameters
            .globals()
            .iter()
            .any(|(k, _)| *k == name);
    st.0.broker.parameters.put_global(&name, value);
    st.0.broker.definitions_changed();
    Ok(created_or_updated(!existed))
}

/// `DELETE /api/global-parameters/{name}`.
pub async fn remove_global(
    st: St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if !st.0.broker.parameters.delete_global(&name) {
        return Err(ApiError::not_found());
    }
    st.0.broker.definitions_changed();
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::{hide_password, keep_hidden_passwords};
    use serde_json::json;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            hide_password("amqp://u:p@h:5672/%2F"),
            "amqp://u:***@h:5672/%2F"
        );
        assert_eq!(
            hide_password("amqps://u:p%40ss@h?verify=verify_none"),
            "amqps://u:***@h?verify=verify_none"
        );
        assert_eq!(hide_password("amqp://h/v"), "amqp://h/v");
        assert_eq!(hide_password("amqp://user@h"), "amqp://user:***@h");
    }

    #[test]
    fn hidden_passwords_sent_back_keep_the_stored_ones() {
        let old = json!({"uri": ["amqp://u:s3cret@a/%2F", "amqp://u:other@b"]});
        let edited = json!({"uri": ["amqp://u:***@a/%2F", "amqp://u:new@b"], "prefetch-count": 5});
        let kept = keep_hidden_passwords(edited, &old);
        assert_eq!(
            kept["uri"],
            json!(["amqp://u:s3cret@a/%2F", "amqp://u:new@b"])
        );
        let single = keep_hidden_passwords(json!({"uri": "amqp://u:***@a/%2F"}), &old);
        assert_eq!(single["uri"], "amqp://u:s3cret@a/%2F");
        let other_host = keep_hidden_passwords(json!({"uri": "amqp://u:***@c"}), &old);
        assert_eq!(other_host["uri"], "amqp://u:***@c");
        assert_eq!(hide_password("not a uri"), "not a uri");
    }
}
