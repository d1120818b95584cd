//! `/api/users` and `/api/permissions` (administrators only).

use super::{created_or_updated, no_content, JsonResult, St};
use crate::auth::Caller;
use crate::body::{require_object, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use crate::HttpState;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use ferrymq_broker::auth::{hash_password, HashingAlgorithm, Permission, User};
use ferrymq_broker::definitions::Tags;
use serde_json::{json, Value};

fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm.as_str(),
        "tags": u.tags,
        "limits": {},
    })
}

/// `GET /api/users`.
pub async fn list(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    caller.require_admin()?;
    let items = st.0.broker.users().iter().map(user_json).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `GET /api/users/without-permissions`.
pub async fn without_permissions(st: St, caller: Caller) -> JsonResult {
    caller.require_admin()?;
    let perms = st.0.broker.permissions();
    let mut items: Vec<Value> =
        st.0.broker
            .users()
            .iter()
            .filter(|u| !perms.iter().any(|((_, user), _)| *user == u.name))
            .map(user_json)
            .collect();
    items.sort_by_key(|u| u["name"].as_str().unwrap_or_default().to_owned());
    Ok(Json(Value::Array(items)))
}

/// `GET /api/users/{user}`.
pub async fn show(st: St, caller: Caller, Path(name): Path<String>) -> JsonResult {
    caller.require_admin()?;
    let u = st.0.broker.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(&u)))
}

/// `PUT /api/users/{user}`: `{password}` or `{password_hash, hashing_algorithm}`, plus `tags`.
pub async fn put_user(
    st: St,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    require_object(&body)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("user name must not be empty"));
    }
    let tags = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value::<Tags>(v.clone())
            .map_err(|_| ApiError::bad_request("tags must be a string or a list of strings"))?
            .to_vec(),
    };
    let existing = st.0.broker.user(&name);
    let algorithm = match body.get("hashing_algorithm").and_then(Value::as_str) {
        None => HashingAlgorithm::Sha256,
        Some(a) => HashingAlgorithm::parse(a)
            .ok_or_else(|| ApiError::bad_request(format!("unsupported hashing_algorithm '{a}'")))?,
    };
    let (password_hash, hashing_algorithm) = match (
        body.get("password").and_then(Value::as_str),
        body.get("password_hash").and_then(Value::as_str),
    ) {
        (Some(p), _) => (
            hash_password(p, HashingAlgorithm::Sha256),
            HashingAlgorithm::Sha256,
        ),
        (None, Some(h)) => {
            if !h.is_empty() {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(h)
                    .map_err(|_| ApiError::bad_request("password_hash is not valid base64"))?;
            }
            (h.to_owned(), algorithm)
        }
        (None, None) => match &existing {
            // Updating tags only keeps the password.
            Some(u) => (u.password_hash.clone(), u.hashing_algorithm),
            None => {
                return Err(ApiError::bad_request(
                    "password or password_hash is required to create a user",
                ))
            }
        },
    };
    st.0.broker.put_user(User {
        name: name.clone(),
        password_hash,
        hashing_algorithm,
        tags,
        limits: existing
            .as_ref()
            .map(|u| u.limits.clone())
            .unwrap_or_default(),
    });
    Ok(created_or_updated(existing.is_none()))
}

/// `DELETE /api/users/{user}`.
pub async fn remove(st: St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    st.0.broker
        .delete_user(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(no_content())
}

/// `POST /api/users/bulk-delete`: `{"users": [...]}`.
pub async fn bulk_delete(st: St, caller: Caller, JsonBody(body): JsonBody) -> ApiResult<Response> {
    caller.require_admin()?;
    let users = body
        .get("users")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("users must be a list of names"))?;
    for u in users {
        if let Some(name) = u.as_str() {
            st.0.broker.delete_user(name);
        }
    }
    Ok(no_content())
}

/// Permissions as RabbitMQ lists them, filtered by (vhost, user).
pub fn permission_list(s: &HttpState, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let mut perms = s.broker.permissions();
    perms.sort_by(|a, b| a.0.cmp(&b.0));
    perms
        .into_iter()
        .filter(|((v, u), _)| keep(v, u))
        .map(|((vhost, user), p)| {
            json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
        })
        .collect()
}

/// `GET /api/users/{user}/permissions`.
pub async fn user_permissions(st: St, caller: Caller, Path(name): Path<String>) -> JsonResult {
    caller.require_admin()?;
    st.0.broker.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(permission_list(&st.0, |_, u| u == name))))
}

/// `GET /api/permissions`.
pub async fn permissions(st: St, caller: Caller) -> JsonResult {
    caller.require_admin()?;
    Ok(Json(Value::Array(permission_list(&st.0, |_, _| true))))
}

/// `GET /api/topic-permissions`: FerryMQ does not restrict topics, so none exist.
pub async fn topic_permissions(caller: Caller) -> JsonResult {
    caller.require_admin()?;
    Ok(Json(json!([])))
}

/// `GET /api/permissions/{vhost}/{user}`.
pub async fn permission(
    st: St,
    caller: Caller,
    Path((v, u)): Path<(String, String)>,
) -> JsonResult {
    caller.require_admin()?;
    permission_list(&st.0, |vh, us| vh == v && us == u)
        .pop()
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `PUT /api/permissions/{vhost}/{user}`: `{configure, write, read}` regexes.
pub async fn set_permission(
    st: St,
    caller: Caller,
    Path((v, u)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    require_object(&body)?;
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::bad_request(format!("vhost '{v}' does not exist")));
    }
    if st.0.broker.user(&u).is_none() {
        return Err(ApiError::bad_request(format!("user '{u}' does not exist")));
    }
    let field = |k: &str| -> ApiResult<String> {
        body.get(k)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| ApiError::bad_request(format!("{k} is required (a regex string)")))
    };
    let p = Permission::new(&field("configure")?, &field("write")?, &field("read")?)
        .map_err(ApiError::bad_request)?;
    let existed = st.0.broker.permission(&v, &u).is_some();
    st.0.broker.set_permission(&v, &u, p);
    Ok(created_or_updated(!existed))
}

/// `DELETE /api/permissions/{vhost}/{user}`.
pub async fn clear_permission(
    st: St,
    caller: Caller,
    Path((v, u)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    st.0.broker
        .clear_permission(&v, &u)
        .ok_or_else(ApiError::not_found)?;
    Ok(no_content())
}
