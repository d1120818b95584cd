//! The duplicate-removal window of a link: identities of messages already stored
//! downstream (FerryMQ's `x-ferrymq-id` from a FerryMQ upstream, `message-id`
//! from others), kept as 64-bit digests.
//!
//! The window lives in memory. Its durable copy is the local queue's store: a
//! durable queue writes a federated message's digest in the message's own record
//! (see `QueueStore::append_identified`) and moves it to its ack log when the
//! record's segment is deleted, and a link starts with the newest digests of both.
//! So a message already consumed has its identity on disk, and the upstream's
//! redelivery after a crash is dropped. The upstream ack waits only for the
//! record's sync round.
//!
//! Only redeliveries of unacknowledged messages can come back, at most the
//! prefetch count, so a window of a few hundred thousand suffices. Most
//! deliveries are first deliveries that need no lookup, so the hash set is built
//! on the first lookup and dropped again after a long run without one: the
//! common path is one push onto a ring.

use siphasher::sip::SipHasher13;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Digests are hashes already: the set uses them as they are.
#[derive(Default)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Digest → copies in the ring (an application may reuse a `message-id`).
type DigestCounts = HashMap<u64, u32, BuildHasherDefault<Passthrough>>;

/// Bounded set of recent message identities.
pub struct DedupWindow {
    capacity: usize,
    order: VecDeque<u64>,
    /// Index over `order`, present while lookups happen.
    set: Option<DigestCounts>,
    /// Digests remembered since the last lookup (the index is dropped past `capacity`).
    since_lookup: usize,
}

/// The 64-bit digest an identity is stored as: SipHash-1-3 with zero keys over the
/// text and a 0xff byte. Digests outlive the process (in records and ack logs), so
/// the algorithm is pinned here rather than taken from `std`'s `DefaultHasher`, whose
/// algorithm may change between Rust releases. The values are those `DefaultHasher`
/// gave when earlier builds stored them.
pub fn digest(identity: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(0, 0);
    h.write(identity.as_bytes());
    h.write_u8(0xff);
    h.finish()
}

impl DedupWindow {
    /// An empty window holding at most `capacity` identities.
    pub fn new(capacity: usize) -> Self {
        DedupWindow {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: None,
            since_lookup: 0,
        }
    }

    /// Whether an identity was stored already.
    pub fn contains(&mut self, identity: &str) -> bool {
        self.contains_digest(digest(identity))
    }

    /// [`DedupWindow::contains`] for a digest computed earlier.
    pub fn contains_digest(&mut self, d: u64) -> bool {
        self.since_lookup = 0;
        let order = &self.order;
        self.set
            .get_or_insert_with(|| {
                let mut counts = DigestCounts::default();
                for d in order {
                    *counts.entry(*d).or_default() += 1;
                }
                counts
            })
            .contains_key(&d)
    }

    /// Records an identity.
    pub fn insert(&mut self, identity: &str) {
        self.insert_digest(digest(identity));
    }

    /// [`DedupWindow::insert`] for a digest computed earlier.
    pub fn insert_digest(&mut self, d: u64) {
        if let Some(set) = &mut self.set {
            *set.entry(d).or_default() += 1;
        }
        self.order.push_back(d);
        if self.order.len() > self.capacity {
            if let (Some(old), Some(set)) = (self.order.pop_front(), &mut self.set) {
                if let Some(n) = set.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        set.remove(&old);
                    }
                }
            }
        }
        self.since_lookup += 1;
        if self.since_lookup > self.capacity {
            self.set = None;
        }
    }

    /// Identities held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests already on disk must keep matching: known answers, computed with the
    /// digest earlier builds stored (`std`'s `DefaultHasher` on the `str`).
    #[test]
    fn digests_are_pinned() {
        assert_eq!(digest(""), 0x30406ea523c53def);
        assert_eq!(digest("ferrymq:0123456789abcdef-42"), 0x64df1fc10e154cc6);
        assert_eq!(digest("message-id:order-7"), 0x7440060c4d147735);
    }

    #[test]
    fn bounded_with_and_without_the_index() {
        let mut w = DedupWindow::new(3);
        for id in ["a", "b", "c", "d"] {
            w.insert(id);
        }
        assert!(!w.contains("a"), "evicted");
        assert!(w.contains("d") && w.contains("b"));
        // Indexed now: evictions keep the index in step.
        w.insert("e");
        assert!(!w.contains("b"));
        assert!(w.contains("c") && w.contains("e"));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn a_reused_identity_stays_while_a_copy_is_in_the_window() {
        let mut w = DedupWindow::new(3);
        assert!(!w.contains("x"));
        w.insert("x");
        w.insert("y");
        w.insert("x");
        w.insert("z");
        assert!(w.contains("x"), "the newer copy is still held");
        w.insert("q");
        w.insert("r");
        assert!(!w.contains("x"));
    }

    #[test]
    fn index_is_dropped_after_a_long_run_without_lookups() {
        let mut w = DedupWindow::new(4);
        assert!(!w.contains("x"));
        for i in 0..10 {
            w.insert(&format!("m{i}"));
        }
        assert!(w.set.is_none());
        assert!(w.contains("m9") && w.contains("m6") && !w.contains("m5"));
    }
}
