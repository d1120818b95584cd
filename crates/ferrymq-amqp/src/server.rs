//! The AMQP listener, server-wide settings and the registry of live connections.

use amq_protocol::types::FieldTable;
use ferrymq_broker::Broker;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Protocol limits and defaults of the AMQP server.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Largest frame the server accepts and proposes (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Highest channel number (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, seconds.
    pub heartbeat: u16,
    /// Largest message body accepted (RabbitMQ: 128 MiB).
    pub max_message_size: u64,
    /// Users that may only log in from a loopback address.
    pub loopback_users: Vec<String>,
    /// Seconds a client has to complete the handshake.
    pub handshake_timeout_secs: u64,
    /// Name shown to clients as `cluster_name`.
    pub cluster_name: String,
    /// Most client connections at once (0: no limit); more are dropped on accept.
    pub max_connections: usize,
    /// Wait before answering a failed login, so guessing passwords is slow.
    pub auth_failure_delay: Duration,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_max: 131072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 << 20,
            loopback_users: vec!["guest".into()],
            handshake_timeout_secs: 10,
            cluster_name: "ferrymq".into(),
            max_connections: 0,
            auth_failure_delay: Duration::from_secs(1),
        }
    }
}

/// What every connection of a server shares.
pub struct Shared {
    /// The broker state.
    pub broker: Arc<Broker>,
    /// Settings.
    pub config: AmqpConfig,
    /// Live connections.
    pub connections: ConnectionRegistry,
    /// Coarse clock in seconds since start, ticked by the server.
    pub clock: Arc<AtomicUsize>,
    /// Changes whenever the store finished a sync round (confirms may go out).
    pub synced: tokio::sync::watch::Receiver<u64>,
    /// The active resource alarm (free disk or memory), if any: publishers are blocked.
    pub alarm: tokio::sync::watch::Sender<Option<String>>,
}

/// A live connection as management sees it.
pub struct ConnectionInfo {
    /// Process-unique id.
    pub id: u64,
    /// RabbitMQ-style name `peer -> local`.
    pub name: String,
    /// Client address.
    pub peer: SocketAddr,
    /// Server address.
    pub local: SocketAddr,
    /// Authenticated user (empty before login).
    pub user: Mutex<String>,
    /// Opened vhost (empty before open).
    pub vhost: Mutex<String>,
    /// Client properties from start-ok.
    pub client_properties: Mutex<FieldTable>,
    /// Open channels, by number.
    pub channels: Mutex<std::collections::BTreeMap<u16, Arc<crate::delivery::ChannelSink>>>,
    /// Bytes received.
    pub recv_oct: AtomicU64,
    /// Connect time, ms since the epoch.
    pub connected_at: u64,
    /// Signalled to close the connection (management, shutdown).
    pub force_close: Notify,
    /// Reason given with a forced close.
    pub close_reason: Mutex<String>,
    /// Arrived over TLS.
    pub tls: bool,
}

/// What the transport under a connection tells about the client.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// The connection is TLS.
    pub tls: bool,
    /// The common name of a client certificate the TLS layer verified: the user the
    /// `EXTERNAL` mechanism logs in as.
    pub peer_identity: Option<String>,
}

/// All live connections.
#[derive(Default)]
pub struct ConnectionRegistry {
    map: Mutex<HashMap<u64, Arc<ConnectionInfo>>>,
}

impl ConnectionRegistry {
    /// Adds a new connection.
    pub fn register(
        &self,
        broker: &Broker,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
    ) -> Arc<ConnectionInfo> {
        let info = Arc::new(ConnectionInfo {
            id: broker.next_id(),
            name: format!("{peer} -> {local}"),
            peer,
            local,
            user: Mutex::new(String::new()),
            vhost: Mutex::new(String::new()),
            client_properties: Mutex::new(FieldTable::default()),
            channels: Default::default(),
            recv_oct: AtomicU64::new(0),
            connected_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            force_close: Notify::new(),
            close_reason: Mutex::new(String::new()),
            tls,
        });
        self.map.lock().insert(info.id, info.clone());
        info
    }

    /// Removes a closed connection.
    /// Live connections.
    pub fn count(&self) -> usize {
        self.map.lock().len()
    }

    /// Connections other than `except` for which `f` holds.
    pub fn count_where(&self, except: u64, f: impl Fn(&ConnectionInfo) -> bool) -> usize {
        self.map
            .lock()
            .values()
            .filter(|c| c.id != except && f(c))
            .count()
    }

    /// Open channels over all of `user`'s connections.
    pub fn channels_of(&self, user: &str) -> usize {
        self.map
            .lock()
            .values()
            .filter(|c| *c.user.lock() == user)
            .map(|c| c.channels.lock().len())
            .sum()
    }

    pub fn unregister(&self, id: u64) {
        self.map.lock().remove(&id);
    }

    /// A snapshot of live connections.
    pub fn list(&self) -> Vec<Arc<ConnectionInfo>> {
        self.map.lock().values().cloned().collect()
    }

    /// Asks every connection to close with `reason` (320 CONNECTION_FORCED).
    pub fn close_all(&self, reason: &str) {
        for c in self.list() {
            *c.close_reason.lock() = reason.to_owned();
            c.force_close.notify_one();
        }
    }
}

impl Shared {
    /// Shared state for a server over `broker`.
    pub fn new(broker: Arc<Broker>, config: AmqpConfig) -> Arc<Self> {
        let (tx, synced) = tokio::sync::watch::channel(0u64);
        if let Some(storage) = broker.storage() {
            let tx = Arc::new(tx);
            let on_sync = tx.clone();
            storage.durability.on_synced(move |epoch| {
                on_sync.send_replace(epoch);
            });
            // No epoch follows a failure; waking the waiters lets them nack.
            storage.durability.on_failed(move || tx.send_modify(|_| {}));
        }
        let shared = Arc::new(Shared {
            broker,
            config,
            connections: ConnectionRegistry::default(),
            clock: Arc::new(AtomicUsize::new(0)),
            synced,
            alarm: tokio::sync::watch::Sender::new(None),
        });
        let clock = shared.clock.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                clock.fetch_add(1, Ordering::Relaxed);
            }
        });
        shared
    }
}

/// Accepts AMQP connections on `listener` forever.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let local = listener.local_addr().ok();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let local = stream.local_addr().ok().or(local).unwrap_or(peer);
                tokio::spawn(crate::connection::serve(
                    shared,
                    stream,
                    peer,
                    local,
                    Transport::default(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
