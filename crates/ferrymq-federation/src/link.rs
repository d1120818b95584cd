//! A queue link: an AMQP client beside the broker that consumes from the
//! upstream queue while the local queue has demand and moves each message into
//! the local queue, acknowledging upstream according to the ack mode.
//!
//! Demand is RabbitMQ's rule: the local queue is empty and a local consumer with
//! priority ≥ 0 has spare capacity. The link consumes with `x-priority: -1`, so
//! the upstream's own consumers are served first. It stops consuming only after
//! demand has been absent for [`PAUSE_AFTER`], so a prefetch-1 consumer does not
//! cause a consume/cancel storm.

use crate::dedup::DedupWindow;
use crate::status::{LinkStatus, State};
use crate::upstream::{AckMode, Upstream};
use amq_protocol::protocol::{basic, queue as q, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::{Bytes, BytesMut};
use ferrymq_broker::consumer::IDENTITY_HEADER;
use ferrymq_broker::message::Message;
use ferrymq_broker::queue::{Enqueued, Queue};
use ferrymq_client::{
    ids, short, AmqpUri, Connection, FrameReader, FrameWriter, FRAME_BODY, FRAME_HEADER,
    FRAME_METHOD,
};
use std::collections::VecDeque;
use std::path::PathBuf;
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
/// The channel the link uses on its upstream connection.
const CH: u16 = 1;
/// Key of a message's identity in the `x-received-from` entry a link adds.
const IDENTITY_KEY: &str = "ferrymq-id";

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
    /// Where the duplicate window is persisted (`None`: memory only).
    pub dedup_path: Option<PathBuf>,
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
    // Twice the largest possible number of unacknowledged deliveries, and at least 100k.
    let capacity = (cfg.upstream.prefetch_count as usize * 4).max(100_000);
    let mut dedup = match &cfg.dedup_path {
        Some(p) => DedupWindow::open(p.clone(), capacity).unwrap_or_else(|e| {
            tracing::error!(
                "federation link {}: duplicate window {} unusable ({e}); keeping it in memory",
                status.id,
                p.display()
            );
            DedupWindow::in_memory(capacity)
        }),
        None => DedupWindow::in_memory(capacity),
    };
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
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::open_as(uri, &name, "FerryMQ federation"),
        )
        .await;
        let failure = match opened {
            Ok(Ok(conn)) => {
                status.established(uri.redacted());
                let (end, consumed) = Session::new(&cfg, &status, uri, &mut dedup, synced.clone())
                    .run(conn, &mut control)
                    .await;
                // Back off only while connections fail; a link that worked retries promptly.
                if consumed {
                    delay = base_delay;
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
        };
        tracing::warn!(
            "federation link {} ({}/{} ← {}): {failure}",
            status.id,
            cfg.vhost,
            cfg.queue.name,
            cfg.upstream.name
        );
        status.set(State::Error, Some(failure));
        status.reconnects.fetch_add(1, Ordering::Relaxed);
        uri_index += 1;
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
    if let Err(e) = dedup.sync() {
        tracing::warn!("federation link {}: {e}", status.id);
    }
    status.set(State::Stopped, None);
}

/// A delivery being assembled from its frames.
struct Incoming {
    tag: u64,
    redelivered: bool,
    exchange: String,
    routing_key: String,
    properties: Bytes,
    size: usize,
    body: BytesMut,
}

/// One connection's worth of link work.
struct Session<'a> {
    cfg: &'a LinkConfig,
    status: &'a LinkStatus,
    uri: &'a AmqpUri,
    dedup: &'a mut DedupWindow,
    synced: watch::Receiver<u64>,
    upstream_cluster: String,
    consuming: bool,
    cancelling: bool,
    no_demand_since: Option<Instant>,
    hold_until: Option<Instant>,
    incoming: Option<Incoming>,
    /// Stored messages not yet acknowledged upstream: (tag, durability epoch, identity).
    pending: VecDeque<(u64, u64, Option<String>)>,
    /// The channel is set up (the upstream queue exists).
    setup_done: bool,
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
            uri,
            dedup,
            synced,
            upstream_cluster: String::new(),
            consuming: false,
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
        let Some(last_epoch) = self.pending.iter().map(|p| p.1).max() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while *self.synced.borrow() < last_epoch {
            if tokio::time::timeout_at(deadline, self.synced.changed())
                .await
                .is_err()
            {
                tracing::warn!("federation link {}: store did not sync in time; redeliveries may be stored twice", self.status.id);
                break;
            }
        }
        for (_, _, id) in self.pending.drain(..) {
            if let Some(id) = id {
                self.dedup.insert(&id);
            }
        }
        if let Err(e) = self.dedup.sync() {
            tracing::warn!("federation link {}: {e}", self.status.id);
        }
    }

    async fn serve(&mut self, mut conn: Connection, control: &mut watch::Receiver<Control>) -> End {
        self.upstream_cluster = match conn.server_properties.inner().get("cluster_name") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            Some(AMQPValue::ShortString(s)) => s.to_string(),
            _ => String::new(),
        };
        if let Err(e) = self.setup(&mut conn).await {
            return End::Failed(e);
        }
        let (mut reader, mut writer) = conn.into_parts();
        self.setup_done = true;
        self.status.set(State::Paused, None);
        let seen_restart = control.borrow().restart;
        let mut tick = tokio::time::interval(DEMAND_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let waiting_sync = self.pending.front().is_some_and(|p| p.1 > 0);
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
            if let Err(e) = self.settle(&mut writer) {
                return End::Failed(e);
            }
            self.follow_demand(&mut writer);
            if let Err(e) = writer.flush().await {
                return End::Failed(format!("connection lost: {e}"));
            }
        }
    }

    /// Opens the channel, checks the upstream queue exists, sets the prefetch.
    async fn setup(&self, conn: &mut Connection) -> Result<(), String> {
        let up = &self.cfg.upstream_queue;
        conn.open_channel(CH).await.map_err(|e| e.to_string())?;
        let declare = AMQPClass::Queue(q::AMQPMethod::Declare(q::Declare {
            queue: short(up).map_err(|e| e.to_string())?,
            passive: true,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        conn.call(CH, declare)
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
            match frame.kind {
                FRAME_METHOD => match frame.method_id() {
                    Some(ids::BASIC_DELIVER) => {
                        let method = frame.decode_method().map_err(|e| e.to_string())?;
                        if let AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) = method {
                            self.incoming = Some(Incoming {
                                tag: d.delivery_tag,
                                redelivered: d.redelivered,
                                exchange: d.exchange.to_string(),
                                routing_key: d.routing_key.to_string(),
                                properties: Bytes::new(),
                                size: 0,
                                body: BytesMut::new(),
                            });
                        }
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
                        self.status.set(State::Paused, None);
                    }
                    _ => {}
                },
                FRAME_HEADER => {
                    if let Some(inc) = self.incoming.as_mut() {
                        let size = frame.body_size().unwrap_or(0) as usize;
                        inc.size = size;
                        inc.properties =
                            Bytes::copy_from_slice(frame.payload.get(12..).unwrap_or_default());
                        inc.body = BytesMut::with_capacity(size);
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
        let received = Message::from_wire(
            inc.exchange.clone(),
            inc.routing_key.clone(),
            inc.properties,
            Bytes::new(),
            Instant::now(),
        )
        .ok_or("the upstream sent malformed message properties")?;
        let mut props = received.properties().clone();
        let mut headers = props.headers().clone().unwrap_or_default();
        let identity = match headers.inner().get(IDENTITY_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(format!("ferrymq:{s}")),
            _ => props
                .message_id()
                .as_ref()
                .map(|m| format!("message-id:{m}")),
        };
        let mut table = headers.inner().clone();
        table.remove(IDENTITY_HEADER);
        let mut hops: Vec<AMQPValue> = match table.get("x-received-from") {
            Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
            _ => Vec::new(),
        };
        if visited(&hops, &self.cfg.cluster_name, &self.cfg.queue.name) {
            // Never back into a queue the message already left: leave it upstream,
            // where the upstream's own consumers (served first) can take it.
            self.status.loops_refused.fetch_add(1, Ordering::Relaxed);
            if ack_mode != AckMode::NoAck {
                writer.push_nack(CH, inc.tag, false, true);
            }
            self.hold(writer);
            return Ok(());
        }
        if let Some(id) = &identity {
            if self.dedup.contains(id) {
                self.status.duplicates.fetch_add(1, Ordering::Relaxed);
                if ack_mode != AckMode::NoAck {
                    self.pending.push_back((inc.tag, 0, None));
                }
                return Ok(());
            }
        }
        let mut entry = FieldTable::default();
        entry.insert(
            "uri".into(),
            AMQPValue::LongString(LongString::from(self.uri.redacted())),
        );
        entry.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from(self.cfg.upstream_queue.clone())),
        );
        entry.insert("redelivered".into(), AMQPValue::Boolean(inc.redelivered));
        entry.insert(
            "cluster-name".into(),
            AMQPValue::LongString(LongString::from(self.upstream_cluster.clone())),
        );
        if let Some(id) = &identity {
            // Kept with the stored message, so a restart can tell which messages this
            // link stored even if their identities never reached the window's file.
            entry.insert(
                IDENTITY_KEY.into(),
                AMQPValue::LongString(LongString::from(id.clone())),
            );
        }
        hops.push(AMQPValue::FieldTable(entry));
        table.insert(
            "x-received-from".into(),
            AMQPValue::FieldArray(FieldArray::from(hops)),
        );
        headers = FieldTable::from(table);
        props = props.with_headers(headers);
        let queue = &self.cfg.queue;
        if queue.is_deleted() {
            return Err("the local queue was deleted".into());
        }
        let message = Message::new(inc.exchange, inc.routing_key, props, inc.body.freeze());
        match queue.publish(Arc::new(message)) {
            Enqueued::Accepted(_) if queue.is_deleted() => {
                Err("the local queue was deleted".into())
            }
            Enqueued::Accepted(epoch) => {
                self.status.transferred.fetch_add(1, Ordering::Relaxed);
                match ack_mode {
                    AckMode::NoAck => {
                        if let Some(id) = identity {
                            self.dedup.insert(&id);
                        }
                    }
                    AckMode::OnPublish => self.pending.push_back((inc.tag, 0, identity)),
                    AckMode::OnConfirm => self.pending.push_back((inc.tag, epoch, identity)),
                }
                Ok(())
            }
            Enqueued::Refused => {
                // The local queue is full (reject-publish): leave the message upstream.
                if ack_mode != AckMode::NoAck {
                    writer.push_nack(CH, inc.tag, false, true);
                }
                self.hold(writer);
                Ok(())
            }
        }
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

    /// Acknowledges upstream every stored message whose durability epoch is synced,
    /// in delivery order, after recording their identities durably.
    fn settle(&mut self, writer: &mut FrameWriter) -> Result<(), String> {
        let synced = *self.synced.borrow();
        let mut last = None;
        while let Some(&(tag, epoch, _)) = self.pending.front() {
            if epoch > synced {
                break;
            }
            let (_, _, id) = self.pending.pop_front().expect("front exists");
            if let Some(id) = id {
                self.dedup.insert(&id);
            }
            last = Some(tag);
        }
        if let Some(tag) = last {
            self.dedup
                .sync()
                .map_err(|e| format!("cannot record stored messages: {e}"))?;
            writer.push_ack(CH, tag, true);
        }
        Ok(())
    }

    /// Stops consuming and settles what is in flight before a planned stop.
    async fn drain(&mut self, reader: &mut FrameReader, writer: &mut FrameWriter) {
        if self.consuming && !self.cancelling {
            self.cancel(writer);
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while (self.cancelling || !self.pending.is_empty()) && Instant::now() < deadline {
            if writer.flush().await.is_err() {
                return;
            }
            let waiting_sync = self.pending.front().is_some_and(|p| p.1 > 0);
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
            if self.settle(writer).is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
        let _ = ferrymq_client::close_parts(reader, writer).await;
    }
}

/// Adds to the window the identities of the newest messages this link stored that are
/// still in the local queue. A crash between storing a message and recording its
/// identity would otherwise let the upstream's redelivery in as a second copy.
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
    if found > 0 {
        if let Err(e) = dedup.sync() {
            tracing::warn!("federation link on {}: {e}", cfg.queue.name);
        }
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
