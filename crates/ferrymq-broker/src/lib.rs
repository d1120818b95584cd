//! FerryMQ's domain: vhosts, exchanges, queues, bindings, consumers, users and
//! permissions. Nothing here touches a socket; the AMQP server and the HTTP API
//! both drive a [`Broker`].

pub mod args;
pub mod auth;
pub mod consumer;
pub mod definitions;
pub mod error;
pub mod exchange;
pub mod json;
pub mod limits;
pub mod message;
pub mod parameters;
pub mod policy;
pub mod queue;
pub mod queue_args;
pub mod ready;
pub mod store;
pub mod vhost;

use auth::{Access, HashingAlgorithm, Permission, User};
use definitions::{
    BindingDef, Definitions, ExchangeDef, PermissionDef, QueueDef, Tags, UserDef, VHostDef,
};
use error::{AmqpError, Result};
use exchange::Destination;
use parameters::RuntimeParameters;
use parking_lot::{Mutex, RwLock};
use policy::{PolicyStore, Target};
use queue::Queue;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;
use store::Durability;
use vhost::{ExchangeOptions, QueueOptions, VHost};

pub use amq_protocol;

/// Where durable state lives.
pub struct Storage {
    /// The data directory.
    pub dir: PathBuf,
    /// Group commit for every queue store.
    pub durability: Arc<Durability>,
}

/// The broker's state: vhosts, users and permissions.
pub struct Broker {
    me: Weak<Broker>,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<HashMap<String, User>>,
    permissions: RwLock<HashMap<(String, String), Permission>>,
    next_id: AtomicU64,
    storage: Option<Storage>,
    save_lock: Mutex<()>,
    restoring: AtomicBool,
    /// Policies and operator policies.
    pub policies: PolicyStore,
    /// Runtime and global parameters.
    pub parameters: RuntimeParameters,
    topology_listeners: RwLock<Vec<TopologyListener>>,
}

/// Called after queues, policies or parameters changed (federation reconciles its links).
pub type TopologyListener = Arc<dyn Fn() + Send + Sync>;

impl Broker {
    /// An empty in-memory broker (no vhosts, no users, nothing persisted).
    pub fn new() -> Arc<Self> {
        Self::build(None)
    }

    fn build(storage: Option<Storage>) -> Arc<Self> {
        Arc::new_cyclic(|me| Broker {
            me: me.clone(),
            vhosts: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            permissions: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            storage,
            save_lock: Mutex::new(()),
            restoring: AtomicBool::new(false),
            policies: PolicyStore::default(),
            parameters: {
                let p = RuntimeParameters::default();
                p.register(limits::VHOST_LIMITS, Arc::new(limits::vhost_validator));
                p
            },
            topology_listeners: RwLock::new(Vec::new()),
        })
    }

    /// Limit `key` of a vhost (`max-connections`, `max-queues`); `None` = unlimited.
    pub fn vhost_limit(&self, vhost: &str, key: &str) -> Option<u64> {
        let v = self
            .parameters
            .get(limits::VHOST_LIMITS, vhost, limits::VHOST_LIMITS_NAME)?;
        limits::limit_of(v.as_object()?, key)
    }

    /// Limit `key` of a user (`max-connections`, `max-channels`); `None` = unlimited.
    pub fn user_limit(&self, user: &str, key: &str) -> Option<u64> {
        limits::limit_of(&self.users.read().get(user)?.limits, key)
    }

    /// Whether definitions are being restored at start-up (limits are not enforced then).
    pub fn is_restoring(&self) -> bool {
        self.restoring.load(Ordering::Relaxed)
    }

    /// A broker with vhost `/` and user guest/guest with full permissions on it, as RabbitMQ starts.
    pub fn with_defaults() -> Arc<Self> {
        let b = Self::new();
        b.add_vhost("/");
        b.put_user(User::with_password(
            "guest",
            "guest",
            vec!["administrator".into()],
        ));
        b.set_permission("/", "guest", Permission::all());
        b
    }

