//! `/api/federation-links`: the state of every federation link (empty until the
//! federation service is attached).

use super::{no_content, JsonResult, St};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{respond, ListQuery};
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

fn links(st: &St, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let Some(f) = st.0.federation.read().clone() else {
        return Vec::new();
    };
    f.links(vhost)
        .into_iter()
        .filter(|l| caller.sees_vhost(&st.0, l["vhost"].as_str().unwrap_or_default()))
        .collect()
}

/// `GET /api/federation-links`.
pub async fn links_all(st: St, caller: Caller, Query(q): Query<ListQuery>) -> JsonResult {
    Ok(Json(respond(
        links(&st, &caller, None),
        &q,
        &["vhost", "queue", "upstream"],
    )?))
}

/// `GET /api/federation-links/{vhost}`.
pub async fn links_vhost(
    st: St,
    caller: Caller,
    Path(v): Path<String>,
    Query(q): Query<ListQuery>,
) -> JsonResult {
    if st.0.broker.vhost(&v).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(respond(
        links(&st, &caller, Some(&v)),
        &q,
        &["queue", "upstream"],
    )?))
}

/// `DELETE /api/federation-links/vhost/{vhost}/{id}/restart`.
pub async fn restart(
    st: St,
    caller: Caller,
    Path((v, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_policymaker(&st.0, &v)?;
    let f =
        st.0.federation
            .read()
            .clone()
            .ok_or_else(ApiError::not_found)?;
    if f.restart(&v, &id) {
        Ok(no_content())
    } else {
        Err(ApiError::not_found())
    }
}
