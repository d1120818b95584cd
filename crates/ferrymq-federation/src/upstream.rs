//! Federation upstreams (component `federation-upstream`) and upstream sets
//! (component `federation-upstream-set`): parsing, defaults and validation.
//! The parameter value is kept verbatim by the broker; links read the parsed form.

use ferrymq_client::AmqpUri;
use serde_json::{Map, Value};

/// When the upstream message is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After the message is safely stored downstream (on disk for a persistent
    /// message in a durable queue): no loss on a crash of either side.
    OnConfirm,
    /// After the local enqueue, before any fsync: a downstream crash can lose
    /// what was acked but not yet written.
    OnPublish,
    /// Consumed without acknowledgements: a cut link loses what was in flight.
    NoAck,
}

impl AckMode {
    /// The parameter's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            AckMode::OnConfirm => "on-confirm",
            AckMode::OnPublish => "on-publish",
            AckMode::NoAck => "no-ack",
        }
    }
}

/// One upstream's settings, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Upstream name.
    pub name: String,
    /// URIs, tried in turn.
    pub uris: Vec<AmqpUri>,
    /// Unacknowledged messages the link may hold (basic.qos).
    pub prefetch_count: u16,
    /// Seconds to wait before reconnecting (doubled on repeated failures, at most 60 s).
    pub reconnect_delay: f64,
    /// Acknowledgement mode.
    pub ack_mode: AckMode,
    /// Upstream queue name (default: the local queue's name).
    pub queue: Option<String>,
    /// Consumer tag on the upstream (default `federation-link-<upstream>`).
    pub consumer_tag: Option<String>,
    /// Hops a message may make (kept for exchange federation; queues use the loop rule).
    pub max_hops: u32,
    /// Accepted for compatibility; FerryMQ's queue links do not inspect user-id.
    pub trust_user_id: bool,
}

/// Keys of an upstream value; RabbitMQ's exchange-federation keys are accepted and kept.
const KEYS: &[&str] = &[
    "uri",
    "prefetch-count",
    "reconnect-delay",
    "ack-mode",
    "queue",
    "exchange",
    "consumer-tag",
    "max-hops",
    "expires",
    "message-ttl",
    "trust-user-id",
    "ha-policy",
    "bind-nowait",
    "channel-use-mode",
    "queue-type",
    "resource-cleanup-mode",
];

fn non_negative_int(v: &Value, key: &str) -> Result<u64, String> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{key} must be a non-negative integer, not {v}"))
}

impl Upstream {
    /// Parses an upstream parameter value (with set overrides already merged in).
    pub fn parse(name: &str, value: &Value) -> Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| "the value must be a JSON object".to_string())?;
        for key in obj.keys() {
            if !KEYS.contains(&key.as_str()) && key != "upstream" {
                return Err(format!("unknown key '{key}'"));
            }
        }
        let uris: Vec<String> = match obj.get("uri") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|u| {
                    u.as_str()
                        .map(String::from)
                        .ok_or("uri list must hold strings")
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "uri must be a string or a non-empty list, not {other}"
                ))
            }
            None => return Err("uri is required".into()),
        };
        let uris = uris
            .iter()
            .map(|u| {
                // Never echo a password back: say which URI by its redacted form.
                AmqpUri::parse(u).map_err(|e| {
                    let shown = u.rsplit_once('@').map(|(_, h)| h).unwrap_or(u);
                    let why = e.to_string();
                    let why = why.rsplit(": ").next().unwrap_or_default();
                    format!("invalid uri '…@{shown}': {why}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prefetch_count = match obj.get("prefetch-count") {
            None => 1000,
            Some(v) => {
                let n = v
                    .as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| format!("prefetch-count must be an integer, not {v}"))?;
                if !(1..=65535).contains(&n) {
                    return Err(format!(
                        "prefetch-count must be between 1 and 65535, not {n}"
                    ));
                }
                n as u16
            }
        };
        let reconnect_delay = match obj.get("reconnect-delay") {
            None => 1.0,
            Some(v) => {
                let d = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        format!("reconnect-delay must be a number of seconds, not {v}")
                    })?;
                if !(0.0..=3600.0).contains(&d) {
                    return Err(format!(
                        "reconnect-delay must be between 0 and 3600 seconds, not {d}"
                    ));
                }
                d
            }
        };
        let ack_mode = match obj.get("ack-mode").map(|v| v.as_str()) {
            None | Some(Some("on-confirm")) => AckMode::OnConfirm,
            Some(Some("on-publish")) => AckMode::OnPublish,
            Some(Some("no-ack")) => AckMode::NoAck,
            Some(other) => {
                return Err(format!(
                    "ack-mode must be on-confirm, on-publish or no-ack, not {}",
                    other
                        .map(String::from)
                        .unwrap_or_else(|| obj["ack-mode"].to_string())
                ))
            }
        };
        let string = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(v) => Err(format!("{key} must be a non-empty string, not {v}")),
            }
        };
        let queue = string("queue")?;
        let consumer_tag = string("consumer-tag")?;
        for (key, value) in [("queue", &queue), ("consumer-tag", &consumer_tag)] {
            if value.as_ref().is_some_and(|v| v.len() > 255) {
                return Err(format!("{key} must be at most 255 bytes"));
            }
        }
        string("exchange")?;
        let max_hops = match obj.get("max-hops") {
            None => 1,
            Some(v) => {
                let n = non_negative_int(v, "max-hops")?;
                if n == 0 {
                    return Err("max-hops must be at least 1".into());
                }
                n as u32
            }
        };
        for key in ["expires", "message-ttl"] {
            if let Some(v) = obj.get(key) {
                non_negative_int(v, key)?;
            }
        }
        let trust_user_id = match obj.get("trust-user-id") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(format!("trust-user-id must be a boolean, not {v}")),
        };
        Ok(Upstream {
            name: name.to_owned(),
            uris,
            prefetch_count,
            reconnect_delay,
            ack_mode,
            queue,
            consumer_tag,
            max_hops,
            trust_user_id,
        })
    }

    /// The consumer tag used on the upstream.
    pub fn tag(&self) -> String {
        self.consumer_tag
            .clone()
            .unwrap_or_else(|| format!("federation-link-{}", self.name))
    }
}

