//! What a link shows: its state, the last error, when it was established, and
//! counters. Unlike RabbitMQ, a paused link says so, and a failing link stays in
//! the list with its error while it retries.

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connecting to the upstream.
    Starting,
    /// Consuming from the upstream.
    Running,
    /// Connected, not consuming: no local demand.
    Paused,
    /// Stopped (policy, upstream or queue removed).
    Stopped,
    /// The last attempt failed; retrying after the reconnect delay.
    Error,
}

impl State {
    /// The API's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Error => "error",
        }
    }
}

/// "YYYY-MM-DD HH:MM:SS" (UTC), RabbitMQ's timestamp format in this API.
pub fn timestamp_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct Mutable {
    state: State,
    error: Option<String>,
    changed_at: String,
    established_at: Option<String>,
    uri: String,
    upstream_side: Option<UpstreamSide>,
}

/// The upstream queue as the link last saw it (a passive declare every few seconds).
#[derive(Debug, Clone, Copy)]
struct UpstreamSide {
    at: std::time::Instant,
    messages: u64,
    /// Consumers other than the link itself.
    consumers: u64,
    received: u64,
    /// Messages per second arriving upstream, estimated from the change in depth
    /// plus what the link received meanwhile: a producer still publishing there shows here.
    inflow_rate: Option<f64>,
}

/// The live status of one queue link.
pub struct LinkStatus {
    /// Link id (stable for vhost, queue and upstream).
    pub id: String,
    /// Vhost of the local queue.
    pub vhost: String,
    /// Local queue.
    pub queue: String,
    /// Upstream name.
    pub upstream: String,
    /// Queue consumed on the upstream.
    pub upstream_queue: String,
    /// Consumer tag on the upstream.
    pub consumer_tag: String,
    /// Acknowledgement mode.
    pub ack_mode: &'static str,
    /// Messages moved into the local queue.
    pub transferred: AtomicU64,
    /// Redeliveries dropped because the message was already stored.
    pub duplicates: AtomicU64,
    /// Reconnections after a failure.
    pub reconnects: AtomicU64,
    /// Messages refused because they already visited this queue.
    pub loops_refused: AtomicU64,
    /// Times the link stopped consuming for lack of local demand.
    pub pauses: AtomicU64,
    /// Deliveries received from the upstream (duplicates and redeliveries included):
    /// with the upstream depth, tells how much still arrives there.
    pub received: AtomicU64,
    inner: Mutex<Mutable>,
}

impl LinkStatus {
    /// A link that is starting.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        vhost: &str,
        queue: &str,
        upstream: &str,
        upstream_queue: &str,
        consumer_tag: String,
        ack_mode: &'static str,
        uri: String,
    ) -> Self {
        LinkStatus {
            id,
            vhost: vhost.into(),
            queue: queue.into(),
            upstream: upstream.into(),
            upstream_queue: upstream_queue.into(),
            consumer_tag,
            ack_mode,
            transferred: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            loops_refused: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            received: AtomicU64::new(0),
            inner: Mutex::new(Mutable {
                state: State::Starting,
                error: None,
                changed_at: timestamp_now(),
                established_at: None,
                uri,
                upstream_side: None,
            }),
        }
    }

    /// Moves to `state` (an error text only with `State::Error`).
    pub fn set(&self, state: State, error: Option<String>) {
        let mut m = self.inner.lock();
        if m.state == state && m.error == error {
            return;
        }
        m.state = state;
        m.error = error;
        m.changed_at = timestamp_now();
    }

    /// Records a new connection to `uri` (redacted).
    pub fn established(&self, uri: String) {
        let mut m = self.inner.lock();
        m.uri = uri;
        m.established_at = Some(timestamp_now());
    }

    /// Records a probe of the upstream queue: its depth and consumers (the link's own
    /// consumer already subtracted).
    pub fn probed_upstream(&self, messages: u64, consumers: u64) {
        let now = std::time::Instant::now();
        let received = self.received.load(Ordering::Relaxed);
        let mut m = self.inner.lock();
        let inflow_rate = m.upstream_side.and_then(|prev| {
            let secs = now.duration_since(prev.at).as_secs_f64();
            (secs > 0.5).then(|| {
                let arrived = (messages as f64 - prev.messages as f64)
                    + received.saturating_sub(prev.received) as f64;
                (arrived.max(0.0) / secs * 10.0).round() / 10.0
            })
        });
        m.upstream_side = Some(UpstreamSide {
            at: now,
            messages,
            consumers,
            received,
            inflow_rate,
        });
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.lock().state
    }

    /// The JSON shape of `/api/federation-links` (RabbitMQ's fields plus FerryMQ's).
    pub fn to_json(&self, node: &str) -> Value {
        let m = self.inner.lock();
        let mut v = json!({
            "node": node,
            "id": self.id,
            "vhost": self.vhost,
            "type": "queue",
            "queue": self.queue,
            "upstream": self.upstream,
            "upstream_queue": self.upstream_queue,
            "consumer_tag": self.consumer_tag,
            "ack_mode": self.ack_mode,
            "uri": m.uri,
            "status": m.state.as_str(),
            "timestamp": m.changed_at,
            "established_at": m.established_at,
            "messages_transferred": self.transferred.load(Ordering::Relaxed),
            "duplicates_dropped": self.duplicates.load(Ordering::Relaxed),
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "loops_refused": self.loops_refused.load(Ordering::Relaxed),
            "pauses": self.pauses.load(Ordering::Relaxed),
        });
        if let Some(e) = &m.error {
            v["error"] = e.clone().into();
        }
        if let Some(up) = &m.upstream_side {
            v["upstream_messages"] = up.messages.into();
            v["upstream_consumers"] = up.consumers.into();
            v["upstream_inflow_rate"] = up.inflow_rate.into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let t = timestamp_now();
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }
}
