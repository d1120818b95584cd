//! One AMQP channel: maps methods onto the domain and tracks publishes in flight.

use crate::delivery::{ChannelSink, Unacked};
use crate::outbound::Outbound;
use crate::wire;
use amq_protocol::protocol::basic;
use amq_protocol::protocol::{
    channel as chan, confirm, exchange as exch, queue as q, tx, AMQPClass,
};
use amq_protocol::types::FieldTable;
use bytes::{Bytes, BytesMut};
use ferrymq_broker::args::as_i64;
use ferrymq_broker::auth::Access;
use ferrymq_broker::consumer::Consumer;
use ferrymq_broker::error::{code, AmqpError, Result};
use ferrymq_broker::exchange::{Destination, Exchange};
use ferrymq_broker::message::Message;
use ferrymq_broker::queue::Queue;
use ferrymq_broker::vhost::{
    copy_properties, ExchangeOptions, PublishOutcome, QueueOptions, VHost, REPLY_TO_PREFIX,
};
use ferrymq_broker::Broker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// What a channel needs from its connection.
pub struct ConnCtx {
    /// The broker.
    pub broker: Arc<Broker>,
    /// The vhost the connection opened.
    pub vhost: Arc<VHost>,
    /// Authenticated user name.
    pub user: String,
    /// Connection id (owner of exclusive queues).
    pub conn_id: u64,
    /// The connection's write buffer.
    pub outbound: Arc<Outbound>,
    /// Negotiated frame_max.
    pub frame_max: usize,
    /// Largest accepted message body.
    pub max_message_size: u64,
    /// The client understands `basic.cancel` from the server.
    pub cancel_notify: bool,
    /// Time of the current socket read: one clock read per batch, not per message.
    pub now: std::cell::Cell<std::time::Instant>,
}

impl ConnCtx {
    /// The durability epoch now on disk (everything counts as synced without a store).
    pub fn synced_epoch(&self) -> u64 {
        self.broker
            .storage()
            .map_or(u64::MAX, |s| s.durability.synced_epoch())
    }

    /// Whether the durable store failed (disk full, I/O error): nothing more syncs.
    pub fn store_failed(&self) -> bool {
        self.broker.storage().is_some_and(|s| s.durability.failed())
    }
}

impl ConnCtx {
    fn check(&self, access: Access, kind: &str, name: &str) -> Result<()> {
        self.broker
            .check_access(&self.user, &self.vhost.name, access, kind, name)
    }
}

/// Content (properties and a one-frame body) from this size on is copied out of the
/// connection's read buffer.
const COPY_CONTENT_FROM: usize = 16 * 1024;

/// A publish's properties and body as the message keeps them. Small ones stay slices of
/// the connection's read buffer (many messages share a chunk densely, no copy). Big
/// content gets exact allocations of its own, properties included: as slices they would
/// keep a read buffer grown to about twice the body's size alive while the message is
/// queued (75 MiB of queued 64 KiB messages took 150 MiB of RSS, now 75 MiB).
fn own_content(raw: Bytes, body: Body) -> (Bytes, Bytes) {
    let copy = |b: &Bytes| Bytes::copy_from_slice(b);
    match body {
        // Assembled from several frames: the body is its own allocation already.
        Body::Many(b) => (copy(&raw), b.freeze()),
        Body::One(b) if raw.len() + b.len() >= COPY_CONTENT_FROM => (copy(&raw), copy(&b)),
        Body::One(b) => (raw, b),
        Body::Empty if raw.len() >= COPY_CONTENT_FROM => (copy(&raw), Bytes::new()),
        Body::Empty => (raw, Bytes::new()),
    }
}

enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

struct PendingPublish {
    exchange: Arc<Exchange>,
    routing_key: String,
    mandatory: bool,
    header: Option<(u64, Bytes)>,
    body: Body,
    received: u64,
}

/// What to send once a publish (or a transaction) is safely stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// basic.ack for a publisher confirm.
    Ack,
    /// basic.nack (a queue refused the message).
    Nack,
    /// tx.commit-ok, once the transaction's persistent messages are on disk.
    CommitOk,
}

enum TxOp {
    Publish(Arc<Exchange>, Box<Message>, bool),
    Ack(u64, bool),
    Nack(u64, bool, bool),
}

/// Channel lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Normal operation.
    Open,
    /// We sent `channel.close` and wait for close-ok, ignoring everything else.
    Closing,
}

