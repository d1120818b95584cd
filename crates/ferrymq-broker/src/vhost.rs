//! Virtual hosts: namespaces of exchanges and queues, and routing between them.

use crate::args::as_string;
use crate::error::{AmqpError, Result};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::message::{Message, QueuedMessage};
use crate::queue::{DeadReason, Enqueued, Queue};
use crate::queue_args::{QueueArgs, EQUIVALENCE_KEYS};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Queue name prefix of direct reply-to pseudo queues.
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to";

/// What publishing a message did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishOutcome {
    /// Number of queues that took the message.
    pub delivered_to: usize,
    /// Some queue refused it (`x-overflow: reject-publish`) or could not store it:
    /// the publisher gets a nack.
    pub refused: bool,
    /// Some queue's store could not write it: a transaction must not commit.
    pub unstored: bool,
    /// The message is on disk once the durability epoch reaches this (0: no wait).
    pub epoch: u64,
}

/// A virtual host.
pub struct VHost {
    /// Vhost name.
    pub name: String,
    broker: Weak<crate::Broker>,
    exchanges: RwLock<HashMap<String, Arc<Exchange>>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    reply_to: RwLock<HashMap<String, Arc<Queue>>>,
    /// Serialises queue creation and deletion: a durable queue's store directory
    /// must never be opened twice, nor removed while a redeclare opens it.
    lifecycle: parking_lot::Mutex<()>,
    /// Description and tags (`{"description": .., "tags": [..]}`), as RabbitMQ keeps them.
    pub metadata: RwLock<serde_json::Value>,
}

/// Options of `queue.declare`.
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    /// Only check that the queue exists.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Owned by the declaring connection.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// Options of `exchange.declare`.
#[derive(Debug, Clone, Default)]
pub struct ExchangeOptions {
    /// Only check that the exchange exists.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

impl VHost {
    /// A vhost with the default and `amq.*` exchanges.
    pub fn new(name: &str, broker: Weak<crate::Broker>) -> Arc<Self> {
        let vhost = Arc::new(VHost {
            name: name.to_owned(),
            broker,
            exchanges: RwLock::new(HashMap::new()),
            queues: RwLock::new(HashMap::new()),
            reply_to: RwLock::new(HashMap::new()),
            lifecycle: parking_lot::Mutex::new(()),
            metadata: RwLock::new(serde_json::Value::Null),
        });
        let builtin = [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
            // RabbitMQ's firehose exchange: internal, nothing is published to it here,
            // but tools expect it in every vhost.
            ("amq.rabbitmq.trace", ExchangeKind::Topic),
        ];
        {
            let mut ex = vhost.exchanges.write();
            for (n, k) in builtin {
                let internal = n == "amq.rabbitmq.trace";
                ex.insert(
                    n.to_owned(),
                    Arc::new(Exchange::new(
                        n.to_owned(),
                        k,
                        true,
                        false,
                        internal,
                        FieldTable::default(),
                    )),
                );
            }
        }
        vhost
    }

    /// Persists definitions when a durable object changed.
    fn durable_changed(&self, durable: bool) {
        if durable {
            if let Some(b) = self.broker.upgrade() {
                b.definitions_changed();
            }
        }
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    /// Looks up an exchange.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().get(name).cloned()
    }

    /// Looks up a queue (including direct reply-to pseudo queues).
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().get(name).cloned()
    }

