//! `/api/overview`, `/api/whoami`, `/api/nodes`: the broker as a whole.

use super::{JsonResult, St};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rates::OVERVIEW_KEY;
use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};

/// The RabbitMQ management API version FerryMQ's API follows (tools compare it).
pub const API_COMPAT_VERSION: &str = "3.10.8";

fn totals(s: &crate::HttpState, caller: &Caller) -> (Value, Value) {
    let (mut queues, mut exchanges, mut consumers) = (0usize, 0usize, 0usize);
    let (mut ready, mut unacked) = (0u64, 0u64);
    for v in s.broker.vhosts() {
        if !caller.sees_vhost(s, &v.name) {
            continue;
        }
        exchanges += v.exchanges().len();
        for q in v.queues() {
            queues += 1;
            let (r, u, _, c) = q.counts();
            ready += r as u64;
            unacked += u as u64;
            consumers += c;
        }
    }
    let conns = s.amqp.connections.list();
    let channels: usize = conns.iter().map(|c| c.channels.lock().len()).sum();
    (
        json!({
            "connections": conns.len(),
            "channels": channels,
            "exchanges": exchanges,
            "queues": queues,
            "consumers": consumers,
        }),
        json!({
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
            "messages_details": {"rate": 0.0},
            "messages_ready_details": {"rate": 0.0},
            "messages_unacknowledged_details": {"rate": 0.0},
        }),
    )
}

/// `GET /api/overview`.
pub async fn overview(
    st: St,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<crate::listing::ListQuery>,
) -> JsonResult {
    let s = &st.0;
    let (objects, queue_totals) = totals(s, &caller);
    let r = |i| s.rates.rate(OVERVIEW_KEY, i);
    let listeners: Vec<Value> = s
        .listeners
        .read()
        .iter()
        .map(|l| {
            json!({
                "node": s.node_name,
                "protocol": l.protocol,
                "ip_address": l.addr.ip().to_string(),
                "port": l.addr.port(),
            })
        })
        .collect();
    let body = json!({
        "management_version": API_COMPAT_VERSION,
        "rabbitmq_version": API_COMPAT_VERSION,
        "product_name": "FerryMQ",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "basic",
        "erlang_version": "none (FerryMQ is written in Rust)",
        "cluster_name": s.amqp.config.cluster_name,
        "node": s.node_name,
        "statistics_db_node": s.node_name,
        "disable_stats": false,
        "enable_queue_totals": true,
        "exchange_types": [
            {"name": "direct", "description": "AMQP direct exchange", "enabled": true},
            {"name": "fanout", "description": "AMQP fanout exchange", "enabled": true},
            {"name": "headers", "description": "AMQP headers exchange", "enabled": true},
            {"name": "topic", "description": "AMQP topic exchange", "enabled": true},
        ],
        "object_totals": objects,
        "queue_totals": queue_totals,
        "message_stats": {
            "publish": 0, "publish_details": {"rate": r(0)},
            "deliver_get": 0, "deliver_get_details": {"rate": r(1)},
            "ack": 0, "ack_details": {"rate": r(2)},
        },
        "listeners": listeners,
        "contexts": [],
    });
    Ok(Json(match q.columns.as_deref() {
        Some(cols) if !cols.is_empty() => {
            // A column names a top-level key; RabbitMQ keeps the whole object for "a.b".
            let top: Vec<&str> = cols
                .split(',')
                .map(|c| c.split('.').next().unwrap_or(c).trim())
                .collect();
            crate::listing::project(&body, &top)
        }
        _ => body,
    }))
}

/// `GET /api/cluster-name`.
pub async fn cluster_name(st: St, _caller: Caller) -> JsonResult {
    Ok(Json(json!({"name": st.0.amqp.config.cluster_name})))
}

/// `GET /api/whoami`.
pub async fn whoami(caller: Caller) -> JsonResult {
    Ok(Json(
        json!({"name": caller.user.name, "tags": caller.user.tags}),
    ))
}

/// `GET /api/extensions`: the UI plugins list (none).
pub async fn extensions(_caller: Caller) -> JsonResult {
    Ok(Json(json!([])))
}

/// Free bytes on the file system holding `path`.
pub fn disk_free(path: &std::path::Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Resident memory of this process in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The node object of `/api/nodes`.
pub fn node_json(s: &crate::HttpState) -> Value {
    let (disk_limit, mem_limit) = (s.limits)();
    let disk = s.data_dir.as_deref().map(disk_free).unwrap_or(0);
    let mem = rss_bytes();
    let alarm = s.amqp.alarm.borrow().clone();
    let sockets = s.amqp.connections.list().len();
    json!({
        "name": s.node_name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": s.started_at.elapsed().as_millis() as u64,
        "mem_used": mem,
        "mem_limit": mem_limit,
        "mem_alarm": alarm.as_deref().is_some_and(|a| a.contains("memory")),
        "disk_free": disk,
        "disk_free_limit": disk_limit,
        "disk_free_alarm": alarm.as_deref().is_some_and(|a| a.contains("disk")),
        "fd_used": open_fds(),
        "fd_total": 1048576,
        "sockets_used": sockets,
        "sockets_total": 1048576,
        "proc_used": 0,
        "proc_total": 0,
        "run_queue": 0,
        "processors": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "partitions": [],
        "applications": [{"name": "ferrymq", "description": "FerryMQ", "version": env!("CARGO_PKG_VERSION")}],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_federation", "rabbitmq_federation_management"],
        "auth_mechanisms": [{"name": "PLAIN", "enabled": true}, {"name": "AMQPLAIN", "enabled": true}],
        "exchange_types": [{"name": "direct"}, {"name": "fanout"}, {"name": "headers"}, {"name": "topic"}],
    })
}

/// `GET /api/nodes`.
pub async fn nodes(st: St, caller: Caller) -> JsonResult {
    caller.require_monitor()?;
    Ok(Json(json!([node_json(&st.0)])))
}

/// `GET /api/nodes/{node}`.
pub async fn node(st: St, caller: Caller, Path(name): Path<String>) -> JsonResult {
    caller.require_monitor()?;
    if name != st.0.node_name {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&st.0)))
}
