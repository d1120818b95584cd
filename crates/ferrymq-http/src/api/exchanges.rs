//! `/api/exchanges`: list, declare, delete, bindings and publish.

use super::{created_or_updated, no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::{flag, object, require_object, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use crate::views;
use crate::HttpState;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use ferrymq_broker::amq_protocol::protocol::basic::AMQPProperties;
use ferrymq_broker::auth::Access;
use ferrymq_broker::json::json_to_table;
use ferrymq_broker::message::Message;
use ferrymq_broker::vhost::{ExchangeOptions, VHost};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The vhost, or 404.
pub fn vhost(s: &HttpState, name: &str) -> ApiResult<Arc<VHost>> {
    s.broker.vhost(name).ok_or_else(ApiError::not_found)
}

/// The API's `amq.default` is the default exchange `""`.
pub fn internal_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

fn all_in(s: &HttpState, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    super::visible_vhosts(s, caller, only)
        .iter()
        .flat_map(|v| {
            v.exchanges()
                .iter()
                .map(|e| views::exchange(s, &v.name, e))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `GET /api/exchanges`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    Ok(Json(respond(
        all_in(&st.0, &caller, None),
        &q,
        &["vhost", "name"],
    )?))
}

/// `GET /api/exchanges/{vhost}`.
pub async fn list_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    vhost(&st.0, &v)?;
    caller.require_vhost(&st.0, &v)?;
    Ok(Json(respond(
        all_in(&st.0, &caller, Some(&v)),
        &q,
        &["name"],
    )?))
}

/// `GET /api/exchanges/{vhost}/{name}`.
pub async fn show(st: St, caller: Caller, Path((v, name)): Path<(String, String)>) -> JsonResult {
    let vh = vhost(&st.0, &v)?;
    caller.require_vhost(&st.0, &v)?;
    let e = vh
        .exchange(internal_name(&name))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(views::exchange(&st.0, &v, &e)))
}

/// `PUT /api/exchanges/{vhost}/{name}`: `{type, durable, auto_delete, internal, arguments}`.
pub async fn declare(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    require_object(&body)?;
    let vh = vhost(&st.0, &v)?;
    caller.require(&st.0, &v, Access::Configure, "exchange", &name)?;
    let kind = body.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("type is required (direct, fanout, topic, headers)")
    })?;
    if name.is_empty() || name == "amq.default" {
        return Err(ApiError::forbidden(
            "the default exchange cannot be redeclared",
        ));
    }
    let existed = vh.exchange(&name).is_some();
    let opts = ExchangeOptions {
        passive: false,
        durable: flag(&body, "durable", true)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        arguments: json_to_table(&object(&body, "arguments")?),
    };
    vh.declare_exchange(&name, kind, opts)
        .map_err(ApiError::from_amqp)?;
    Ok(created_or_updated(!existed))
}

/// Query of `DELETE /api/exchanges/{vhost}/{name}`.
#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
}