    /// All exchanges.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    /// All queues.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// Looks up a queue, failing with 404 in RabbitMQ's words.
    pub fn require_queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.queue(name).ok_or_else(|| self.no_queue(name))
    }

    /// Looks up an exchange, failing with 404 in RabbitMQ's words.
    pub fn require_exchange(&self, name: &str) -> Result<Arc<Exchange>> {
        self.exchange(name).ok_or_else(|| self.no_exchange(name))
    }

    /// Checks that connection `owner` may use queue `q` (exclusive queues).
    pub fn check_exclusive(&self, q: &Queue, owner: u64) -> Result<()> {
        match q.exclusive_owner {
            Some(o) if o != owner => Err(AmqpError::resource_locked(format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                q.name, self.name
            ))),
            _ => Ok(()),
        }
    }

    /// `exchange.declare`.
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        opts: ExchangeOptions,
    ) -> Result<Arc<Exchange>> {
        if let Some(existing) = self.exchange(name) {
            if opts.passive {
                return Ok(existing);
            }
            let inequivalent = |what: &str, got: String, cur: String| {
                AmqpError::precondition_failed(format!(
                    "inequivalent arg '{what}' for exchange '{name}' in vhost '{}': received '{got}' but current is '{cur}'",
                    self.name
                ))
            };
            if existing.kind.as_str() != kind {
                return Err(inequivalent(
                    "type",
                    kind.to_owned(),
                    existing.kind.as_str().to_owned(),
                ));
            }
            if existing.durable != opts.durable {
                return Err(inequivalent(
                    "durable",
                    opts.durable.to_string(),
                    existing.durable.to_string(),
                ));
            }
            if existing.auto_delete != opts.auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    opts.auto_delete.to_string(),
                    existing.auto_delete.to_string(),
                ));
            }
            if existing.internal != opts.internal {
                return Err(inequivalent(
                    "internal",
                    opts.internal.to_string(),
                    existing.internal.to_string(),
                ));
            }
            return Ok(existing);
        }
        if opts.passive {
            return Err(self.no_exchange(name));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let kind = ExchangeKind::parse(kind).ok_or_else(|| {
            AmqpError::precondition_failed(format!(
                "invalid exchange type '{kind}' for exchange '{name}' in vhost '{}'",
                self.name
            ))
        })?;
        let ex = self
            .exchanges
            .write()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Exchange::new(
                    name.to_owned(),
                    kind,
                    opts.durable,
                    opts.auto_delete,
                    opts.internal,
                    opts.arguments,
                ))
            })
            .clone();
        if let Some(b) = self.broker.upgrade() {
            b.apply_policies_to_exchange(&self.name, &ex);
        }
        self.durable_changed(ex.durable);
        Ok(ex)
    }

    /// `exchange.delete`.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on the default exchange or 'amq.*' exchanges ('{name}')"
            )));
        }
        let ex = self.require_exchange(name)?;
        if if_unused && ex.binding_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.exchanges.write().remove(name);
        ex.mark_deleted();
        self.durable_changed(ex.durable);
        // Bindings that lead to the deleted exchange go too.
        let dest = Destination::Exchange(name.to_owned());
        for other in self.exchanges() {
            if other.unbind_destination(&dest) > 0 {
                self.auto_delete_exchange(&other);
            }
        }
        Ok(())
    }

    fn auto_delete_exchange(&self, ex: &Arc<Exchange>) {
        if ex.auto_delete && ex.binding_count() == 0 && !ex.is_deleted() {
            let _ = self.delete_exchange(&ex.name, false);
        }
    }

    /// `queue.declare`: returns the queue and whether it was created.
    pub fn declare_queue(
        self: &Arc<Self>,
        name: &str,
        owner: u64,
        opts: QueueOptions,
    ) -> Result<(Arc<Queue>, bool)> {
        let _lifecycle = self.lifecycle.lock();
        if let Some(existing) = self.queue(name) {
            self.check_exclusive(&existing, owner)?;
            if !opts.passive {
                self.check_equivalent(&existing, &opts)?;
            }
            existing.touch();
            return Ok((existing, false));
        }
        if opts.passive {
            return Err(self.no_queue(name));
        }
        if let Some(b) = self.broker.upgrade().filter(|b| !b.is_restoring()) {
            if let Some(limit) = b.vhost_limit(&self.name, "max-queues") {
                if self.queues.read().len() as u64 >= limit {
                    return Err(AmqpError::precondition_failed(format!(
                        "cannot declare queue '{name}' in vhost '{}': vhost queue limit ({limit}) is reached",
                        self.name
                    )));
                }
            }
        }
        let args = QueueArgs::parse(&opts.arguments, name, &self.name)?;
        if let Some(dlx) = &args.dead_letter_exchange {
            if dlx.starts_with("amq.") && self.exchange(dlx).is_none() {
                return Err(self.no_exchange(dlx));
            }
        }
        // Durable queues keep their messages in a store under the data dir.
        let mut recovered = crate::store::Recovered::default();
        let store = match self.broker.upgrade() {
            Some(b) if opts.durable && !opts.exclusive => {
                match (b.queue_dir(&self.name, name), b.storage()) {
                    (Some(dir), Some(storage)) => {
                        let opened =
                            crate::store::QueueStore::open(dir, storage.durability.clone())
                                .map_err(|e| {
                                    AmqpError::internal(format!(
                                        "cannot open store of queue '{name}': {e}"
                                    ))
                                })?;
                        let (store, messages, report) = opened;
                        if report.truncated_bytes > 0 {
                            tracing::warn!(
                                queue = name,
                                vhost = %self.name,
                                "store recovery cut {} damaged bytes in segments {:?}",
                                report.truncated_bytes,
                                report.damaged_segments
                            );
                        }
                        if report.messages > 0 {
                            tracing::info!(queue = name, vhost = %self.name, "recovered {} messages", report.messages);
                        }
                        recovered = messages;
                        Some(store)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let q = {
            let mut map = self.queues.write();
            if let Some(existing) = map.get(name) {
                return Ok((existing.clone(), false));
            }
            let q = Arc::new(Queue::new(
                name.to_owned(),
                self,
                opts.durable,
                opts.exclusive.then_some(owner),
                opts.auto_delete,
                opts.arguments,
                args,
                store,
            ));
            map.insert(name.to_owned(), q.clone());
            q
        };
        q.restore(recovered);
        if let Some(b) = self.broker.upgrade() {
            b.apply_policies_to_queue(&q);
            b.topology_changed();
        }
        self.durable_changed(q.durable);
        Ok((q, true))
    }

    fn check_equivalent(&self, q: &Queue, opts: &QueueOptions) -> Result<()> {
        let inequivalent = |what: &str, got: String, cur: String| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{what}' for queue '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                q.name, self.name
            ))
        };
        if q.durable != opts.durable {
            return Err(inequivalent(
                "durable",
                opts.durable.to_string(),
                q.durable.to_string(),
            ));
        }
        if q.auto_delete != opts.auto_delete {
            return Err(inequivalent(
                "auto_delete",
                opts.auto_delete.to_string(),
                q.auto_delete.to_string(),
            ));
        }
        if q.exclusive_owner.is_some() != opts.exclusive {
            return Err(inequivalent(
                "exclusive",
                opts.exclusive.to_string(),
                q.exclusive_owner.is_some().to_string(),
            ));
        }
        for key in EQUIVALENCE_KEYS {
            let a = q.arguments.inner().get(*key);
            let b = opts.arguments.inner().get(*key);
            let same = match (a, b) {
                (None, None) => true,
                (Some(x), Some(y)) => values_equivalent(x, y),
                // x-queue-type classic is the default, so omitting it is equivalent.
                (Some(x), None) | (None, Some(x)) if *key == "x-queue-type" => {
                    as_string(x).as_deref() == Some("classic")
                }
                _ => false,
            };
            if !same {
                let show =
                    |v: Option<&AMQPValue>| v.map(display_value).unwrap_or_else(|| "none".into());
                return Err(inequivalent(key, show(b), show(a)));
            }
        }
        Ok(())
    }

    /// `queue.delete`: returns the number of ready messages deleted.
    pub fn delete_queue(
        &self,
        name: &str,
        owner: u64,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<usize> {
        let Some(q) = self.queue(name) else {
            // RabbitMQ answers delete-ok for a missing queue.
            return Ok(0);
        };
        self.check_exclusive(&q, owner)?;
        let (ready, _unacked, _, consumers) = q.counts();
        if if_unused && consumers > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && ready > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' is not empty",
                self.name
            )));
        }
        Ok(self.delete_queue_internal(name).unwrap_or(0))
    }

    /// Deletes a queue with no checks (auto-delete, x-expires, exclusive owner gone).
    pub fn delete_queue_internal(&self, name: &str) -> Option<usize> {
        self.delete_queue_matching(name, None)
    }

    /// Deletes queue `name` only if it is still `expected` (auto-delete and
    /// `x-expires` must not delete a newer queue that took the name meanwhile).
    pub fn delete_queue_if(&self, name: &str, expected: &Arc<Queue>) -> Option<usize> {
        self.delete_queue_matching(name, Some(expected))
    }

    fn delete_queue_matching(&self, name: &str, expected: Option<&Arc<Queue>>) -> Option<usize> {
        let _lifecycle = self.lifecycle.lock();
        let q = {
            let mut map = self.queues.write();
            if let Some(e) = expected {
                if !map.get(name).is_some_and(|q| Arc::ptr_eq(q, e)) {
                    return None;
                }
            }
            map.remove(name)?
        };
        let dest = Destination::Queue(q.clone());
        for ex in self.exchanges() {
            if ex.unbind_destination(&dest) > 0 {
                self.auto_delete_exchange(&ex);
            }
        }
        let n = q.delete();
        self.durable_changed(q.durable);
        if let Some(b) = self.broker.upgrade() {
            b.topology_changed();
        }
        Some(n)
    }

    /// Deletes the exclusive queues of a closed connection.
    pub fn connection_closed(&self, owner: u64) {
        let owned: Vec<String> = self
            .queues
            .read()
            .values()
            .filter(|q| q.exclusive_owner == Some(owner))
            .map(|q| q.name.clone())
            .collect();
        for name in owned {
            self.delete_queue_internal(&name);
        }
    }

    /// `queue.bind` (`destination` a queue) or `exchange.bind` (`destination` an exchange).
    pub fn bind(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        if source.is_empty() {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on the default exchange in vhost '{}'",
                self.name
            )));
        }
        let ex = self.require_exchange(source)?;
        let durable = ex.durable;
        if ex.bind(Binding {
            destination,
            routing_key: routing_key.to_owned(),
            arguments,
        }) {
            self.durable_changed(durable);
        }
        Ok(())
    }

    /// `queue.unbind` / `exchange.unbind`.
    pub fn unbind(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<()> {
        if source.is_empty() {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on the default exchange in vhost '{}'",
                self.name
            )));
        }
        let ex = self.require_exchange(source)?;
        if ex.unbind(&Binding {
            destination,
            routing_key: routing_key.to_owned(),
            arguments,
        }) {
            self.durable_changed(ex.durable);
        }
        self.auto_delete_exchange(&ex);
        Ok(())
    }

    /// Every binding in the vhost as (source, binding), the default exchange's implicit ones first.
    pub fn bindings(&self) -> Vec<(String, Binding)> {
        let mut out = Vec::new();
        for q in self.queues() {
            out.push((
                String::new(),
                Binding {
                    routing_key: q.name.clone(),
                    destination: Destination::Queue(q),
                    arguments: FieldTable::default(),
                },
            ));
        }
        for ex in self.exchanges() {
            for b in ex.bindings() {
                out.push((ex.name.clone(), b));
            }
        }
        out
    }

    /// Finds the queues a message published to `exchange` with `routing_key` reaches,
    /// following exchange-to-exchange bindings and alternate exchanges.
    pub fn route(
        &self,
        exchange: &Exchange,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        if exchange.name.is_empty() {
            if let Some(q) = self.queues.read().get(routing_key) {
                out.push(q.clone());
            } else if routing_key.starts_with(REPLY_TO_PREFIX) {
                if let Some(q) = self.reply_to.read().get(routing_key) {
                    out.push(q.clone());
                }
            }
            return;
        }
        let mut visited: Vec<String> = Vec::new();
        self.route_from(exchange, routing_key, headers, out, &mut visited);
    }

    fn route_from(
        &self,
        exchange: &Exchange,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<Queue>>,
        visited: &mut Vec<String>,
    ) {
        if visited.iter().any(|v| v == &exchange.name) {
            return;
        }
        visited.push(exchange.name.clone());
        let before = out.len();
        let mut next_exchanges: Vec<String> = Vec::new();
        exchange.route(routing_key, headers, &mut |d| match d {
            Destination::Queue(q) => {
                if !out.iter().any(|x| Arc::ptr_eq(x, q)) {
                    out.push(q.clone());
                }
            }
            Destination::Exchange(e) => next_exchanges.push(e.clone()),
        });
        let mut routed_any = out.len() > before;
        for name in next_exchanges {
            if let Some(ex) = self.exchange(&name) {
                let n = out.len();
                self.route_from(&ex, routing_key, headers, out, visited);
                routed_any |= out.len() > n;
            }
        }
        if !routed_any {
            if let Some(ae) = exchange
                .effective_alternate_exchange()
                .and_then(|n| self.exchange(&n))
            {
                self.route_from(&ae, routing_key, headers, out, visited);
            }
        }
    }

    /// Routes a message and enqueues it everywhere it goes.
    /// An unroutable message is handed back (for `basic.return`).
    pub fn publish(
        &self,
        exchange: &Exchange,
        message: Message,
        targets: &mut Vec<Arc<Queue>>,
    ) -> (PublishOutcome, Option<Message>) {
        targets.clear();
        self.route(exchange, &message.routing_key, message.headers(), targets);
        exchange.publish_in.fetch_add(1, Ordering::Relaxed);
        let mut outcome = PublishOutcome::default();
        if targets.is_empty() {
            return (outcome, Some(message));
        }
        exchange.publish_out.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(message);
        for q in targets.iter() {
            match q.publish(message.clone()) {
                Enqueued::Accepted(epoch) => {
                    outcome.delivered_to += 1;
                    outcome.epoch = outcome.epoch.max(epoch);
                }
                Enqueued::Refused => outcome.refused = true,
                Enqueued::Unstored => {
                    outcome.refused = true;
                    outcome.unstored = true;
                }
            }
        }
        (outcome, None)
    }

    /// Republishes dead messages of `queue` to its dead-letter exchange.
    pub fn dead_letter(&self, queue: &Arc<Queue>, dead: Vec<(QueuedMessage, DeadReason)>) {
        let args = queue.effective_args();
        let Some(dlx_name) = args.dead_letter_exchange.as_deref() else {
            return;
        };
        let Some(dlx) = self.exchange(dlx_name) else {
            return;
        };
        let mut targets = Vec::new();
        for (qm, reason) in dead {
            let m = &qm.message;
            let routing_key = args
                .dead_letter_routing_key
                .clone()
                .unwrap_or_else(|| m.routing_key.clone());
            let properties =
                with_x_death(m.properties(), queue, reason, &m.exchange, &m.routing_key);
            let deaths = death_history(&properties);
            let rejected_in_history = deaths.iter().any(|(_, r)| r == "rejected");
            // Like RabbitMQ, the message now comes from the dead-letter exchange.
            let dead_message = Message::new(
                dlx_name.to_owned(),
                routing_key.clone(),
                properties,
                m.body.clone(),
            );
            targets.clear();
            self.route(&dlx, &routing_key, dead_message.headers(), &mut targets);
            let dead_message = Arc::new(dead_message);
            for t in &targets {
                // RabbitMQ's cycle rule: a message that already died in the target queue
                // is dropped unless a rejection (a consumer's decision) is in its history;
                // otherwise TTL or length-limit loops between queues never end.
                if !rejected_in_history && deaths.iter().any(|(q, _)| q == &t.name) {
                    continue;
                }
                t.publish(dead_message.clone());
            }
        }
    }

    /// Registers a direct reply-to pseudo queue for a consumer's token.
    pub fn register_reply_to(self: &Arc<Self>, token: &str) -> Arc<Queue> {
        let name = format!("{REPLY_TO_PREFIX}.{token}");
        let q = Arc::new(Queue::new(
            name.clone(),
            self,
            false,
            None,
            false,
            FieldTable::default(),
            QueueArgs::default(),
            None,
        ));
        self.reply_to.write().insert(name, q.clone());
        q
    }

    /// Removes a direct reply-to pseudo queue.
    pub fn unregister_reply_to(&self, name: &str) {
        if let Some(q) = self.reply_to.write().remove(name) {
            q.delete();
        }
    }

    /// Periodic work for TTLs and `x-expires`.
    pub fn tick(&self, now: Instant) {
        let mut expired = Vec::new();
        for q in self.queues() {
            if q.tick(now) {
                expired.push(q);
            }
        }
        for q in expired {
            self.delete_queue_if(&q.name, &q);
        }
    }
}

