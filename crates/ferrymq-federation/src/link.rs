//! A queue link: an AMQP client beside the broker that consumes from the
//! upstream queue while the local queue has demand and moves each message into
//! the local queue, acknowledging upstream according to the ack mode.
//!
//! Demand is RabbitMQ's rule: the local queue is empty and a local consumer with
//! priority ≥ 0 has spare capacity. The link consumes with `x-priority: -1`, so
//! the upstream's own consumers are served first. It stops consuming only after
//! demand has been absent for [`PAUSE_AFTER`], so a prefetch-1 consumer does not
//! cause a consume/cancel storm.

use crate::dedup::{self, DedupWindow};
use crate::headers::{self, Hop};
use crate::status::{LinkStatus, State};
use crate::upstream::{AckMode, Upstream};
use amq_protocol::protocol::{basic, queue as q, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::{Bytes, BytesMut};
use ferrymq_broker::consumer::IDENTITY_HEADER;
use ferrymq_broker::message::{encode_properties, Message};
use ferrymq_broker::queue::{Enqueued, Queue, Staged, Staging};
use ferrymq_client::{
    ids, short, AmqpUri, Connection, FrameReader, FrameWriter, FRAME_BODY, FRAME_HEADER,
    FRAME_METHOD,
};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long demand must be absent before the link cancels its upstream consumer.
pub const PAUSE_AFTER: Duration = Duration::from_millis(200);
/// How often an idle link looks for demand.
const DEMAND_POLL: Duration = Duration::from_millis(20);
/// Connect and handshake limit per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a stopping link waits for in-flight messages to be settled.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Why a link into a queue whose store failed stops.
const STORE_FAILED: &str = "the local queue's store failed (see the broker log)";
/// How long a stopping link then gives the upstream to take its close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The channel the link uses on its upstream connection.
const CH: u16 = 1;
/// Channel for the periodic passive declare that shows the upstream queue's depth.
const PROBE_CH: u16 = 2;
/// How often the upstream queue is probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Largest message body a link accepts (the broker's default `max_message_size`).
const MAX_BODY: u64 = 128 * 1024 * 1024;
/// Key of a message's identity in the `x-received-from` entry a link adds.
const IDENTITY_KEY: &str = "ferrymq-id";
/// Prefix of an identity a FerryMQ upstream stamped (unique per message, unlike a
/// `message-id`, which gets `message-id:`).
const FERRYMQ_IDENTITY: &str = "ferrymq:";

/// What the supervisor tells a running link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    /// Stop for good (after settling what is in flight).
    pub stop: bool,
    /// Bumped to make the link reconnect.
    pub restart: u64,
}

/// Everything a link needs.
pub struct LinkConfig {
    /// Vhost of the local queue.
    pub vhost: String,
    /// The local queue.
    pub queue: Arc<Queue>,
    /// Upstream settings.
    pub upstream: Upstream,
    /// Queue name on the upstream.
    pub upstream_queue: String,
    /// This broker's cluster name (loop detection).
    pub cluster_name: String,
}

/// Why a session ended.
enum End {
    Stopped,
    Restart,
    Failed(String),
}

