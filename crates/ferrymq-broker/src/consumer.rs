//! Consumers as queues see them, and the sink through which queues hand out messages.

use crate::message::QueuedMessage;
use crate::queue::Queue;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The receiving side of deliveries: an AMQP channel, or an internal client.
///
/// Queues call these methods while holding their own lock, so an implementation
/// must never call back into a queue from them (lock order: queue → sink).
pub trait DeliverySink: Send + Sync {
    /// Whether the channel as a whole can take another message now
    /// (flow on, global prefetch not reached, socket buffer not full).
    fn can_deliver(&self) -> bool;
    /// Takes one message for `consumer`. Called only after `can_deliver`.
    fn deliver(&self, queue: &Arc<Queue>, consumer: &Arc<Consumer>, message: QueuedMessage);
    /// The broker cancelled the consumer (queue deleted, …).
    fn cancelled(&self, consumer: &Arc<Consumer>);
}

/// One `basic.consume` subscription on a queue.
pub struct Consumer {
    /// Consumer tag, unique per channel.
    pub tag: String,
    /// Where deliveries go.
    pub sink: Arc<dyn DeliverySink>,
    /// `x-priority`: higher priorities are served first while they have capacity.
    pub priority: i32,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// The consumer asked for exclusive access to the queue.
    pub exclusive: bool,
    /// Per-consumer prefetch limit (0 = unlimited).
    pub prefetch: u32,
    /// Deliveries not yet acknowledged.
    pub unacked: AtomicU32,
    /// Connection the consumer belongs to (for management listings).
    pub connection_id: u64,
    /// Channel number within the connection.
    pub channel_id: u16,
    /// Deliveries carry the message's identity in an `x-ferrymq-id` header
    /// (asked for with the consume argument `x-ferrymq-identity`; federation links
    /// use it to drop redeliveries they already stored).
    pub stamp_identity: bool,
}

/// Header that carries a message identity to consumers that asked for it.
pub const IDENTITY_HEADER: &str = "x-ferrymq-id";

/// A message's identity: the queue's incarnation (16 hex digits), `-`, and the
/// message's sequence number in decimal. Formatted on the stack: it is stamped on
/// every delivery to a federation link.
pub struct Identity {
    buf: [u8; 40],
    len: usize,
}

impl Identity {
    /// The identity of message `seq` of the queue incarnation `incarnation`.
    pub fn new(incarnation: u64, seq: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 40];
        for (i, b) in buf[..16].iter_mut().enumerate() {
            *b = HEX[((incarnation >> (60 - 4 * i)) & 0xf) as usize];
        }
        buf[16] = b'-';
        let mut digits = [0u8; 20];
        let mut n = seq;
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..count {
            buf[17 + i] = digits[count - 1 - i];
        }
        Identity {
            buf,
            len: 17 + count,
        }
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ASCII digits")
    }
}

impl Consumer {
    /// Whether this consumer can take one more message right now.
    pub fn has_capacity(&self) -> bool {
        (self.no_ack || self.prefetch == 0 || self.unacked.load(Ordering::Relaxed) < self.prefetch)
            && self.sink.can_deliver()
    }

    /// Records that `n` deliveries were acknowledged, rejected or returned.
    pub fn settled(&self, n: u32) {
        let _ = self
            .unacked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Consumer({})", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::Identity;

    #[test]
    fn identity_text_matches_the_formatted_form() {
        for (inc, seq) in [
            (0u64, 0u64),
            (0xdead_beef, 7),
            (u64::MAX, u64::MAX),
            (1, 1_000_000),
        ] {
            assert_eq!(
                Identity::new(inc, seq).as_str(),
                format!("{inc:016x}-{seq}")
            );
        }
    }
}
