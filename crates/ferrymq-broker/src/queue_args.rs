//! Queue arguments (`x-message-ttl`, `x-max-length`, …): parsing and validation.

use crate::args::{as_bool, as_i64, as_string, type_name};
use crate::error::{AmqpError, Result};
use amq_protocol::types::{AMQPValue, FieldTable};

/// What happens when a queue is at its length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest message.
    #[default]
    DropHead,
    /// Refuse the new message (publisher gets a nack).
    RejectPublish,
    /// Refuse and dead-letter the new message.
    RejectPublishDlx,
}

impl Overflow {
    /// Parses RabbitMQ's overflow names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "drop-head" => Some(Self::DropHead),
            "reject-publish" => Some(Self::RejectPublish),
            "reject-publish-dlx" => Some(Self::RejectPublishDlx),
            _ => None,
        }
    }
    /// RabbitMQ's name for the mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DropHead => "drop-head",
            Self::RejectPublish => "reject-publish",
            Self::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// The queue features selected by declare arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-message-ttl` in ms.
    pub message_ttl: Option<u64>,
    /// `x-expires` in ms: delete the queue after this long unused.
    pub expires: Option<u64>,
    /// `x-max-length`: ready messages kept at most.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: ready body bytes kept at most.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// Whether `x-overflow` was declared (a declared mode wins over a policy's).
    pub overflow_declared: bool,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority`.
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
}

impl QueueArgs {
    /// Parses and validates declare arguments; errors are 406 with RabbitMQ-like text.
    pub fn parse(table: &FieldTable, queue: &str, vhost: &str) -> Result<Self> {
        let mut args = QueueArgs::default();
        for (key, value) in table.inner() {
            let key = key.as_str();
            let invalid = |why: String| {
                AmqpError::precondition_failed(format!(
                    "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
                ))
            };
            let non_negative = |v: &AMQPValue| -> Result<u64> {
                match as_i64(v) {
                    Some(n) if n >= 0 => Ok(n as u64),
                    Some(n) => Err(invalid(format!("{{value_negative,{n}}}"))),
                    None => Err(invalid(format!("{{unacceptable_type,{}}}", type_name(v)))),
                }
            };
            match key {
                "x-message-ttl" => args.message_ttl = Some(non_negative(value)?),
                "x-expires" => {
                    let n = non_negative(value)?;
                    if n == 0 {
                        return Err(invalid("{value_zero,0}".into()));
                    }
                    args.expires = Some(n);
                }
                "x-max-length" => args.max_length = Some(non_negative(value)?),
                "x-max-length-bytes" => args.max_length_bytes = Some(non_negative(value)?),
                "x-overflow" => {
                    let s = as_string(value).ok_or_else(|| {
                        invalid(format!("{{unacceptable_type,{}}}", type_name(value)))
                    })?;
                    args.overflow = Overflow::parse(&s)
                        .ok_or_else(|| invalid(format!("{{unknown_overflow_type,<<\"{s}\">>}}")))?;
                    args.overflow_declared = true;
                }
                "x-dead-letter-exchange" => {
                    args.dead_letter_exchange = Some(as_string(value).ok_or_else(|| {
                        invalid(format!("{{unacceptable_type,{}}}", type_name(value)))
                    })?)
                }
                "x-dead-letter-routing-key" => {
                    args.dead_letter_routing_key = Some(as_string(value).ok_or_else(|| {
                        invalid(format!("{{unacceptable_type,{}}}", type_name(value)))
                    })?)
                }
                "x-max-priority" => {
                    let n = non_negative(value)?;
                    if n > 255 {
                        return Err(invalid(format!("{{value_too_large,{n}}}")));
                    }
                    args.max_priority = Some(n as u8);
                }
                "x-single-active-consumer" => {
                    args.single_active_consumer = as_bool(value).ok_or_else(|| {
                        invalid(format!("{{unacceptable_type,{}}}", type_name(value)))
                    })?
                }
                "x-queue-type" => {
                    let s = as_string(value).unwrap_or_default();
                    // Quorum and stream queues are accepted as durable classic queues so
                    // that definitions from RabbitMQ clusters import unchanged.
                    if !matches!(s.as_str(), "classic" | "quorum" | "stream") {
                        return Err(invalid(format!("{{unsupported_queue_type,<<\"{s}\">>}}")));
                    }
                }
                _ => {}
            }
        }
        if args.dead_letter_routing_key.is_some() && args.dead_letter_exchange.is_none() {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'x-dead-letter-routing-key' for queue '{queue}' in vhost '{vhost}': Key x-dead-letter-exchange should be set as well"
            )));
        }
        Ok(args)
    }
}

/// Argument keys whose values must be equal when a queue is redeclared.
pub const EQUIVALENCE_KEYS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-queue-type",
];
