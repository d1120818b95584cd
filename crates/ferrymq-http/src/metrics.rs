//! `/metrics`: Prometheus text exposition (version 0.0.4). Unauthenticated, as
//! scrapers expect; it shows counts and names, never message contents.

use crate::api::overview::{disk_free, rss_bytes};
use crate::HttpState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric.
pub fn render(s: &HttpState) -> String {
    let mut out = String::new();
    let mut queues = Vec::new();
    for v in s.broker.vhosts() {
        for q in v.queues() {
            queues.push(q);
        }
    }
    queues.sort_by(|a, b| (&a.vhost_name, &a.name).cmp(&(&b.vhost_name, &b.name)));
    type Getter = fn(&ferrymq_broker::queue::Queue) -> u64;
    let per_queue: [(&str, &str, &str, Getter); 7] = [
        (
            "ferrymq_queue_messages_ready",
            "gauge",
            "Messages ready for delivery",
            |q| q.counts().0 as u64,
        ),
        (
            "ferrymq_queue_messages_unacked",
            "gauge",
            "Messages delivered and not yet acknowledged",
            |q| q.counts().1 as u64,
        ),
        (
            "ferrymq_queue_messages_ready_bytes",
            "gauge",
            "Body bytes of ready messages",
            |q| q.counts().2,
        ),
        (
            "ferrymq_queue_consumers",
            "gauge",
            "Consumers of the queue",
            |q| q.counts().3 as u64,
        ),
        (
            "ferrymq_queue_messages_published_total",
            "counter",
            "Messages enqueued",
            |q| q.stats.published.load(Ordering::Relaxed),
        ),
        (
            "ferrymq_queue_messages_delivered_total",
            "counter",
            "Messages delivered to consumers or fetched",
            |q| q.stats.delivered.load(Ordering::Relaxed),
        ),
        (
            "ferrymq_queue_messages_acked_total",
            "counter",
            "Messages acknowledged",
            |q| q.stats.acked.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in per_queue {
        family(&mut out, name, kind, help);
        for q in &queues {
            let _ = writeln!(
                out,
                "{name}{{vhost=\"{}\",queue=\"{}\"}} {}",
                label(&q.vhost_name),
                label(&q.name),
                get(q)
            );
        }
    }
    let conns = s.amqp.connections.list();
    let channels: usize = conns.iter().map(|c| c.channels.lock().len()).sum();
    let consumers: usize = queues.iter().map(|q| q.counts().3).sum();
    let (disk_limit, mem_limit) = (s.limits)();
    let alarm = s.amqp.alarm.borrow().clone();
    let gauges: [(&str, &str, u64); 8] = [
        (
            "ferrymq_connections",
            "Open client connections",
            conns.len() as u64,
        ),
        ("ferrymq_channels", "Open channels", channels as u64),
        ("ferrymq_consumers", "Consumers", consumers as u64),
        ("ferrymq_queues", "Queues", queues.len() as u64),
        (
            "ferrymq_process_resident_memory_bytes",
            "Resident memory of the broker process",
            rss_bytes(),
        ),
        (
            "ferrymq_memory_limit_bytes",
            "Memory high watermark",
            mem_limit,
        ),
        (
            "ferrymq_disk_space_available_bytes",
            "Free disk space where the data directory lives",
            s.data_dir.as_deref().map(disk_free).unwrap_or(0),
        ),
        (
            "ferrymq_disk_space_limit_bytes",
            "Disk free limit",
            disk_limit,
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "ferrymq_alarm_active",
        "gauge",
        "1 while a resource alarm blocks publishers",
    );
    let _ = writeln!(out, "ferrymq_alarm_active {}", u8::from(alarm.is_some()));
    if let Some(f) = s.federation.read().clone() {
        out.push_str(&f.metrics());
    }
    out
}

/// `GET /metrics`.
pub async fn serve(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&s),
    )
}
