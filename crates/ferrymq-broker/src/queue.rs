//! Queues: ordered message buffers that hand messages to consumers with capacity.
//!
//! Delivery runs inline in whoever changed the queue (a publisher's connection
//! task, an ack on a consumer's connection): there is no queue task and no
//! channel send per message, only one short lock per batch of work.

use crate::consumer::Consumer;
use crate::error::{AmqpError, Result};
use crate::message::{Message, QueuedMessage};
use crate::policy::AppliedPolicies;
use crate::queue_args::{Overflow, QueueArgs};
use crate::ready::{self, ReadyList};
use crate::store::{QueueStore, Recovered};
use crate::vhost::VHost;
use amq_protocol::types::FieldTable;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

type DeadBatch = (Arc<VHost>, Arc<Queue>, Vec<(QueuedMessage, DeadReason)>);

thread_local! {
    static DEAD_LETTERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static DEFERRED: std::cell::RefCell<Vec<DeadBatch>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// In-memory messages a stored queue keeps before it pages the rest out.
pub const PAGE_AFTER: usize = 8192;
/// Messages read back per refill of a paged queue.
const REFILL_BATCH: usize = 1024;

/// Why a message left a queue without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// The queue hit its length limit.
    MaxLen,
}

impl DeadReason {
    /// RabbitMQ's name for the reason, used in x-death headers.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::Expired => "expired",
            DeadReason::MaxLen => "maxlen",
        }
    }
}

/// Counters for management and metrics.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages accepted into the queue.
    pub published: AtomicU64,
    /// Messages handed to consumers or `basic.get`.
    pub delivered: AtomicU64,
    /// Messages acknowledged.
    pub acked: AtomicU64,
    /// Messages handed out again after a requeue.
    pub redelivered: AtomicU64,
}

struct QueueState {
    ready: ReadyList,
    unacked: usize,
    consumers: Vec<Arc<Consumer>>,
    round_robin: usize,
    next_seq: u64,
    last_used: Instant,
    had_consumers: bool,
    dead: Vec<(QueuedMessage, DeadReason)>,
    /// Declared arguments merged with the policies that apply now.
    args: Arc<QueueArgs>,
}

/// A queue in a vhost.
pub struct Queue {
    /// Queue name.
    pub name: String,
    /// Name of the vhost it lives in.
    pub vhost_name: String,
    vhost: Weak<VHost>,
    /// Survives a broker restart.
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declared arguments as sent by the client.
    pub arguments: FieldTable,
    /// Parsed declare arguments (policies may override them; see [`Queue::effective_args`]).
    pub declared_args: QueueArgs,
    /// Names and definitions of the policy and operator policy that apply.
    applied: parking_lot::RwLock<Arc<AppliedPolicies>>,
    /// Counters.
    pub stats: QueueStats,
    /// Random id of this queue's life (persisted with its store): with a message's
    /// `seq` it names the message uniquely, for federation's duplicate removal.
    pub incarnation: u64,
    store: Option<QueueStore>,
    state: Mutex<QueueState>,
    deleted: AtomicBool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue({}/{})", self.vhost_name, self.name)
    }
}

/// What happened to a published message in one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The queue took it; it is durable once the store's synced epoch reaches
    /// the value (0: nothing to wait for).
    Accepted(u64),
    /// The queue refused it (`x-overflow: reject-publish`).
    Refused,
    /// The queue's store could not write it (a failed disk): the publisher must hear.
    Unstored,
}

/// A federated message in the store, waiting for its round before delivery.
#[derive(Debug)]
pub struct Staged {
    message: Arc<Message>,
    loc: crate::store::Loc,
}

/// What [`Queue::stage`] did with a message.
#[derive(Debug)]
pub enum Staging {
    /// Stored; enqueue it once the store's synced epoch reaches the value.
    Staged(Staged, u64),
    /// Nothing to wait for: published like any message.
    Published(Enqueued),
}