/// (queue, reason) of every entry in a message's `x-death` header.
fn death_history(props: &AMQPProperties) -> Vec<(String, String)> {
    let Some(headers) = props.headers() else {
        return Vec::new();
    };
    let Some(deaths) = headers.inner().get("x-death").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    deaths
        .as_slice()
        .iter()
        .filter_map(|d| match d {
            AMQPValue::FieldTable(t) => Some((
                t.inner().get("queue").and_then(as_string)?,
                t.inner().get("reason").and_then(as_string)?,
            )),
            _ => None,
        })
        .collect()
}

fn values_equivalent(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (crate::args::as_i64(a), crate::args::as_i64(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (as_string(a), as_string(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn display_value(v: &AMQPValue) -> String {
    if let Some(i) = crate::args::as_i64(v) {
        return i.to_string();
    }
    if let Some(s) = as_string(v) {
        return s;
    }
    format!("{v:?}")
}

/// Adds this death to the message's `x-death` header the way RabbitMQ does.
/// Returns the properties with the updated `x-death` and `x-first/last-death-*` headers.
fn with_x_death(
    props: &AMQPProperties,
    queue: &Queue,
    reason: DeadReason,
    exchange: &str,
    routing_key: &str,
) -> AMQPProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = headers
        .inner()
        .get("x-death")
        .and_then(|v| v.as_array())
        .map(|a| a.as_slice().to_vec())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let entry_matches = |t: &FieldTable| {
        t.inner().get("queue").and_then(as_string).as_deref() == Some(queue.name.as_str())
            && t.inner().get("reason").and_then(as_string).as_deref() == Some(reason.as_str())
    };
    let existing = deaths
        .iter()
        .position(|d| matches!(d, AMQPValue::FieldTable(t) if entry_matches(t)));
    let entry = match existing {
        Some(pos) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(pos) else {
                unreachable!("matched a table")
            };
            let count = t
                .inner()
                .get("count")
                .and_then(crate::args::as_i64)
                .unwrap_or(0);
            t.insert(
                "count".into(),
                AMQPValue::LongLongInt(count.saturating_add(1)),
            );
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert(
                "reason".into(),
                AMQPValue::LongString(reason.as_str().into()),
            );
            t.insert(
                "queue".into(),
                AMQPValue::LongString(queue.name.as_str().into()),
            );
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t.insert("exchange".into(), AMQPValue::LongString(exchange.into()));
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                    routing_key.into(),
                )])),
            );
            if let Some(exp) = props.expiration() {
                t.insert(
                    "original-expiration".into(),
                    AMQPValue::LongString(exp.as_str().into()),
                );
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    if !headers.contains_key("x-first-death-reason") {
        headers.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString(queue.name.as_str().into()),
        );
        headers.insert(
            "x-first-death-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
    }
    headers.insert(
        "x-last-death-reason".into(),
        AMQPValue::LongString(reason.as_str().into()),
    );
    headers.insert(
        "x-last-death-queue".into(),
        AMQPValue::LongString(queue.name.as_str().into()),
    );
    headers.insert(
        "x-last-death-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    copy_properties(props, Some(headers), None, true)
}

/// Copies properties, optionally replacing headers or reply-to, optionally dropping expiration.
pub fn copy_properties(
    p: &AMQPProperties,
    headers: Option<FieldTable>,
    reply_to: Option<String>,
    drop_expiration: bool,
) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(h) = headers.or_else(|| p.headers().clone()) {
        out = out.with_headers(h);
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(r) = reply_to.map(Into::into).or_else(|| p.reply_to().clone()) {
        out = out.with_reply_to(r);
    }
    if !drop_expiration {
        if let Some(v) = p.expiration() {
            out = out.with_expiration(v.clone());
        }
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}
