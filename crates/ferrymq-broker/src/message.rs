//! Messages as they travel from a publisher through exchanges into queues.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use bytes::Bytes;
use std::time::Instant;

/// A published message. Shared (`Arc`) between every queue it was routed to.
///
/// The encoded properties are kept exactly as the publisher sent them so that
/// delivery writes them back without re-encoding: the hot path never pays for
/// property serialisation.
#[derive(Debug)]
pub struct Message {
    /// Exchange the message was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Decoded properties, for routing decisions (headers, TTL, priority).
    pub properties: AMQPProperties,
    /// Wire encoding of `properties` (property flags + property list).
    pub raw_properties: Bytes,
    /// The content body.
    pub body: Bytes,
    /// When the broker received it (per-message TTL counts from here).
    pub received_at: Instant,
}

impl Message {
    /// Builds a message from decoded properties, encoding them once for delivery.
    pub fn new(
        exchange: String,
        routing_key: String,
        properties: AMQPProperties,
        body: Bytes,
    ) -> Self {
        let raw_properties = encode_properties(&properties);
        Message {
            exchange,
            routing_key,
            properties,
            raw_properties,
            body,
            received_at: Instant::now(),
        }
    }

    /// Whether the publisher asked for the message to be stored on disk.
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode() == &Some(2)
    }

    /// Body size in bytes.
    pub fn size(&self) -> usize {
        self.body.len()
    }

    /// The per-message TTL from the `expiration` property, in milliseconds.
    pub fn expiration_ms(&self) -> Option<u64> {
        self.properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok())
    }

    /// Message priority, 0 when unset.
    pub fn priority(&self) -> u8 {
        self.properties.priority().unwrap_or(0)
    }
}

/// Encodes basic properties as they appear in a content header after the body size.
pub fn encode_properties(properties: &AMQPProperties) -> Bytes {
    let buf = Vec::with_capacity(64);
    match gen_properties(properties)(WriteContext::from(buf)) {
        Ok(ctx) => Bytes::from(ctx.into_inner().0),
        // Serialising into a Vec cannot run out of space; keep an empty property list.
        Err(_) => Bytes::from_static(&[0, 0]),
    }
}

/// A message sitting in one queue, with that queue's view of it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The shared message.
    pub message: std::sync::Arc<Message>,
    /// Position in the queue; requeued messages go back in this order.
    pub seq: u64,
    /// Set once the message has been delivered and returned.
    pub redelivered: bool,
    /// When the message expires in this queue, if it has a TTL.
    pub expires_at: Option<Instant>,
    /// How many times this queue delivered the message (for x-delivery-count style limits).
    pub delivery_count: u32,
    /// Where the queue's store keeps it, if the queue is durable.
    pub loc: Option<crate::store::Loc>,
}
