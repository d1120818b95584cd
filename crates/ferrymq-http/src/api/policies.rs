//! `/api/policies` and `/api/operator-policies`. A PUT whose definition holds keys
//! FerryMQ does not act on still succeeds (the keys are kept and exported); the
//! answer then carries `{"warnings": [...]}` and the log says the same.

use super::{created_or_updated, no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::{require_object, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

fn listed(st: &St, caller: &Caller, operator: bool, vhost: Option<&str>) -> ApiResult<Vec<Value>> {
    if let Some(v) = vhost {
        if st.0.broker.vhost(v).is_none() {
            return Err(ApiError::not_found());
        }
    }
    if operator {
        caller.require_admin()?;
    }
    Ok(st
        .0
        .broker
        .policies
        .list(operator, vhost)
        .iter()
        .filter(|p| caller.is_policymaker() && caller.sees_vhost(&st.0, &p.vhost))
        .map(|p| p.to_json())
        .collect())
}

fn show_one(st: &St, caller: &Caller, operator: bool, v: &str, n: &str) -> JsonResult {
    if operator {
        caller.require_admin()?;
    }
    caller.require_policymaker(&st.0, v)?;
    st.0.broker
        .policies
        .get(v, n, operator)
        .map(|p| Json(p.to_json()))
        .ok_or_else(ApiError::not_found)
}

fn set_one(
    st: &St,
    caller: &Caller,
    operator: bool,
    v: &str,
    n: &str,
    body: &Value,
) -> ApiResult<Response> {
    require_object(body)?;
    if st.0.broker.vhost(v).is_none() {
        return Err(ApiError::not_found());
    }
    if operator {
        caller.require_admin()?;
    }
    caller.require_policymaker(&st.0, v)?;
    let existed = st.0.broker.policies.get(v, n, operator).is_some();
    let ignored =
        st.0.broker
            .put_policy(v, n, body, operator)
            .map_err(ApiError::bad_request)?;
    if ignored.is_empty() {
        return Ok(created_or_updated(!existed));
    }
    let warnings: Vec<String> = ignored
        .iter()
        .map(|k| format!("definition key '{k}' is not supported by FerryMQ and is ignored"))
        .collect();
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({"warnings": warnings}))).into_response())
}

fn remove_one(st: &St, caller: &Caller, operator: bool, v: &str, n: &str) -> ApiResult<Response> {
    if operator {
        caller.require_admin()?;
    }
    caller.require_policymaker(&st.0, v)?;
    if !st.0.broker.delete_policy(v, n, operator) {
        return Err(ApiError::not_found());
    }
    Ok(no_content())
}

/// `GET /api/policies`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    Ok(Json(respond(
        listed(&st, &caller, false, None)?,
        &q,
        &["vhost", "name"],
    )?))
}

/// `GET /api/policies/{vhost}`.
pub async fn list_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    Ok(Json(respond(
        listed(&st, &caller, false, Some(&v))?,
        &q,
        &["name"],
    )?))
}

/// `GET /api/policies/{vhost}/{name}`.
pub async fn show(st: St, caller: Caller, Path((v, n)): Path<(String, String)>) -> JsonResult {
    show_one(&st, &caller, false, &v, &n)
}

/// `PUT /api/policies/{vhost}/{name}`: `{pattern, definition, priority, apply-to}`.
pub async fn set(
    st: St,
    caller: Caller,
    Path((v, n)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    set_one(&st, &caller, false, &v, &n, &body)
}

/// `DELETE /api/policies/{vhost}/{name}`.
pub async fn remove(
    st: St,
    caller: Caller,
    Path((v, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    remove_one(&st, &caller, false, &v, &n)
}

/// `GET /api/operator-policies`.
pub async fn op_list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    Ok(Json(respond(
        listed(&st, &caller, true, None)?,
        &q,
        &["vhost", "name"],
    )?))
}

/// `GET /api/operator-policies/{vhost}`.
pub async fn op_list_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    Ok(Json(respond(
        listed(&st, &caller, true, Some(&v))?,
        &q,
        &["name"],
    )?))
}

/// `GET /api/operator-policies/{vhost}/{name}`.
pub async fn op_show(st: St, caller: Caller, Path((v, n)): Path<(String, String)>) -> JsonResult {
    show_one(&st, &caller, true, &v, &n)
}

/// `PUT /api/operator-policies/{vhost}/{name}`.
pub async fn op_set(
    st: St,
    caller: Caller,
    Path((v, n)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    set_one(&st, &caller, true, &v, &n, &body)
}

/// `DELETE /api/operator-policies/{vhost}/{name}`.
pub async fn op_remove(
    st: St,
    caller: Caller,
    Path((v, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    remove_one(&st, &caller, true, &v, &n)
}
