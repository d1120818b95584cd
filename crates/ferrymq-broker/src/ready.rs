//! The ready list of a queue: messages waiting for a consumer, in order.
//!
//! This is the boundary the durable store plugs into: a queue only pushes,
//! pops, requeues and counts here, never looks at how messages are kept.

use crate::message::QueuedMessage;
use std::collections::VecDeque;

/// Messages ready for delivery; priority queues keep one lane per priority.
#[derive(Debug)]
pub struct ReadyList {
    lanes: Vec<VecDeque<QueuedMessage>>,
    len: usize,
    bytes: u64,
}

impl ReadyList {
    /// A list with `max_priority + 1` lanes (one lane for a plain queue).
    pub fn new(max_priority: Option<u8>) -> Self {
        let lanes = max_priority.map_or(1, |p| p as usize + 1);
        ReadyList {
            lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
        }
    }

    fn lane_of(&self, m: &QueuedMessage) -> usize {
        (m.message.priority() as usize).min(self.lanes.len() - 1)
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is ready.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total body bytes of ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a new message at the tail.
    pub fn push(&mut self, m: QueuedMessage) {
        self.len += 1;
        self.bytes += m.message.size() as u64;
        let lane = self.lane_of(&m);
        self.lanes[lane].push_back(m);
    }

    /// Puts a returned message back at its original position (by sequence number).
    pub fn requeue(&mut self, m: QueuedMessage) {
        self.len += 1;
        self.bytes += m.message.size() as u64;
        let lane = self.lane_of(&m);
        let lane = &mut self.lanes[lane];
        let pos = lane.partition_point(|x| x.seq < m.seq);
        lane.insert(pos, m);
    }

    /// The next message to deliver (highest priority first).
    pub fn peek(&self) -> Option<&QueuedMessage> {
        self.lanes.iter().rev().find_map(|l| l.front())
    }

    /// Takes the next message to deliver.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.lanes.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.len -= 1;
        self.bytes -= m.message.size() as u64;
        Some(m)
    }

    /// Takes the oldest message regardless of priority (for drop-head).
    pub fn pop_oldest(&mut self) -> Option<QueuedMessage> {
        let lane = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.front().map(|m| (i, m.seq)))
            .min_by_key(|&(_, seq)| seq)?
            .0;
        let m = self.lanes[lane].pop_front()?;
        self.len -= 1;
        self.bytes -= m.message.size() as u64;
        Some(m)
    }

    /// Removes everything; returns the removed messages.
    pub fn drain(&mut self) -> Vec<QueuedMessage> {
        self.len = 0;
        self.bytes = 0;
        let mut out = Vec::new();
        for l in &mut self.lanes {
            out.extend(l.drain(..));
        }
        out
    }

    /// Removes every message for which `expired` holds, wherever it is.
    pub fn remove_where(
        &mut self,
        mut expired: impl FnMut(&QueuedMessage) -> bool,
    ) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        for l in &mut self.lanes {
            // Messages expire only at the head, as in RabbitMQ: order within a lane holds.
            while l.front().is_some_and(&mut expired) {
                out.push(l.pop_front().expect("front checked"));
            }
        }
        for m in &out {
            self.len -= 1;
            self.bytes -= m.message.size() as u64;
        }
        out
    }
}