    /// Opens the broker persisted in `dir`: restores definitions and every durable
    /// queue's messages. Returns whether definitions existed (false on first start).
    pub fn open(dir: &Path) -> std::result::Result<(Arc<Self>, bool), String> {
        std::fs::create_dir_all(dir.join("queues"))
            .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let durability = Durability::new();
        durability.spawn();
        let broker = Self::build(Some(Storage {
            dir: dir.to_owned(),
            durability,
        }));
        let path = dir.join("definitions.json");
        let existed = path.exists();
        if existed {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let defs: Definitions = serde_json::from_str(&text)
                .map_err(|e| format!("invalid {}: {e}", path.display()))?;
            broker.restoring.store(true, Ordering::Relaxed);
            let r = broker.import_definitions(&defs);
            broker.restoring.store(false, Ordering::Relaxed);
            r.map_err(|e| format!("cannot restore definitions: {e}"))?;
        }
        broker.remove_stale_stores();
        Ok((broker, existed))
    }

    /// The durable storage, if this broker persists.
    pub fn storage(&self) -> Option<&Storage> {
        self.storage.as_ref()
    }

    /// Directory of a durable queue's store.
    pub fn queue_dir(&self, vhost: &str, queue: &str) -> Option<PathBuf> {
        use sha2::{Digest, Sha256};
        let storage = self.storage.as_ref()?;
        let digest = Sha256::new()
            .chain_update(vhost.as_bytes())
            .chain_update([0u8])
            .chain_update(queue.as_bytes())
            .finalize();
        let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(storage.dir.join("queues").join(id))
    }

