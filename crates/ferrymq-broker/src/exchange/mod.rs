//! Exchanges: named routers that map a routing key (and headers) to bound destinations.
//!
//! Each type keeps its own index so routing never scans every binding:
//! direct is a hash lookup, topic a word trie, fanout a list, headers a list of
//! predicates (headers exchanges rarely have many bindings).

mod direct;
mod headers;
mod topic;

use crate::policy::AppliedPolicies;
use crate::queue::Queue;
use amq_protocol::types::FieldTable;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use headers::HeadersMatch;

/// The routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every bound destination.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Match on message headers.
    Headers,
}

impl ExchangeKind {
    /// Parses an exchange type name as sent in `exchange.declare`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }
    /// The type name as RabbitMQ shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads: a queue, or another exchange (exchange-to-exchange binding).
#[derive(Clone)]
pub enum Destination {
    /// A queue, held directly so routing needs no name lookup.
    Queue(Arc<Queue>),
    /// An exchange, looked up by name when routed through (rare path).
    Exchange(String),
}

impl Destination {
    /// The destination's name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(q) => &q.name,
            Destination::Exchange(e) => e,
        }
    }
    /// `"queue"` or `"exchange"`, as the management API names destination types.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Queue(_) => "queue",
            Destination::Exchange(_) => "exchange",
        }
    }
    fn same(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

/// One binding as declared by a client.
#[derive(Clone, Debug)]
pub struct Binding {
    /// Destination queue or exchange.
    pub destination: Destination,
    /// Routing key (pattern for topic exchanges).
    pub routing_key: String,
    /// Binding arguments (x-match and header values for headers exchanges).
    pub arguments: FieldTable,
}

/// The type-specific index used for routing.
enum RouteIndex {
    Direct(direct::DirectIndex),
    Fanout,
    Topic(topic::TopicTrie),
    Headers,
}

struct BindingSet {
    all: Vec<Binding>,
    index: RouteIndex,
}

/// An exchange in a vhost.
pub struct Exchange {
    /// Exchange name (`""` is the default exchange).
    pub name: String,
    /// Routing algorithm.
    pub kind: ExchangeKind,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding (as source) goes.
    pub auto_delete: bool,
    /// Clients may not publish to it directly.
    pub internal: bool,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// `alternate-exchange` argument: where unroutable messages go.
    pub alternate_exchange: Option<String>,
    /// The policy that applies, and the alternate exchange it names (an argument wins).
    applied: RwLock<(Arc<AppliedPolicies>, Option<String>)>,
    /// Messages published to this exchange.
    pub publish_in: AtomicU64,
    /// Messages this exchange routed to at least one queue.
    pub publish_out: AtomicU64,
    bindings: RwLock<BindingSet>,
    deleted: AtomicBool,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Exchange({}, {})", self.name, self.kind.as_str())
    }
}

impl Exchange {
    /// A new exchange without bindings.
    pub fn new(
        name: String,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate_exchange = arguments
            .inner()
            .get("alternate-exchange")
            .and_then(crate::args::as_string);
        let index = match kind {
            ExchangeKind::Direct => RouteIndex::Direct(Default::default()),
            ExchangeKind::Fanout => RouteIndex::Fanout,
            ExchangeKind::Topic => RouteIndex::Topic(Default::default()),
            ExchangeKind::Headers => RouteIndex::Headers,
        };
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate_exchange,
            applied: Default::default(),
            publish_in: AtomicU64::new(0),
            publish_out: AtomicU64::new(0),
            bindings: RwLock::new(BindingSet {
                all: Vec::new(),
                index,
            }),
            deleted: AtomicBool::new(false),
        }
    }

    /// Where unroutable messages go: the declared argument, else the policy's.
    pub fn effective_alternate_exchange(&self) -> Option<String> {
        if self.alternate_exchange.is_some() {
            return self.alternate_exchange.clone();
        }
        self.applied.read().1.clone()
    }

    /// The policy that applies now.
    pub fn applied_policies(&self) -> Arc<AppliedPolicies> {
        self.applied.read().0.clone()
    }

    /// Applies (or removes) a policy live.
    pub fn apply_policies(&self, applied: AppliedPolicies) {
        let ae = applied
            .policy
            .as_ref()
            .and_then(|p| p.string("alternate-exchange"))
            .map(String::from);
        *self.applied.write() = (Arc::new(applied), ae);
    }

    /// Adds a binding; returns false if an identical one already exists.
    pub fn bind(&self, binding: Binding) -> bool {
        let mut set = self.bindings.write();
        if set.all.iter().any(|b| same_binding(b, &binding)) {
            return false;
        }
        match &mut set.index {
            RouteIndex::Direct(ix) => ix.add(&binding.routing_key, binding.destination.clone()),
            RouteIndex::Topic(t) => t.add(&binding.routing_key, binding.destination.clone()),
            RouteIndex::Fanout | RouteIndex::Headers => {}
        }
        set.all.push(binding);
        true
    }

    /// Removes a binding; returns false if it did not exist.
    pub fn unbind(&self, binding: &Binding) -> bool {
        let mut set = self.bindings.write();
        let Some(pos) = set.all.iter().position(|b| same_binding(b, binding)) else {
            return false;
        };
        let removed = set.all.remove(pos);
        match &mut set.index {
            RouteIndex::Direct(ix) => ix.remove(&removed.routing_key, &removed.destination),
            RouteIndex::Topic(t) => t.remove(&removed.routing_key, &removed.destination),
            RouteIndex::Fanout | RouteIndex::Headers => {}
        }
        true
    }

    /// Removes every binding to `destination`; returns how many went.
    pub fn unbind_destination(&self, destination: &Destination) -> usize {
        let doomed: Vec<Binding> = self
            .bindings
            .read()
            .all
            .iter()
            .filter(|b| b.destination.same(destination))
            .cloned()
            .collect();
        for b in &doomed {
            self.unbind(b);
        }
        doomed.len()
    }

    /// A snapshot of the bindings, in declaration order.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().all.clone()
    }

    /// Number of bindings with this exchange as source.
    pub fn binding_count(&self) -> usize {
        self.bindings.read().all.len()
    }

    /// Calls `f` for every destination the message routes to (possibly with repeats).
    pub fn route(
        &self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        f: &mut dyn FnMut(&Destination),
    ) {
        let set = self.bindings.read();
        match &set.index {
            RouteIndex::Direct(ix) => ix.route(routing_key, f),
            RouteIndex::Fanout => set.all.iter().for_each(|b| f(&b.destination)),
            RouteIndex::Topic(t) => t.route(routing_key, f),
            RouteIndex::Headers => {
                for b in &set.all {
                    if headers::matches(&b.arguments, headers) {
                        f(&b.destination);
                    }
                }
            }
        }
    }

    /// Marks the exchange deleted (so late routers ignore it).
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Whether the exchange was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}

fn same_binding(a: &Binding, b: &Binding) -> bool {
    a.routing_key == b.routing_key
        && a.destination.same(&b.destination)
        && a.arguments == b.arguments
}
