//! Queue federation: a downstream FerryMQ pulls messages from a queue of the same
//! name on an upstream broker (FerryMQ, RabbitMQ, LavinMQ) while its own consumers
//! are ready and its local queue is empty — the tool for moving a live cluster.
//!
//! - [`upstream`]: the `federation-upstream` / `federation-upstream-set` parameters.
//! - [`Federation`]: the supervisor. Whenever queues, policies or parameters change
//!   it works out which links should exist (a queue whose policy names an upstream
//!   or set that exists) and starts, stops or hot-swaps links to match.
//! - [`link`]: one link, an AMQP client beside the broker.
//! - [`dedup`]: the window of stored message identities that drops redeliveries.
//! - [`status`]: what `/api/federation-links` and `/metrics` show.

pub mod dedup;
pub mod headers;
pub mod link;
pub mod status;
pub mod upstream;

use ferrymq_broker::queue::Queue;
use ferrymq_broker::Broker;
use link::{Control, LinkConfig};
use parking_lot::Mutex;
use serde_json::Value;
use status::LinkStatus;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::{watch, Notify};
use upstream::Upstream;

/// Parameter component of upstreams.
pub const UPSTREAM: &str = "federation-upstream";
/// Parameter component of upstream sets.
pub const UPSTREAM_SET: &str = "federation-upstream-set";

/// (vhost, local queue, upstream name).
type LinkKey = (String, String, String);

struct Running {
    status: Arc<LinkStatus>,
    control: watch::Sender<Control>,
    /// The link's settings as JSON, to notice changes that need a hot swap.
    fingerprint: String,
    queue: Arc<Queue>,
    /// The link's task; a replacement waits for it (they share the queue's identity log).
    task: tokio::task::JoinHandle<()>,
    /// Set if the task ended on its own (a panic): the next reconcile starts a new one.
    ended: Arc<std::sync::atomic::AtomicBool>,
}

/// The federation service of one broker.
pub struct Federation {
    broker: Weak<Broker>,
    cluster_name: String,
    node_name: String,
    synced: watch::Receiver<u64>,
    links: Mutex<HashMap<LinkKey, Running>>,
    /// Links stopped with no successor yet, still settling their in-flight messages:
    /// a link started for the same key later waits for them (see `reconcile`).
    stopping: Mutex<HashMap<LinkKey, tokio::task::JoinHandle<()>>>,
    wake: Arc<Notify>,
}

/// Registers the parameter validators (so bad upstreams are refused with a 400
/// even before federation starts).
pub fn register_validators(broker: &Broker) {
    broker.parameters.register(
        UPSTREAM,
        Arc::new(|_vhost, name, value| Upstream::parse(name, value).map(|_| ())),
    );
    broker.parameters.register(
        UPSTREAM_SET,
        Arc::new(|_vhost, _name, value| upstream::validate_set(value)),
    );
}

