//! `/api/bindings`: list, bind, show and unbind.

use super::exchanges::{internal_name, vhost};
use super::{no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::{object, require_object, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use crate::views;
use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrymq_broker::auth::Access;
use ferrymq_broker::exchange::Destination;
use ferrymq_broker::json::json_to_table;
use serde_json::Value;

/// `GET /api/bindings`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    let mut items = Vec::new();
    for v in super::visible_vhosts(&st.0, &caller, None) {
        items.extend(views::vhost_bindings(&st.0, &v.name));
    }
    Ok(Json(respond(items, &q, &[])?))
}

/// `GET /api/bindings/{vhost}`.
pub async fn list_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    vhost(&st.0, &v)?;
    caller.require_vhost(&st.0, &v)?;
    Ok(Json(respond(views::vhost_bindings(&st.0, &v), &q, &[])?))
}

fn between(
    st: &St,
    caller: &Caller,
    v: &str,
    source: &str,
    dest: &str,
    kind: &str,
) -> ApiResult<Vec<Value>> {
    let vh = vhost(&st.0, v)?;
    caller.require_vhost(&st.0, v)?;
    vh.exchange(internal_name(source))
        .ok_or_else(ApiError::not_found)?;
    let dest_exists = if kind == "queue" {
        vh.queue(dest).is_some()
    } else {
        vh.exchange(internal_name(dest)).is_some()
    };
    if !dest_exists {
        return Err(ApiError::not_found());
    }
    let source = internal_name(source);
    Ok(views::vhost_bindings(&st.0, v)
        .into_iter()
        .filter(|b| {
            b["source"] == source && b["destination"] == dest && b["destination_type"] == kind
        })
        .collect())
}

/// `GET /api/bindings/{vhost}/e/{source}/q/{dest}`.
pub async fn between_queue(
    st: St,
    caller: Caller,
    Path((v, s, d)): Path<(String, String, String)>,
) -> JsonResult {
    Ok(Json(Value::Array(between(
        &st, &caller, &v, &s, &d, "queue",
    )?)))
}

/// `GET /api/bindings/{vhost}/e/{source}/e/{dest}`.
pub async fn between_exchange(
    st: St,
    caller: Caller,
    Path((v, s, d)): Path<(String, String, String)>,
) -> JsonResult {
    Ok(Json(Value::Array(between(
        &st, &caller, &v, &s, &d, "exchange",
    )?)))
}

fn bind(
    st: &St,
    caller: &Caller,
    v: &str,
    source: &str,
    dest: &str,
    kind: &str,
    body: &Value,
) -> ApiResult<Response> {
    require_object(body)?;
    let vh = vhost(&st.0, v)?;
    let source = internal_name(source);
    if source.is_empty() {
        return Err(ApiError::forbidden(
            "operation not permitted on the default exchange",
        ));
    }
    caller.require(&st.0, v, Access::Write, kind, dest)?;
    caller.require(&st.0, v, Access::Read, "exchange", source)?;
    let routing_key = match body.get("routing_key") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "routing_key must be a string, not {other}"
            )))
        }
    };
    let arguments = object(body, "arguments")?;
    let destination = if kind == "queue" {
        Destination::Queue(vh.queue(dest).ok_or_else(ApiError::not_found)?)
    } else {
        vh.exchange(dest).ok_or_else(ApiError::not_found)?;
        Destination::Exchange(dest.to_owned())
    };
    vh.exchange(source).ok_or_else(ApiError::not_found)?;
    vh.bind(source, destination, &routing_key, json_to_table(&arguments))
        .map_err(ApiError::from_amqp)?;
    let key = views::properties_key(&routing_key, &arguments);
    // Relative to the request path (…/e/{source}/q/{dest}), the key encoded once
    // more, as RabbitMQ answers.
    let location = format!("{}/{}", views::url_encode(dest), views::url_encode(&key));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// `POST /api/bindings/{vhost}/e/{source}/q/{dest}`: `{routing_key, arguments}`.
pub async fn bind_queue(
    st: St,
    caller: Caller,
    Path((v, s, d)): Path<(String, String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    bind(&st, &caller, &v, &s, &d, "queue", &body)
}

/// `POST /api/bindings/{vhost}/e/{source}/e/{dest}`.
pub async fn bind_exchange(
    st: St,
    caller: Caller,
    Path((v, s, d)): Path<(String, String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    bind(&st, &caller, &v, &s, &d, "exchange", &body)
}

fn one(
    st: &St,
    caller: &Caller,
    v: &str,
    s: &str,
    d: &str,
    kind: &str,
    props: &str,
) -> ApiResult<Value> {
    between(st, caller, v, s, d, kind)?
        .into_iter()
        .find(|b| {
            b["properties_key"] == props
                || percent_encoding::percent_decode_str(
                    b["properties_key"].as_str().unwrap_or_default(),
                )
                .decode_utf8_lossy()
                    == props
        })
        .ok_or_else(ApiError::not_found)
}

/// `GET /api/bindings/{vhost}/e/{source}/q/{dest}/{props}`.
pub async fn show_queue(
    st: St,
    caller: Caller,
    Path((v, s, d, p)): Path<(String, String, String, String)>,
) -> JsonResult {
    Ok(Json(one(&st, &caller, &v, &s, &d, "queue", &p)?))
}

/// `GET /api/bindings/{vhost}/e/{source}/e/{dest}/{props}`.
pub async fn show_exchange(
    st: St,
    caller: Caller,
    Path((v, s, d, p)): Path<(String, String, String, String)>,
) -> JsonResult {
    Ok(Json(one(&st, &caller, &v, &s, &d, "exchange", &p)?))
}

fn unbind(
    st: &St,
    caller: &Caller,
    v: &str,
    s: &str,
    d: &str,
    kind: &str,
    props: &str,
) -> ApiResult<Response> {
    let b = one(st, caller, v, s, d, kind, props)?;
    let source = internal_name(s);
    if source.is_empty() {
        return Err(ApiError::forbidden(
            "operation not permitted on the default exchange",
        ));
    }
    caller.require(&st.0, v, Access::Write, kind, d)?;
    caller.require(&st.0, v, Access::Read, "exchange", source)?;
    let vh = vhost(&st.0, v)?;
    let destination = if kind == "queue" {
        Destination::Queue(vh.queue(d).ok_or_else(ApiError::not_found)?)
    } else {
        Destination::Exchange(d.to_owned())
    };
    vh.unbind(
        source,
        destination,
        b["routing_key"].as_str().unwrap_or_default(),
        json_to_table(&b["arguments"]),
    )
    .map_err(ApiError::from_amqp)?;
    Ok(no_content())
}

/// `DELETE /api/bindings/{vhost}/e/{source}/q/{dest}/{props}`.
pub async fn unbind_queue(
    st: St,
    caller: Caller,
    Path((v, s, d, p)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    unbind(&st, &caller, &v, &s, &d, "queue", &p)
}

/// `DELETE /api/bindings/{vhost}/e/{source}/e/{dest}/{props}`.
pub async fn unbind_exchange(
    st: St,
    caller: Caller,
    Path((v, s, d, p)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    unbind(&st, &caller, &v, &s, &d, "exchange", &p)
}
