//! FerryMQ's domain: vhosts, exchanges, queues, bindings, consumers, users and
//! permissions. Nothing here touches a socket; the AMQP server and the HTTP API
//! both drive a [`Broker`].

pub mod args;
pub mod auth;
pub mod consumer;
pub mod error;
pub mod exchange;
pub mod message;
pub mod queue;
pub mod queue_args;
pub mod ready;
pub mod vhost;

use auth::{Access, Permission, User};
use error::{AmqpError, Result};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vhost::VHost;

pub use amq_protocol;

/// The broker's state: vhosts, users and permissions.
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<HashMap<String, User>>,
    permissions: RwLock<HashMap<(String, String), Permission>>,
    next_id: AtomicU64,
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// An empty broker (no vhosts, no users).
    pub fn new() -> Self {
        Broker {
            vhosts: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            permissions: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A broker with vhost `/` and user guest/guest with full permissions on it, as RabbitMQ starts.
    pub fn with_defaults() -> Self {
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

    /// A process-unique id (connections, consumers).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates a vhost if missing; returns it.
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .write()
            .entry(name.to_owned())
            .or_insert_with(|| VHost::new(name))
            .clone()
    }

    /// Deletes a vhost and everything in it.
    pub fn delete_vhost(&self, name: &str) -> Option<Arc<VHost>> {
        let v = self.vhosts.write().remove(name)?;
        for q in v.queues() {
            v.delete_queue_internal(&q.name);
        }
        self.permissions.write().retain(|(vh, _), _| vh != name);
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
    }

    /// Deletes a user and their permissions.
    pub fn delete_user(&self, name: &str) -> Option<User> {
        self.permissions.write().retain(|(_, u), _| u != name);
        self.users.write().remove(name)
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
    }

    /// Removes a user's permissions in a vhost.
    pub fn clear_permission(&self, vhost: &str, user: &str) -> Option<Permission> {
        self.permissions
            .write()
            .remove(&(vhost.to_owned(), user.to_owned()))
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
}