    fn remove_stale_stores(&self) {
        let Some(storage) = &self.storage else { return };
        let mut keep = std::collections::HashSet::new();
        for v in self.vhosts() {
            for q in v.queues() {
                if let Some(d) = self.queue_dir(&v.name, &q.name) {
                    keep.insert(d);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(storage.dir.join("queues")) {
            for e in entries.flatten() {
                if !keep.contains(&e.path()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Saves durable definitions after a change (no-op for in-memory brokers).
    pub fn definitions_changed(&self) {
        let Some(storage) = &self.storage else { return };
        if self.restoring.load(Ordering::Relaxed) {
            return;
        }
        let _guard = self.save_lock.lock();
        let defs = self.export_definitions(None, true);
        let text = match serde_json::to_vec_pretty(&defs) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot serialise definitions: {e}");
                return;
            }
        };
        let path = storage.dir.join("definitions.json");
        let tmp = storage.dir.join("definitions.json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&storage.dir)?.sync_all()
        };
        if let Err(e) = write() {
            tracing::error!("cannot save definitions to {}: {e}", path.display());
        }
    }

    /// Exports definitions (all vhosts, or one), optionally only durable objects.
    pub fn export_definitions(&self, only_vhost: Option<&str>, durable_only: bool) -> Definitions {
        let mut d = Definitions {
            rabbit_version: Some("3.10.8".into()),
            ferrymq_version: Some(env!("CARGO_PKG_VERSION").into()),
            ..Default::default()
        };
        let want = |v: &str| only_vhost.is_none_or(|o| o == v);
        if only_vhost.is_none() {
            let mut users = self.users();
            users.sort_by(|a, b| a.name.cmp(&b.name));
            d.users = users
                .into_iter()
                .map(|u| UserDef {
                    name: u.name,
                    password_hash: u.password_hash,
                    hashing_algorithm: u.hashing_algorithm.as_str().into(),
                    tags: Tags::List(u.tags),
                    limits: if u.limits.is_empty() {
                        serde_json::Value::Null
                    } else {
                        serde_json::Value::Object(u.limits)
                    },
                })
                .collect();
            d.global_parameters = self
                .parameters
                .globals()
                .iter()
                .map(|(k, v)| parameters::global_json(k, v))
                .collect();
        }
        let mut vhosts = self.vhosts();
        vhosts.sort_by(|a, b| a.name.cmp(&b.name));
        for v in vhosts.iter().filter(|v| want(&v.name)) {
            d.vhosts.push(VHostDef {
                name: v.name.clone(),
                metadata: v.metadata.read().clone(),
                limits: serde_json::Value::Null,
            });
            let mut exchanges = v.exchanges();
            exchanges.sort_by(|a, b| a.name.cmp(&b.name));
            for e in &exchanges {
                if e.name.is_empty() || e.name.starts_with("amq.") || (durable_only && !e.durable) {
                    continue;
                }
                d.exchanges.push(ExchangeDef {
                    name: e.name.clone(),
                    vhost: v.name.clone(),
                    kind: e.kind.as_str().into(),
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: json::table_to_json(&e.arguments),
                });
            }
            let mut queues = v.queues();
            queues.sort_by(|a, b| a.name.cmp(&b.name));
            for q in &queues {
                if (durable_only && !q.durable) || q.exclusive_owner.is_some() {
                    continue;
                }
                d.queues.push(QueueDef {
                    name: q.name.clone(),
                    vhost: v.name.clone(),
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    arguments: json::table_to_json(&q.arguments),
                });
            }
            for e in &exchanges {
                if durable_only && !e.durable {
                    continue;
                }
                for b in e.bindings() {
                    let dest_durable = match &b.destination {
                        Destination::Queue(q) => q.durable && q.exclusive_owner.is_none(),
                        Destination::Exchange(n) => v.exchange(n).is_some_and(|x| x.durable),
                    };
                    if durable_only && !dest_durable {
                        continue;
                    }
                    d.bindings.push(BindingDef {
                        source: e.name.clone(),
                        vhost: v.name.clone(),
                        destination: b.destination.name().to_owned(),
                        destination_type: b.destination.kind().into(),
                        routing_key: b.routing_key.clone(),
                        arguments: json::table_to_json(&b.arguments),
                    });
                }
            }
        }
        let mut perms = self.permissions();
        perms.sort_by(|a, b| a.0.cmp(&b.0));
        for ((vhost, user), p) in perms {
            if want(&vhost) {
                d.permissions.push(PermissionDef {
                    user,
                    vhost,
                    configure: p.configure,
                    write: p.write,
                    read: p.read,
                });
            }
        }
        d.parameters = self
            .parameters
            .list(None, only_vhost)
            .iter()
            .map(|(k, v)| parameters::parameter_json(k, v))
            .collect();
        d.policies = self
            .policies
            .list(false, only_vhost)
            .iter()
            .map(|p| p.to_json())
            .collect();
        d.operator_policies = self
            .policies
            .list(true, only_vhost)
            .iter()
            .map(|p| p.to_json())
            .collect();
        d
    }

    /// Imports definitions: validates everything first, then applies. Idempotent.
    pub fn import_definitions(&self, d: &Definitions) -> std::result::Result<(), String> {
        for u in &d.users {
            if HashingAlgorithm::parse(&u.hashing_algorithm).is_none() {
                return Err(format!(
                    "user '{}': unsupported hashing_algorithm '{}'",
                    u.name, u.hashing_algorithm
                ));
            }
            if !u.limits.is_null() {
                limits::validate(&u.limits, &limits::USER_KEYS)
                    .map_err(|e| format!("user '{}': {e}", u.name))?;
            }
        }
        let mut perms = Vec::new();
        for p in &d.permissions {
            if !d.users.iter().any(|u| u.name == p.user) && self.user(&p.user).is_none() {
                return Err(format!(
                    "permission of user '{}' in vhost '{}': no such user",
                    p.user, p.vhost
                ));
            }
            if !d.vhosts.iter().any(|v| v.name == p.vhost) && self.vhost(&p.vhost).is_none() {
                return Err(format!(
                    "permission of user '{}': vhost '{}' does not exist",
                    p.user, p.vhost
                ));
            }
            let perm = Permission::new(&p.configure, &p.write, &p.read).map_err(|e| {
                format!(
                    "permission of user '{}' in vhost '{}': {e}",
                    p.user, p.vhost
                )
            })?;
            perms.push((p, perm));
        }
        let known_vhost =
            |name: &str| d.vhosts.iter().any(|v| v.name == name) || self.vhost(name).is_some();
        for q in &d.queues {
            if !known_vhost(&q.vhost) {
                return Err(format!(
                    "queue '{}': vhost '{}' does not exist",
                    q.name, q.vhost
                ));
            }
            queue_args::QueueArgs::parse(&json::json_to_table(&q.arguments), &q.name, &q.vhost)
                .map_err(|e| format!("queue '{}' in vhost '{}': {}", q.name, q.vhost, e.text))?;
        }
        for e in &d.exchanges {
            if !known_vhost(&e.vhost) {
                return Err(format!(
                    "exchange '{}': vhost '{}' does not exist",
                    e.name, e.vhost
                ));
            }
            if exchange::ExchangeKind::parse(&e.kind).is_none() {
                return Err(format!(
                    "exchange '{}' in vhost '{}': unknown type '{}'",
                    e.name, e.vhost, e.kind
                ));
            }
        }
        for b in &d.bindings {
            if !matches!(b.destination_type.as_str(), "queue" | "exchange") {
                return Err(format!(
                    "binding from '{}' to '{}': bad destination_type '{}'",
                    b.source, b.destination, b.destination_type
                ));
            }
        }
        let mut policies = Vec::new();
        for (list, operator) in [(&d.policies, false), (&d.operator_policies, true)] {
            for p in list {
                let vhost = p.get("vhost").and_then(|v| v.as_str()).unwrap_or("/");
                let name = p.get("name").and_then(|v| v.as_str()).unwrap_or_default();
                if name.is_empty() {
                    return Err(format!("policy without a name in vhost '{vhost}'"));
                }
                if !known_vhost(vhost) {
                    return Err(format!("policy '{name}': vhost '{vhost}' does not exist"));
                }
                let (policy, ignored) = policy::Policy::parse(vhost, name, p, operator)
                    .map_err(|e| format!("policy '{name}' in vhost '{vhost}': {e}"))?;
                if !ignored.is_empty() {
                    tracing::warn!("policy '{name}' in vhost '{vhost}': ignoring keys {ignored:?}");
                }
                policies.push((policy, operator));
            }
        }
        let mut params = Vec::new();
        for p in &d.parameters {
            let field = |k: &str| {
                p.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let (c, v, n) = (field("component"), field("vhost"), field("name"));
            let value = p.get("value").cloned().unwrap_or(serde_json::Value::Null);
            if c.is_empty() || n.is_empty() {
                return Err(format!("parameter without component or name: {p}"));
            }
            if !known_vhost(&v) {
                return Err(format!("parameter '{n}' ({c}): vhost '{v}' does not exist"));
            }
            self.parameters
                .validate(&c, &v, &n, &value, true)
                .map_err(|e| format!("parameter '{n}' ({c}) in vhost '{v}': {e}"))?;
            params.push((c, v, n, value));
        }
        for v in &d.vhosts {
            let vh = self.add_vhost(&v.name);
            if !v.metadata.is_null() {
                *vh.metadata.write() = v.metadata.clone();
            }
        }
        for u in &d.users {
            self.put_user(User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                hashing_algorithm: HashingAlgorithm::parse(&u.hashing_algorithm)
                    .expect("validated"),
                tags: u.tags.to_vec(),
                limits: u.limits.as_object().cloned().unwrap_or_default(),
            });
        }
        for (p, perm) in perms {
            self.set_permission(&p.vhost, &p.user, perm);
        }
        for e in &d.exchanges {
            let Some(v) = self.vhost(&e.vhost) else {
                continue;
            };
            let r = v.declare_exchange(
                &e.name,
                &e.kind,
                ExchangeOptions {
                    passive: false,
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: json::json_to_table(&e.arguments),
                },
            );
            if let Err(err) = r {
                tracing::warn!(
                    "exchange '{}' in vhost '{}' not imported: {}",
                    e.name,
                    e.vhost,
                    err.text
                );
            }
        }
        for q in &d.queues {
            let Some(v) = self.vhost(&q.vhost) else {
                continue;
            };
            let r = v.declare_queue(
                &q.name,
                0,
                QueueOptions {
                    passive: false,
                    durable: q.durable,
                    exclusive: false,
                    auto_delete: q.auto_delete,
                    arguments: json::json_to_table(&q.arguments),
                },
            );
            if let Err(err) = r {
                tracing::warn!(
                    "queue '{}' in vhost '{}' not imported: {}",
                    q.name,
                    q.vhost,
                    err.text
                );
            }
        }
        for b in &d.bindings {
            let Some(v) = self.vhost(&b.vhost) else {
                continue;
            };
            let dest = if b.destination_type == "queue" {
                match v.queue(&b.destination) {
                    Some(q) => Destination::Queue(q),
                    None => continue,
                }
            } else {
                Destination::Exchange(b.destination.clone())
            };
            if let Err(err) = v.bind(
                &b.source,
                dest,
                &b.routing_key,
                json::json_to_table(&b.arguments),
            ) {
                tracing::warn!(
                    "binding from '{}' in vhost '{}' not imported: {}",
                    b.source,
                    b.vhost,
                    err.text
                );
            }
        }
        for (p, operator) in policies {
            self.policies.put(p, operator);
        }
        for (c, v, n, value) in params {
            self.parameters.put(&c, &v, &n, value);
        }
        for g in &d.global_parameters {
            if let (Some(name), Some(value)) =
                (g.get("name").and_then(|n| n.as_str()), g.get("value"))
            {
                self.parameters.put_global(name, value.clone());
            }
        }
        for v in self.vhosts() {
            self.reapply_policies(&v.name);
        }
        self.topology_changed();
        self.definitions_changed();
        Ok(())
    }
    /// A process-unique id (connections, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates a vhost if missing; returns it.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let (v, created) = {
            let mut map = self.vhosts.write();
            match map.get(name) {
                Some(v) => (v.clone(), false),
                None => {
                    let v = VHost::new(name, self.me.clone());
                    map.insert(name.to_owned(), v.clone());
                    (v, true)
                }
            }
        };
        if created {
            self.definitions_changed();
        }
        v
    }

    /// Deletes a vhost and everything in it.
    pub fn delete_vhost(&self, name: &str) -> Option<Arc<VHost>> {
        let v = self.vhosts.write().remove(name)?;
        for q in v.queues() {
            v.delete_queue_internal(&q.name);
        }
        self.permissions.write().retain(|(vh, _), _| vh != name);
        self.policies.delete_vhost(name);
        self.parameters.delete_vhost(name);
        self.definitions_changed();
        self.topology_changed();
        Some(v)
    }

    /// Looks up a vhost.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// All vhosts.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    /// Adds or replaces a user.
    pub fn put_user(&self, user: User) {
        self.users.write().insert(user.name.clone(), user);
        self.definitions_changed();
    }

    /// Deletes a user and their permissions.
    pub fn delete_user(&self, name: &str) -> Option<User> {
        self.permissions.write().retain(|(_, u), _| u != name);
        let u = self.users.write().remove(name);
        self.definitions_changed();
        u
    }

    /// Looks up a user.
    pub fn user(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// All users.
    pub fn users(&self) -> Vec<User> {
        self.users.read().values().cloned().collect()
    }

    /// Checks a user name and password.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        self.user(name).filter(|u| u.check_password(password))
    }

    /// Sets a user's permissions in a vhost.
    pub fn set_permission(&self, vhost: &str, user: &str, p: Permission) {
        self.permissions
            .write()
            .insert((vhost.to_owned(), user.to_owned()), p);
        self.definitions_changed();
    }

    /// Removes a user's permissions in a vhost.
    pub fn clear_permission(&self, vhost: &str, user: &str) -> Option<Permission> {
        let p = self
            .permissions
            .write()
            .remove(&(vhost.to_owned(), user.to_owned()));
        self.definitions_changed();
        p
    }

    /// A user's permissions in a vhost.
    pub fn permission(&self, vhost: &str, user: &str) -> Option<Permission> {
        self.permissions
            .read()
            .get(&(vhost.to_owned(), user.to_owned()))
            .cloned()
    }

    /// All permissions as ((vhost, user), permission).
    pub fn permissions(&self) -> Vec<((String, String), Permission)> {
        self.permissions
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Checks `access` to a resource; 403 in RabbitMQ's words when refused.
    pub fn check_access(
        &self,
        user: &str,
        vhost: &str,
        access: Access,
        kind: &str,
        resource: &str,
    ) -> Result<()> {
        let allowed = self
            .permissions
            .read()
            .get(&(vhost.to_owned(), user.to_owned()))
            .is_some_and(|p| p.allows(access, resource));
        if allowed {
            Ok(())
        } else {
            let shown = if resource.is_empty() {
                "amq.default"
            } else {
                resource
            };
            Err(AmqpError::access_refused(format!(
                "{} access to {kind} '{shown}' in vhost '{vhost}' refused for user '{user}'",
                access.as_str()
            )))
        }
    }

    /// Periodic work (TTL expiry, `x-expires`); call every ~100 ms.
    pub fn tick(&self) {
        let now = Instant::now();
        for v in self.vhosts() {
            v.tick(now);
        }
    }

    /// Adds or replaces a policy and applies it live. Returns the definition keys
    /// FerryMQ ignores (kept, reported as a warning).
    pub fn put_policy(
        &self,
        vhost: &str,
        name: &str,
        body: &serde_json::Value,
        operator: bool,
    ) -> std::result::Result<Vec<String>, String> {
        let (policy, ignored) = policy::Policy::parse(vhost, name, body, operator)?;
        if !ignored.is_empty() {
            tracing::warn!("policy '{name}' in vhost '{vhost}': ignoring keys {ignored:?}");
        }
        self.policies.put(policy, operator);
        self.policies_changed(vhost);
        Ok(ignored)
    }

    /// Removes a policy; objects revert to their declared arguments.
    pub fn delete_policy(&self, vhost: &str, name: &str, operator: bool) -> bool {
        let existed = self.policies.delete(vhost, name, operator);
        if existed {
            self.policies_changed(vhost);
        }
        existed
    }

    fn policies_changed(&self, vhost: &str) {
        self.reapply_policies(vhost);
        self.definitions_changed();
        self.topology_changed();
    }

    /// Re-evaluates which policy applies to every queue and exchange of a vhost.
    pub fn reapply_policies(&self, vhost: &str) {
        let Some(v) = self.vhost(vhost) else { return };
        for q in v.queues() {
            self.apply_policies_to_queue(&q);
        }
        for e in v.exchanges() {
            self.apply_policies_to_exchange(vhost, &e);
        }
    }

    /// Applies the matching policies to one queue.
    pub fn apply_policies_to_queue(&self, q: &Arc<Queue>) {
        q.apply_policies(self.policies.applied(&q.vhost_name, Target::Queue, &q.name));
    }

    /// Applies the matching policy to one exchange.
    pub fn apply_policies_to_exchange(&self, vhost: &str, e: &exchange::Exchange) {
        e.apply_policies(self.policies.applied(vhost, Target::Exchange, &e.name));
    }

    /// Validates and stores a runtime parameter of a registered component.
    pub fn put_parameter(
        &self,
        component: &str,
        vhost: &str,
        name: &str,
        value: serde_json::Value,
    ) -> std::result::Result<(), String> {
        self.parameters
            .validate(component, vhost, name, &value, false)?;
        self.parameters.put(component, vhost, name, value);
        self.definitions_changed();
        self.topology_changed();
        Ok(())
    }

    /// Removes a runtime parameter; returns whether it existed.
    pub fn delete_parameter(&self, component: &str, vhost: &str, name: &str) -> bool {
        let existed = self.parameters.delete(component, vhost, name);
        if existed {
            self.definitions_changed();
            self.topology_changed();
        }
        existed
    }

    /// Registers a callback run after queues, policies or parameters change.
    pub fn on_topology_change(&self, listener: TopologyListener) {
        self.topology_listeners.write().push(listener);
    }

    /// Tells the listeners that queues, policies or parameters changed.
    pub fn topology_changed(&self) {
        let listeners = self.topology_listeners.read().clone();
        for l in listeners {
            l();
        }
    }
}
