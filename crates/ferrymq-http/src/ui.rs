//! The web management UI: static files compiled into the binary (no build step, no
//! CDN, so the broker's UI works on a host without internet), served at `/`, and the
//! browser-facing guards the API needs once a browser talks to it.
//!
//! The UI is plain ES modules that call the public HTTP API with basic auth in an
//! `Authorization` header; it keeps no cookie, so a foreign page cannot ride on a
//! session. Requests whose `Origin` names another site are refused anyway, in case
//! the browser cached credentials from a native login prompt.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    path: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, body: include_str!(concat!("../ui/", $path)) }),*]
    };
}

/// Every file of the UI, by path under `/ui/`.
static ASSETS: &[Asset] = assets![
    "index.html",
    "style.css",
    "app.js",
    "api.js",
    "dom.js",
    "chart.js",
    "pages/overview.js",
    "pages/connections.js",
    "pages/exchanges.js",
    "pages/queues.js",
    "pages/admin.js",
    "pages/policies.js",
    "pages/federation.js",
    "pages/definitions.js",
    "pages/migration.js",
];

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve_asset(path: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, content_type(a.path)),
                // Revalidate every time: after an upgrade the browser must not mix versions.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => crate::error::ApiError::not_found().into_response(),
    }
}

/// Routes of the UI: `/` and `/ui/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve_asset("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { serve_asset(&path) }),
        )
}

/// Header the UI sends so that a failed login does not pop up the browser's own dialog.
pub const UI_HEADER: &str = "x-ferrymq-ui";

/// Refuses cross-site writes (CSRF) and, for the UI's own requests, drops the
/// `WWW-Authenticate` challenge so a wrong password shows in the page, not in a
/// native prompt that would cache credentials for every later request.
pub async fn browser_guard(req: axum::extract::Request, next: Next) -> Response {
    let from_ui = req.headers().contains_key(UI_HEADER);
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && is_cross_origin(req.headers())
    {
        return crate::error::ApiError {
            status: StatusCode::FORBIDDEN,
            error: "forbidden",
            reason: "cross-origin request refused: the management API accepts writes only \
                     from its own pages or from non-browser clients"
                .into(),
        }
        .into_response();
    }
    let mut response = next.run(req).await;
    if from_ui {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    response
}

/// True when the request carries an `Origin` whose host differs from `Host`.
fn is_cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or("");
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn origin_must_match_host() {
        assert!(!is_cross_origin(&headers(None, "localhost:15672")));
        assert!(!is_cross_origin(&headers(
            Some("http://localhost:15672"),
            "localhost:15672"
        )));
        assert!(is_cross_origin(&headers(
            Some("http://evil.example"),
            "localhost:15672"
        )));
        assert!(is_cross_origin(&headers(Some("null"), "localhost:15672")));
    }

    #[test]
    fn every_asset_is_embedded_with_a_type() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.path);
            assert_ne!(content_type(a.path), "application/octet-stream");
        }
        assert!(ASSETS.iter().any(|a| a.path == "index.html"));
    }
}