/// Runs a link until told to stop.
pub async fn run(
    cfg: LinkConfig,
    status: Arc<LinkStatus>,
    mut control: watch::Receiver<Control>,
    synced: watch::Receiver<u64>,
) {
    // Four times the largest possible number of unacknowledged deliveries, and at least 100k.
    let capacity = (cfg.upstream.prefetch_count as usize * 4).max(100_000);
    let mut dedup = DedupWindow::new(capacity);
    match cfg.queue.recent_identities(capacity) {
        Ok(ids) => ids.into_iter().for_each(|d| dedup.insert_digest(d)),
        Err(e) => tracing::error!(
            "federation link {}: reading the queue's identity log: {e}",
            status.id
        ),
    }
    seed_from_queue(&cfg, &mut dedup);
    let base_delay = Duration::from_secs_f64(cfg.upstream.reconnect_delay);
    let mut delay = base_delay;
    let mut uri_index = 0usize;
    let mut seen_restart = control.borrow().restart;
    loop {
        if control.borrow().stop {
            break;
        }
        status.set(State::Starting, None);
        let uri = &cfg.upstream.uris[uri_index % cfg.upstream.uris.len()];
        let name = format!(
            "Federation link (upstream: {}, vhost: {}, queue: {})",
            cfg.upstream.name, cfg.vhost, cfg.queue.name
        );
        // Nothing pulled into a queue whose store failed could be acknowledged: do not
        // even connect, and back off as from a failing connection.
        let store_failed = cfg.queue.store_failed();
        let failure = if store_failed {
            STORE_FAILED.to_string()
        } else {
            let opened = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Connection::open_as(uri, &name, "FerryMQ federation", heartbeat_of(uri)),
            )
            .await;
            match opened {
                Ok(Ok(conn)) => {
                    status.established(uri.redacted());
                    let (end, consumed) =
                        Session::new(&cfg, &status, uri, &mut dedup, synced.clone())
                            .run(conn, &mut control)
                            .await;
                    // Back off only while connections fail; a link that worked retries promptly.
                    if consumed {
                        // At least 100 ms even with reconnect-delay 0: a message that fails
                        // every session must not turn the link into a busy loop.
                        delay = base_delay.max(Duration::from_millis(100));
                    }
                    match end {
                        End::Stopped => break,
                        End::Restart => {
                            seen_restart = control.borrow().restart;
                            delay = base_delay;
                            continue;
                        }
                        End::Failed(e) => e,
                    }
                }
                Ok(Err(e)) => format!("{}: {e}", uri.redacted()),
                Err(_) => format!("{}: connection timed out", uri.redacted()),
            }
        };
        tracing::warn!(
            "federation link {} ({}/{} ← {}): {failure}",
            status.id,
            cfg.vhost,
            cfg.queue.name,
            cfg.upstream.name
        );
        status.set(State::Error, Some(failure));
        if !store_failed {
            status.reconnects.fetch_add(1, Ordering::Relaxed);
            uri_index += 1;
        }
        // Wait out the delay, unless told to stop or restart.
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                changed = control.changed() => {
                    if changed.is_err() || control.borrow().stop || control.borrow().restart != seen_restart {
                        break;
                    }
                }
            }
        }
        seen_restart = control.borrow().restart;
        delay = (delay * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
    }
    status.set(State::Stopped, None);
}

/// A delivery being assembled from its frames.
struct Incoming {
    tag: u64,
    redelivered: bool,
    exchange: String,
    routing_key: String,
    /// What to store, decided from the properties as soon as they arrive.
    prepared: Option<Prepared>,
    size: usize,
    body: BytesMut,
}

/// One connection's worth of link work.
struct Session<'a> {
    cfg: &'a LinkConfig,
    status: &'a LinkStatus,
    dedup: &'a mut DedupWindow,
    synced: watch::Receiver<u64>,
    upstream_cluster: String,
    /// The upstream is a FerryMQ broker: its identity stamps are unique per message.
    upstream_stamps: bool,
    /// Entries of `pending` holding a staged message (not yet deliverable here).
    staged_waiting: usize,
    /// The upstream URI without credentials, as the hop entry shows it.
    uri_shown: String,
    consuming: bool,
    /// A probe of the upstream queue is awaiting its answer.
    probing: bool,
    cancelling: bool,
    no_demand_since: Option<Instant>,
    hold_until: Option<Instant>,
    incoming: Option<Incoming>,
    /// Stored messages not yet acknowledged upstream, oldest first.
    pending: VecDeque<Pending>,
    /// The channel is set up (the upstream queue exists).
    setup_done: bool,
}

/// A message the link took from the upstream and has not acknowledged yet.
struct Pending {
    /// The upstream's delivery tag.
    tag: u64,
    /// The durability epoch to wait for (0: none).
    epoch: u64,
    /// Identity digest, added to the window once settled.
    digest: Option<u64>,
    /// The stored message, enqueued locally once its epoch is synced.
    staged: Option<Staged>,
}