/// Validates an upstream set: a list of `{"upstream": NAME, ...overrides}`.
pub fn validate_set(value: &Value) -> Result<(), String> {
    let list = value.as_array().ok_or_else(|| {
        "an upstream set must be a list of {\"upstream\": name} objects".to_string()
    })?;
    for (i, member) in list.iter().enumerate() {
        let obj = member
            .as_object()
            .ok_or_else(|| format!("member {i} must be an object"))?;
        match obj.get("upstream") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(format!("member {i} needs an \"upstream\" name")),
        }
        for key in obj.keys() {
            if key != "upstream" && !KEYS.contains(&key.as_str()) {
                return Err(format!("member {i}: unknown key '{key}'"));
            }
        }
    }
    Ok(())
}

/// An upstream value with a set member's overrides applied on top.
pub fn merged(upstream: &Value, overrides: &Map<String, Value>) -> Value {
    let mut out = upstream.as_object().cloned().unwrap_or_default();
    for (k, v) in overrides {
        if k != "upstream" {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let u = Upstream::parse("up", &json!({"uri": "amqp://h"})).unwrap();
        assert_eq!(u.prefetch_count, 1000);
        assert_eq!(u.reconnect_delay, 1.0);
        assert_eq!(u.ack_mode, AckMode::OnConfirm);
        assert_eq!(u.max_hops, 1);
        assert_eq!(u.tag(), "federation-link-up");
        let u = Upstream::parse(
            "up",
            &json!({"uri": ["amqp://a", "amqps://b"], "ack-mode": "no-ack", "consumer-tag": "t", "prefetch-count": 5}),
        )
        .unwrap();
        assert_eq!(u.uris.len(), 2);
        assert_eq!(u.tag(), "t");
    }

    #[test]
    fn rejects_bad_values_without_echoing_passwords() {
        for (v, needle) in [
            (json!({}), "uri is required"),
            (json!({"uri": "http://x"}), "invalid uri"),
            (
                json!({"uri": "amqp://h", "ack-mode": "sometimes"}),
                "ack-mode",
            ),
            (
                json!({"uri": "amqp://h", "prefetch-count": -1}),
                "prefetch-count",
            ),
            (
                json!({"uri": "amqp://h", "reconnect-delay": "soon"}),
                "reconnect-delay",
            ),
            (json!({"uri": "amqp://h", "bogus": 1}), "unknown key"),
        ] {
            let e = Upstream::parse("u", &v).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let e =
            Upstream::parse("u", &json!({"uri": "amqp://user:hunter2@h:notaport"})).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn sets() {
        assert!(
            validate_set(&json!([{"upstream": "a"}, {"upstream": "b", "prefetch-count": 10}]))
                .is_ok()
        );
        assert!(validate_set(&json!([{"prefetch-count": 10}])).is_err());
        assert!(validate_set(&json!({"upstream": "a"})).is_err());
        let m = merged(
            &json!({"uri": "amqp://h", "prefetch-count": 1}),
            json!({"upstream": "a", "prefetch-count": 9})
                .as_object()
                .unwrap(),
        );
        assert_eq!(m, json!({"uri": "amqp://h", "prefetch-count": 9}));
    }
}
