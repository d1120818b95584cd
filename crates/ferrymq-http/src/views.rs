//! JSON views of broker objects in RabbitMQ's shapes (field names that
//! `rabbitmqadmin`, the Terraform providers and monitoring scripts read).

use crate::rates::{self, Sample};
use crate::HttpState;
use base64::Engine;
use ferrymq_amqp::server::ConnectionInfo;
use ferrymq_broker::exchange::{Binding, Exchange};
use ferrymq_broker::json::table_to_json;
use ferrymq_broker::policy::AppliedPolicies;
use ferrymq_broker::queue::Queue;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Counters sampled per queue, in this order.
const Q_PUBLISHED: usize = 0;
const Q_DELIVERED: usize = 1;
const Q_ACKED: usize = 2;
const Q_REDELIVERED: usize = 3;
const Q_MESSAGES: usize = 4;
const Q_READY: usize = 5;
const Q_UNACKED: usize = 6;

fn details(rate: f64) -> Value {
    json!({ "rate": rate })
}

/// Adds `name` and `name_details: {rate}` to an object.
fn stat(out: &mut Map<String, Value>, name: &str, count: u64, rate: f64) {
    out.insert(name.into(), count.into());
    out.insert(format!("{name}_details"), details(rate));
}

fn policy_fields(out: &mut Map<String, Value>, applied: &AppliedPolicies) {
    out.insert(
        "policy".into(),
        applied
            .policy
            .as_ref()
            .map(|p| Value::from(p.name.clone()))
            .unwrap_or(Value::Null),
    );
    out.insert(
        "operator_policy".into(),
        applied
            .operator_policy
            .as_ref()
            .map(|p| Value::from(p.name.clone()))
            .unwrap_or(Value::Null),
    );
    out.insert(
        "effective_policy_definition".into(),
        Value::Object(applied.effective_definition()),
    );
}

/// A queue with its counts, rates and policy.
pub fn queue(state: &HttpState, q: &Arc<Queue>) -> Value {
    let (ready, unacked, ready_bytes, consumers) = q.counts();
    let key = rates::queue_key(&q.vhost_name, &q.name);
    let r = |i| state.rates.rate(&key, i);
    let mut stats = Map::new();
    let delivered = q.stats.delivered.load(Ordering::Relaxed);
    stat(
        &mut stats,
        "publish",
        q.stats.published.load(Ordering::Relaxed),
        r(Q_PUBLISHED),
    );
    stat(&mut stats, "deliver_get", delivered, r(Q_DELIVERED));
    stat(&mut stats, "deliver", delivered, r(Q_DELIVERED));
    stat(
        &mut stats,
        "ack",
        q.stats.acked.load(Ordering::Relaxed),
        r(Q_ACKED),
    );
    stat(
        &mut stats,
        "redeliver",
        q.stats.redelivered.load(Ordering::Relaxed),
        r(Q_REDELIVERED),
    );
    let capacity = q.consumers().iter().filter(|c| c.has_capacity()).count();
    let utilisation = if consumers == 0 {
        Value::Null
    } else {
        json!(capacity as f64 / consumers as f64)
    };
    let owner = q.exclusive_owner.and_then(|id| {
        state
            .amqp
            .connections
            .list()
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| json!({"name": c.name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()}))
    });
    let mut out = Map::new();
    out.insert("name".into(), q.name.clone().into());
    out.insert("vhost".into(), q.vhost_name.clone().into());
    out.insert("durable".into(), q.durable.into());
    out.insert("auto_delete".into(), q.auto_delete.into());
    out.insert("exclusive".into(), q.exclusive_owner.is_some().into());
    out.insert("arguments".into(), table_to_json(&q.arguments));
    out.insert("node".into(), state.node_name.clone().into());
    out.insert("type".into(), "classic".into());
    out.insert("state".into(), "running".into());
    out.insert("consumers".into(), consumers.into());
    out.insert("consumer_utilisation".into(), utilisation.clone());
    out.insert("consumer_capacity".into(), utilisation);
    stat(
        &mut out,
        "messages",
        (ready + unacked) as u64,
        r(Q_MESSAGES),
    );
    stat(&mut out, "messages_ready", ready as u64, r(Q_READY));
    stat(
        &mut out,
        "messages_unacknowledged",
        unacked as u64,
        r(Q_UNACKED),
    );
    out.insert("message_bytes".into(), ready_bytes.into());
    out.insert("message_bytes_ready".into(), ready_bytes.into());
    out.insert("memory".into(), q.memory_estimate().into());
    out.insert("message_stats".into(), Value::Object(stats));
    out.insert("exclusive_consumer_tag".into(), Value::Null);
    if let Some(o) = owner {
        out.insert("owner_pid_details".into(), o);
    }
    policy_fields(&mut out, &q.applied_policies());
    Value::Object(out)
}

