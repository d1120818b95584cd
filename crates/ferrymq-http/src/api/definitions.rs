//! `/api/definitions`: export and import in RabbitMQ's JSON format. Import
//! validates the whole document before applying anything and names the bad entry.

use super::{no_content, St};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrymq_broker::definitions::Definitions;
use serde::Deserialize;
use serde_json::Value;

/// `?download=file.json` asks for an attachment.
#[derive(Deserialize, Default)]
pub struct ExportQuery {
    download: Option<String>,
}

fn answer(defs: &Definitions, q: &ExportQuery) -> Response {
    answer_value(serde_json::to_value(defs).unwrap_or_default(), q)
}

fn answer_value(doc: Value, q: &ExportQuery) -> Response {
    let mut r = Json(doc).into_response();
    if let Some(name) = q.download.as_deref().filter(|n| !n.is_empty()) {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .collect();
        if let Ok(v) = format!("attachment; filename=\"{safe}\"").parse() {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

/// `GET /api/definitions` (administrators).
pub async fn export(st: St, caller: Caller, Query(q): Query<ExportQuery>) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(answer(&st.0.broker.export_definitions(None, false), &q))
}

/// `GET /api/definitions/{vhost}`.
pub async fn export_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if st.0.broker.vhost(&v).is_none() {
        // RabbitMQ answers 400 here, not 404.
        return Err(ApiError::bad_request(format!("vhost '{v}' does not exist")));
    }
    // RabbitMQ's vhost export: only the vhost's objects, without `vhost` fields.
    let mut doc = serde_json::to_value(st.0.broker.export_definitions(Some(&v), false))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(o) = doc.as_object_mut() {
        o.retain(|k, _| {
            matches!(
                k.as_str(),
                "rabbit_version"
                    | "ferrymq_version"
                    | "parameters"
                    | "policies"
                    | "queues"
                    | "exchanges"
                    | "bindings"
            )
        });
        for list in o.values_mut().filter_map(Value::as_array_mut) {
            for item in list.iter_mut().filter_map(Value::as_object_mut) {
                item.remove("vhost");
            }
        }
    }
    Ok(answer_value(doc, &q))
}

fn parse(body: Value) -> ApiResult<Definitions> {
    if !body.is_object() {
        return Err(ApiError::bad_request("definitions must be a JSON object"));
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid definitions: {e}")))
}

/// `POST /api/definitions` (administrators): imports a whole document.
pub async fn import(st: St, caller: Caller, JsonBody(body): JsonBody) -> ApiResult<Response> {
    caller.require_admin()?;
    let defs = parse(body)?;
    st.0.broker
        .import_definitions(&defs)
        .map_err(ApiError::bad_request)?;
    Ok(no_content())
}

/// `POST /api/definitions/{vhost}`: imports a document's objects into one vhost
/// (their `vhost` fields are ignored; users, vhosts and permissions are skipped).
pub async fn import_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::not_found());
    }
    let mut defs = parse(body)?;
    defs.users.clear();
    defs.vhosts.clear();
    defs.permissions.clear();
    defs.global_parameters.clear();
    for q in &mut defs.queues {
        q.vhost = v.clone();
    }
    for e in &mut defs.exchanges {
        e.vhost = v.clone();
    }
    for b in &mut defs.bindings {
        b.vhost = v.clone();
    }
    for p in defs
        .policies
        .iter_mut()
        .chain(defs.parameters.iter_mut())
        .chain(defs.operator_policies.iter_mut())
    {
        if let Some(o) = p.as_object_mut() {
            o.insert("vhost".into(), v.clone().into());
        }
    }
    st.0.broker
        .import_definitions(&defs)
        .map_err(ApiError::bad_request)?;
    Ok(no_content())
}
