//! The ready list of a queue: messages waiting for a consumer, in order.
//!
//! This is the boundary the durable store plugs into: a queue only pushes,
//! pops, requeues and counts here, never looks at how messages are kept.
//! Past `page_after` in-memory messages, stored messages are kept as 8-byte
//! references only ("paged"); the queue reads them back in batches when the
//! in-memory part runs dry, so a deep queue costs ~8 bytes of RAM per message.

use crate::message::QueuedMessage;
use crate::store::Loc;
use std::collections::VecDeque;

/// Messages ready for delivery; priority queues keep one lane per priority.
#[derive(Debug)]
pub struct ReadyList {
    lanes: Vec<VecDeque<QueuedMessage>>,
    mem_len: usize,
    bytes: u64,
    paged: VecDeque<u64>,
    page_after: usize,
}

/// Packs a location (and the redelivered flag) into a paged reference.
pub fn pack(loc: Loc, redelivered: bool) -> u64 {
    loc.pack(redelivered)
}

/// Unpacks a paged reference.
pub fn unpack(r: u64) -> (Loc, bool) {
    Loc::unpack(r)
}

/// Sequence number of a stored message: its location, which grows with publish order.
pub fn seq_of(loc: Loc) -> u64 {
    pack(loc, false)
}

impl ReadyList {
    /// A list with `max_priority + 1` lanes (one lane for a plain queue).
    /// `page_after` > 0 lets stored messages beyond that many be paged out.
    pub fn new(max_priority: Option<u8>, page_after: usize) -> Self {
        let lanes = max_priority.map_or(1, |p| p as usize + 1);
        ReadyList {
            lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            mem_len: 0,
            bytes: 0,
            paged: VecDeque::new(),
            // Priority queues stay in memory: paging keeps one order only.
            page_after: if lanes == 1 { page_after } else { 0 },
        }
    }

    fn lane_of(&self, m: &QueuedMessage) -> usize {
        (m.message.priority() as usize).min(self.lanes.len() - 1)
    }

    /// The newest `n` ready messages: those in memory, and references of paged ones.
    pub fn newest(&self, n: usize) -> (Vec<QueuedMessage>, Vec<u64>) {
        let paged: Vec<u64> = self.paged.iter().rev().take(n).copied().collect();
        let rest = n - paged.len();
        let mut in_memory = Vec::new();
        for lane in &self.lanes {
            in_memory.extend(lane.iter().rev().take(rest).cloned());
        }
        (in_memory, paged)
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.mem_len + self.paged.len()
    }

    /// Whether nothing is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total body bytes of ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages held as references only.
    pub fn paged_len(&self) -> usize {
        self.paged.len()
    }

    /// Appends a new message at the tail (paging it out if the list is deep).
    pub fn push(&mut self, m: QueuedMessage) {
        self.bytes += m.message.size() as u64;
        if let Some(loc) = m.loc {
            if self.page_after > 0 && (!self.paged.is_empty() || self.mem_len >= self.page_after) {
                self.paged.push_back(pack(loc, m.redelivered));
                return;
            }
        }
        self.mem_len += 1;
        let lane = self.lane_of(&m);
        self.lanes[lane].push_back(m);
    }

    /// Takes the references of a recovered queue (oldest first) and their body bytes.
    pub fn restore_paged(&mut self, refs: Vec<u64>, bytes: u64) {
        self.bytes += bytes;
        if self.paged.is_empty() {
            // Reuses the recovery buffer: no second copy of a deep queue's references.
            self.paged = VecDeque::from(refs);
        } else {
            self.paged.extend(refs);
        }
    }

    /// Whether the in-memory part is empty while references wait.
    pub fn needs_refill(&self) -> bool {
        self.mem_len == 0 && !self.paged.is_empty()
    }

    /// Takes up to `n` paged references, oldest first, for the queue to read back.
    pub fn take_paged(&mut self, n: usize) -> Vec<u64> {
        let n = n.min(self.paged.len());
        self.paged.drain(..n).collect()
    }

    /// Appends a message read back from the store (it was paged; `bytes` already counted it).
    pub fn push_refilled(&mut self, m: QueuedMessage) {
        self.mem_len += 1;
        let lane = self.lane_of(&m);
        self.lanes[lane].push_back(m);
    }

    /// Puts a returned message back at its original position (by sequence number).
    pub fn requeue(&mut self, m: QueuedMessage) {
        self.mem_len += 1;
        self.bytes += m.message.size() as u64;
        let lane = self.lane_of(&m);
        let lane = &mut self.lanes[lane];
        let pos = lane.partition_point(|x| x.seq < m.seq);
        lane.insert(pos, m);
    }

    /// The next in-memory message to deliver (highest priority first).
    pub fn peek(&self) -> Option<&QueuedMessage> {
        self.lanes.iter().rev().find_map(|l| l.front())
    }

    /// Takes the next in-memory message to deliver.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.lanes.iter_mut().rev().find_map(|l| l.pop_front())?;
        self.mem_len -= 1;
        self.bytes -= m.message.size() as u64;
        Some(m)
    }

    /// Takes the oldest in-memory message regardless of priority (for drop-head).
    pub fn pop_oldest(&mut self) -> Option<QueuedMessage> {
        let lane = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.front().map(|m| (i, m.seq)))
            .min_by_key(|&(_, seq)| seq)?
            .0;
        let m = self.lanes[lane].pop_front()?;
        self.mem_len -= 1;
        self.bytes -= m.message.size() as u64;
        Some(m)
    }

    /// Undoes [`Self::pop_oldest`]: puts `m` back at the front of its lane, exactly
    /// where it was taken from (undo several pops newest first).
    pub fn unpop(&mut self, m: QueuedMessage) {
        self.mem_len += 1;
        self.bytes += m.message.size() as u64;
        let lane = self.lane_of(&m);
        self.lanes[lane].push_front(m);
    }

    /// Removes everything; returns the in-memory messages and the paged references.
    pub fn drain(&mut self) -> (Vec<QueuedMessage>, Vec<u64>) {
        self.mem_len = 0;
        self.bytes = 0;
        let mut out = Vec::new();
        for l in &mut self.lanes {
            out.extend(l.drain(..));
        }
        (out, self.paged.drain(..).collect())
    }

    /// Removes expired messages from the head of each lane (as RabbitMQ, only at the head).
    pub fn remove_where(
        &mut self,
        mut expired: impl FnMut(&QueuedMessage) -> bool,
    ) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        for l in &mut self.lanes {
            while l.front().is_some_and(&mut expired) {
                out.push(l.pop_front().expect("front checked"));
            }
        }
        for m in &out {
            self.mem_len -= 1;
            self.bytes -= m.message.size() as u64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip() {
        let loc = Loc {
            segment: 77,
            offset: 123_456,
        };
        assert_eq!(unpack(pack(loc, true)), (loc, true));
        assert_eq!(unpack(pack(loc, false)), (loc, false));
        assert!(
            seq_of(Loc {
                segment: 1,
                offset: 9
            }) < seq_of(Loc {
                segment: 2,
                offset: 0
            })
        );
    }
}