/// A short stable id for a link.
fn link_id(key: &LinkKey) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(key.0.as_bytes())
        .chain_update([0])
        .chain_update(key.1.as_bytes())
        .chain_update([0])
        .chain_update(key.2.as_bytes())
        .finalize();
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Federation {
    /// Starts the supervisor: links follow the broker's queues, policies and upstreams.
    /// `synced` carries the store's synced durability epoch (for on-confirm acks).
    pub fn start(
        broker: &Arc<Broker>,
        cluster_name: String,
        node_name: String,
        synced: watch::Receiver<u64>,
    ) -> Arc<Self> {
        register_validators(broker);
        let fed = Arc::new(Federation {
            broker: Arc::downgrade(broker),
            cluster_name,
            node_name,
            synced,
            links: Mutex::new(HashMap::new()),
            stopping: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
        });
        let wake = fed.wake.clone();
        broker.on_topology_change(Arc::new(move || wake.notify_one()));
        let weak = Arc::downgrade(&fed);
        let wake = fed.wake.clone();
        tokio::spawn(async move {
            loop {
                let Some(fed) = weak.upgrade() else { return };
                fed.reconcile();
                drop(fed);
                // A slow safety tick as well, in case a change slipped past a notification.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), wake.notified()).await;
            }
        });
        fed
    }

    /// The links that should exist now, with their settings.
    fn desired(&self, broker: &Broker) -> HashMap<LinkKey, (Arc<Queue>, Upstream, String)> {
        let mut out = HashMap::new();
        for v in broker.vhosts() {
            let upstreams: HashMap<String, Value> = broker
                .parameters
                .list(Some(UPSTREAM), Some(&v.name))
                .into_iter()
                .map(|(k, val)| (k.2, val))
                .collect();
            if upstreams.is_empty() {
                continue;
            }
            for queue in v.queues() {
                if queue.exclusive_owner.is_some()
                    || queue.arguments.inner().contains_key("x-internal-purpose")
                {
                    continue;
                }
                let applied = queue.applied_policies();
                let Some(policy) = applied.policy.as_ref() else {
                    continue;
                };
                // (upstream name, overrides from a set member)
                let members: Vec<(String, serde_json::Map<String, Value>)> =
                    if let Some(name) = policy.string("federation-upstream") {
                        vec![(name.to_owned(), Default::default())]
                    } else if let Some(set) = policy.string("federation-upstream-set") {
                        if set == "all" {
                            upstreams
                                .keys()
                                .map(|n| (n.clone(), Default::default()))
                                .collect()
                        } else {
                            broker
                                .parameters
                                .get(UPSTREAM_SET, &v.name, set)
                                .and_then(|s| s.as_array().cloned())
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|m| {
                                    let o = m.as_object()?.clone();
                                    Some((o.get("upstream")?.as_str()?.to_owned(), o))
                                })
                                .collect()
                        }
                    } else {
                        continue;
                    };
                for (name, overrides) in members {
                    let Some(value) = upstreams.get(&name) else {
                        continue;
                    };
                    let merged = upstream::merged(value, &overrides);
                    match Upstream::parse(&name, &merged) {
                        Ok(up) => {
                            let key = (v.name.clone(), queue.name.clone(), name);
                            out.insert(key, (queue.clone(), up, merged.to_string()));
                        }
                        Err(e) => {
                            tracing::warn!("upstream '{name}' in vhost '{}' unusable: {e}", v.name)
                        }
                    }
                }
            }
        }
        out
    }

    /// Brings the running links in line with what should exist.
    pub fn reconcile(self: &Arc<Self>) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let desired = self.desired(&broker);
        let mut links = self.links.lock();
        let mut retiring: HashMap<LinkKey, tokio::task::JoinHandle<()>> = HashMap::new();
        for (key, running) in std::mem::take(&mut *links) {
            let keep = desired.get(&key).is_some_and(|(q, _, fp)| {
                Arc::ptr_eq(q, &running.queue)
                    && *fp == running.fingerprint
                    && !q.is_deleted()
                    && !running.ended.load(Ordering::Acquire)
            });
            if keep {
                links.insert(key, running);
            } else {
                tracing::info!(
                    "federation link {} ({}/{} ← {}) stopping",
                    running.status.id,
                    key.0,
                    key.1,
                    key.2
                );
                running.control.send_modify(|c| c.stop = true);
                retiring.insert(key, running.task);
            }
        }
        for (key, (queue, up, fingerprint)) in desired {
            if links.contains_key(&key) {
                continue;
            }
            let id = link_id(&key);
            let upstream_queue = up.queue.clone().unwrap_or_else(|| key.1.clone());
            let status = Arc::new(LinkStatus::new(
                id.clone(),
                &key.0,
                &key.1,
                &key.2,
                &upstream_queue,
                up.tag(),
                up.ack_mode.as_str(),
                up.uris[0].redacted(),
            ));
            let (control, rx) = watch::channel(Control::default());
            let cfg = LinkConfig {
                vhost: key.0.clone(),
                queue: queue.clone(),
                upstream: up,
                upstream_queue,
                cluster_name: self.cluster_name.clone(),
            };
            tracing::info!(
                "federation link {id} ({}/{} ← {}) starting",
                key.0,
                key.1,
                key.2
            );
            // The link this one replaces, stopped in this reconcile or an earlier one:
            // started before it has settled, this one would not know the identities of
            // the messages it is still storing, and would store their redeliveries again.
            let previous = retiring
                .remove(&key)
                .or_else(|| self.stopping.lock().remove(&key));
            let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (watch_status, watch_ended, synced) =
                (status.clone(), ended.clone(), self.synced.clone());
            let wake = self.wake.clone();
            let task = tokio::spawn(async move {
                // A hot swap: the old link settles its in-flight messages first.
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                let run = tokio::spawn(link::run(cfg, watch_status.clone(), rx, synced));
                if let Err(e) = run.await {
                    if e.is_panic() {
                        tracing::error!(
                            "federation link {} panicked; restarting it",
                            watch_status.id
                        );
                        watch_status.set(
                            status::State::Error,
                            Some("the link task failed; restarting".into()),
                        );
                        watch_ended.store(true, Ordering::Release);
                        wake.notify_one();
                    }
                }
            });
            links.insert(
                key,
                Running {
                    status,
                    control,
                    fingerprint,
                    queue,
                    task,
                    ended,
                },
            );
        }
        let mut stopping = self.stopping.lock();
        stopping.retain(|_, task| !task.is_finished());
        stopping.extend(retiring);
    }

    /// Links as `/api/federation-links` lists them.
    pub fn links_json(&self, vhost: Option<&str>) -> Vec<Value> {
        let links = self.links.lock();
        let mut out: Vec<Value> = links
            .iter()
            .filter(|(k, _)| vhost.is_none_or(|v| v == k.0))
            .map(|(_, r)| r.status.to_json(&self.node_name))
            .collect();
        out.sort_by_key(|l| {
            (
                l["vhost"].as_str().unwrap_or_default().to_owned(),
                l["queue"].as_str().unwrap_or_default().to_owned(),
                l["upstream"].as_str().unwrap_or_default().to_owned(),
            )
        });
        out
    }

    /// Makes a link reconnect; false if no such link.
    pub fn restart(&self, vhost: &str, id: &str) -> bool {
        let links = self.links.lock();
        match links
            .iter()
            .find(|(k, r)| k.0 == vhost && r.status.id == id)
        {
            Some((_, r)) => {
                r.control.send_modify(|c| c.restart += 1);
                true
            }
            None => false,
        }
    }

    /// Stops every link (at shutdown).
    pub fn stop_all(&self) {
        for (_, r) in self.links.lock().drain() {
            r.control.send_modify(|c| c.stop = true);
        }
    }

    /// Prometheus text for the links.
    pub fn metrics(&self) -> String {
        let links = self.links.lock();
        let mut rows: Vec<_> = links.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::new();
        let label = |k: &LinkKey| {
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            format!(
                "vhost=\"{}\",queue=\"{}\",upstream=\"{}\"",
                esc(&k.0),
                esc(&k.1),
                esc(&k.2)
            )
        };
        let _ = writeln!(
            out,
            "# HELP ferrymq_federation_link_up 1 when the link is running or paused (connected)"
        );
        let _ = writeln!(out, "# TYPE ferrymq_federation_link_up gauge");
        for (k, r) in &rows {
            let up = matches!(
                r.status.state(),
                status::State::Running | status::State::Paused
            );
            let _ = writeln!(
                out,
                "ferrymq_federation_link_up{{{}}} {}",
                label(k),
                u8::from(up)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferrymq_federation_link_state Link state (label state), 1 for the current one"
        );
        let _ = writeln!(out, "# TYPE ferrymq_federation_link_state gauge");
        for (k, r) in &rows {
            let _ = writeln!(
                out,
                "ferrymq_federation_link_state{{{},state=\"{}\"}} 1",
                label(k),
                r.status.state().as_str()
            );
        }
        type Counter = fn(&LinkStatus) -> u64;
        let counters: [(&str, &str, Counter); 4] = [
            (
                "ferrymq_federation_messages_transferred_total",
                "Messages moved from the upstream",
                |s| s.transferred.load(Ordering::Relaxed),
            ),
            (
                "ferrymq_federation_duplicates_dropped_total",
                "Redeliveries dropped as already stored",
                |s| s.duplicates.load(Ordering::Relaxed),
            ),
            (
                "ferrymq_federation_reconnects_total",
                "Reconnections after failures",
                |s| s.reconnects.load(Ordering::Relaxed),
            ),
            (
                "ferrymq_federation_loops_refused_total",
                "Messages refused because they already visited the queue",
                |s| s.loops_refused.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (k, r) in &rows {
                let _ = writeln!(out, "{name}{{{}}} {}", label(k), get(&r.status));
            }
        }
        out
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.stop_all();
    }
}
