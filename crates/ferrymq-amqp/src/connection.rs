//! One client connection: handshake, frame dispatch to channels, heartbeats, close.

use crate::channel::{Channel, ChannelState, ConnCtx};
use crate::frame::{self, kind, Frame};
use crate::methods;
use crate::outbound::Outbound;
use crate::sasl;
use crate::server::{ConnectionInfo, Shared, Transport};
use crate::wire;
use amq_protocol::protocol::{channel as chan, connection as conn, parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use ferrymq_broker::error::{code, AmqpError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// The only protocol header we speak.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Initial read buffer of a connection.
const SMALL_READ: usize = 4096;
/// Read buffer growth step once a connection is busy.
const BIG_READ: usize = 64 * 1024;

/// Frame size allowed before tune-ok (the spec's minimum).
const PRE_TUNE_FRAME_MAX: usize = 4096;
/// Class and method ids of `tx.commit`, named in the close that fails one.
const TX_COMMIT: (u16, u16) = (90, 20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// We sent connection.close; waiting for close-ok.
    Closing,
    Done,
}

struct Connection {
    shared: Arc<Shared>,
    info: Arc<ConnectionInfo>,
    outbound: Arc<Outbound>,
    phase: Phase,
    frame_max: usize,
    channel_max: u16,
    heartbeat: u16,
    user: Option<String>,
    capabilities: FieldTable,
    ctx: Option<ConnCtx>,
    channels: HashMap<u16, Channel>,
    confirm_dirty: Vec<u16>,
    /// Channels with confirms waiting for the store to sync.
    sync_waiters: Vec<u16>,
    /// The connection has published: a resource alarm stops reading from it.
    publisher: bool,
    /// We told the client it is blocked (connection.blocked sent).
    blocked_sent: bool,
    last_read: Instant,
    /// Verified client-certificate identity (enables SASL EXTERNAL).
    peer_identity: Option<String>,
    /// A refused login, answered after the failure delay.
    refusal: Option<AmqpError>,
}

/// Serves one accepted socket until it closes.
pub async fn serve<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    transport: Transport,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let max = shared.config.max_connections;
    if max > 0 && shared.connections.count() >= max {
        tracing::warn!("connection from {peer} refused: max_connections ({max}) reached");
        return;
    }
    let (mut rd, wr) = tokio::io::split(stream);
    let outbound = Arc::new(Outbound::new());
    let writer = tokio::spawn(outbound.clone().run_writer(wr, shared.clock.clone()));
    let info = shared
        .connections
        .register(&shared.broker, peer, local, transport.tls);
    let mut c = Connection {
        shared: shared.clone(),
        info: info.clone(),
        outbound: outbound.clone(),
        phase: Phase::AwaitStartOk,
        frame_max: PRE_TUNE_FRAME_MAX,
        channel_max: shared.config.channel_max,
        heartbeat: 0,
        user: None,
        capabilities: FieldTable::default(),
        ctx: None,
        channels: HashMap::new(),
        confirm_dirty: Vec::new(),
        sync_waiters: Vec::new(),
        publisher: false,
        blocked_sent: false,
        last_read: Instant::now(),
        peer_identity: transport.peer_identity,
        refusal: None,
    };
    c.run(&mut rd).await;
    c.cleanup();
    shared.connections.unregister(info.id);
    outbound.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Cleanup also runs if the connection task panics: consumers must not stay
/// registered on queues and exclusive queues must go with their connection.
impl Drop for Connection {
    fn drop(&mut self) {
        self.cleanup();
        self.shared.connections.unregister(self.info.id);
    }
}

impl Connection {
    async fn run<R: AsyncRead + Unpin>(&mut self, rd: &mut R) {
        // Idle connections stay small: the read buffer starts at 4 KiB and grows to
        // 64 KiB chunks only once a read fills it (a busy publisher).
        let mut buf = BytesMut::with_capacity(SMALL_READ);
        let mut chunk = SMALL_READ;
        // Protocol header, within the handshake timeout.
        let handshake = Duration::from_secs(self.shared.config.handshake_timeout_secs);
        let header_ok = tokio::time::timeout(handshake, async {
            while buf.len() < 8 {
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        if !header_ok {
            return;
        }
        if &buf[..8] != PROTOCOL_HEADER {
            // Tell the client which version we speak, then hang up (AMQP 0-9-1 §4.2.2).
            self.outbound
                .write(|b| b.extend_from_slice(PROTOCOL_HEADER));
            return;
        }
        let _ = buf.split_to(8);
        self.send_start();
        // Frames that came with the protocol header (a client pipelining its
        // handshake) are handled now, not after the next read.
        if !buf.is_empty() && !self.handle_input(&mut buf).await {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut synced = self.shared.synced.clone();
        let mut alarm = self.shared.alarm.subscribe();
        let opened_by = Instant::now() + handshake;
        loop {
            tokio::select! {
                biased;
                r = alarm.changed() => {
                    if r.is_ok() {
                        self.on_alarm_change();
                    }
                }
                // Under a resource alarm, publishing connections are not read from
                // (as RabbitMQ): their publishes wait in the socket, nothing is lost.
                r = rd.read_buf(&mut buf), if !self.reading_blocked() => {
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            self.info.recv_oct.fetch_add(n as u64, Ordering::Relaxed);
                            self.last_read = Instant::now();
                            if n >= chunk {
                                chunk = BIG_READ;
                            }
                        }
                    }
                    if !self.handle_input(&mut buf).await {
                        return;
                    }
                    if buf.capacity() - buf.len() < SMALL_READ {
                        buf.reserve(chunk);
                    }
                }
                r = synced.changed(), if !self.sync_waiters.is_empty() => {
                    if r.is_ok() {
                        self.on_synced();
                    }
                }
                _ = self.outbound.drained.notified() => {
                    for ch in self.channels.values() {
                        ch.kick();
                    }
                }
                _ = self.info.force_close.notified() => {
                    let reason = self.info.close_reason.lock().clone();
                    self.close_connection(AmqpError::new(code::CONNECTION_FORCED, reason), (0, 0));
                }
                _ = tick.tick() => {
                    if !self.on_tick(opened_by) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles the frames read so far; false when the connection is done.
    async fn handle_input(&mut self, buf: &mut BytesMut) -> bool {
        self.process(buf);
        if let Some(e) = self.refusal.take() {
            // A failed login waits before its answer: guessing passwords over one
            // connection after another stays slow.
            tokio::time::sleep(self.shared.config.auth_failure_delay).await;
            self.finish_refusal(e);
        }
        self.phase != Phase::Done
    }

    fn reading_blocked(&self) -> bool {
        self.publisher && self.phase == Phase::Open && self.shared.alarm.borrow().is_some()
    }

    /// Tells clients that announced `connection.blocked` when publishing stops and resumes.
    fn on_alarm_change(&mut self) {
        let reason = self.shared.alarm.borrow().clone();
        let announced = matches!(
            self.capabilities.inner().get("connection.blocked"),
            Some(AMQPValue::Boolean(true))
        );
        // Only publishing connections are blocked, so only they are told (as RabbitMQ).
        if self.phase != Phase::Open || !announced || !self.publisher {
            return;
        }
        match reason {
            Some(r) if !self.blocked_sent => {
                self.blocked_sent = true;
                self.send(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::Blocked(conn::Blocked {
                        reason: r.into(),
                    })),
                );
            }
            None if self.blocked_sent => {
                self.blocked_sent = false;
                self.send(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::Unblocked(conn::Unblocked {})),
                );
            }
            _ => return,
        }
        self.outbound.flush();
    }

    /// Heartbeats and timeouts; false to drop the connection.
    fn on_tick(&mut self, opened_by: Instant) -> bool {
        let now = Instant::now();
        if self.phase != Phase::Open && self.phase != Phase::Closing && now > opened_by {
            return false;
        }
        if self.phase == Phase::Closing
            && now.duration_since(self.last_read) > Duration::from_secs(3)
        {
            return false;
        }
        if self.heartbeat > 0 && self.phase == Phase::Open {
            let hb = Duration::from_secs(self.heartbeat as u64);
            // A blocked publisher's heartbeats sit unread in its socket: not its fault.
            if now.duration_since(self.last_read) > hb * 2 && !self.reading_blocked() {
                tracing::info!(conn = %self.info.name, "missed heartbeats from client, closing");
                return false;
            }
            let clock = self.shared.clock.load(Ordering::Relaxed);
            let since_write = clock.saturating_sub(self.outbound.last_write_tick());
            if since_write * 1000 >= (self.heartbeat as usize * 1000) / 2 {
                self.outbound.write(wire::heartbeat);
            }
        }
        true
    }

    fn send_start(&self) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
        props.insert("product".into(), s("FerryMQ"));
        props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), s("Rust"));
        props.insert(
            "information".into(),
            s("Licensed under the Apache License 2.0"),
        );
        props.insert("cluster_name".into(), s(&self.shared.config.cluster_name));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        self.outbound.write(|b| {
            wire::method(
                b,
                0,
                AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: props,
                    mechanisms: sasl::mechanisms(self.peer_identity.is_some()).into(),
                    locales: "en_US".into(),
                })),
            )
        });
    }

    fn process(&mut self, buf: &mut BytesMut) {
        if let Some(ctx) = self.ctx.as_ref() {
            ctx.now.set(Instant::now());
        }
        loop {
            if matches!(self.phase, Phase::Done) || self.refusal.is_some() {
                return;
            }
            let frame = match frame::next_frame(buf, self.frame_max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.close_connection(e, (0, 0));
                    // The stream is no longer in sync: drop what is buffered.
                    buf.clear();
                    break;
                }
            };
            if let Err((e, ids)) = self.handle_frame(frame) {
                self.close_connection(e, ids);
            }
        }
        if self.publisher && !self.blocked_sent {
            self.on_alarm_change();
        }
        let mut failed_commit = None;
        if !self.confirm_dirty.is_empty() {
            if let Some(ctx) = self.ctx.as_ref() {
                let synced = ctx.synced_epoch();
                for id in self.confirm_dirty.drain(..) {
                    if let Some(ch) = self.channels.get_mut(&id) {
                        if let Err(e) = ch.flush_confirms(ctx, synced) {
                            failed_commit = Some(e);
                        }
                        if ch.awaits_sync() && !self.sync_waiters.contains(&id) {
                            self.sync_waiters.push(id);
                        }
                    }
                }
            }
        }
        if let Some(e) = failed_commit {
            self.close_connection(e, TX_COMMIT);
        }
        self.outbound.flush();
    }

    /// The store synced: send the confirms that were waiting for it.
    /// (Also the place a fresh publisher learns about an alarm already in force.)
    fn on_synced(&mut self) {
        let Some(ctx) = self.ctx.as_ref() else { return };
        let synced = ctx.synced_epoch();
        let channels = &mut self.channels;
        let mut failed_commit = None;
        self.sync_waiters.retain(|id| match channels.get_mut(id) {
            Some(ch) => {
                if let Err(e) = ch.flush_confirms(ctx, synced) {
                    failed_commit = Some(e);
                }
                ch.awaits_sync()
            }
            None => false,
        });
        // A commit the failed store cannot complete: 541 is a connection error.
        if let Some(e) = failed_commit {
            self.close_connection(e, TX_COMMIT);
        }
        self.outbound.flush();
    }

    fn handle_frame(&mut self, f: Frame) -> Result<(), (AmqpError, (u16, u16))> {
        if self.phase == Phase::Closing {
            // Only close / close-ok matter now.
            if f.kind == kind::METHOD
                && f.channel == 0
                && f.payload.len() >= 4
                && f.payload[..2] == [0, 10]
            {
                let m = u16::from_be_bytes([f.payload[2], f.payload[3]]);
                if m == 51 {
                    self.phase = Phase::Done;
                } else if m == 50 {
                    self.send(
                        0,
                        AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                    );
                    self.phase = Phase::Done;
                }
            }
            return Ok(());
        }
        match f.kind {
            kind::HEARTBEAT => {
                if f.channel != 0 {
                    return Err((
                        AmqpError::unexpected_frame("heartbeat frame on non-zero channel"),
                        (0, 0),
                    ));
                }
                Ok(())
            }
            kind::METHOD => self.handle_method_frame(f),
            _ => {
                if self.phase != Phase::Open {
                    return Err((
                        AmqpError::unexpected_frame("content frame during handshake"),
                        (0, 0),
                    ));
                }
                self.handle_content(f)
            }
        }
    }

    fn handle_method_frame(&mut self, f: Frame) -> Result<(), (AmqpError, (u16, u16))> {
        if f.payload.len() < 4 {
            return Err((AmqpError::frame_error("method frame too short"), (0, 0)));
        }
        let ids = (
            u16::from_be_bytes([f.payload[0], f.payload[1]]),
            u16::from_be_bytes([f.payload[2], f.payload[3]]),
        );
        if ids == (60, 40) && f.channel != 0 && self.phase == Phase::Open {
            return self.publish_fast(f.channel, &f.payload);
        }
        if !methods::is_known(ids.0, ids.1) {
            return Err((
                AmqpError::not_implemented(format!("unknown method {}.{} received", ids.0, ids.1)),
                ids,
            ));
        }
        let class = match parse_class(&f.payload[..]) {
            Ok((&[], c)) => c,
            _ => {
                return Err((
                    AmqpError::syntax_error(format!(
                        "malformed arguments for method {}.{}",
                        ids.0, ids.1
                    )),
                    ids,
                ))
            }
        };
        if f.channel == 0 {
            return match class {
                AMQPClass::Connection(m) => self.connection_method(m).map_err(|e| (e, ids)),
                _ => Err((
                    AmqpError::channel_error(format!(
                        "unexpected method {}.{} on channel 0",
                        ids.0, ids.1
                    )),
                    ids,
                )),
            };
        }
        if self.phase != Phase::Open {
            return Err((AmqpError::channel_error("connection is not open yet"), ids));
        }
        if let AMQPClass::Connection(_) = class {
            return Err((
                AmqpError::command_invalid(format!(
                    "connection method {}.{} on channel {}",
                    ids.0, ids.1, f.channel
                )),
                ids,
            ));
        }
        self.channel_method(f.channel, class, ids)
    }

    /// `basic.publish` without the generic decoder.
    fn publish_fast(&mut self, id: u16, payload: &[u8]) -> Result<(), (AmqpError, (u16, u16))> {
        let ids = (60, 40);
        let Some((exchange, routing_key, mandatory, immediate)) = methods::parse_publish(payload)
        else {
            return Err((
                AmqpError::syntax_error("malformed arguments for method 60.40"),
                ids,
            ));
        };
        let ctx = self.ctx.as_ref().expect("open connection has a context");
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err((AmqpError::channel_error("expected 'channel.open'"), ids));
        };
        if ch.state == ChannelState::Closing {
            return Ok(());
        }
        match ch.begin_publish(ctx, exchange, routing_key.to_owned(), mandatory, immediate) {
            Ok(()) => Ok(()),
            Err(e) if e.is_hard() => Err((e, ids)),
            Err(e) => {
                self.close_channel(id, e, ids);
                Ok(())
            }
        }
    }

    fn channel_method(
        &mut self,
        id: u16,
        class: AMQPClass,
        ids: (u16, u16),
    ) -> Result<(), (AmqpError, (u16, u16))> {
        let ctx = self.ctx.as_ref().expect("open connection has a context");
        match class {
            AMQPClass::Channel(chan::AMQPMethod::Open(_)) => {
                if id > self.channel_max {
                    return Err((
                        AmqpError::not_allowed(format!(
                            "channel id {id} is above the negotiated channel_max ({})",
                            self.channel_max
                        )),
                        (0, 0),
                    ));
                }
                if self.channels.contains_key(&id) {
                    return Err((AmqpError::channel_error("second 'channel.open' seen"), ids));
                }
                if self.channels.len() >= self.channel_max as usize {
                    return Err((
                        AmqpError::not_allowed(format!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.len(),
                            self.channel_max
                        )),
                        (0, 0),
                    ));
                }
                if let Some(limit) = ctx.broker.user_limit(&ctx.user, "max-channels") {
                    if self.shared.connections.channels_of(&ctx.user) as u64 >= limit {
                        return Err((
                            AmqpError::not_allowed(format!(
                                "number of channels opened for user '{}' has reached the maximum allowed user limit ({limit})",
                                ctx.user
                            )),
                            (0, 0),
                        ));
                    }
                }
                let ch = Channel::new(id, ctx);
                self.info.channels.lock().insert(id, ch.sink.clone());
                self.channels.insert(id, ch);
                self.send(
                    id,
                    AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                );
                Ok(())
            }
            AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                if let Some(mut ch) = self.channels.remove(&id) {
                    ch.shutdown(ctx);
                    self.info.channels.lock().remove(&id);
                    self.send(
                        id,
                        AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                    );
                    Ok(())
                } else {
                    Err((AmqpError::channel_error("expected 'channel.open'"), ids))
                }
            }
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {
                if let Some(ch) = self.channels.get(&id) {
                    if ch.state == ChannelState::Closing {
                        self.channels.remove(&id);
                        self.info.channels.lock().remove(&id);
                    }
                }
                Ok(())
            }
            class => {
                let Some(ch) = self.channels.get_mut(&id) else {
                    return Err((AmqpError::channel_error("expected 'channel.open'"), ids));
                };
                if ch.state == ChannelState::Closing {
                    return Ok(());
                }
                let r = ch.handle_method(ctx, class);
                // tx.commit may leave a commit-ok waiting for the store.
                if ch.awaits_sync() && !self.sync_waiters.contains(&id) {
                    self.sync_waiters.push(id);
                }
                match r {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_hard() => Err((e, ids)),
                    Err(e) => {
                        self.close_channel(id, e, ids);
                        Ok(())
                    }
                }
            }
        }
    }

    fn handle_content(&mut self, f: Frame) -> Result<(), (AmqpError, (u16, u16))> {
        let ctx = self.ctx.as_ref().expect("open connection has a context");
        let Some(ch) = self.channels.get_mut(&f.channel) else {
            return Err((AmqpError::channel_error("expected 'channel.open'"), (0, 0)));
        };
        if ch.state == ChannelState::Closing {
            return Ok(());
        }
        let publishing = ch.expects_content();
        self.publisher = true;
        let r = if f.kind == kind::HEADER {
            ch.handle_header(ctx, f.payload)
        } else {
            ch.handle_body(ctx, f.payload)
        };
        // Errors about a publish in progress name basic.publish; stray content names no method.
        let ids = if publishing { (60, 40) } else { (0, 0) };
        if !ch.expects_content() {
            self.confirm_dirty.push(f.channel);
        }
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.is_hard() => Err((e, ids)),
            Err(e) => {
                self.close_channel(f.channel, e, ids);
                Ok(())
            }
        }
    }

    fn close_channel(&mut self, id: u16, e: AmqpError, ids: (u16, u16)) {
        let ctx = self.ctx.as_ref().expect("open connection has a context");
        if let Some(ch) = self.channels.get_mut(&id) {
            tracing::debug!(conn = %self.info.name, channel = id, "channel error: {}", e.text);
            // Closing anyway: a commit the failed store cannot complete ends with it.
            let _ = ch.flush_confirms(ctx, ctx.synced_epoch());
            ch.shutdown(ctx);
            ch.state = ChannelState::Closing;
            self.send(
                id,
                AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                    reply_code: e.code,
                    reply_text: e.text.into(),
                    class_id: ids.0,
                    method_id: ids.1,
                })),
            );
        }
    }

    fn close_connection(&mut self, e: AmqpError, ids: (u16, u16)) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        tracing::info!(conn = %self.info.name, "closing connection: {}", e.text);
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: e.code,
                reply_text: e.text.into(),
                class_id: ids.0,
                method_id: ids.1,
            })),
        );
        self.outbound.flush();
        self.cleanup();
        self.phase = Phase::Closing;
        self.last_read = Instant::now();
    }

    fn send(&self, channel: u16, class: AMQPClass) {
        self.outbound.append(|b| wire::method(b, channel, class));
    }

    fn connection_method(&mut self, m: conn::AMQPMethod) -> Result<(), AmqpError> {
        match (self.phase, m) {
            (Phase::AwaitStartOk, conn::AMQPMethod::StartOk(s)) => self.start_ok(s),
            (Phase::AwaitTuneOk, conn::AMQPMethod::TuneOk(t)) => {
                let server_max = self.shared.config.frame_max as usize;
                let fm = if t.frame_max == 0 {
                    server_max
                } else {
                    t.frame_max as usize
                };
                if fm < 4096 {
                    return Err(AmqpError::not_allowed(format!(
                        "frame_max={fm} < 4096 min size"
                    )));
                }
                if fm > server_max {
                    return Err(AmqpError::not_allowed(format!(
                        "frame_max={fm} > {server_max} max size"
                    )));
                }
                self.frame_max = fm;
                let cm = self.shared.config.channel_max;
                self.channel_max = if t.channel_max == 0 {
                    cm
                } else {
                    t.channel_max.min(cm)
                };
                self.heartbeat = t.heartbeat;
                self.phase = Phase::AwaitOpen;
                Ok(())
            }
            (Phase::AwaitOpen, conn::AMQPMethod::Open(o)) => self.open(o.virtual_host.as_str()),
            (_, conn::AMQPMethod::Close(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
                self.cleanup();
                self.phase = Phase::Done;
                Ok(())
            }
            (_, conn::AMQPMethod::CloseOk(_)) => {
                self.phase = Phase::Done;
                Ok(())
            }
            (Phase::Open, conn::AMQPMethod::Blocked(_) | conn::AMQPMethod::Unblocked(_)) => Ok(()),
            (Phase::Open, conn::AMQPMethod::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(
                        conn::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            (phase, m) => Err(AmqpError::command_invalid(format!(
                "unexpected method {:?} in connection state {phase:?}",
                (AMQPClass::Connection(m)).get_amqp_method_id()
            ))),
        }
    }

    fn start_ok(&mut self, s: conn::StartOk) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = s.client_properties.inner().get("capabilities") {
            self.capabilities = caps.clone();
        }
        *self.info.client_properties.lock() = s.client_properties;
        let mechanism = s.mechanism.as_str();
        let offered = sasl::mechanisms(self.peer_identity.is_some());
        if !offered.split(' ').any(|m| m == mechanism) {
            return Err(AmqpError::access_refused(format!(
                "unsupported authentication mechanism '{mechanism}'"
            )));
        }
        let refused = || {
            AmqpError::access_refused(format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            ))
        };
        let (user, authenticated) = if mechanism == sasl::EXTERNAL {
            // The TLS layer verified the certificate; the user must exist, no password.
            let user = self.peer_identity.clone().unwrap_or_default();
            let known = self.shared.broker.user(&user).is_some();
            (user, known.then_some(()))
        } else {
            let Some((user, pass)) = sasl::credentials(mechanism, s.response.as_bytes()) else {
                return self.refuse_login(refused());
            };
            let ok = self.shared.broker.authenticate(&user, &pass).map(|_| ());
            (user, ok)
        };
        let loopback_only = self.shared.config.loopback_users.iter().any(|u| u == &user);
        if authenticated.is_none() {
            tracing::warn!(conn = %self.info.name, user = %user, "authentication failed");
            return self.refuse_login(refused());
        }
        if loopback_only && !self.info.peer.ip().is_loopback() {
            tracing::warn!(conn = %self.info.name, user = %user, "user can only connect via localhost");
            return self.refuse_login(refused());
        }
        self.user = Some(user.clone());
        *self.info.user.lock() = user;
        let cfg = &self.shared.config;
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Tune(conn::Tune {
                channel_max: cfg.channel_max,
                frame_max: cfg.frame_max,
                heartbeat: cfg.heartbeat,
            })),
        );
        self.phase = Phase::AwaitTuneOk;
        Ok(())
    }

    /// A failed login: clients that announced `authentication_failure_close` get a
    /// 403 connection.close, others a dropped socket (as the spec and RabbitMQ do).
    fn refuse_login(&mut self, e: AmqpError) -> Result<(), AmqpError> {
        // Answered after the delay, by the read loop (see `finish_refusal`).
        self.refusal = Some(e);
        Ok(())
    }

    /// Answers a refused login once the failure delay has passed.
    fn finish_refusal(&mut self, e: AmqpError) {
        let announced = matches!(
            self.capabilities
                .inner()
                .get("authentication_failure_close"),
            Some(AMQPValue::Boolean(true))
        );
        if announced {
            self.close_connection(e, (0, 0));
        } else {
            self.phase = Phase::Done;
        }
    }

    fn open(&mut self, vhost_name: &str) -> Result<(), AmqpError> {
        let user = self.user.clone().unwrap_or_default();
        let vhost = self
            .shared
            .broker
            .vhost(vhost_name)
            .ok_or_else(|| AmqpError::not_allowed(format!("vhost {vhost_name} not found")))?;
        if self.shared.broker.permission(vhost_name, &user).is_none() {
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{vhost_name}' refused for user '{user}'"
            )));
        }
        let registry = &self.shared.connections;
        let me = self.info.id;
        if let Some(limit) = self
            .shared
            .broker
            .vhost_limit(vhost_name, "max-connections")
        {
            if registry.count_where(me, |c| *c.vhost.lock() == vhost_name) as u64 >= limit {
                return Err(AmqpError::not_allowed(format!(
                    "access to vhost '{vhost_name}' refused for user '{user}': connection limit ({limit}) is reached"
                )));
            }
        }
        if let Some(limit) = self.shared.broker.user_limit(&user, "max-connections") {
            if registry.count_where(me, |c| *c.user.lock() == user) as u64 >= limit {
                return Err(AmqpError::not_allowed(format!(
                    "Connection refused for user '{user}': user connection limit ({limit}) is reached"
                )));
            }
        }
        *self.info.vhost.lock() = vhost_name.to_owned();
        let cap = |k: &str| {
            matches!(
                self.capabilities.inner().get(k),
                Some(AMQPValue::Boolean(true))
            )
        };
        self.ctx = Some(ConnCtx {
            broker: self.shared.broker.clone(),
            vhost,
            user,
            conn_id: self.info.id,
            outbound: self.outbound.clone(),
            frame_max: self.frame_max,
            max_message_size: self.shared.config.max_message_size,
            cancel_notify: cap("consumer_cancel_notify"),
            now: std::cell::Cell::new(Instant::now()),
        });
        self.phase = Phase::Open;
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})),
        );
        Ok(())
    }

    /// Releases everything the connection holds: channels, exclusive queues.
    fn cleanup(&mut self) {
        if let Some(ctx) = self.ctx.as_ref() {
            for (_, mut ch) in self.channels.drain() {
                ch.shutdown(ctx);
            }
            ctx.vhost.connection_closed(self.info.id);
        }
        self.info.channels.lock().clear();
    }
}
