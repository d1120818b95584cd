//! The channel's delivery side: what queues see of a channel ([`DeliverySink`]),
//! delivery tags and the unacknowledged-message ledger.
//!
//! It is shared between the channel's own connection task (acks, gets) and the
//! tasks of publishers whose messages reach this channel's consumers.

use crate::outbound::Outbound;
use crate::wire;
use ferrymq_broker::consumer::{Consumer, DeliverySink};
use ferrymq_broker::error::AmqpError;
use ferrymq_broker::message::QueuedMessage;
use ferrymq_broker::queue::Queue;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// A delivered message awaiting ack.
pub struct Unacked {
    /// Delivery tag on this channel.
    pub tag: u64,
    /// Queue it came from.
    pub queue: Arc<Queue>,
    /// Consumer it went to (`None` for `basic.get`).
    pub consumer: Option<Arc<Consumer>>,
    /// The message.
    pub message: QueuedMessage,
}

struct Ledger {
    next_tag: u64,
    unacked: VecDeque<Unacked>,
    consumers: HashMap<String, (Arc<Consumer>, Arc<Queue>)>,
}

/// One channel's delivery state, shared with the queues it consumes from.
pub struct ChannelSink {
    /// Channel number.
    pub channel_id: u16,
    outbound: Arc<Outbound>,
    frame_max: usize,
    ledger: Mutex<Ledger>,
    flow_active: AtomicBool,
    closed: AtomicBool,
    global_prefetch: AtomicU32,
    unacked_count: AtomicU32,
    cancel_notify: bool,
    /// Per-consumer prefetch set by `basic.qos` (for management).
    pub prefetch_count: AtomicU32,
    /// Publisher confirms are on (for management).
    pub confirm: AtomicBool,
    /// The channel is transactional (for management).
    pub transactional: AtomicBool,
}

impl ChannelSink {
    /// A sink writing to `outbound`.
    pub fn new(
        channel_id: u16,
        outbound: Arc<Outbound>,
        frame_max: usize,
        cancel_notify: bool,
    ) -> Self {
        ChannelSink {
            channel_id,
            outbound,
            frame_max,
            ledger: Mutex::new(Ledger {
                next_tag: 1,
                unacked: VecDeque::new(),
                consumers: HashMap::new(),
            }),
            flow_active: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            global_prefetch: AtomicU32::new(0),
            unacked_count: AtomicU32::new(0),
            cancel_notify,
            prefetch_count: AtomicU32::new(0),
            confirm: AtomicBool::new(false),
            transactional: AtomicBool::new(false),
        }
    }

    /// Sets `channel.flow`.
    pub fn set_flow(&self, active: bool) {
        self.flow_active.store(active, Ordering::Relaxed);
    }

    /// Sets the channel-wide prefetch (`basic.qos` with global=true).
    pub fn set_global_prefetch(&self, n: u32) {
        self.global_prefetch.store(n, Ordering::Relaxed);
    }

    /// The channel-wide prefetch (0: none).
    pub fn global_prefetch(&self) -> u32 {
        self.global_prefetch.load(Ordering::Relaxed)
    }

    /// Whether a channel-wide prefetch is in force.
    pub fn has_global_prefetch(&self) -> bool {
        self.global_prefetch.load(Ordering::Relaxed) > 0
    }

    /// Stops all further deliveries.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Registers a consumer under its tag; false if the tag is taken.
    pub fn add_consumer(&self, consumer: Arc<Consumer>, queue: Arc<Queue>) -> bool {
        let mut l = self.ledger.lock();
        if l.consumers.contains_key(&consumer.tag) {
            return false;
        }
        l.consumers.insert(consumer.tag.clone(), (consumer, queue));
        true
    }

    /// Whether a consumer tag is in use.
    pub fn has_consumer(&self, tag: &str) -> bool {
        self.ledger.lock().consumers.contains_key(tag)
    }

    /// Forgets a consumer by tag.
    pub fn remove_consumer(&self, tag: &str) -> Option<(Arc<Consumer>, Arc<Queue>)> {
        self.ledger.lock().consumers.remove(tag)
    }

    /// All consumers of the channel.
    pub fn consumers(&self) -> Vec<(Arc<Consumer>, Arc<Queue>)> {
        self.ledger.lock().consumers.values().cloned().collect()
    }