impl Pending {
    /// One with nothing to wait for.
    fn settled(tag: u64, digest: Option<u64>) -> Self {
        Pending {
            tag,
            epoch: 0,
            digest,
            staged: None,
        }
    }
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a LinkConfig,
        status: &'a LinkStatus,
        uri: &'a AmqpUri,
        dedup: &'a mut DedupWindow,
        synced: watch::Receiver<u64>,
    ) -> Self {
        Session {
            cfg,
            status,
            dedup,
            synced,
            upstream_cluster: String::new(),
            upstream_stamps: false,
            staged_waiting: 0,
            uri_shown: uri.redacted(),
            consuming: false,
            probing: false,
            cancelling: false,
            no_demand_since: None,
            hold_until: None,
            incoming: None,
            pending: VecDeque::new(),
            setup_done: false,
        }
    }

    /// Runs the session; returns how it ended and whether it got as far as consuming.
    async fn run(
        mut self,
        conn: Connection,
        control: &mut watch::Receiver<Control>,
    ) -> (End, bool) {
        let end = self.serve(conn, control).await;
        self.retire_pending().await;
        (end, self.setup_done)
    }

    /// After a session: messages stored but not yet acknowledged will be redelivered
    /// by the upstream; once they are durable, their identities join the window so the
    /// redeliveries are dropped.
    async fn retire_pending(&mut self) {
        let Some(last_epoch) = self.pending.iter().map(|p| p.epoch).max() else {
            return;
        };
        // After a store failure no round will come: the upstream keeps these messages
        // (they were not acknowledged), so local copies would be duplicates, and their
        // identities must not make the redeliveries look like copies.
        let failed = self.cfg.queue.store_failed();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while !failed && *self.synced.borrow() < last_epoch {
            if tokio::time::timeout_at(deadline, self.synced.changed())
                .await
                .is_err()
            {
                tracing::warn!("federation link {}: store did not sync in time; redeliveries of unsynced messages will be stored again", self.status.id);
                break;
            }
        }
        // A failure during the wait announces nothing, so it is looked for again.
        let failed = failed || self.cfg.queue.store_failed();
        // Only durable copies may make a redelivery a duplicate: recording an unsynced
        // one would drop the redelivery and lose the message if the copy never lands.
        let synced = *self.synced.borrow();
        let mut staged = Vec::new();
        for p in self.pending.drain(..) {
            if failed && p.staged.is_some() {
                continue;
            }
            if let Some(d) = p.digest.filter(|_| p.epoch <= synced) {
                self.dedup.insert_digest(d);
            }
            // Delivered even if its round is late (the store stays in charge of
            // it): held back, it would sit in the store and in no queue.
            staged.extend(p.staged);
        }
        self.staged_waiting = 0;
        self.cfg.queue.enqueue_staged(staged);
    }

    async fn serve(&mut self, mut conn: Connection, control: &mut watch::Receiver<Control>) -> End {
        let server_text = |key: &str| match conn.server_properties.inner().get(key) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            Some(AMQPValue::ShortString(s)) => s.to_string(),
            _ => String::new(),
        };
        self.upstream_cluster = server_text("cluster_name");
        // Only a FerryMQ upstream stamps identities; elsewhere the header is whatever
        // a publisher put there, and no more unique than a message-id.
        self.upstream_stamps = server_text("product") == "FerryMQ";
        match tokio::time::timeout(CONNECT_TIMEOUT, self.setup(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return End::Failed(e),
            Err(_) => {
                return End::Failed("the upstream did not answer the channel setup in time".into())
            }
        }
        // Heartbeats catch a silent upstream (a half-open connection behind a NAT, a host
        // that vanished): one frame every half interval, failure after two silent ones.
        let heartbeat = Duration::from_secs(u64::from(conn.heartbeat));
        let mut last_read = Instant::now();
        let mut last_sent = Instant::now();
        let write_limit = if heartbeat.is_zero() {
            Duration::from_secs(60)
        } else {
            heartbeat * 2
        };
        let (mut reader, mut writer) = conn.into_parts();
        self.setup_done = true;
        self.status.set(State::Paused, None);
        let seen_restart = control.borrow().restart;
        let mut last_probe: Option<Instant> = None;
        let mut tick = tokio::time::interval(DEMAND_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let waiting_sync = self.pending.front().is_some_and(|p| p.epoch > 0);
            tokio::select! {
                changed = control.changed() => {
                    let c = *control.borrow();
                    if changed.is_err() || c.stop {
                        self.drain(&mut reader, &mut writer).await;
                        return End::Stopped;
                    }
                    if c.restart != seen_restart {
                        self.drain(&mut reader, &mut writer).await;
                        return End::Restart;
                    }
                }
                read = reader.fill() => {
                    match read {
                        Ok(0) => return End::Failed("the upstream closed the connection".into()),
                        Ok(_) => {
                            last_read = Instant::now();
                            if let Err(e) = self.read_frames(&mut reader, &mut writer) {
                                return End::Failed(e);
                            }
                        }
                        Err(e) => return End::Failed(format!("connection lost: {e}")),
                    }
                }
                _ = self.synced.changed(), if waiting_sync => {}
                _ = tick.tick() => {}
            }
            self.settle(&mut writer);
            if self.cfg.queue.store_failed() {
                // Nothing stored now would ever be acknowledged upstream: end the session
                // so the upstream takes back what is in flight, for its own consumers.
                // The acks `settle` just queued (for messages synced before the failure,
                // already delivered here) must reach it first.
                let _ = tokio::time::timeout(write_limit, writer.flush()).await;
                return End::Failed(STORE_FAILED.into());
            }
            self.follow_demand(&mut writer);
            if last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY) && !self.probing {
                if writer
                    .push_method(PROBE_CH, self.passive_declare())
                    .is_err()
                {
                    return End::Failed("cannot encode the upstream queue name".into());
                }
                self.probing = true;
                last_probe = Some(Instant::now());
            }
            if !heartbeat.is_zero() {
                if last_read.elapsed() > heartbeat * 2 {
                    return End::Failed("missed heartbeats from the upstream".into());
                }
                if last_sent.elapsed() >= heartbeat / 2 {
                    writer.push_heartbeat();
                }
            }
            if writer.has_pending() {
                match tokio::time::timeout(write_limit, writer.flush()).await {
                    Ok(Ok(())) => last_sent = Instant::now(),
                    Ok(Err(e)) => return End::Failed(format!("connection lost: {e}")),
                    Err(_) => return End::Failed("the upstream stopped reading".into()),
                }
            }
        }
    }

    /// A passive declare of the upstream queue: fails if it is gone, else reports its depth.
    fn passive_declare(&self) -> AMQPClass {
        AMQPClass::Queue(q::AMQPMethod::Declare(q::Declare {
            queue: short(&self.cfg.upstream_queue).unwrap_or_default(),
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        }))
    }

    /// Opens the channels, checks the upstream queue exists, sets the prefetch.
    async fn setup(&self, conn: &mut Connection) -> Result<(), String> {
        let up = &self.cfg.upstream_queue;
        short(up).map_err(|e| e.to_string())?;
        conn.open_channel(CH).await.map_err(|e| e.to_string())?;
        conn.open_channel(PROBE_CH)
            .await
            .map_err(|e| e.to_string())?;
        conn.call(CH, self.passive_declare())
            .await
            .map_err(|e| format!("upstream queue '{up}': {e}"))?;
        let qos = AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: self.cfg.upstream.prefetch_count,
            global: false,
        }));
        conn.call(CH, qos).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn has_demand(&self) -> bool {
        if self.hold_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let q = &self.cfg.queue;
        q.message_count() == 0
            && q.consumers()
                .iter()
                .any(|c| c.priority >= 0 && c.has_capacity())
    }

    /// Starts or stops the upstream consumer as local demand comes and goes.
    fn follow_demand(&mut self, writer: &mut FrameWriter) {
        if self.cfg.queue.is_deleted() {
            return;
        }
        if self.has_demand() {
            self.no_demand_since = None;
            if !self.consuming && !self.cancelling {
                let mut args = FieldTable::default();
                args.insert("x-priority".into(), AMQPValue::LongInt(-1));
                args.insert("x-ferrymq-identity".into(), AMQPValue::Boolean(true));
                let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: short(&self.cfg.upstream_queue).unwrap_or_default(),
                    consumer_tag: short(&self.cfg.upstream.tag()).unwrap_or_default(),
                    no_local: false,
                    no_ack: self.cfg.upstream.ack_mode == AckMode::NoAck,
                    exclusive: false,
                    nowait: false,
                    arguments: args,
                }));
                if writer.push_method(CH, consume).is_ok() {
                    self.consuming = true;
                    self.status.set(State::Running, None);
                }
            }
        } else if self.consuming && !self.cancelling {
            let now = Instant::now();
            let since = *self.no_demand_since.get_or_insert(now);
            let held = self.hold_until.is_some_and(|t| now < t);
            if held || now.duration_since(since) >= PAUSE_AFTER {
                self.cancel(writer);
            }
        }
    }

    fn cancel(&mut self, writer: &mut FrameWriter) {
        let cancel = AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: short(&self.cfg.upstream.tag()).unwrap_or_default(),
            nowait: false,
        }));
        if writer.push_method(CH, cancel).is_ok() {
            self.cancelling = true;
        }
    }

    fn read_frames(
        &mut self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
    ) -> Result<(), String> {
        while let Some(frame) = reader.next_frame().map_err(|e| e.to_string())? {
            if frame.channel == PROBE_CH {
                match frame.method_id() {
                    Some((50, 11)) => {
                        self.probing = false;
                        let (messages, consumers) =
                            parse_declare_ok(frame.payload).ok_or("malformed queue.declare-ok")?;
                        let others = consumers.saturating_sub(u32::from(self.consuming));
                        self.status
                            .probed_upstream(u64::from(messages), u64::from(others));
                    }
                    Some(ids::CHANNEL_CLOSE) => {
                        let up = &self.cfg.upstream_queue;
                        return Err(format!("upstream queue '{up}': {}", frame.close_error()));
                    }
                    _ => {}
                }
                continue;
            }
            match frame.kind {
                FRAME_METHOD => match frame.method_id() {
                    Some(ids::BASIC_DELIVER) => {
                        if self.incoming.is_some() {
                            // Replacing the unfinished message would lose it: a later
                            // multiple ack would settle its tag upstream.
                            return Err(
                                "the upstream sent a delivery before the previous one's content"
                                    .into(),
                            );
                        }
                        self.status.received.fetch_add(1, Ordering::Relaxed);
                        let (tag, redelivered, exchange, routing_key) =
                            parse_deliver(frame.payload).ok_or("malformed basic.deliver")?;
                        self.incoming = Some(Incoming {
                            tag,
                            redelivered,
                            exchange,
                            routing_key,
                            prepared: None,
                            size: 0,
                            body: BytesMut::new(),
                        });
                    }
                    Some(ids::CONNECTION_CLOSE) | Some(ids::CHANNEL_CLOSE) => {
                        return Err(frame.close_error().to_string());
                    }
                    Some(ids::BASIC_CANCEL) => {
                        return Err(
                            "the upstream cancelled the consumer (upstream queue deleted?)".into(),
                        );
                    }
                    Some((60, 21)) => {} // consume-ok
                    Some((60, 31)) => {
                        // cancel-ok: paused until demand returns.
                        self.consuming = false;
                        self.cancelling = false;
                        self.status.pauses.fetch_add(1, Ordering::Relaxed);
                        self.status.set(State::Paused, None);
                    }
                    _ => {}
                },
                FRAME_HEADER => {
                    if let Some(redelivered) = self.incoming.as_ref().map(|i| i.redelivered) {
                        let size = frame.body_size().unwrap_or(0);
                        if size > MAX_BODY {
                            return Err(format!(
                                "the upstream sent a {size}-byte message (limit {MAX_BODY})"
                            ));
                        }
                        let size = size as usize;
                        // Rewritten straight from the read buffer: no copy of the
                        // properties as received is kept.
                        let properties = frame.payload.get(12..).unwrap_or_default();
                        let prepared = self.prepare(properties, redelivered)?;
                        let inc = self.incoming.as_mut().expect("checked above");
                        inc.size = size;
                        inc.prepared = Some(prepared);
                        inc.body = BytesMut::with_capacity(size.min(1 << 20));
                        if size == 0 {
                            let inc = self.incoming.take().expect("just set");
                            self.store(inc, writer)?;
                        }
                    }
                }
                FRAME_BODY => {
                    if let Some(inc) = self.incoming.as_mut() {
                        inc.body.extend_from_slice(frame.payload);
                        if inc.body.len() >= inc.size {
                            let inc = self.incoming.take().expect("just set");
                            self.store(inc, writer)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves one delivered message into the local queue (or drops a duplicate).
    fn store(&mut self, inc: Incoming, writer: &mut FrameWriter) -> Result<(), String> {
        let ack_mode = self.cfg.upstream.ack_mode;
        let (properties, identity) = match inc.prepared {
            Some(Prepared::Store(p, id)) => (p, id),
            None => return Err("a message body arrived before its header".into()),
            Some(Prepared::Loop) => {
                // Never back into a queue the message already left: leave it upstream,
                // where the upstream's own consumers (served first) can take it.
                self.status.loops_refused.fetch_add(1, Ordering::Relaxed);
                if ack_mode != AckMode::NoAck {
                    writer.push_nack(CH, inc.tag, false, true);
                }
                self.hold(writer);
                return Ok(());
            }
        };
        let digest = identity.as_deref().map(dedup::digest);
        // A FerryMQ identity is unique, so it is checked on every delivery: an upstream
        // that crashed before its delivered mark reached the disk redelivers without the
        // redelivered flag. A message-id is checked only on redeliveries: a first
        // delivery whose message-id repeats (a business key reused) is a new message.
        let unique = self.upstream_stamps
            && identity
                .as_deref()
                .is_some_and(|i| i.starts_with(FERRYMQ_IDENTITY));
        if let Some(d) = digest.filter(|_| inc.redelivered || unique) {
            if self.dedup.contains_digest(d) {
                self.status.duplicates.fetch_add(1, Ordering::Relaxed);
                if ack_mode != AckMode::NoAck {
                    self.pending.push_back(Pending::settled(inc.tag, None));
                }
                return Ok(());
            }
        }
        let queue = &self.cfg.queue;
        if queue.is_deleted() {
            return Err("the local queue was deleted".into());
        }
        // The queue logs the identity with the message (durable in the same round):
        // the redelivery of a message stored or consumed before a crash is dropped.
        let logged = digest.filter(|_| ack_mode != AckMode::NoAck);
        let message = Message::from_wire(
            inc.exchange,
            inc.routing_key,
            properties,
            inc.body.freeze(),
            Instant::now(),
        )
        .ok_or("the upstream sent malformed message properties")?;
        // On-confirm holds a persistent message back from consumers until its round,
        // and a transient one behind it waits too, to keep the upstream's order.
        // A transient message with nothing waiting ahead is published at once (where
        // the queue's length limits apply to it as to a publisher's).
        let waits = message.is_persistent() || self.staged_waiting > 0;
        let outcome = match ack_mode {
            AckMode::OnConfirm if waits => queue.stage(Arc::new(message), logged),
            _ => Staging::Published(queue.publish_identified(Arc::new(message), logged)),
        };
        let (staged, epoch) = match outcome {
            Staging::Staged(staged, epoch) => (Some(staged), epoch),
            Staging::Published(Enqueued::Accepted(epoch)) => (None, epoch),
            Staging::Published(Enqueued::Refused | Enqueued::Unstored) => {
                // The local queue is full (reject-publish) or its store failed: leave
                // the message upstream.
                if ack_mode != AckMode::NoAck {
                    writer.push_nack(CH, inc.tag, false, true);
                }
                self.hold(writer);
                return Ok(());
            }
        };
        if queue.is_deleted() {
            return Err("the local queue was deleted".into());
        }
        self.status.transferred.fetch_add(1, Ordering::Relaxed);
        match ack_mode {
            AckMode::NoAck => {
                if let Some(d) = digest {
                    self.dedup.insert_digest(d);
                }
            }
            AckMode::OnPublish => self.pending.push_back(Pending::settled(inc.tag, digest)),
            AckMode::OnConfirm => {
                self.staged_waiting += usize::from(staged.is_some());
                self.pending.push_back(Pending {
                    tag: inc.tag,
                    epoch,
                    digest,
                    staged,
                })
            }
        }
        Ok(())
    }

    /// The properties a delivered message is stored with: its own, the identity
    /// header removed and a hop entry added (or `Loop` if it already left this queue).
    fn prepare(&self, raw: &[u8], redelivered: bool) -> Result<Prepared, String> {
        let hop = Hop {
            uri: &self.uri_shown,
            queue: &self.cfg.upstream_queue,
            redelivered,
            cluster_name: &self.upstream_cluster,
        };
        match headers::rewrite(raw, IDENTITY_HEADER, IDENTITY_KEY, &hop, identity_of) {
            Some(r) => Ok(Prepared::Store(Bytes::from(r.properties), r.identity)),
            None => self.prepare_decoded(raw, &hop),
        }
    }

    /// The decoding path, for messages that already carry `x-received-from` (they
    /// may be looping) or have properties the byte-level rewrite does not handle.
    fn prepare_decoded(&self, raw: &[u8], hop: &Hop<'_>) -> Result<Prepared, String> {
        // Decoded strictly: a lenient decode would replace undecodable properties with
        // defaults and store the message as something else (transient, no headers).
        let props = basic::parse_properties(raw)
            .map(|(_, p)| p)
            .map_err(|_| "the upstream sent properties that cannot be decoded".to_string())?;
        let headers = props.headers().clone().unwrap_or_default();
        let ferrymq_id = match headers.inner().get(IDENTITY_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        };
        let message_id = props.message_id().as_ref().map(|m| m.to_string());
        let identity = identity_of(ferrymq_id.as_deref(), message_id.as_deref());
        let mut table = headers.inner().clone();
        table.remove(IDENTITY_HEADER);
        let mut hops: Vec<AMQPValue> = match table.get("x-received-from") {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
            _ => Vec::new(),
        };
        if visited(&hops, &self.cfg.cluster_name, &self.cfg.queue.name) {
            return Ok(Prepared::Loop);
        }
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut entry = FieldTable::default();
        entry.insert("uri".into(), text(hop.uri));
        entry.insert("queue".into(), text(hop.queue));
        entry.insert("redelivered".into(), AMQPValue::Boolean(hop.redelivered));
        entry.insert("cluster-name".into(), text(hop.cluster_name));
        if let Some(id) = &identity {
            entry.insert(IDENTITY_KEY.into(), text(id));
        }
        hops.push(AMQPValue::FieldTable(entry));
        table.insert(
            "x-received-from".into(),
            AMQPValue::FieldArray(FieldArray::from(hops)),
        );
        let props = props.with_headers(FieldTable::from(table));
        Ok(Prepared::Store(encode_properties(&props), identity))
    }

    /// Stops consuming for one reconnect delay (at least a second).
    fn hold(&mut self, writer: &mut FrameWriter) {
        let d =
            Duration::from_secs_f64(self.cfg.upstream.reconnect_delay).max(Duration::from_secs(1));
        self.hold_until = Some(Instant::now() + d);
        if self.consuming && !self.cancelling {
            self.cancel(writer);
        }
    }

    /// Acknowledges upstream every stored message whose durability epoch is synced
    /// (with it, its identity in the queue's identity log), in delivery order.
    fn settle(&mut self, writer: &mut FrameWriter) {
        let synced = *self.synced.borrow();
        let mut last = None;
        let mut staged = Vec::new();
        while self.pending.front().is_some_and(|p| p.epoch <= synced) {
            let p = self.pending.pop_front().expect("front exists");
            if let Some(d) = p.digest {
                self.dedup.insert_digest(d);
            }
            self.staged_waiting -= usize::from(p.staged.is_some());
            staged.extend(p.staged);
            last = Some(p.tag);
        }
        if !staged.is_empty() {
            self.cfg.queue.enqueue_staged(staged);
        }
        if let Some(tag) = last {
            writer.push_ack(CH, tag, true);
        }
    }

    /// Stops consuming and settles what is in flight before a planned stop.
    async fn drain(&mut self, reader: &mut FrameReader, writer: &mut FrameWriter) {
        if self.consuming && !self.cancelling {
            self.cancel(writer);
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        // An upstream that stopped reading must not hold the stop (and the link
        // replacing this one) past the deadline: every write here is bounded by it.
        let until = tokio::time::Instant::from_std(deadline);
        while (self.cancelling || !self.pending.is_empty()) && Instant::now() < deadline {
            if !matches!(
                tokio::time::timeout_at(until, writer.flush()).await,
                Ok(Ok(()))
            ) {
                return;
            }
            let waiting_sync = self.pending.front().is_some_and(|p| p.epoch > 0);
            tokio::select! {
                read = reader.fill() => {
                    match read {
                        Ok(n) if n > 0 => {
                            if self.read_frames(reader, writer).is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
                _ = self.synced.changed(), if waiting_sync => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            self.settle(writer);
        }
        let close = async {
            writer.flush().await?;
            ferrymq_client::close_parts(reader, writer).await
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
    }
}

/// Adds to the window the identities of the newest messages this link stored that are
/// still in the local queue: those the store keeps no identity for (transient
/// messages, non-durable queues) are still recognised when a link restarts in a
/// running broker.
fn seed_from_queue(cfg: &LinkConfig, dedup: &mut DedupWindow) {
    let window = cfg.upstream.prefetch_count as usize * 2;
    let mut found = 0;
    for m in cfg.queue.newest_ready(window) {
        let Some(headers) = m.headers() else { continue };
        let Some(AMQPValue::FieldArray(hops)) = headers.inner().get("x-received-from") else {
            continue;
        };
        if let Some(AMQPValue::FieldTable(last)) = hops.as_slice().last() {
            if let Some(AMQPValue::LongString(id)) = last.inner().get(IDENTITY_KEY) {
                dedup.insert(&id.to_string());
                found += 1;
            }
        }
    }
    tracing::info!(
        "federation link on {}: {found} stored identities found among the newest messages",
        cfg.queue.name
    );
}

/// The heartbeat a link asks for: the URI's `heartbeat` parameter, else 60 s.
fn heartbeat_of(uri: &AmqpUri) -> u16 {
    uri.param("heartbeat")
        .and_then(|h| h.parse().ok())
        .unwrap_or(60)
}

/// Reads basic.deliver's fields in place (the codec would allocate the consumer
/// tag too): (delivery tag, redelivered, exchange, routing key).
/// Message and consumer counts of a `queue.declare-ok` payload.
fn parse_declare_ok(p: &[u8]) -> Option<(u32, u32)> {
    let name_len = usize::from(*p.get(4)?);
    let counts = p.get(5 + name_len..5 + name_len + 8)?;
    Some((
        u32::from_be_bytes(counts[..4].try_into().ok()?),
        u32::from_be_bytes(counts[4..].try_into().ok()?),
    ))
}

fn parse_deliver(p: &[u8]) -> Option<(u64, bool, String, String)> {
    let short = |at: usize| -> Option<(String, usize)> {
        let len = *p.get(at)? as usize;
        // Lossy: a broker that cut a name mid-character must not stall the link.
        let s = String::from_utf8_lossy(p.get(at + 1..at + 1 + len)?).into_owned();
        Some((s, at + 1 + len))
    };
    let tag_len = *p.get(4)? as usize;
    let at = 5 + tag_len;
    let tag = u64::from_be_bytes(p.get(at..at + 8)?.try_into().ok()?);
    let redelivered = p.get(at + 8)? & 1 == 1;
    let (exchange, at) = short(at + 9)?;
    let (routing_key, _) = short(at)?;
    Some((tag, redelivered, exchange, routing_key))
}

/// What to do with a delivered message.
enum Prepared {
    /// Store it with these properties; the identity (if any) removes duplicates.
    Store(Bytes, Option<String>),
    /// It already left this queue once: refuse it.
    Loop,
}

/// A message's identity: FerryMQ's stamp from a FerryMQ upstream, else `message-id`.
/// (It also keeps the stored message's record of where it came from: the
/// `ferrymq-id` key of the hop entry, read back by [`seed_from_queue`].)
fn identity_of(ferrymq_id: Option<&str>, message_id: Option<&str>) -> Option<String> {
    match (ferrymq_id, message_id) {
        (Some(f), _) => Some(format!("{FERRYMQ_IDENTITY}{f}")),
        (None, Some(m)) => Some(format!("message-id:{m}")),
        (None, None) => None,
    }
}

/// Whether `x-received-from` shows the message already left `queue` on `cluster`.
fn visited(hops: &[AMQPValue], cluster: &str, queue: &str) -> bool {
    let text = |v: Option<&AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    hops.iter().any(|h| match h {
        AMQPValue::FieldTable(t) => {
            text(t.inner().get("cluster-name")) == cluster && text(t.inner().get("queue")) == queue
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_parses_in_place() {
        use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
        let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 77,
            redelivered: true,
            exchange: "ex".into(),
            routing_key: "rk.1".into(),
        }));
        let ctx = gen_frame(&AMQPFrame::Method(1, method))(WriteContext::from(Vec::new())).unwrap();
        let bytes = ctx.into_inner().0;
        let payload = &bytes[7..bytes.len() - 1];
        assert_eq!(
            parse_deliver(payload),
            Some((77, true, "ex".to_string(), "rk.1".to_string()))
        );
        assert_eq!(parse_deliver(&payload[..10]), None);
    }

    #[test]
    fn declare_ok_counts_parse() {
        use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
        let method = AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
            queue: "metric.cpu".into(),
            message_count: 123_456,
            consumer_count: 3,
        }));
        let ctx = gen_frame(&AMQPFrame::Method(2, method))(WriteContext::from(Vec::new())).unwrap();
        let bytes = ctx.into_inner().0;
        let payload = &bytes[7..bytes.len() - 1];
        assert_eq!(parse_declare_ok(payload), Some((123_456, 3)));
        assert_eq!(parse_declare_ok(&payload[..12]), None);
    }

    #[test]
    fn loop_rule_matches_cluster_and_queue() {
        let mut t = FieldTable::default();
        t.insert("cluster-name".into(), AMQPValue::LongString("a".into()));
        t.insert("queue".into(), AMQPValue::LongString("q".into()));
        let hops = vec![AMQPValue::FieldTable(t)];
        assert!(visited(&hops, "a", "q"));
        assert!(!visited(&hops, "b", "q"));
        assert!(!visited(&hops, "a", "other"));
    }
}