/// An open channel.
pub struct Channel {
    /// Channel number.
    pub id: u16,
    /// Lifecycle state.
    pub state: ChannelState,
    /// Delivery side, shared with queues.
    pub sink: Arc<ChannelSink>,
    pending: Option<PendingPublish>,
    prefetch: u32,
    confirm: bool,
    publish_seq: u64,
    /// Confirms not yet sent: (publish seq, durability epoch to wait for, ack or nack).
    /// Released strictly in order, so `multiple` acks never cover an unsynced message.
    confirms: VecDeque<(u64, u64, Settle)>,
    tx: Option<Vec<TxOp>>,
    last_queue: Option<String>,
    exchange_cache: Option<Arc<Exchange>>,
    reply_to: Option<(String, Arc<Queue>)>,
    route_buf: Vec<Arc<Queue>>,
    /// (class, method) of the method being handled, for `channel.close`.
    pub current_method: (u16, u16),
}

fn gen_name(prefix: &str) -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn method_ids(class: &AMQPClass) -> (u16, u16) {
    (class.get_amqp_class_id(), class.get_amqp_method_id())
}

impl Channel {
    /// A freshly opened channel.
    pub fn new(id: u16, ctx: &ConnCtx) -> Self {
        Channel {
            id,
            state: ChannelState::Open,
            sink: Arc::new(ChannelSink::new(
                id,
                ctx.outbound.clone(),
                ctx.frame_max,
                ctx.cancel_notify,
            )),
            pending: None,
            prefetch: 0,
            confirm: false,
            publish_seq: 0,
            confirms: VecDeque::new(),
            tx: None,
            last_queue: None,
            exchange_cache: None,
            reply_to: None,
            route_buf: Vec::new(),
            current_method: (0, 0),
        }
    }

    fn reply(&self, ctx: &ConnCtx, class: AMQPClass) {
        ctx.outbound.append(|b| wire::method(b, self.id, class));
    }

    /// Replies unless the client asked for `nowait`.
    fn reply_unless(&self, ctx: &ConnCtx, nowait: bool, class: AMQPClass) {
        if !nowait {
            self.reply(ctx, class);
        }
    }

    /// Whether a content header or body is expected next.
    pub fn expects_content(&self) -> bool {
        self.pending.is_some()
    }