    /// Number of unacked deliveries.
    pub fn unacked_len(&self) -> usize {
        self.unacked_count.load(Ordering::Relaxed) as usize
    }

    /// Records a `basic.get` result and writes get-ok.
    pub fn get_ok(&self, queue: &Arc<Queue>, message: QueuedMessage, remaining: u32, no_ack: bool) {
        let mut l = self.ledger.lock();
        let tag = l.next_tag;
        l.next_tag += 1;
        self.outbound.write(|b| {
            wire::get_ok(
                b,
                self.channel_id,
                tag,
                message.redelivered,
                remaining,
                &message.message,
                self.frame_max,
            )
        });
        if !no_ack {
            self.unacked_count.fetch_add(1, Ordering::Relaxed);
            l.unacked.push_back(Unacked {
                tag,
                queue: queue.clone(),
                consumer: None,
                message,
            });
        }
    }

    /// Takes the unacked deliveries an ack/nack/reject refers to.
    /// Tag 0 with `multiple` means all of them.
    pub fn take(&self, tag: u64, multiple: bool) -> Result<Vec<Unacked>, AmqpError> {
        let mut l = self.ledger.lock();
        let out: Vec<Unacked> = if multiple {
            if tag == 0 {
                l.unacked.drain(..).collect()
            } else {
                let n = l.unacked.partition_point(|u| u.tag <= tag);
                if n == 0 && !l.unacked.iter().any(|u| u.tag == tag) {
                    return Err(unknown_tag(tag));
                }
                l.unacked.drain(..n).collect()
            }
        } else {
            let pos = l
                .unacked
                .binary_search_by_key(&tag, |u| u.tag)
                .map_err(|_| unknown_tag(tag))?;
            vec![l.unacked.remove(pos).expect("found")]
        };
        self.unacked_count
            .fetch_sub(out.len() as u32, Ordering::Relaxed);
        Ok(out)
    }
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition_failed(format!("unknown delivery tag {tag}"))
}

impl DeliverySink for ChannelSink {
    fn can_deliver(&self) -> bool {
        if self.closed.load(Ordering::Relaxed) || !self.flow_active.load(Ordering::Relaxed) {
            return false;
        }
        let g = self.global_prefetch.load(Ordering::Relaxed);
        (g == 0 || self.unacked_count.load(Ordering::Relaxed) < g) && self.outbound.has_room()
    }

    fn deliver(&self, queue: &Arc<Queue>, consumer: &Arc<Consumer>, message: QueuedMessage) {
        let mut l = self.ledger.lock();
        let tag = l.next_tag;
        l.next_tag += 1;
        if consumer.stamp_identity {
            let id = ferrymq_broker::consumer::Identity::new(queue.incarnation, message.seq);
            self.outbound.write(|b| {
                wire::deliver_with_header(
                    b,
                    self.channel_id,
                    &consumer.tag,
                    tag,
                    message.redelivered,
                    &message.message,
                    self.frame_max,
                    (ferrymq_broker::consumer::IDENTITY_HEADER, id.as_str()),
                )
            });
        } else {
            self.outbound.write(|b| {
                wire::deliver(
                    b,
                    self.channel_id,
                    &consumer.tag,
                    tag,
                    message.redelivered,
                    &message.message,
                    self.frame_max,
                )
            });
        }
        if !consumer.no_ack {
            self.unacked_count.fetch_add(1, Ordering::Relaxed);
            l.unacked.push_back(Unacked {
                tag,
                queue: queue.clone(),
                consumer: Some(consumer.clone()),
                message,
            });
        }
    }

    fn cancelled(&self, consumer: &Arc<Consumer>) {
        let removed = self.ledger.lock().consumers.remove(&consumer.tag).is_some();
        if removed && self.cancel_notify && !self.closed.load(Ordering::Relaxed) {
            self.outbound.write(|b| {
                wire::method(
                    b,
                    self.channel_id,
                    amq_protocol::protocol::AMQPClass::Basic(
                        amq_protocol::protocol::basic::AMQPMethod::Cancel(
                            amq_protocol::protocol::basic::Cancel {
                                consumer_tag: consumer.tag.as_str().into(),
                                nowait: true,
                            },
                        ),
                    ),
                )
            });
        }
    }
}
