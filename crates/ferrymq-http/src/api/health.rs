//! `/api/aliveness-test` and `/api/health/checks/*`: 200 `{"status":"ok"}` or
//! 503 `{"status":"failed","reason":...}`, as RabbitMQ answers.

use super::exchanges::vhost;
use super::St;
use crate::auth::Caller;
use crate::error::ApiResult;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrymq_broker::amq_protocol::protocol::basic::AMQPProperties;
use ferrymq_broker::message::Message;
use ferrymq_broker::vhost::QueueOptions;
use serde_json::json;

fn ok_response() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

fn failed(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": reason})),
    )
        .into_response()
}

/// A check that always passes on a single FerryMQ node.
pub async fn ok(_caller: Caller) -> Response {
    ok_response()
}

/// `GET /api/aliveness-test/{vhost}`: declares `aliveness-test`, publishes a
/// message to it and reads it back.
pub async fn aliveness(st: St, caller: Caller, Path(v): Path<String>) -> ApiResult<Response> {
    let vh = vhost(&st.0, &v)?;
    caller.require_vhost(&st.0, &v)?;
    let name = "aliveness-test";
    let opts = QueueOptions {
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: Default::default(),
    };
    let q = match vh.declare_queue(name, 0, opts) {
        Ok((q, _)) => q,
        Err(e) => return Ok(failed(e.text)),
    };
    let Some(default) = vh.exchange("") else {
        return Ok(failed("default exchange missing".into()));
    };
    let m = Message::new(
        String::new(),
        name.into(),
        AMQPProperties::default(),
        "test_message".into(),
    );
    let mut targets = Vec::new();
    vh.publish(&default, m, &mut targets);
    match q.get(false) {
        Some(_) => Ok(ok_response()),
        None => Ok(failed("the test message did not come back".into())),
    }
}

/// `GET /api/health/checks/alarms` (and `local-alarms`).
pub async fn alarms(st: St, _caller: Caller) -> Response {
    match st.0.amqp.alarm.borrow().clone() {
        None => ok_response(),
        Some(a) => failed(format!("resource alarm in effect: {a}")),
    }
}

/// `GET /api/health/checks/virtual-hosts`.
pub async fn virtual_hosts(_caller: Caller) -> Response {
    ok_response()
}

/// `GET /api/health/checks/port-listener/{port}`.
pub async fn port_listener(st: St, _caller: Caller, Path(port): Path<String>) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "bad_request", "reason": format!("invalid port '{port}'")})),
        )
            .into_response();
    };
    let ports: Vec<u16> =
        st.0.listeners
            .read()
            .iter()
            .map(|l| l.addr.port())
            .collect();
    if ports.contains(&port) {
        Json(json!({"status": "ok", "port": port})).into_response()
    } else {
        let reason = format!("No active listener on port {port}");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": reason, "missing": port, "ports": ports})),
        )
            .into_response()
    }
}

/// `GET /api/health/checks/protocol-listener/{protocol}`.
pub async fn protocol_listener(st: St, _caller: Caller, Path(protocol): Path<String>) -> Response {
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" | "amqp" => "amqp",
        "http" | "https" | "amqp/ssl" | "amqps" => protocol.as_str(),
        other => other,
    };
    let wanted = if wanted == "amqps" {
        "amqp/ssl"
    } else {
        wanted
    };
    if st.0.listeners.read().iter().any(|l| l.protocol == wanted) {
        Json(json!({"status": "ok", "protocol": protocol})).into_response()
    } else {
        failed(format!("no active listener for protocol {protocol}"))
    }
}