    /// Handles a method (not channel.open / channel.close, which the connection handles).
    pub fn handle_method(&mut self, ctx: &ConnCtx, class: AMQPClass) -> Result<()> {
        self.current_method = method_ids(&class);
        if self.pending.is_some() {
            return Err(AmqpError::unexpected_frame(format!(
                "expected content header for class 60, got non content header frame instead (method {:?})",
                self.current_method
            )));
        }
        match class {
            AMQPClass::Basic(m) => self.basic(ctx, m),
            AMQPClass::Queue(m) => self.queue(ctx, m),
            AMQPClass::Exchange(m) => self.exchange(ctx, m),
            AMQPClass::Channel(chan::AMQPMethod::Flow(f)) => {
                self.sink.set_flow(f.active);
                self.reply(
                    ctx,
                    AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: f.active })),
                );
                if f.active {
                    self.kick();
                }
                Ok(())
            }
            AMQPClass::Channel(chan::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                self.confirm = true;
                self.sink.confirm.store(true, Ordering::Relaxed);
                self.reply_unless(
                    ctx,
                    s.nowait,
                    AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                );
                Ok(())
            }
            AMQPClass::Tx(m) => self.transaction(ctx, m),
            AMQPClass::Access(_) => Ok(()),
            other => Err(AmqpError::command_invalid(format!(
                "method {:?} is not valid on channel {}",
                method_ids(&other),
                self.id
            ))),
        }
    }

    fn exchange(&mut self, ctx: &ConnCtx, m: exch::AMQPMethod) -> Result<()> {
        match m {
            exch::AMQPMethod::Declare(d) => {
                let name = d.exchange.as_str();
                if !d.passive {
                    ctx.check(Access::Configure, "exchange", name)?;
                }
                if name.is_empty() && !d.passive {
                    return Err(AmqpError::access_refused(
                        "operation not permitted on the default exchange",
                    ));
                }
                ctx.vhost.declare_exchange(
                    name,
                    d.kind.as_str(),
                    ExchangeOptions {
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    },
                )?;
                self.reply_unless(
                    ctx,
                    d.nowait,
                    AMQPClass::Exchange(exch::AMQPMethod::DeclareOk(exch::DeclareOk {})),
                );
            }
            exch::AMQPMethod::Delete(d) => {
                ctx.check(Access::Configure, "exchange", d.exchange.as_str())?;
                if ctx.vhost.exchange(d.exchange.as_str()).is_some() {
                    ctx.vhost
                        .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                }
                self.exchange_cache = None;
                self.reply_unless(
                    ctx,
                    d.nowait,
                    AMQPClass::Exchange(exch::AMQPMethod::DeleteOk(exch::DeleteOk {})),
                );
            }
            exch::AMQPMethod::Bind(b) => {
                self.exchange_binding(
                    ctx,
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                    b.arguments,
                    true,
                )?;
                self.reply_unless(
                    ctx,
                    b.nowait,
                    AMQPClass::Exchange(exch::AMQPMethod::BindOk(exch::BindOk {})),
                );
            }
            exch::AMQPMethod::Unbind(b) => {
                self.exchange_binding(
                    ctx,
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                    b.arguments,
                    false,
                )?;
                self.reply_unless(
                    ctx,
                    b.nowait,
                    AMQPClass::Exchange(exch::AMQPMethod::UnbindOk(exch::UnbindOk {})),
                );
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "unexpected exchange method {other:?}"
                )));
            }
        }
        Ok(())
    }

    fn exchange_binding(
        &mut self,
        ctx: &ConnCtx,
        source: &str,
        destination: &str,
        routing_key: &str,
        args: FieldTable,
        bind: bool,
    ) -> Result<()> {
        ctx.check(Access::Write, "exchange", destination)?;
        ctx.check(Access::Read, "exchange", source)?;
        ctx.vhost.require_exchange(destination)?;
        ctx.vhost.require_exchange(source)?;
        let dest = Destination::Exchange(destination.to_owned());
        if bind {
            ctx.vhost.bind(source, dest, routing_key, args)
        } else {
            ctx.vhost.unbind(source, dest, routing_key, args)
        }
    }

    /// Resolves the empty queue name to the channel's last declared queue.
    fn queue_name(&self, name: &str) -> Result<String> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    fn queue(&mut self, ctx: &ConnCtx, m: q::AMQPMethod) -> Result<()> {
        match m {
            q::AMQPMethod::Declare(d) => {
                let name = if d.queue.as_str().is_empty() && !d.passive {
                    gen_name("amq.gen-")
                } else {
                    self.queue_name(d.queue.as_str())?
                };
                if !d.passive {
                    if name.starts_with("amq.")
                        && !d.queue.as_str().is_empty()
                        && ctx.vhost.queue(&name).is_none()
                    {
                        return Err(AmqpError::access_refused(format!(
                            "queue name '{name}' contains reserved prefix 'amq.*'"
                        )));
                    }
                    ctx.check(Access::Configure, "queue", &name)?;
                }
                let (queue, _) = ctx.vhost.declare_queue(
                    &name,
                    ctx.conn_id,
                    QueueOptions {
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: d.arguments,
                    },
                )?;
                let (ready, _, _, consumers) = queue.counts();
                self.last_queue = Some(name.clone());
                self.reply_unless(
                    ctx,
                    d.nowait,
                    AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
                        queue: name.into(),
                        message_count: ready as u32,
                        consumer_count: consumers as u32,
                    })),
                );
            }
            q::AMQPMethod::Bind(b) => {
                let name = self.queue_name(b.queue.as_str())?;
                self.queue_binding(
                    ctx,
                    &name,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    b.arguments,
                    true,
                )?;
                self.reply_unless(
                    ctx,
                    b.nowait,
                    AMQPClass::Queue(q::AMQPMethod::BindOk(q::BindOk {})),
                );
            }
            q::AMQPMethod::Unbind(b) => {
                let name = self.queue_name(b.queue.as_str())?;
                self.queue_binding(
                    ctx,
                    &name,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    b.arguments,
                    false,
                )?;
                self.reply(
                    ctx,
                    AMQPClass::Queue(q::AMQPMethod::UnbindOk(q::UnbindOk {})),
                );
            }
            q::AMQPMethod::Purge(p) => {
                let name = self.queue_name(p.queue.as_str())?;
                ctx.check(Access::Read, "queue", &name)?;
                let queue = ctx.vhost.require_queue(&name)?;
                ctx.vhost.check_exclusive(&queue, ctx.conn_id)?;
                let n = queue.purge();
                self.reply_unless(
                    ctx,
                    p.nowait,
                    AMQPClass::Queue(q::AMQPMethod::PurgeOk(q::PurgeOk {
                        message_count: n as u32,
                    })),
                );
            }
            q::AMQPMethod::Delete(d) => {
                let name = self.queue_name(d.queue.as_str())?;
                ctx.check(Access::Configure, "queue", &name)?;
                let n = ctx
                    .vhost
                    .delete_queue(&name, ctx.conn_id, d.if_unused, d.if_empty)?;
                self.reply_unless(
                    ctx,
                    d.nowait,
                    AMQPClass::Queue(q::AMQPMethod::DeleteOk(q::DeleteOk {
                        message_count: n as u32,
                    })),
                );
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "unexpected queue method {other:?}"
                )))
            }
        }
        Ok(())
    }

    fn queue_binding(
        &mut self,
        ctx: &ConnCtx,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        args: FieldTable,
        bind: bool,
    ) -> Result<()> {
        ctx.check(Access::Write, "queue", queue)?;
        ctx.check(Access::Read, "exchange", exchange)?;
        let q = ctx.vhost.require_queue(queue)?;
        ctx.vhost.check_exclusive(&q, ctx.conn_id)?;
        if !exchange.is_empty() {
            ctx.vhost.require_exchange(exchange)?;
        }
        let dest = Destination::Queue(q);
        if bind {
            ctx.vhost.bind(exchange, dest, routing_key, args)
        } else {
            ctx.vhost.unbind(exchange, dest, routing_key, args)
        }
    }

    fn basic(&mut self, ctx: &ConnCtx, m: basic::AMQPMethod) -> Result<()> {
        match m {
            basic::AMQPMethod::Publish(p) => self.begin_publish(
                ctx,
                p.exchange.as_str(),
                p.routing_key.into(),
                p.mandatory,
                p.immediate,
            ),
            basic::AMQPMethod::Ack(a) => {
                if let Some(ops) = self.tx.as_mut() {
                    ops.push(TxOp::Ack(a.delivery_tag, a.multiple));
                    return Ok(());
                }
                self.ack(a.delivery_tag, a.multiple)
            }
            basic::AMQPMethod::Nack(n) => {
                if let Some(ops) = self.tx.as_mut() {
                    ops.push(TxOp::Nack(n.delivery_tag, n.multiple, n.requeue));
                    return Ok(());
                }
                self.nack(n.delivery_tag, n.multiple, n.requeue)
            }
            basic::AMQPMethod::Reject(r) => {
                if let Some(ops) = self.tx.as_mut() {
                    ops.push(TxOp::Nack(r.delivery_tag, false, r.requeue));
                    return Ok(());
                }
                self.nack(r.delivery_tag, false, r.requeue)
            }
            basic::AMQPMethod::Qos(qos) => {
                if qos.global {
                    self.sink.set_global_prefetch(qos.prefetch_count as u32);
                } else {
                    self.prefetch = qos.prefetch_count as u32;
                    self.sink
                        .prefetch_count
                        .store(self.prefetch, Ordering::Relaxed);
                }
                self.reply(
                    ctx,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                self.kick();
                Ok(())
            }
            basic::AMQPMethod::Consume(c) => self.consume(ctx, c),
            basic::AMQPMethod::Cancel(c) => {
                self.cancel(ctx, c.consumer_tag.as_str());
                self.reply_unless(
                    ctx,
                    c.nowait,
                    AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                        consumer_tag: c.consumer_tag,
                    })),
                );
                Ok(())
            }
            basic::AMQPMethod::Get(g) => {
                let name = self.queue_name(g.queue.as_str())?;
                ctx.check(Access::Read, "queue", &name)?;
                let queue = ctx.vhost.require_queue(&name)?;
                ctx.vhost.check_exclusive(&queue, ctx.conn_id)?;
                match queue.get(!g.no_ack) {
                    Some((m, remaining)) => self.sink.get_ok(&queue, m, remaining, g.no_ack),
                    None => self.reply(
                        ctx,
                        AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                    ),
                }
                Ok(())
            }
            basic::AMQPMethod::Recover(r) => {
                self.recover();
                let _ = r;
                self.reply(
                    ctx,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(_) => {
                self.recover();
                Ok(())
            }
            other => Err(AmqpError::command_invalid(format!(
                "unexpected basic method {other:?}"
            ))),
        }
    }

    /// `basic.publish`: the content header and body follow.
    pub fn begin_publish(
        &mut self,
        ctx: &ConnCtx,
        name: &str,
        routing_key: String,
        mandatory: bool,
        immediate: bool,
    ) -> Result<()> {
        self.current_method = (60, 40);
        if self.pending.is_some() {
            return Err(AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            ));
        }
        if immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        let exchange = match &self.exchange_cache {
            Some(e) if e.name == name && !e.is_deleted() => e.clone(),
            _ => {
                let e = ctx.vhost.require_exchange(name)?;
                ctx.check(Access::Write, "exchange", name)?;
                if e.internal {
                    return Err(AmqpError::access_refused(format!(
                        "cannot publish to internal exchange '{name}' in vhost '{}'",
                        ctx.vhost.name
                    )));
                }
                self.exchange_cache = Some(e.clone());
                e
            }
        };
        self.pending = Some(PendingPublish {
            exchange,
            routing_key,
            mandatory,
            header: None,
            body: Body::Empty,
            received: 0,
        });
        Ok(())
    }

    /// Handles a content header frame payload.
    pub fn handle_header(&mut self, ctx: &ConnCtx, payload: Bytes) -> Result<()> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(AmqpError::unexpected_frame(
                "expected method frame, got non method frame instead",
            ));
        };
        if pending.header.is_some() {
            return Err(AmqpError::unexpected_frame(
                "expected content body, got content header instead",
            ));
        }
        if payload.len() < 14 {
            return Err(AmqpError::frame_error("content header too short"));
        }
        let class_id = u16::from_be_bytes([payload[0], payload[1]]);
        if class_id != 60 {
            return Err(AmqpError::frame_error(format!(
                "content header for unknown class {class_id}"
            )));
        }
        let body_size = u64::from_be_bytes(payload[4..12].try_into().expect("8 bytes"));
        let raw = payload.slice(12..);
        if body_size > ctx.max_message_size {
            self.pending = None;
            return Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {}",
                ctx.max_message_size
            )));
        }
        pending.header = Some((body_size, raw));
        if body_size == 0 {
            return self.complete_publish(ctx);
        }
        Ok(())
    }

    /// Handles a content body frame payload.
    pub fn handle_body(&mut self, ctx: &ConnCtx, payload: Bytes) -> Result<()> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(AmqpError::unexpected_frame(
                "expected method frame, got non method frame instead",
            ));
        };
        let Some((size, _)) = pending.header.as_ref() else {
            return Err(AmqpError::unexpected_frame(
                "expected content header, got content body instead",
            ));
        };
        let size = *size;
        pending.received += payload.len() as u64;
        if pending.received > size {
            return Err(AmqpError::frame_error(
                "content body larger than announced in its header",
            ));
        }
        pending.body = match std::mem::replace(&mut pending.body, Body::Empty) {
            Body::Empty if pending.received == size => Body::One(payload),
            Body::Empty => {
                let mut b = BytesMut::with_capacity(size as usize);
                b.extend_from_slice(&payload);
                Body::Many(b)
            }
            Body::Many(mut b) => {
                b.extend_from_slice(&payload);
                Body::Many(b)
            }
            Body::One(first) => {
                let mut b = BytesMut::with_capacity(size as usize);
                b.extend_from_slice(&first);
                b.extend_from_slice(&payload);
                Body::Many(b)
            }
        };
        if pending.received == size {
            return self.complete_publish(ctx);
        }
        Ok(())
    }

    fn complete_publish(&mut self, ctx: &ConnCtx) -> Result<()> {
        let p = self.pending.take().expect("pending publish");
        let (_, raw) = p.header.expect("header");
        let (raw, body) = own_content(raw, p.body);
        let Some(mut message) = Message::from_wire(
            p.exchange.name.clone(),
            p.routing_key,
            raw,
            body,
            ctx.now.get(),
        ) else {
            return Err(AmqpError::frame_error(
                "malformed content header properties",
            ));
        };
        if message.has_user_id() {
            if let Some(uid) = message.properties().user_id() {
                if uid.as_str() != ctx.user {
                    return Err(AmqpError::precondition_failed(format!(
                        "user_id property set to '{}' but authenticated user was '{}'",
                        uid.as_str(),
                        ctx.user
                    )));
                }
            }
        }
        if message.has_reply_to()
            && message
                .properties()
                .reply_to()
                .as_ref()
                .is_some_and(|r| r.as_str() == REPLY_TO_PREFIX)
        {
            let Some((name, _)) = &self.reply_to else {
                return Err(AmqpError::precondition_failed(
                    "fast reply consumer does not exist",
                ));
            };
            let props = copy_properties(message.properties(), None, Some(name.clone()), false);
            let received_at = message.received_at;
            message = Message::new(message.exchange, message.routing_key, props, message.body);
            message.received_at = received_at;
        }
        if let Some(ops) = self.tx.as_mut() {
            ops.push(TxOp::Publish(p.exchange, Box::new(message), p.mandatory));
            return Ok(());
        }
        self.route_and_confirm(ctx, &p.exchange, message, p.mandatory);
        Ok(())
    }

    /// Routes a publish and queues its confirm; returns what publishing did (the
    /// durability epoch to wait for, whether a queue's store could not write it).
    fn route_and_confirm(
        &mut self,
        ctx: &ConnCtx,
        exchange: &Arc<Exchange>,
        message: Message,
        mandatory: bool,
    ) -> PublishOutcome {
        let mut targets = std::mem::take(&mut self.route_buf);
        let (outcome, unroutable) = ctx.vhost.publish(exchange, message, &mut targets);
        self.route_buf = targets;
        if mandatory {
            if let Some(m) = unroutable {
                ctx.outbound.append(|b| {
                    wire::basic_return(b, self.id, code::NO_ROUTE, "NO_ROUTE", &m, ctx.frame_max)
                });
            }
        }
        if self.confirm {
            self.publish_seq += 1;
            let settle = if outcome.refused {
                Settle::Nack
            } else {
                Settle::Ack
            };
            self.confirms
                .push_back((self.publish_seq, outcome.epoch, settle));
        }
        outcome
    }

    /// Whether confirms wait for the store (anything left after a flush waits for it,
    /// including transient messages queued behind persistent ones).
    pub fn awaits_sync(&self) -> bool {
        !self.confirms.is_empty()
    }

    /// Sends the confirms whose messages are safe (durability epoch `synced`
    /// reached), acks coalesced into one `basic.ack multiple`. Fails with 541 for a
    /// `tx.commit` whose messages the failed store will never make durable.
    pub fn flush_confirms(&mut self, ctx: &ConnCtx, synced: u64) -> Result<()> {
        let mut ack_upto = None;
        // After a store failure nothing newer will ever sync: a publisher waiting for
        // a persistent message's confirm gets a nack instead of waiting forever, and
        // a waiting commit an error (a commit has no negative answer).
        let failed = ctx.store_failed();
        let mut result = Ok(());
        while let Some(&(seq, epoch, settle)) = self.confirms.front() {
            let settle = match settle {
                Settle::Ack if epoch > synced && failed => Settle::Nack,
                Settle::CommitOk if epoch > synced && failed => {
                    self.confirms.clear();
                    result = Err(store_failed_commit());
                    break;
                }
                _ if epoch > synced && !failed => break,
                other => other,
            };
            self.confirms.pop_front();
            if settle == Settle::Ack {
                ack_upto = Some(seq);
                continue;
            }
            if let Some(tag) = ack_upto.take() {
                ctx.outbound
                    .append(|b| wire::confirm(b, self.id, tag, true, true));
            }
            match settle {
                Settle::Nack => ctx
                    .outbound
                    .append(|b| wire::confirm(b, self.id, seq, false, false)),
                _ => self.reply(
                    ctx,
                    AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                ),
            }
        }
        if let Some(tag) = ack_upto {
            ctx.outbound
                .append(|b| wire::confirm(b, self.id, tag, true, true));
        }
        result
    }

    fn consume(&mut self, ctx: &ConnCtx, c: basic::Consume) -> Result<()> {
        let tag = if c.consumer_tag.as_str().is_empty() {
            gen_name("amq.ctag-")
        } else {
            c.consumer_tag.as_str().to_owned()
        };
        if self.sink.has_consumer(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        if c.queue.as_str() == REPLY_TO_PREFIX {
            if !c.no_ack {
                return Err(AmqpError::precondition_failed(
                    "reply consumer cannot acknowledge",
                ));
            }
            if self.reply_to.is_some() {
                return Err(AmqpError::precondition_failed("reply consumer already set"));
            }
            let queue = ctx.vhost.register_reply_to(&gen_name(""));
            self.reply_to = Some((queue.name.clone(), queue.clone()));
            return self.subscribe(ctx, queue, tag, &c, 0);
        }
        let name = self.queue_name(c.queue.as_str())?;
        ctx.check(Access::Read, "queue", &name)?;
        let queue = ctx.vhost.require_queue(&name)?;
        ctx.vhost.check_exclusive(&queue, ctx.conn_id)?;
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => as_i64(v).ok_or_else(|| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-priority' for consumer on queue '{name}': {v:?}"
                ))
            })? as i32,
        };
        self.subscribe(ctx, queue, tag, &c, priority)
    }

    fn subscribe(
        &mut self,
        ctx: &ConnCtx,
        queue: Arc<Queue>,
        tag: String,
        c: &basic::Consume,
        priority: i32,
    ) -> Result<()> {
        let consumer = Arc::new(Consumer {
            tag: tag.clone(),
            sink: self.sink.clone(),
            priority,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch: self.prefetch,
            unacked: AtomicU32::new(0),
            connection_id: ctx.conn_id,
            channel_id: self.id,
            stamp_identity: c
                .arguments
                .inner()
                .get("x-ferrymq-identity")
                .and_then(ferrymq_broker::args::as_bool)
                .unwrap_or(false),
        });
        // The ledger knows the consumer before any delivery or server cancel can name it.
        self.sink.add_consumer(consumer.clone(), queue.clone());
        // consume-ok is written under the queue lock, before the consumer is visible
        // to publishers on other connections, so no delivery can overtake it.
        let id = self.id;
        let added = queue.add_consumer(consumer, || {
            if !c.nowait {
                let ok = AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                }));
                ctx.outbound.append(|b| wire::method(b, id, ok));
            }
        });
        if let Err(e) = added {
            self.sink.remove_consumer(&tag);
            return Err(e);
        }
        queue.dispatch();
        Ok(())
    }

    fn cancel(&mut self, ctx: &ConnCtx, tag: &str) {
        if let Some((consumer, queue)) = self.sink.remove_consumer(tag) {
            queue.remove_consumer(&consumer);
            if let Some((name, rq)) = &self.reply_to {
                if Arc::ptr_eq(rq, &queue) {
                    ctx.vhost.unregister_reply_to(name);
                    self.reply_to = None;
                }
            }
        }
    }

    /// Settles deliveries: groups per queue so each queue is locked once.
    fn settle(list: Vec<Unacked>, mut f: impl FnMut(&Arc<Queue>, Vec<Unacked>)) {
        let mut groups: Vec<(Arc<Queue>, Vec<Unacked>)> = Vec::new();
        for u in list {
            if let Some(c) = &u.consumer {
                c.settled(1);
            }
            match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, v)) => v.push(u),
                None => groups.push((u.queue.clone(), vec![u])),
            }
        }
        for (q, v) in groups {
            f(&q, v);
        }
    }

    fn ack(&mut self, tag: u64, multiple: bool) -> Result<()> {
        let list = self.sink.take(tag, multiple)?;
        Self::settle(list, |q, v| {
            let msgs: Vec<_> = v.into_iter().map(|u| u.message).collect();
            q.ack(&msgs)
        });
        if self.sink.has_global_prefetch() {
            self.kick();
        }
        Ok(())
    }

    fn nack(&mut self, tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        let list = self.sink.take(tag, multiple)?;
        Self::settle(list, |q, v| {
            let msgs = v.into_iter().map(|u| u.message).collect();
            if requeue {
                q.requeue(msgs)
            } else {
                q.reject(msgs)
            }
        });
        self.kick();
        Ok(())
    }

    fn recover(&mut self) {
        if let Ok(list) = self.sink.take(0, true) {
            Self::settle(list, |q, v| {
                q.requeue(v.into_iter().map(|u| u.message).collect())
            });
        }
    }

    /// Lets every queue this channel consumes from deliver again (capacity came back).
    pub fn kick(&self) {
        for (_, q) in self.sink.consumers() {
            q.dispatch();
        }
    }

    fn transaction(&mut self, ctx: &ConnCtx, m: tx::AMQPMethod) -> Result<()> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.tx = Some(Vec::new());
                    self.sink.transactional.store(true, Ordering::Relaxed);
                }
                self.reply(
                    ctx,
                    AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
                );
            }
            tx::AMQPMethod::Commit(_) => {
                let ops = self.tx.replace(Vec::new()).ok_or_else(|| {
                    AmqpError::precondition_failed("channel is not transactional")
                })?;
                let (mut epoch, mut unstored) = (0, false);
                for op in ops {
                    match op {
                        TxOp::Publish(ex, m, mandatory) => {
                            let outcome = self.route_and_confirm(ctx, &ex, *m, mandatory);
                            epoch = epoch.max(outcome.epoch);
                            unstored |= outcome.unstored;
                        }
                        TxOp::Ack(tag, multiple) => self.ack(tag, multiple)?,
                        TxOp::Nack(tag, multiple, requeue) => self.nack(tag, multiple, requeue)?,
                    }
                }
                // A message a queue's store could not write: the commit must not
                // look as if it had succeeded.
                if unstored {
                    return Err(store_failed_commit());
                }
                // commit-ok only once the committed persistent messages are on disk.
                self.confirms.push_back((0, epoch, Settle::CommitOk));
                self.flush_confirms(ctx, ctx.synced_epoch())?;
            }
            tx::AMQPMethod::Rollback(_) => {
                if self.tx.is_none() {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                }
                self.tx = Some(Vec::new());
                self.reply(
                    ctx,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "unexpected tx method {other:?}"
                )))
            }
        }
        Ok(())
    }

    /// Tears the channel down: consumers go, unacked messages return to their queues.
    pub fn shutdown(&mut self, ctx: &ConnCtx) {
        self.sink.close();
        self.pending = None;
        // Confirms not sent by now are never sent: the channel is gone for the client.
        self.confirms.clear();
        for (consumer, queue) in self.sink.consumers() {
            self.sink.remove_consumer(&consumer.tag);
            queue.remove_consumer(&consumer);
        }
        if let Some((name, _)) = self.reply_to.take() {
            ctx.vhost.unregister_reply_to(&name);
        }
        if let Ok(list) = self.sink.take(0, true) {
            Self::settle(list, |q, v| {
                q.requeue(v.into_iter().map(|u| u.message).collect())
            });
        }
    }
}