/// `DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]`.
pub async fn remove(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Response> {
    let vh = vhost(&st.0, &v)?;
    caller.require(&st.0, &v, Access::Configure, "exchange", &name)?;
    if vh.exchange(internal_name(&name)).is_none() {
        return Err(ApiError::not_found());
    }
    vh.delete_exchange(internal_name(&name), q.if_unused.as_deref() == Some("true"))
        .map_err(ApiError::from_amqp)?;
    Ok(no_content())
}

fn exchange_bindings(
    s: &HttpState,
    caller: &Caller,
    v: &str,
    name: &str,
    source: bool,
) -> JsonResult {
    let vh = vhost(s, v)?;
    caller.require_vhost(s, v)?;
    let name = internal_name(name);
    vh.exchange(name).ok_or_else(ApiError::not_found)?;
    let items: Vec<Value> = views::vhost_bindings(s, v)
        .into_iter()
        .filter(|b| {
            if source {
                b["source"] == name
            } else {
                b["destination"] == name && b["destination_type"] == "exchange"
            }
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source`.
pub async fn bindings_source(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
) -> JsonResult {
    exchange_bindings(&st.0, &caller, &v, &name, true)
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/destination`.
pub async fn bindings_destination(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
) -> JsonResult {
    exchange_bindings(&st.0, &caller, &v, &name, false)
}

/// Builds AMQP properties from the management API's JSON form.
pub fn properties_from_json(p: &Value) -> ApiResult<AMQPProperties> {
    let obj = match p {
        Value::Null => return Ok(AMQPProperties::default()),
        Value::Object(m) => m,
        _ => return Err(ApiError::bad_request("properties must be an object")),
    };
    let mut props = AMQPProperties::default();
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(|v| v.to_owned());
    let n = |k: &str| {
        obj.get(k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    if let Some(v) = s("content_type") {
        props = props.with_content_type(v.into());
    }
    if let Some(v) = s("content_encoding") {
        props = props.with_content_encoding(v.into());
    }
    if let Some(h) = obj.get("headers").filter(|h| h.is_object()) {
        props = props.with_headers(json_to_table(h));
    }
    if let Some(v) = n("delivery_mode") {
        props = props.with_delivery_mode(v as u8);
    }
    if let Some(v) = n("priority") {
        props = props.with_priority(v.min(255) as u8);
    }
    if let Some(v) = s("correlation_id") {
        props = props.with_correlation_id(v.into());
    }
    if let Some(v) = s("reply_to") {
        props = props.with_reply_to(v.into());
    }
    if let Some(v) = s("expiration") {
        props = props.with_expiration(v.into());
    }
    if let Some(v) = s("message_id") {
        props = props.with_message_id(v.into());
    }
    if let Some(v) = n("timestamp") {
        props = props.with_timestamp(v);
    }
    if let Some(v) = s("type") {
        props = props.with_type(v.into());
    }
    if let Some(v) = s("user_id") {
        props = props.with_user_id(v.into());
    }
    if let Some(v) = s("app_id") {
        props = props.with_app_id(v.into());
    }
    Ok(props)
}

/// `POST /api/exchanges/{vhost}/{name}/publish`:
/// `{routing_key, payload, payload_encoding: string|base64, properties}` → `{routed}`.
pub async fn publish(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> JsonResult {
    require_object(&body)?;
    let vh = vhost(&st.0, &v)?;
    let ex_name = internal_name(&name);
    caller.require(&st.0, &v, Access::Write, "exchange", ex_name)?;
    let exchange = vh.exchange(ex_name).ok_or_else(ApiError::not_found)?;
    if exchange.internal {
        return Err(ApiError::forbidden(format!(
            "cannot publish to internal exchange '{ex_name}' in vhost '{v}'"
        )));
    }
    let routing_key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("routing_key is required"))?;
    if routing_key.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    if let Some(alarm) = st.0.amqp.alarm.borrow().clone() {
        return Err(ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            error: "resource_alarm",
            reason: format!("publishing is blocked by a resource alarm: {alarm}"),
        });
    }
    let payload = body
        .get("payload")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("payload is required (a string)"))?;
    let bytes = match body.get("payload_encoding").and_then(Value::as_str) {
        None => {
            return Err(ApiError::bad_request(
                "payload_encoding is required (string or base64)",
            ))
        }
        Some("string") => payload.as_bytes().to_vec(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not valid base64: {e}")))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding must be string or base64, not '{other}'"
            )))
        }
    };
    let props = properties_from_json(body.get("properties").unwrap_or(&Value::Null))?;
    // As over AMQP: a user_id must name the publisher (consumers trust it).
    if let Some(user_id) = props.user_id() {
        if user_id.as_str() != caller.user.name {
            return Err(ApiError::bad_request(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                user_id.as_str(),
                caller.user.name
            )));
        }
    }
    let message = Message::new(
        ex_name.to_owned(),
        routing_key.to_owned(),
        props,
        bytes.into(),
    );
    let mut targets = Vec::new();
    let (outcome, unroutable) = vh.publish(&exchange, message, &mut targets);
    Ok(Json(
        json!({"routed": unroutable.is_none() && outcome.delivered_to > 0}),
    ))
}