/// An exchange with its publish counters and policy.
pub fn exchange(state: &HttpState, vhost: &str, e: &Exchange) -> Value {
    let key = rates::exchange_key(vhost, &e.name);
    let mut stats = Map::new();
    stat(
        &mut stats,
        "publish_in",
        e.publish_in.load(Ordering::Relaxed),
        state.rates.rate(&key, 0),
    );
    stat(
        &mut stats,
        "publish_out",
        e.publish_out.load(Ordering::Relaxed),
        state.rates.rate(&key, 1),
    );
    let mut out = Map::new();
    out.insert("name".into(), e.name.clone().into());
    out.insert("vhost".into(), vhost.into());
    out.insert("type".into(), e.kind.as_str().into());
    out.insert("durable".into(), e.durable.into());
    out.insert("auto_delete".into(), e.auto_delete.into());
    out.insert("internal".into(), e.internal.into());
    out.insert("arguments".into(), table_to_json(&e.arguments));
    out.insert("user_who_performed_action".into(), "".into());
    out.insert("message_stats".into(), Value::Object(stats));
    policy_fields(&mut out, &e.applied_policies());
    Value::Object(out)
}

/// Percent-encodes all but RFC 3986's unreserved characters, as RabbitMQ does.
pub fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// RabbitMQ's `properties_key`: the routing key, plus `~` and a digest of the
/// arguments when there are any; `~` alone for an empty key without arguments.
pub fn properties_key(routing_key: &str, arguments: &Value) -> String {
    let empty_args = arguments.as_object().is_none_or(|m| m.is_empty());
    let rk = url_encode(routing_key);
    if empty_args {
        if routing_key.is_empty() {
            "~".into()
        } else {
            rk
        }
    } else {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(arguments.to_string().as_bytes());
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]);
        format!("{rk}~{h}")
    }
}

/// A binding from exchange `source`.
pub fn binding(vhost: &str, source: &str, b: &Binding) -> Value {
    let arguments = table_to_json(&b.arguments);
    json!({
        "source": source,
        "vhost": vhost,
        "destination": b.destination.name(),
        "destination_type": b.destination.kind(),
        "routing_key": b.routing_key,
        "arguments": arguments,
        "properties_key": properties_key(&b.routing_key, &arguments),
    })
}

/// Every binding of a vhost (the default exchange's implicit ones included),
/// sorted by source, destination and properties key.
pub fn vhost_bindings(state: &HttpState, vhost: &str) -> Vec<Value> {
    let Some(v) = state.broker.vhost(vhost) else {
        return Vec::new();
    };
    let mut out: Vec<Value> = v
        .bindings()
        .iter()
        .map(|(src, b)| binding(vhost, src, b))
        .collect();
    out.sort_by_key(|b| {
        (
            b["source"].as_str().unwrap_or_default().to_owned(),
            b["destination"].as_str().unwrap_or_default().to_owned(),
            b["properties_key"].as_str().unwrap_or_default().to_owned(),
        )
    });
    out
}