/// 541 for a `tx.commit` the failed durable store cannot complete.
fn store_failed_commit() -> AmqpError {
    AmqpError::internal(
        "the durable store failed: this transaction's persistent messages are not on disk (free disk space, then restart)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `part` points into `whole`'s bytes.
    fn inside(part: &Bytes, whole: &Bytes) -> bool {
        let range = whole.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn big_bodies_and_their_properties_leave_the_read_buffer() {
        // One read buffer holding a header frame and a body frame.
        let read = Bytes::from(vec![7u8; 200 * 1024]);
        let raw = read.slice(0..40);
        let small = read.slice(40..40 + 1024);
        let (r, b) = own_content(raw.clone(), Body::One(small.clone()));
        assert!(inside(&r, &read) && inside(&b, &read), "small: no copy");
        let big = read.slice(40..40 + COPY_CONTENT_FROM);
        let (r, b) = own_content(raw.clone(), Body::One(big.clone()));
        assert!(!inside(&r, &read) && !inside(&b, &read), "big: copied");
        assert_eq!((r, b), (raw.clone(), big));
        // Big properties count too, whatever the body's size.
        let big_raw = read.slice(0..COPY_CONTENT_FROM);
        let (r, b) = own_content(big_raw.clone(), Body::One(small.clone()));
        assert!(
            !inside(&r, &read) && !inside(&b, &read),
            "big properties: copied"
        );
        assert_eq!((r, b), (big_raw.clone(), small.clone()));
        let mut many = BytesMut::new();
        many.extend_from_slice(&read[..100]);
        let (r, b) = own_content(raw.clone(), Body::Many(many));
        assert!(!inside(&r, &read));
        assert_eq!((r, &b[..]), (raw.clone(), &read[..100]));
        let (r, b) = own_content(raw.clone(), Body::Empty);
        assert!(
            inside(&r, &read) && b.is_empty(),
            "no body: properties stay a slice"
        );
        let (r, b) = own_content(big_raw, Body::Empty);
        assert!(
            !inside(&r, &read) && b.is_empty(),
            "no body, big properties: copied"
        );
    }
}