impl Queue {
    /// A new empty queue.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        vhost: &Arc<VHost>,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
        args: QueueArgs,
        store: Option<QueueStore>,
    ) -> Self {
        let page_after = if store.is_some() { PAGE_AFTER } else { 0 };
        let incarnation = store
            .as_ref()
            .map(|s| s.incarnation())
            .unwrap_or_else(rand::random);
        Queue {
            store,
            vhost_name: vhost.name.clone(),
            vhost: Arc::downgrade(vhost),
            name,
            durable,
            exclusive_owner,
            auto_delete,
            state: Mutex::new(QueueState {
                ready: ReadyList::new(args.max_priority, page_after),
                unacked: 0,
                consumers: Vec::new(),
                round_robin: 0,
                next_seq: 0,
                last_used: Instant::now(),
                had_consumers: false,
                dead: Vec::new(),
                args: Arc::new(args.clone()),
            }),
            arguments,
            declared_args: args,
            applied: Default::default(),
            stats: QueueStats::default(),
            incarnation,
            deleted: AtomicBool::new(false),
        }
    }

    /// Declared arguments merged with the policies that apply now.
    pub fn effective_args(&self) -> Arc<QueueArgs> {
        self.state.lock().args.clone()
    }

    /// The policy and operator policy that apply now.
    pub fn applied_policies(&self) -> Arc<AppliedPolicies> {
        self.applied.read().clone()
    }

    /// Applies (or, with an empty value, removes) policies live. A tighter length
    /// limit drops (or dead-letters) the oldest messages at once, as RabbitMQ does
    /// for `drop-head`; TTL changes apply to messages enqueued from now on.
    /// Returns whether the effective arguments changed.
    pub fn apply_policies(self: &Arc<Self>, applied: AppliedPolicies) -> bool {
        let args = crate::policy::effective_queue_args(&self.declared_args, &applied);
        *self.applied.write() = Arc::new(applied);
        let mut s = self.state.lock();
        if *s.args == args {
            return false;
        }
        s.args = Arc::new(args);
        if s.args.overflow == Overflow::DropHead {
            let (max_len, max_bytes) = (s.args.max_length, s.args.max_length_bytes);
            while max_len.is_some_and(|m| s.ready.len() as u64 > m)
                || max_bytes.is_some_and(|m| s.ready.bytes() > m)
            {
                match self.pop_oldest(&mut s) {
                    Some(m) => s.dead.push((m, DeadReason::MaxLen)),
                    None => break,
                }
            }
        }
        self.finish(s);
        true
    }

    /// Whether the queue was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Ready messages.
    pub fn message_count(&self) -> usize {
        self.state.lock().ready.len()
    }

    /// (ready, unacked, ready bytes, consumers) in one lock.
    pub fn counts(&self) -> (usize, usize, u64, usize) {
        let s = self.state.lock();
        (s.ready.len(), s.unacked, s.ready.bytes(), s.consumers.len())
    }

    /// Estimated bytes of RAM the queue's messages take: bodies held in memory plus
    /// per-message bookkeeping; paged-out messages cost an 8-byte reference.
    pub fn memory_estimate(&self) -> u64 {
        let queue = {
            let s = self.state.lock();
            let (len, paged) = (s.ready.len() as u64, s.ready.paged_len() as u64);
            let in_memory = len - paged.min(len);
            let avg = s.ready.bytes().checked_div(len).unwrap_or(0);
            in_memory * (avg + 160) + paged * 8 + s.unacked as u64 * 160
        };
        queue + self.store.as_ref().map_or(0, |st| st.memory_estimate())
    }

    /// Whether this durable queue's store has failed: nothing it takes now becomes durable.
    pub fn store_failed(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.failed())
    }

    /// The newest `limit` identity digests this durable queue logged with federated
    /// messages (empty for a transient queue), oldest first.
    pub fn recent_identities(&self, limit: usize) -> std::io::Result<Vec<u64>> {
        match &self.store {
            Some(store) => store.recent_identities(limit),
            None => Ok(Vec::new()),
        }
    }

    /// The newest `n` ready messages (read back from the store if paged out), for
    /// federation to learn which messages a link stored before a crash.
    pub fn newest_ready(&self, n: usize) -> Vec<Arc<Message>> {
        let (in_memory, paged) = self.state.lock().ready.newest(n);
        let mut out: Vec<Arc<Message>> = in_memory.into_iter().map(|m| m.message).collect();
        if let Some(store) = &self.store {
            // Paged references come newest first; read them in file order so that
            // consecutive records share a `pread`, then give them back newest first.
            let locs: Vec<_> = paged.iter().rev().map(|r| ready::unpack(*r).0).collect();
            let mut read = store.read_batch(&locs);
            read.reverse();
            out.extend(read.into_iter().flatten().map(Arc::new));
        }
        out
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> usize {
        self.state.lock().consumers.len()
    }

    /// A snapshot of the consumers.
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.state.lock().consumers.clone()
    }

    /// Marks the queue as used now (resets the `x-expires` clock).
    pub fn touch(&self) {
        self.state.lock().last_used = Instant::now();
    }

    fn expiry_for(args: &QueueArgs, m: &Message) -> Option<Instant> {
        let ttl = match (args.message_ttl, m.expiration_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(m.received_at + Duration::from_millis(ttl))
    }

    /// Enqueues a published message and delivers what it can.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        self.enqueue(message, None, true)
    }

    /// [`Queue::publish`] for a message that arrived through a federation link: a
    /// durable queue logs the identity digest with a persistent message (see
    /// [`QueueStore::append_identified`]), so the link can drop the upstream's
    /// redelivery of a message it already stored, even after a crash. A message
    /// the queue refuses is not dead-lettered under `reject-publish-dlx`: the link
    /// leaves it upstream, and dead-lettering it too would copy it once per retry.
    pub fn publish_identified(
        self: &Arc<Self>,
        message: Arc<Message>,
        identity: Option<u64>,
    ) -> Enqueued {
        self.enqueue(message, identity, false)
    }

    fn enqueue(
        self: &Arc<Self>,
        message: Arc<Message>,
        identity: Option<u64>,
        dead_letter_refused: bool,
    ) -> Enqueued {
        if self.is_deleted() {
            return Enqueued::Accepted(0);
        }
        let mut s = self.state.lock();
        if self.is_deleted() {
            // Deleted while we waited for the lock.
            return Enqueued::Accepted(0);
        }
        let dropped_from = s.dead.len();
        let Some(message) = self.admit(&mut s, message, dead_letter_refused) else {
            self.finish(s);
            return Enqueued::Refused;
        };
        let (loc, epoch) = match &self.store {
            Some(store) => match store.append_identified(&message, identity) {
                Ok((loc, epoch)) => (Some(loc), if message.is_persistent() { epoch } else { 0 }),
                Err(e) => {
                    // The publisher must not get a confirm for a message we could not store.
                    tracing::error!(queue = %self.name, "store append failed: {e}");
                    self.undo_room(&mut s, dropped_from);
                    self.finish(s);
                    return Enqueued::Unstored;
                }
            },
            None => (None, 0),
        };
        let seq = match loc {
            Some(l) => ready::seq_of(l),
            None => {
                s.next_seq += 1;
                s.next_seq
            }
        };
        let qm = QueuedMessage {
            expires_at: Self::expiry_for(&s.args, &message),
            message,
            seq,
            redelivered: false,
            delivery_count: 0,
            loc,
        };
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        s.ready.push(qm);
        self.dispatch_locked(&mut s);
        self.finish(s);
        Enqueued::Accepted(epoch)
    }

    /// Puts messages recovered from the store back, in order (at start-up). They stay
    /// on disk as references until the queue reads them back.
    pub fn restore(self: &Arc<Self>, recovered: Recovered) {
        let mut s = self.state.lock();
        s.ready.restore_paged(recovered.refs, recovered.bytes);
        if self.declared_args.max_priority.is_some() {
            // Priority queues keep everything in memory, in their lanes.
            while s.ready.needs_refill() {
                self.refill(&mut s);
            }
        }
    }

    /// Reads paged messages back into memory when the in-memory part ran dry.
    fn refill(&self, s: &mut QueueState) {
        if !s.ready.needs_refill() {
            return;
        }
        let Some(store) = &self.store else { return };
        let refs = s.ready.take_paged(REFILL_BATCH);
        let locs: Vec<_> = refs.iter().map(|r| ready::unpack(*r).0).collect();
        for (r, read) in refs.iter().zip(store.read_batch(&locs)) {
            let (loc, redelivered) = ready::unpack(*r);
            match read {
                Ok(m) => {
                    let message = Arc::new(m);
                    s.ready.push_refilled(QueuedMessage {
                        expires_at: Self::expiry_for(&s.args, &message),
                        message,
                        seq: ready::seq_of(loc),
                        redelivered,
                        delivery_count: 0,
                        loc: Some(loc),
                    });
                }
                Err(e) => {
                    // Losing it silently would be worse than the log line: say what went.
                    tracing::error!(queue = %self.name, "cannot read stored message {loc:?}: {e}; dropped");
                    store.ack(loc);
                }
            }
        }
    }

    /// Tells the store that a message left the queue for good.
    fn forget(&self, m: &QueuedMessage) {
        if let (Some(store), Some(loc)) = (&self.store, m.loc) {
            store.ack(loc);
        }
    }

    /// Makes room for `message` under the length limits; `None` if the queue
    /// refuses it (dead-lettered first under `reject-publish-dlx` if
    /// `dead_letter_refused`).
    fn admit(
        &self,
        s: &mut QueueState,
        message: Arc<Message>,
        dead_letter_refused: bool,
    ) -> Option<Arc<Message>> {
        match self.make_room(s, message.size() as u64) {
            None => Some(message),
            Some(refused) => {
                if refused == Overflow::RejectPublishDlx && dead_letter_refused {
                    let qm = QueuedMessage {
                        expires_at: None,
                        message,
                        seq: s.next_seq,
                        redelivered: false,
                        delivery_count: 0,
                        loc: None,
                    };
                    s.dead.push((qm, DeadReason::MaxLen));
                }
                None
            }
        }
    }

    /// Writes a federated message to the store without making it deliverable: the
    /// link enqueues it with [`Queue::enqueue_staged`] once the round that writes it
    /// (and its identity) is synced. A consumer must not see a persistent federated
    /// message before then: if it consumed one and the broker crashed before the
    /// write, the upstream's redelivery would be stored again and consumed twice.
    /// A transient message waits for nothing (epoch 0) but is staged too, so that a
    /// link can keep it behind persistent ones still waiting for their round (it
    /// publishes transient messages at once when nothing waits ahead of them). In
    /// a queue without a store every message is published at once.
    pub fn stage(self: &Arc<Self>, message: Arc<Message>, identity: Option<u64>) -> Staging {
        let Some(store) = self.store.as_ref() else {
            return Staging::Published(self.publish_identified(message, identity));
        };
        let mut s = self.state.lock();
        if self.is_deleted() {
            return Staging::Published(Enqueued::Accepted(0));
        }
        let dropped_from = s.dead.len();
        let Some(message) = self.admit(&mut s, message, false) else {
            self.finish(s);
            return Staging::Published(Enqueued::Refused);
        };
        let persistent = message.is_persistent();
        let staged = match store.append_identified(&message, identity) {
            Ok((loc, epoch)) => {
                Staging::Staged(Staged { message, loc }, if persistent { epoch } else { 0 })
            }
            Err(e) => {
                tracing::error!(queue = %self.name, "store append failed: {e}");
                self.undo_room(&mut s, dropped_from);
                Staging::Published(Enqueued::Unstored)
            }
        };
        self.finish(s);
        staged
    }

    /// Makes staged messages deliverable, in the order given (see [`Queue::stage`]).
    pub fn enqueue_staged(self: &Arc<Self>, staged: impl IntoIterator<Item = Staged>) {
        let mut s = self.state.lock();
        if self.is_deleted() {
            return; // their records went with the queue's store
        }
        let mut any = false;
        for Staged { message, loc } in staged {
            let qm = QueuedMessage {
                expires_at: Self::expiry_for(&s.args, &message),
                message,
                seq: ready::seq_of(loc),
                redelivered: false,
                delivery_count: 0,
                loc: Some(loc),
            };
            self.stats.published.fetch_add(1, Ordering::Relaxed);
            s.ready.push(qm);
            any = true;
        }
        if any {
            self.dispatch_locked(&mut s);
        }
        self.finish(s);
    }

    fn make_room(&self, s: &mut QueueState, size: u64) -> Option<Overflow> {
        let max_len = s.args.max_length;
        let max_bytes = s.args.max_length_bytes;
        if max_len.is_none() && max_bytes.is_none() {
            return None;
        }
        let over = |s: &QueueState| {
            max_len.is_some_and(|m| s.ready.len() as u64 + 1 > m)
                || max_bytes.is_some_and(|m| s.ready.bytes() + size > m)
        };
        if !over(s) {
            return None;
        }
        match s.args.overflow {
            Overflow::DropHead => {
                while over(s) {
                    match self.pop_oldest(s) {
                        Some(m) => s.dead.push((m, DeadReason::MaxLen)),
                        // Nothing left to drop: a limit of 0 or a message bigger than the byte limit.
                        None => break,
                    }
                }
                None
            }
            mode => Some(mode),
        }
    }

    /// Puts back the messages `drop-head` took off the head (from position `from` of
    /// the dead list) to make room for a message that then did not go in. Each goes
    /// back to the lane front it was popped from, the last popped first: lanes are
    /// not always in sequence order (staged messages join late), so no search.
    fn undo_room(&self, s: &mut QueueState, from: usize) {
        for (m, _) in s.dead.split_off(from).into_iter().rev() {
            s.ready.unpop(m);
        }
    }

    fn pop_oldest(&self, s: &mut QueueState) -> Option<QueuedMessage> {
        self.refill(s);
        s.ready.pop_oldest()
    }

    /// Unlocks, then dead-letters what the locked work set aside.
    fn finish(self: &Arc<Self>, mut s: parking_lot::MutexGuard<'_, QueueState>) {
        if s.dead.is_empty() {
            return;
        }
        let dead = std::mem::take(&mut s.dead);
        drop(s);
        for (m, _) in &dead {
            self.forget(m);
        }
        let Some(vhost) = self.vhost.upgrade() else {
            return;
        };
        // Dead-lettering publishes into other queues, which may dead-letter in turn.
        // Nested work is queued and run by the outermost call, so chains of any
        // length use a loop, not the stack.
        if DEAD_LETTERING.with(|active| active.replace(true)) {
            DEFERRED.with(|d| d.borrow_mut().push((vhost, self.clone(), dead)));
            return;
        }
        vhost.dead_letter(self, dead);
        while let Some((v, q, d)) = DEFERRED.with(|d| d.borrow_mut().pop()) {
            v.dead_letter(&q, d);
        }
        DEAD_LETTERING.with(|active| active.set(false));
    }

    fn dispatch_locked(self: &Arc<Self>, s: &mut QueueState) {
        if s.consumers.is_empty() {
            self.expire_head(s, Instant::now());
            return;
        }
        let mut now: Option<Instant> = None;
        loop {
            self.refill(s);
            let Some(head) = s.ready.peek() else { break };
            if let Some(at) = head.expires_at {
                let n = *now.get_or_insert_with(Instant::now);
                if at <= n {
                    let m = s.ready.pop().expect("peeked");
                    s.dead.push((m, DeadReason::Expired));
                    continue;
                }
            }
            let Some(consumer) = self.pick_consumer(s) else {
                break;
            };
            let mut m = s.ready.pop().expect("peeked");
            m.delivery_count += 1;
            if m.redelivered {
                self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            if !consumer.no_ack {
                consumer.unacked.fetch_add(1, Ordering::Relaxed);
                s.unacked += 1;
                if let (Some(store), Some(loc)) = (&self.store, m.loc) {
                    store.delivered(loc);
                }
            } else {
                self.forget(&m);
            }
            consumer.sink.deliver(self, &consumer, m);
        }
        if s.args.message_ttl.is_some() {
            self.expire_head(s, Instant::now());
        }
    }

    /// Chooses the next consumer: highest priority first, round-robin within a priority.
    fn pick_consumer(&self, s: &mut QueueState) -> Option<Arc<Consumer>> {
        if self.declared_args.single_active_consumer {
            let c = s.consumers.first()?;
            return c.has_capacity().then(|| c.clone());
        }
        let n = s.consumers.len();
        if n == 1 {
            let c = &s.consumers[0];
            return c.has_capacity().then(|| c.clone());
        }
        // Consumers are kept sorted by priority, so each priority is a contiguous run.
        let mut start = 0;
        while start < n {
            let p = s.consumers[start].priority;
            let end = start
                + s.consumers[start..]
                    .iter()
                    .take_while(|c| c.priority == p)
                    .count();
            let len = end - start;
            for i in 0..len {
                let idx = start + (s.round_robin + i) % len;
                if s.consumers[idx].has_capacity() {
                    s.round_robin = s.round_robin.wrapping_add(i + 1);
                    return Some(s.consumers[idx].clone());
                }
            }
            start = end;
        }
        None
    }

    fn expire_head(&self, s: &mut QueueState, now: Instant) {
        let expired = s
            .ready
            .remove_where(|m| m.expires_at.is_some_and(|at| at <= now));
        s.dead
            .extend(expired.into_iter().map(|m| (m, DeadReason::Expired)));
    }

    /// Delivers what can be delivered (after consumers gained capacity).
    pub fn dispatch(self: &Arc<Self>) {
        let mut s = self.state.lock();
        if s.ready.is_empty() || s.consumers.is_empty() {
            return;
        }
        self.dispatch_locked(&mut s);
        self.finish(s);
    }

    /// `basic.get`: takes one message; `ack_required` keeps it as unacked.
    /// Returns the message and how many remain ready.
    pub fn get(self: &Arc<Self>, ack_required: bool) -> Option<(QueuedMessage, u32)> {
        let mut s = self.state.lock();
        s.last_used = Instant::now();
        let now = Instant::now();
        self.refill(&mut s);
        self.expire_head(&mut s, now);
        self.refill(&mut s);
        let got = s.ready.pop().map(|mut m| {
            m.delivery_count += 1;
            if ack_required {
                s.unacked += 1;
                if let (Some(store), Some(loc)) = (&self.store, m.loc) {
                    store.delivered(loc);
                }
            } else {
                self.forget(&m);
            }
            self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            (m, s.ready.len() as u32)
        });
        self.finish(s);
        got
    }

    /// Acknowledges unacked messages and refills consumers.
    pub fn ack(self: &Arc<Self>, messages: &[QueuedMessage]) {
        let n = messages.len();
        for m in messages {
            self.forget(m);
        }
        self.stats.acked.fetch_add(n as u64, Ordering::Relaxed);
        let mut s = self.state.lock();
        s.unacked = s.unacked.saturating_sub(n);
        if !s.ready.is_empty() && !s.consumers.is_empty() {
            self.dispatch_locked(&mut s);
        }
        self.finish(s);
    }

    /// Returns unacked messages to the queue in their original order, marked redelivered.
    pub fn requeue(self: &Arc<Self>, messages: Vec<QueuedMessage>) {
        let mut s = self.state.lock();
        s.unacked = s.unacked.saturating_sub(messages.len());
        if self.is_deleted() {
            return;
        }
        for mut m in messages {
            m.redelivered = true;
            s.ready.requeue(m);
        }
        self.dispatch_locked(&mut s);
        self.finish(s);
    }

    /// Drops unacked messages for good (nack/reject without requeue): dead-letters them.
    pub fn reject(self: &Arc<Self>, messages: Vec<QueuedMessage>) {
        let mut s = self.state.lock();
        s.unacked = s.unacked.saturating_sub(messages.len());
        s.dead
            .extend(messages.into_iter().map(|m| (m, DeadReason::Rejected)));
        if !s.ready.is_empty() && !s.consumers.is_empty() {
            self.dispatch_locked(&mut s);
        }
        self.finish(s);
    }

    /// Subscribes a consumer (enforcing exclusive consumers). It receives messages
    /// from the next dispatch on.
    /// `confirm` runs under the queue lock just before the consumer becomes visible
    /// to other threads: the place to write consume-ok, so that no delivery can
    /// overtake it.
    pub fn add_consumer(
        self: &Arc<Self>,
        consumer: Arc<Consumer>,
        confirm: impl FnOnce(),
    ) -> Result<()> {
        let mut s = self.state.lock();
        if self.is_deleted() {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost_name
            )));
        }
        if s.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !s.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost_name
            )));
        }
        let pos = s
            .consumers
            .partition_point(|c| c.priority >= consumer.priority);
        confirm();
        s.consumers.insert(pos, consumer);
        s.had_consumers = true;
        s.last_used = Instant::now();
        Ok(())
    }

    /// Unsubscribes a consumer. Deletes an auto-delete queue that lost its last consumer.
    pub fn remove_consumer(self: &Arc<Self>, consumer: &Arc<Consumer>) {
        let mut s = self.state.lock();
        let before = s.consumers.len();
        s.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        if s.consumers.len() == before {
            return;
        }
        s.last_used = Instant::now();
        let now_unused = s.consumers.is_empty() && s.had_consumers && self.auto_delete;
        // A single-active-consumer queue hands over to the next consumer.
        self.dispatch_locked(&mut s);
        self.finish(s);
        if now_unused {
            if let Some(vhost) = self.vhost.upgrade() {
                let _ = vhost.delete_queue_if(&self.name, self);
            }
        }
    }

    /// Removes every ready message; returns how many.
    pub fn purge(&self) -> usize {
        let (drained, paged) = self.state.lock().ready.drain();
        for m in &drained {
            self.forget(m);
        }
        if let Some(store) = &self.store {
            for r in &paged {
                store.ack(ready::unpack(*r).0);
            }
        }
        drained.len() + paged.len()
    }

    /// Marks the queue deleted, cancels its consumers and drops its messages.
    /// Returns how many ready messages it held.
    pub fn delete(&self) -> usize {
        self.deleted.store(true, Ordering::Release);
        let (consumers, count) = {
            let mut s = self.state.lock();
            let (mem, paged) = s.ready.drain();
            let count = mem.len() + paged.len();
            (std::mem::take(&mut s.consumers), count)
        };
        for c in consumers {
            c.sink.cancelled(&c);
        }
        if let Some(store) = &self.store {
            store.destroy();
        }
        count
    }

    /// Whether the queue keeps its messages in a store.
    pub fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Periodic work: expires messages by TTL; returns true when `x-expires` says the
    /// queue has been unused long enough to be deleted.
    pub fn tick(self: &Arc<Self>, now: Instant) -> bool {
        let mut s = self.state.lock();
        if s.args.message_ttl.is_some() || !s.ready.is_empty() {
            self.expire_head(&mut s, now);
        }
        let unused = match s.args.expires {
            Some(ms) => {
                s.consumers.is_empty()
                    && now.duration_since(s.last_used) >= Duration::from_millis(ms)
            }
            None => false,
        };
        self.finish(s);
        unused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhost::QueueOptions;
    use crate::Broker;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};
    use bytes::Bytes;

    fn message(body: &'static str, persistent: bool) -> Arc<Message> {
        let props = AMQPProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
        Arc::new(Message::new(
            String::new(),
            "q".into(),
            props,
            Bytes::from_static(body.as_bytes()),
        ))
    }

    fn durable_queue(dir: &std::path::Path) -> (Arc<Broker>, Arc<Queue>) {
        let (broker, _, queue) = durable_queue_with(dir, &[]);
        (broker, queue)
    }

    /// A broker on `dir` with vhost `/` and its durable queue `q` declared with `args`.
    fn durable_queue_with(
        dir: &std::path::Path,
        args: &[(&str, AMQPValue)],
    ) -> (Arc<Broker>, Arc<crate::vhost::VHost>, Arc<Queue>) {
        let (broker, _) = Broker::open(dir).expect("open");
        let vhost = broker.add_vhost("/");
        let mut arguments = FieldTable::default();
        for (k, v) in args {
            arguments.insert((*k).into(), v.clone());
        }
        let opts = QueueOptions {
            durable: true,
            arguments,
            ..Default::default()
        };
        let (queue, _) = vhost.declare_queue("q", 0, opts).expect("declare");
        (broker, vhost, queue)
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    fn wait_synced(broker: &Broker, epoch: u64) {
        let durability = &broker.storage().expect("stored").durability;
        let deadline = Instant::now() + Duration::from_secs(10);
        while durability.synced_epoch() < epoch {
            assert!(Instant::now() < deadline, "epoch {epoch} never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ferrymq-queue-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn staged_messages_reach_consumers_only_when_enqueued() {
        let dir = scratch("staged");
        let (broker, queue) = durable_queue(&dir);
        let Staging::Staged(staged, epoch) = queue.stage(message("a", true), Some(7)) else {
            panic!("a persistent message in a durable queue is staged");
        };
        assert!(epoch > 0);
        assert_eq!(queue.message_count(), 0);
        assert!(queue.get(false).is_none(), "staged message handed out");
        wait_synced(&broker, epoch);
        assert!(queue.get(false).is_none(), "staged message handed out");
        queue.enqueue_staged([staged]);
        let (got, _) = queue.get(false).expect("enqueued message");
        assert_eq!(&got.message.body[..], b"a");
        // A transient message waits for nothing, but is staged too, to keep its place.
        let Staging::Staged(transient, 0) = queue.stage(message("b", false), None) else {
            panic!("a transient message is staged with nothing to wait for");
        };
        assert_eq!(queue.message_count(), 0);
        queue.enqueue_staged([transient]);
        assert_eq!(queue.message_count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// After a restart every message is paged: `newest_ready` reads them back and
    /// still lists them newest first.
    #[test]
    fn newest_ready_reads_paged_messages_newest_first() {
        let dir = scratch("newest");
        const BODIES: [&str; 5] = ["m0", "m1", "m2", "m3", "m4"];
        {
            let (broker, queue) = durable_queue(&dir);
            let mut last = 0;
            for body in BODIES {
                let Enqueued::Accepted(epoch) = queue.publish(message(body, true)) else {
                    panic!("refused");
                };
                last = epoch;
            }
            wait_synced(&broker, last);
        }
        let (_broker, queue) = durable_queue(&dir);
        let newest: Vec<_> = queue
            .newest_ready(3)
            .iter()
            .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
            .collect();
        assert_eq!(newest, ["m4", "m3", "m2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `drop-head` makes room before the store writes a message; if the write then
    /// fails, the message is refused and the messages it displaced stay, in their
    /// order, even in a lane a staged message joined late (out of sequence order).
    #[test]
    fn a_failed_append_gives_back_the_head_drop_head_took() {
        let dir = scratch("drop-head-undo");
        let big_size = crate::store::SEGMENT_SIZE as usize / 2 + 1;
        // Room for one big message and the two one-byte ones.
        let (broker, _, queue) = durable_queue_with(
            &dir,
            &[
                (
                    "x-max-length-bytes",
                    AMQPValue::LongLongInt(big_size as i64 + 2),
                ),
                ("x-overflow", text("drop-head")),
            ],
        );
        let big = |fill: u8| {
            let props = AMQPProperties::default().with_delivery_mode(2);
            let body = Bytes::from(vec![fill; big_size]);
            Arc::new(Message::new(String::new(), "q".into(), props, body))
        };
        // A staged message enqueued after a later one: the lane is [t, p], p older.
        let Staging::Staged(p, _) = queue.stage(message("p", true), Some(1)) else {
            panic!("not staged");
        };
        assert!(matches!(
            queue.publish(message("t", false)),
            Enqueued::Accepted(_)
        ));
        queue.enqueue_staged([p]);
        assert!(matches!(queue.publish(big(1)), Enqueued::Accepted(_)));
        assert_eq!(queue.message_count(), 3);
        // Another big message needs a new segment file, which cannot be created now;
        // making room for it drops all three first.
        std::fs::remove_dir_all(&dir).expect("remove the data dir");
        assert!(matches!(queue.publish(big(2)), Enqueued::Unstored));
        assert!(matches!(
            queue.stage(big(3), Some(2)),
            Staging::Published(Enqueued::Unstored)
        ));
        assert_eq!(queue.message_count(), 3);
        let mut order = Vec::new();
        while let Some((m, _)) = queue.get(true) {
            order.push(m.message.body[0]);
        }
        assert_eq!(order, [b't', b'p', 1]);
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under `reject-publish-dlx` a publisher's refused message is dead-lettered, but
    /// a link's is not: the link leaves it upstream and would retry it.
    #[test]
    fn a_link_refused_under_reject_publish_dlx_dead_letters_nothing() {
        let dir = scratch("reject-dlx");
        let (broker, vhost, queue) = durable_queue_with(
            &dir,
            &[
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-overflow", text("reject-publish-dlx")),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text("dlq")),
            ],
        );
        let (dlq, _) = vhost
            .declare_queue("dlq", 0, QueueOptions::default())
            .expect("declare dlq");
        assert!(matches!(
            queue.publish(message("first", true)),
            Enqueued::Accepted(_)
        ));
        assert!(matches!(
            queue.publish_identified(message("linked", true), Some(1)),
            Enqueued::Refused
        ));
        assert!(matches!(
            queue.stage(message("staged", true), Some(2)),
            Staging::Published(Enqueued::Refused)
        ));
        assert_eq!(dlq.message_count(), 0, "a link's refusal was dead-lettered");
        assert!(matches!(
            queue.publish(message("published", true)),
            Enqueued::Refused
        ));
        let (dead, _) = dlq
            .get(true)
            .expect("a publisher's refusal is dead-lettered");
        assert_eq!(&dead.message.body[..], b"published");
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_staged_message_is_recovered_after_a_restart() {
        let dir = scratch("staged-restart");
        {
            let (broker, queue) = durable_queue(&dir);
            let Staging::Staged(_, epoch) = queue.stage(message("kept", true), Some(9)) else {
                panic!("not staged");
            };
            wait_synced(&broker, epoch);
            // Never enqueued, as when the broker dies before the link does it.
        }
        let (_broker, queue) = durable_queue(&dir);
        let (got, _) = queue.get(false).expect("recovered");
        assert_eq!(&got.message.body[..], b"kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
