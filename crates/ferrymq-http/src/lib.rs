//! FerryMQ's management HTTP API: RabbitMQ's paths and JSON shapes (so
//! `rabbitmqadmin`, Terraform providers and monitoring scripts work unchanged),
//! Prometheus metrics at `/metrics` and an OpenAPI description at
//! `/api/openapi.json`, generated from the same route table the router is built
//! from so the two cannot drift apart.

pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod listing;
pub mod metrics;
pub mod openapi;
pub mod rates;
pub mod ui;
pub mod views;

use axum::routing::MethodRouter;
use axum::Router;
use ferrymq_amqp::Shared;
use ferrymq_broker::Broker;
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A listener shown in `/api/overview` and checked by the port health check.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// `amqp`, `http`, `amqp/ssl`…
    pub protocol: String,
    /// Bound address.
    pub addr: SocketAddr,
}

/// Resource limits the node reports (`disk_free_limit`, `mem_limit`).
pub type LimitsFn = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// What federation shows through the API (links and their metrics).
pub trait FederationView: Send + Sync {
    /// Links as `/api/federation-links` lists them, optionally of one vhost.
    fn links(&self, vhost: Option<&str>) -> Vec<serde_json::Value>;
    /// Restarts a link by id; false if there is no such link.
    fn restart(&self, vhost: &str, id: &str) -> bool;
    /// Prometheus text for the links.
    fn metrics(&self) -> String;
}

/// Everything a handler reads.
pub struct HttpState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// AMQP server state (connections, alarms).
    pub amqp: Arc<Shared>,
    /// Node name (`ferrymq@host`).
    pub node_name: String,
    /// Process start.
    pub started_at: Instant,
    /// Bound listeners.
    pub listeners: RwLock<Vec<ListenerInfo>>,
    /// Users that may only log in from loopback.
    pub loopback_users: Vec<String>,
    /// Sampled message rates.
    pub rates: rates::Rates,
    /// The data directory (disk free is measured there).
    pub data_dir: Option<PathBuf>,
    /// Current alarm thresholds.
    pub limits: LimitsFn,
    /// Federation, once started.
    pub federation: RwLock<Option<Arc<dyn FederationView>>>,
    /// Wait before answering a request with a wrong password (slows password guessing).
    pub auth_failure_delay: Duration,
}

/// One documented route: path (axum and OpenAPI syntax), methods, summary.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    /// Path with `{param}` segments.
    pub path: &'static str,
    /// HTTP methods served.
    pub methods: &'static [&'static str],
    /// What it does.
    pub summary: &'static str,
}

/// Builds the router and its documentation together.
pub struct Routes {
    router: Router<Arc<HttpState>>,
    docs: Vec<RouteDoc>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            docs: Vec::new(),
        }
    }

    /// Adds a route with the methods its handler serves.
    pub fn add(
        mut self,
        path: &'static str,
        methods: &'static [&'static str],
        summary: &'static str,
        handler: MethodRouter<Arc<HttpState>>,
    ) -> Self {
        self.router = self.router.route(path, handler);
        self.docs.push(RouteDoc {
            path,
            methods,
            summary,
        });
        self
    }
}

/// The documented routes (for the OpenAPI description and its test).
pub fn route_docs() -> Vec<RouteDoc> {
    api::routes(Routes::new()).docs
}

/// The complete application.
pub fn app(state: Arc<HttpState>) -> Router {
    let routes = api::routes(Routes::new());
    routes
        .router
        .merge(ui::router())
        .fallback(|| async {
            // Marked so the route-table test can tell "no such route" from "no such object".
            let mut r = axum::response::IntoResponse::into_response(error::ApiError::not_found());
            r.headers_mut().insert(
                "x-ferrymq-route",
                axum::http::HeaderValue::from_static("none"),
            );
            r
        })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn(ui::browser_guard))
        .with_state(state)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("HTTP server stopped: {e}");
    }
}

/// Serves one connection the caller accepted (HTTPS: after its TLS handshake) until
/// the client closes it; `peer` is what loopback-only users are checked against.
pub async fn serve_connection<I>(io: I, peer: SocketAddr, state: Arc<HttpState>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let router = app(state);
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().oneshot(req)
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!("HTTPS connection from {peer}: {e}");
    }
}

/// Samples counters for the rates every `every` (RabbitMQ's default is 5 s).
pub fn spawn_sampler(state: Arc<HttpState>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        loop {
            t.tick().await;
            views::sample_rates(&state);
        }
    })
}
