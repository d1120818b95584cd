//! The FerryMQ broker process: configuration and start-up of every listener,
//! shared by the `ferrymq` binary and the integration tests.

pub mod alarms;
pub mod config;

use config::Config;
use ferrymq_amqp::{AmqpConfig, Shared};
use ferrymq_broker::Broker;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A started broker: its state and the addresses it listens on.
pub struct Running {
    /// The broker state.
    pub broker: Arc<Broker>,
    /// AMQP server state (connections).
    pub amqp: Arc<Shared>,
    /// Bound AMQP addresses (the first is the configured one).
    pub amqp_addrs: Vec<SocketAddr>,
    /// Bound HTTP (management API) addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// Management API state.
    pub http: Arc<ferrymq_http::HttpState>,
    /// Federation links.
    pub federation: Arc<ferrymq_federation::Federation>,
    /// Resource alarm limits (changeable at runtime).
    pub limits: Arc<alarms::Limits>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Closes client connections (320 CONNECTION_FORCED) and stops the listeners.
    pub async fn shutdown(self) {
        self.federation.stop_all();
        self.amqp
            .connections
            .close_all("broker forced connection closure with reason 'shutdown'");
        tokio::time::sleep(Duration::from_millis(200)).await;
        for t in self.tasks {
            t.abort();
        }
        if let Some(storage) = self.broker.storage() {
            // A last group commit so nothing written stays only in buffers.
            storage.durability.sync_now();
            storage.durability.stop();
        }
    }
}

/// Shows federation's links through the management API.
struct FederationLinks(Arc<ferrymq_federation::Federation>);

impl ferrymq_http::FederationView for FederationLinks {
    fn links(&self, vhost: Option<&str>) -> Vec<serde_json::Value> {
        self.0.links_json(vhost)
    }
    fn restart(&self, vhost: &str, id: &str) -> bool {
        self.0.restart(vhost, id)
    }
    fn metrics(&self) -> String {
        self.0.metrics()
    }
}

/// Binds `addr`; for the IPv4 wildcard also binds the IPv6 wildcard (v6-only),
/// since clients resolve `localhost` to `::1` first.
async fn bind_all(addr: &str) -> Result<Vec<TcpListener>, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("invalid listener address '{addr}': {e}"))?;
    let v4 = TcpListener::bind(sock)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // With port 0 the IPv6 listener takes the port the IPv4 one got.
    let port = v4.local_addr().map_err(|e| e.to_string())?.port();
    let mut out = vec![v4];
    if sock.ip() == std::net::Ipv4Addr::UNSPECIFIED {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        match bind_v6_only(v6) {
            Ok(l) => out.push(l),
            Err(e) => tracing::warn!("IPv6 listener on {v6} not available: {e}"),
        }
    }
    Ok(out)
}

fn bind_v6_only(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Creates the broker state and binds every listener of `cfg`.
pub async fn start(cfg: &Config) -> Result<Running, String> {
    let (broker, existed) = Broker::open(&cfg.data_dir)?;
    if !existed {
        // First start: RabbitMQ's defaults (vhost `/`, an administrator with full access).
        broker.add_vhost(&cfg.default_vhost);
        broker.put_user(ferrymq_broker::auth::User::with_password(
            &cfg.default_user,
            &cfg.default_pass,
            vec!["administrator".into()],
        ));
        broker.set_permission(
            &cfg.default_vhost,
            &cfg.default_user,
            ferrymq_broker::auth::Permission::all(),
        );
    }
    tracing::info!("data directory {}", cfg.data_dir.display());

    let amqp_listeners = bind_all(&cfg.amqp_bind).await?;
    let mut amqp_addrs = Vec::new();
    for l in &amqp_listeners {
        amqp_addrs.push(l.local_addr().map_err(|e| e.to_string())?);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let cluster_name = cfg
        .cluster_name
        .clone()
        .unwrap_or_else(|| format!("ferrymq@{host}:{}", amqp_addrs[0].port()));
    let shared = Shared::new(
        broker.clone(),
        AmqpConfig {
            frame_max: cfg.frame_max,
            channel_max: cfg.channel_max,
            heartbeat: cfg.heartbeat,
            max_message_size: cfg.max_message_size,
            loopback_users: cfg.loopback_users.clone(),
            cluster_name: cluster_name.clone(),
            ..Default::default()
        },
    );
    let mut tasks = Vec::new();
    for (l, addr) in amqp_listeners.into_iter().zip(&amqp_addrs) {
        tracing::info!("AMQP listener ready on {addr}");
        tasks.push(tokio::spawn(ferrymq_amqp::serve(shared.clone(), l)));
    }
    let federation = ferrymq_federation::Federation::start(
        &broker,
        cluster_name,
        format!("ferrymq@{host}"),
        Some(cfg.data_dir.clone()),
        shared.synced.clone(),
    );
    // TTL expiry and x-expires run on a coarse tick; precise enough for both.
    let ticker = broker.clone();
    tasks.push(tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_millis(100));
        loop {
            t.tick().await;
            ticker.tick();
        }
    }));
    let limits = Arc::new(alarms::Limits {
        disk_free_limit: cfg.disk_free_limit.into(),
        memory_limit: ((alarms::total_memory() as f64 * cfg.memory_high_watermark) as u64).into(),
    });
    let limits_view = limits.clone();
    let http = Arc::new(ferrymq_http::HttpState {
        broker: broker.clone(),
        amqp: shared.clone(),
        node_name: format!("ferrymq@{host}"),
        started_at: std::time::Instant::now(),
        listeners: Default::default(),
        loopback_users: cfg.loopback_users.clone(),
        rates: Default::default(),
        data_dir: Some(cfg.data_dir.clone()),
        limits: Arc::new(move || {
            use std::sync::atomic::Ordering::Relaxed;
            (
                limits_view.disk_free_limit.load(Relaxed),
                limits_view.memory_limit.load(Relaxed),
            )
        }),
        federation: parking_lot::RwLock::new(Some(Arc::new(FederationLinks(federation.clone())))),
    });
    for addr in &amqp_addrs {
        http.listeners.write().push(ferrymq_http::ListenerInfo {
            protocol: "amqp".into(),
            addr: *addr,
        });
    }
    let mut http_addrs = Vec::new();
    for l in bind_all(&cfg.http_bind).await? {
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("HTTP management API ready on http://{addr}/");
        http_addrs.push(addr);
        http.listeners.write().push(ferrymq_http::ListenerInfo {
            protocol: "http".into(),
            addr,
        });
        tasks.push(tokio::spawn(ferrymq_http::serve(l, http.clone())));
    }
    tasks.push(ferrymq_http::spawn_sampler(
        http.clone(),
        Duration::from_secs(5),
    ));
    tasks.push(alarms::spawn_monitor(
        cfg.data_dir.clone(),
        limits.clone(),
        shared.alarm.clone(),
        Duration::from_millis(500),
    ));
    Ok(Running {
        broker,
        amqp: shared,
        amqp_addrs,
        http_addrs,
        http,
        federation,
        limits,
        tasks,
    })
}
