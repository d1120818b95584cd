//! `/api/connections`, `/api/channels`, `/api/consumers`.

use super::{no_content, JsonResult, St};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use crate::views;
use crate::HttpState;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use ferrymq_amqp::server::ConnectionInfo;
use serde_json::Value;
use std::sync::Arc;

/// Connections the caller may see: all for monitoring/administrator, else its own.
fn visible(s: &HttpState, caller: &Caller, vhost: Option<&str>) -> Vec<Arc<ConnectionInfo>> {
    s.amqp
        .connections
        .list()
        .into_iter()
        .filter(|c| !c.vhost.lock().is_empty() || !c.user.lock().is_empty())
        .filter(|c| caller.sees_all() || *c.user.lock() == caller.user.name)
        .filter(|c| vhost.is_none_or(|v| *c.vhost.lock() == v))
        .collect()
}

fn find(s: &HttpState, caller: &Caller, name: &str) -> ApiResult<Arc<ConnectionInfo>> {
    visible(s, caller, None)
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)
}

/// `GET /api/connections`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    let items = visible(&st.0, &caller, None)
        .iter()
        .map(|c| views::connection(&st.0, c))
        .collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `GET /api/vhosts/{vhost}/connections`.
pub async fn list_vhost(
    st: St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    let items = visible(&st.0, &caller, Some(&vhost))
        .iter()
        .map(|c| views::connection(&st.0, c))
        .collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `GET /api/connections/{name}`.
pub async fn show(st: St, caller: Caller, Path(name): Path<String>) -> JsonResult {
    let c = find(&st.0, &caller, &name)?;
    Ok(Json(views::connection(&st.0, &c)))
}

/// `DELETE /api/connections/{name}`: closes it with 320 CONNECTION_FORCED; the
/// `X-Reason` header gives the reason the client sees.
pub async fn close(
    st: St,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let c = find(&st.0, &caller, &name)?;
    if !caller.is_admin() && *c.user.lock() != caller.user.name {
        return Err(ApiError::forbidden(
            "only administrators may close other users' connections",
        ));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    *c.close_reason.lock() = reason.to_owned();
    c.force_close.notify_one();
    Ok(no_content())
}

fn channels_of(s: &HttpState, c: &ConnectionInfo) -> Vec<Value> {
    let numbers: Vec<u16> = c.channels.lock().keys().copied().collect();
    numbers
        .into_iter()
        .filter_map(|n| views::channel(s, c, n))
        .collect()
}

/// `GET /api/connections/{name}/channels`.
pub async fn connection_channels(
    st: St,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    let c = find(&st.0, &caller, &name)?;
    Ok(Json(respond(channels_of(&st.0, &c), &q, &["name"])?))
}

/// `GET /api/channels`.
pub async fn channels(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    let items = visible(&st.0, &caller, None)
        .iter()
        .flat_map(|c| channels_of(&st.0, c))
        .collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `GET /api/vhosts/{vhost}/channels`.
pub async fn vhost_channels(
    st: St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    let items = visible(&st.0, &caller, Some(&vhost))
        .iter()
        .flat_map(|c| channels_of(&st.0, c))
        .collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `GET /api/channels/{name}` where the name is `"<connection> (<number>)"`.
pub async fn channel(st: St, caller: Caller, Path(name): Path<String>) -> JsonResult {
    let (conn, number) = name
        .rsplit_once(" (")
        .and_then(|(c, n)| Some((c, n.strip_suffix(')')?.parse::<u16>().ok()?)))
        .ok_or_else(ApiError::not_found)?;
    let c = find(&st.0, &caller, conn)?;
    views::channel(&st.0, &c, number)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `GET /api/consumers`.
pub async fn consumers(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    let items = views::consumers(&st.0, None)
        .into_iter()
        .filter(|c| caller.sees_vhost(&st.0, c["queue"]["vhost"].as_str().unwrap_or_default()))
        .collect();
    Ok(Json(respond(items, &q, &["consumer_tag"])?))
}

/// `GET /api/consumers/{vhost}`.
pub async fn vhost_consumers(
    st: St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    if st.0.broker.vhost(&vhost).is_none() {
        return Err(ApiError::not_found());
    }
    if !caller.sees_vhost(&st.0, &vhost) {
        return Err(ApiError::forbidden(format!(
            "access to vhost '{vhost}' refused"
        )));
    }
    Ok(Json(respond(
        views::consumers(&st.0, Some(&vhost)),
        &q,
        &["consumer_tag"],
    )?))
}
