//! `/api/queues`: list, declare, delete, purge, get and bindings.

use super::exchanges::vhost;
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
use ferrymq_broker::auth::Access;
use ferrymq_broker::json::json_to_table;
use ferrymq_broker::vhost::QueueOptions;
use serde::Deserialize;
use serde_json::{json, Value};

fn all_in(s: &HttpState, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    super::visible_vhosts(s, caller, only)
        .iter()
        .flat_map(|v| {
            v.queues()
                .iter()
                .map(|q| views::queue(s, q))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `GET /api/queues`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    Ok(Json(respond(
        all_in(&st.0, &caller, None),
        &q,
        &["vhost", "name"],
    )?))
}

/// `GET /api/queues/{vhost}`.
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

fn find(
    s: &HttpState,
    caller: &Caller,
    v: &str,
    name: &str,
) -> ApiResult<std::sync::Arc<ferrymq_broker::queue::Queue>> {
    let vh = vhost(s, v)?;
    caller.require_vhost(s, v)?;
    vh.queue(name).ok_or_else(ApiError::not_found)
}

/// An exclusive queue belongs to its connection: as over AMQP, others may not read
/// or purge it (RESOURCE_LOCKED, answered as 409).
fn refuse_exclusive(q: &ferrymq_broker::queue::Queue) -> ApiResult<()> {
    if q.exclusive_owner.is_some() {
        return Err(ApiError::conflict(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'",
            q.name, q.vhost_name
        )));
    }
    Ok(())
}

/// `GET /api/queues/{vhost}/{name}`.
pub async fn show(st: St, caller: Caller, Path((v, name)): Path<(String, String)>) -> JsonResult {
    let q = find(&st.0, &caller, &v, &name)?;
    Ok(Json(views::queue(&st.0, &q)))
}

/// `PUT /api/queues/{vhost}/{name}`: `{durable, auto_delete, arguments}`.
pub async fn declare(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    require_object(&body)?;
    let vh = vhost(&st.0, &v)?;
    caller.require(&st.0, &v, Access::Configure, "queue", &name)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("queue name must not be empty"));
    }
    if name.starts_with("amq.") {
        return Err(ApiError::forbidden(format!(
            "queue name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    let opts = QueueOptions {
        passive: false,
        durable: flag(&body, "durable", true)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments: json_to_table(&object(&body, "arguments")?),
    };
    let (_, created) = vh
        .declare_queue(&name, 0, opts)
        .map_err(ApiError::from_amqp)?;
    Ok(created_or_updated(created))
}

/// Query of `DELETE /api/queues/{vhost}/{name}`.
#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

/// `DELETE /api/queues/{vhost}/{name}[?if-unused=true&if-empty=true]`.
pub async fn remove(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Response> {
    let vh = vhost(&st.0, &v)?;
    caller.require(&st.0, &v, Access::Configure, "queue", &name)?;
    let queue = vh.queue(&name).ok_or_else(ApiError::not_found)?;
    // Management may delete an exclusive queue on its owner's behalf.
    let owner = queue.exclusive_owner.unwrap_or(0);
    vh.delete_queue(
        &name,
        owner,
        q.if_unused.as_deref() == Some("true"),
        q.if_empty.as_deref() == Some("true"),
    )
    .map_err(ApiError::from_amqp)?;
    Ok(no_content())
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: purge.
pub async fn purge(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let q = find(&st.0, &caller, &v, &name)?;
    caller.require(&st.0, &v, Access::Read, "queue", &name)?;
    refuse_exclusive(&q)?;
    q.purge();
    Ok(no_content())
}

/// `POST /api/queues/{vhost}/{name}/actions`: `sync` and `cancel_sync` (mirroring
/// actions; FerryMQ has no mirrors, so they succeed without effect).
pub async fn actions(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    find(&st.0, &caller, &v, &name)?;
    match body.get("action").and_then(Value::as_str) {
        Some("sync" | "cancel_sync") => Ok(no_content()),
        other => Err(ApiError::bad_request(format!(
            "unknown action {}",
            other.unwrap_or("(none)")
        ))),
    }
}

/// `GET /api/queues/{vhost}/{name}/bindings`.
pub async fn bindings(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
) -> JsonResult {
    find(&st.0, &caller, &v, &name)?;
    let items: Vec<Value> = views::vhost_bindings(&st.0, &v)
        .into_iter()
        .filter(|b| b["destination"] == name.as_str() && b["destination_type"] == "queue")
        .collect();
    Ok(Json(Value::Array(items)))
}

/// `POST /api/queues/{vhost}/{name}/get`:
/// `{count, ackmode, encoding: auto|base64, truncate}` → the messages.
pub async fn get_messages(
    st: St,
    caller: Caller,
    Path((v, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> JsonResult {
    require_object(&body)?;
    let q = find(&st.0, &caller, &v, &name)?;
    caller.require(&st.0, &v, Access::Read, "queue", &name)?;
    refuse_exclusive(&q)?;
    let count = match body.get("count") {
        None => 1,
        Some(c) => c
            .as_u64()
            .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| ApiError::bad_request("count must be a non-negative integer"))?,
    };
    let ackmode = body
        .get("ackmode")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("ackmode is required"))?;
    let (requeue, reject) = match ackmode {
        "ack_requeue_true" => (true, false),
        "ack_requeue_false" => (false, false),
        "reject_requeue_true" => (true, true),
        "reject_requeue_false" => (false, true),
        other => {
            return Err(ApiError::bad_request(format!(
                "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false, not '{other}'"
            )))
        }
    };
    let base64_only = match body.get("encoding").and_then(Value::as_str) {
        None | Some("auto") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding must be auto or base64, not '{other}'"
            )))
        }
    };
    let truncate = body.get("truncate").and_then(|t| {
        t.as_u64()
            .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
    });
    // Take every message first, then settle them all, so a requeueing get of
    // several messages returns different ones.
    let mut taken = Vec::new();
    let mut out = Vec::new();
    for _ in 0..count {
        let Some((m, remaining)) = q.get(true) else {
            break;
        };
        let body_bytes = &m.message.body;
        let shown = match truncate {
            Some(n) if (n as usize) < body_bytes.len() => &body_bytes[..n as usize],
            _ => &body_bytes[..],
        };
        let (payload, encoding) = match std::str::from_utf8(shown) {
            Ok(text) if !base64_only => (text.to_owned(), "string"),
            _ => (
                base64::engine::general_purpose::STANDARD.encode(shown),
                "base64",
            ),
        };
        out.push(json!({
            "payload_bytes": body_bytes.len(),
            "redelivered": m.redelivered,
            "exchange": m.message.exchange,
            "routing_key": m.message.routing_key,
            "message_count": remaining,
            "properties": views::properties_json(m.message.properties()),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        taken.push(m);
    }
    if requeue {
        q.requeue(taken);
    } else if reject {
        q.reject(taken);
    } else {
        q.ack(&taken);
    }
    Ok(Json(Value::Array(out)))
}
