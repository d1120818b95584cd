//! Messages as they travel from a publisher through exchanges into queues.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::types::FieldTable;
use bytes::Bytes;
use std::sync::OnceLock;
use std::time::Instant;

/// A published message. Shared (`Arc`) between every queue it was routed to.
///
/// The encoded properties are kept exactly as the publisher sent them, so
/// delivery writes them back without re-encoding. Only the fields routing and
/// queues need on every message (delivery mode, priority, expiration) are read
/// eagerly; the full property set is decoded on first use (headers exchanges,
/// dead-lettering), which keeps a queued message small.
#[derive(Debug)]
pub struct Message {
    /// Exchange the message was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Wire encoding of the properties (property flags + property list).
    pub raw_properties: Bytes,
    /// The content body.
    pub body: Bytes,
    /// When the broker received it (per-message TTL counts from here).
    pub received_at: Instant,
    hot: Hot,
    decoded: OnceLock<Box<AMQPProperties>>,
}

/// Property fields read on every message.
#[derive(Debug, Clone, Copy, Default)]
struct Hot {
    delivery_mode: u8,
    priority: u8,
    expiration_ms: Option<u64>,
    has_headers: bool,
    has_user_id: bool,
    has_reply_to: bool,
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
        let hot = scan_properties(&raw_properties).unwrap_or_default();
        Message {
            exchange,
            routing_key,
            raw_properties,
            body,
            received_at: Instant::now(),
            hot,
            decoded: OnceLock::from(Box::new(properties)),
        }
    }

    /// Builds a message from properties as received on the wire; `None` if they are malformed.
    pub fn from_wire(
        exchange: String,
        routing_key: String,
        raw_properties: Bytes,
        body: Bytes,
        received_at: Instant,
    ) -> Option<Self> {
        let hot = scan_properties(&raw_properties)?;
        Some(Message {
            exchange,
            routing_key,
            raw_properties,
            body,
            received_at,
            hot,
            decoded: OnceLock::new(),
        })
    }

    /// The decoded properties (decoded on first use).
    pub fn properties(&self) -> &AMQPProperties {
        self.decoded.get_or_init(|| {
            Box::new(
                parse_properties(&self.raw_properties[..])
                    .map(|(_, p)| p)
                    .unwrap_or_default(),
            )
        })
    }

    /// The headers table, decoding properties only if the message has headers.
    pub fn headers(&self) -> Option<&FieldTable> {
        if self.hot.has_headers {
            self.properties().headers().as_ref()
        } else {
            None
        }
    }

    /// Whether the `user-id` property is set.
    pub fn has_user_id(&self) -> bool {
        self.hot.has_user_id
    }

    /// Whether the `reply-to` property is set.
    pub fn has_reply_to(&self) -> bool {
        self.hot.has_reply_to
    }

    /// Whether the publisher asked for the message to be stored on disk.
    pub fn is_persistent(&self) -> bool {
        self.hot.delivery_mode == 2
    }

    /// Body size in bytes.
    pub fn size(&self) -> usize {
        self.body.len()
    }

    /// The per-message TTL from the `expiration` property, in milliseconds.
    pub fn expiration_ms(&self) -> Option<u64> {
        self.hot.expiration_ms
    }

    /// Message priority, 0 when unset.
    pub fn priority(&self) -> u8 {
        self.hot.priority
    }
}

/// Reads the hot fields and checks the layout of a wire property list without
/// allocating. `None` when the list is malformed.
fn scan_properties(p: &[u8]) -> Option<Hot> {
    let flags = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    if flags & 1 != 0 {
        // A continuation flag word: basic has no such properties; treat as malformed.
        return None;
    }
    let mut at = 2usize;
    let mut hot = Hot::default();
    let short_str = |at: &mut usize| -> Option<&[u8]> {
        let n = *p.get(*at)? as usize;
        let s = p.get(*at + 1..*at + 1 + n)?;
        *at += 1 + n;
        Some(s)
    };
    let bit = |n: u16| flags & (1 << n) != 0;
    if bit(15) {
        short_str(&mut at)?; // content-type
    }
    if bit(14) {
        short_str(&mut at)?; // content-encoding
    }
    if bit(13) {
        let n = u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
        p.get(at + 4..at + 4 + n)?;
        at += 4 + n;
        hot.has_headers = true;
    }
    if bit(12) {
        hot.delivery_mode = *p.get(at)?;
        at += 1;
    }
    if bit(11) {
        hot.priority = *p.get(at)?;
        at += 1;
    }
    if bit(10) {
        short_str(&mut at)?; // correlation-id
    }
    if bit(9) {
        short_str(&mut at)?;
        hot.has_reply_to = true;
    }
    if bit(8) {
        let e = short_str(&mut at)?;
        hot.expiration_ms = std::str::from_utf8(e).ok().and_then(|s| s.parse().ok());
    }
    if bit(7) {
        short_str(&mut at)?; // message-id
    }
    if bit(6) {
        p.get(at..at + 8)?; // timestamp
        at += 8;
    }
    if bit(5) {
        short_str(&mut at)?; // type
    }
    if bit(4) {
        short_str(&mut at)?;
        hot.has_user_id = true;
    }
    if bit(3) {
        short_str(&mut at)?; // app-id
    }
    if bit(2) {
        short_str(&mut at)?; // cluster-id
    }
    (at == p.len()).then_some(hot)
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

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn hot_fields_match_full_decode() {
        let mut h = FieldTable::default();
        h.insert("k".into(), AMQPValue::LongInt(1));
        let props = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(7)
            .with_reply_to("r".into())
            .with_expiration("1500".into())
            .with_timestamp(5)
            .with_user_id("u".into())
            .with_cluster_id("c".into());
        let raw = encode_properties(&props);
        let m = Message::from_wire(
            "".into(),
            "q".into(),
            raw.clone(),
            Bytes::new(),
            Instant::now(),
        )
        .unwrap();
        assert!(m.is_persistent());
        assert_eq!(m.priority(), 7);
        assert_eq!(m.expiration_ms(), Some(1500));
        assert!(m.has_user_id() && m.has_reply_to());
        assert_eq!(m.properties(), &props);
        assert!(Message::from_wire(
            "".into(),
            "q".into(),
            raw.slice(..raw.len() - 1),
            Bytes::new(),
            Instant::now()
        )
        .is_none());
        let empty = encode_properties(&AMQPProperties::default());
        let m =
            Message::from_wire("".into(), "q".into(), empty, Bytes::new(), Instant::now()).unwrap();
        assert!(!m.is_persistent() && m.headers().is_none());
    }
}
