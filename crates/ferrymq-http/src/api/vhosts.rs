//! `/api/vhosts`: list, create, delete, and a vhost's permissions.

use super::{created_or_updated, no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use crate::HttpState;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use ferrymq_broker::definitions::Tags;
use serde_json::{json, Value};

fn vhost_json(s: &HttpState, name: &str) -> Option<Value> {
    let v = s.broker.vhost(name)?;
    let (mut ready, mut unacked) = (0u64, 0u64);
    for q in v.queues() {
        let (r, u, _, _) = q.counts();
        ready += r as u64;
        unacked += u as u64;
    }
    let meta = v.metadata.read().clone();
    let description = meta
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let tags = meta.get("tags").cloned().unwrap_or_else(|| json!([]));
    Some(json!({
        "name": name,
        "description": description,
        "tags": tags,
        "metadata": {"description": description, "tags": tags},
        "tracing": false,
        "default_queue_type": "classic",
        "cluster_state": {s.node_name.clone(): "running"},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "messages_details": {"rate": 0.0},
    }))
}

/// `GET /api/vhosts`: those the caller may see.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    let items =
        st.0.broker
            .vhosts()
            .iter()
            .filter(|v| caller.sees_vhost(&st.0, &v.name))
            .filter_map(|v| vhost_json(&st.0, &v.name))
            .collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `GET /api/vhosts/{vhost}`.
pub async fn show(st: St, caller: Caller, Path(v): Path<String>) -> JsonResult {
    let j = vhost_json(&st.0, &v).ok_or_else(ApiError::not_found)?;
    if !caller.sees_vhost(&st.0, &v) {
        return Err(ApiError::forbidden(format!(
            "access to vhost '{v}' refused"
        )));
    }
    Ok(Json(j))
}

/// `PUT /api/vhosts/{vhost}` (administrators): `{description, tags}` are optional.
pub async fn create(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if v.is_empty() {
        return Err(ApiError::bad_request("vhost name must not be empty"));
    }
    let description = match body.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "description must be a string, not {other}"
            )))
        }
    };
    let tags: Vec<String> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => serde_json::from_value::<Tags>(t.clone())
            .map_err(|_| ApiError::bad_request("tags must be a string or a list of strings"))?
            .to_vec(),
    };
    let existed = st.0.broker.vhost(&v).is_some();
    let vh = st.0.broker.add_vhost(&v);
    if !existed {
        // As RabbitMQ does, whoever creates a vhost may use it.
        st.0.broker.set_permission(
            &v,
            &caller.user.name,
            ferrymq_broker::auth::Permission::all(),
        );
    }
    *vh.metadata.write() = json!({"description": description, "tags": tags});
    st.0.broker.definitions_changed();
    Ok(created_or_updated(!existed))
}

/// `DELETE /api/vhosts/{vhost}` (administrators): deletes everything in it.
pub async fn remove(st: St, caller: Caller, Path(v): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::not_found());
    }
    // Connections to a deleted vhost are closed, as RabbitMQ does.
    for c in st.0.amqp.connections.list() {
        if *c.vhost.lock() == v {
            *c.close_reason.lock() = format!("vhost '{v}' is deleted");
            c.force_close.notify_one();
        }
    }
    st.0.broker.delete_vhost(&v);
    Ok(no_content())
}

/// `GET /api/vhosts/{vhost}/permissions` (administrators).
pub async fn permissions(st: St, caller: Caller, Path(v): Path<String>) -> JsonResult {
    caller.require_admin()?;
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(super::users::permission_list(
        &st.0,
        |vh, _| vh == v,
    ))))
}