/// A client connection.
pub fn connection(state: &HttpState, c: &ConnectionInfo) -> Value {
    let key = rates::connection_key(c.id);
    let props = table_to_json(&c.client_properties.lock());
    let recv = c.recv_oct.load(Ordering::Relaxed);
    json!({
        "name": c.name,
        "node": state.node_name,
        "user": c.user.lock().clone(),
        "user_who_performed_action": c.user.lock().clone(),
        "vhost": c.vhost.lock().clone(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "channels": c.channels.lock().len(),
        "state": "running",
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": "PLAIN",
        "ssl": c.tls,
        "client_properties": props,
        "connected_at": c.connected_at,
        "recv_oct": recv,
        "recv_oct_details": details(state.rates.rate(&key, 0)),
        "send_oct": 0,
        "send_oct_details": details(0.0),
        "frame_max": state.amqp.config.frame_max,
        "channel_max": state.amqp.config.channel_max,
        "timeout": state.amqp.config.heartbeat,
    })
}

/// A channel of a connection.
pub fn channel(state: &HttpState, c: &ConnectionInfo, number: u16) -> Option<Value> {
    let sink = c.channels.lock().get(&number).cloned()?;
    Some(json!({
        "name": format!("{} ({number})", c.name),
        "number": number,
        "node": state.node_name,
        "user": c.user.lock().clone(),
        "vhost": c.vhost.lock().clone(),
        "connection_details": {
            "name": c.name,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
        },
        "consumer_count": sink.consumers().len(),
        "prefetch_count": sink.prefetch_count.load(Ordering::Relaxed),
        "global_prefetch_count": sink.global_prefetch(),
        "messages_unacknowledged": sink.unacked_len(),
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "confirm": sink.confirm.load(Ordering::Relaxed),
        "transactional": sink.transactional.load(Ordering::Relaxed),
        "state": "running",
    }))
}

/// Every consumer of the broker (or of one vhost).
pub fn consumers(state: &HttpState, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in state.amqp.connections.list() {
        let cvhost = c.vhost.lock().clone();
        if vhost.is_some_and(|v| v != cvhost) {
            continue;
        }
        let channels: Vec<_> = c
            .channels
            .lock()
            .iter()
            .map(|(n, s)| (*n, s.clone()))
            .collect();
        for (number, sink) in channels {
            for (consumer, queue) in sink.consumers() {
                out.push(json!({
                    "consumer_tag": consumer.tag,
                    "queue": {"name": queue.name, "vhost": queue.vhost_name},
                    "channel_details": {
                        "name": format!("{} ({number})", c.name),
                        "number": number,
                        "connection_name": c.name,
                        "peer_host": c.peer.ip().to_string(),
                        "peer_port": c.peer.port(),
                        "user": c.user.lock().clone(),
                        "node": state.node_name,
                    },
                    "ack_required": !consumer.no_ack,
                    "prefetch_count": consumer.prefetch,
                    "exclusive": consumer.exclusive,
                    "active": true,
                    "activity_status": if consumer.priority < 0 { "waiting" } else { "up" },
                    "priority": consumer.priority,
                    "arguments": if consumer.priority != 0 { json!({"x-priority": consumer.priority}) } else { json!({}) },
                }));
            }
        }
    }
    out
}

/// Renders a header or property value table for `queues/get`.
pub fn properties_json(p: &ferrymq_broker::amq_protocol::protocol::basic::AMQPProperties) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(k.into(), v);
        }
    };
    put(
        "content_type",
        p.content_type().as_ref().map(|s| s.as_str().into()),
    );
    put(
        "content_encoding",
        p.content_encoding().as_ref().map(|s| s.as_str().into()),
    );
    put("headers", p.headers().as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode().map(Value::from));
    put("priority", p.priority().map(Value::from));
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| s.as_str().into()),
    );
    put("reply_to", p.reply_to().as_ref().map(|s| s.as_str().into()));
    put(
        "expiration",
        p.expiration().as_ref().map(|s| s.as_str().into()),
    );
    put(
        "message_id",
        p.message_id().as_ref().map(|s| s.as_str().into()),
    );
    put("timestamp", p.timestamp().map(Value::from));
    put("type", p.kind().as_ref().map(|s| s.as_str().into()));
    put("user_id", p.user_id().as_ref().map(|s| s.as_str().into()));
    put("app_id", p.app_id().as_ref().map(|s| s.as_str().into()));
    put(
        "cluster_id",
        p.cluster_id().as_ref().map(|s| s.as_str().into()),
    );
    Value::Object(out)
}

/// One sampling pass over queues, exchanges, connections and the totals.
pub fn sample_rates(state: &HttpState) {
    let mut sample = Sample::default();
    let (mut published, mut delivered, mut acked) = (0u64, 0u64, 0u64);
    for v in state.broker.vhosts() {
        for q in v.queues() {
            let (ready, unacked, _, _) = q.counts();
            let s = &q.stats;
            let p = s.published.load(Ordering::Relaxed);
            let d = s.delivered.load(Ordering::Relaxed);
            let a = s.acked.load(Ordering::Relaxed);
            published += p;
            delivered += d;
            acked += a;
            let mut values = vec![0; 7];
            values[Q_PUBLISHED] = p;
            values[Q_DELIVERED] = d;
            values[Q_ACKED] = a;
            values[Q_REDELIVERED] = s.redelivered.load(Ordering::Relaxed);
            values[Q_MESSAGES] = (ready + unacked) as u64;
            values[Q_READY] = ready as u64;
            values[Q_UNACKED] = unacked as u64;
            sample.observe(rates::queue_key(&v.name, &q.name), values);
        }
        for e in v.exchanges() {
            sample.observe(
                rates::exchange_key(&v.name, &e.name),
                vec![
                    e.publish_in.load(Ordering::Relaxed),
                    e.publish_out.load(Ordering::Relaxed),
                ],
            );
        }
    }
    for c in state.amqp.connections.list() {
        sample.observe(
            rates::connection_key(c.id),
            vec![c.recv_oct.load(Ordering::Relaxed)],
        );
    }
    sample.observe(
        rates::OVERVIEW_KEY.into(),
        vec![published, delivered, acked],
    );
    state.rates.record(sample);
}
