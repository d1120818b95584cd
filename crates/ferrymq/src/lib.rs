//! The FerryMQ broker process: configuration and start-up of every listener,
//! shared by the `ferrymq` binary and the integration tests.

pub mod alarms;
pub mod config;
pub mod tls;

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
    /// Bound AMQPS addresses (empty without a certificate).
    pub amqps_addrs: Vec<SocketAddr>,
    /// Bound HTTPS addresses (empty unless `https_bind` is set).
    pub https_addrs: Vec<SocketAddr>,
    /// The TLS configuration in force (reloadable), when a certificate is configured.
    pub tls: Option<Arc<tls::TlsServer>>,
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

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP, runs the TLS handshake in the connection's own task (a slow client
/// cannot hold up the others), then serves it as an accepted socket.
async fn accept_tls<F, Fut>(listener: TcpListener, tls: Arc<tls::TlsServer>, serve: F)
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr, SocketAddr) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let bound = listener.local_addr().ok();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok().or(bound).unwrap_or(peer);
        let acceptor = tls.acceptor();
        let serve = serve.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve(stream, peer, local).await,
                Ok(Err(e)) => tracing::info!("TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::info!("TLS handshake with {peer} timed out"),
            }
        });
    }
}

async fn serve_amqps(shared: Arc<Shared>, listener: TcpListener, tls: Arc<tls::TlsServer>) {
    accept_tls(listener, tls, move |stream, peer, local| {
        let shared = shared.clone();
        async move {
            let transport = ferrymq_amqp::Transport {
                tls: true,
                peer_identity: tls::peer_identity(stream.get_ref().1),
            };
            ferrymq_amqp::connection::serve(shared, stream, peer, local, transport).await;
        }
    })
    .await
}

async fn serve_https(
    listener: TcpListener,
    state: Arc<ferrymq_http::HttpState>,
    tls: Arc<tls::TlsServer>,
) {
    accept_tls(listener, tls, move |stream, peer, _| {
        ferrymq_http::serve_connection(stream, peer, state.clone())
    })
    .await
}

/// Removes `federation/*.dedup`: versions before the identities moved into the
/// queues' ack logs kept each link's duplicate window there, and nothing reads
/// them now.
fn remove_link_window_files(data_dir: &std::path::Path) {
    let dir = data_dir.join("federation");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "dedup") && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    // Only if nothing else lives there.
    let _ = std::fs::remove_dir(&dir);
    if removed > 0 {
        tracing::info!(
            "removed {removed} obsolete federation window file(s) from {}",
            dir.display()
        );
    }
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
    remove_link_window_files(&cfg.data_dir);

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
            max_connections: cfg.max_connections,
            auth_failure_delay: Duration::from_millis(cfg.auth_failure_delay_ms),
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
        // Half the AMQP delay: a mistyped password in the UI should not feel broken.
        auth_failure_delay: Duration::from_millis(cfg.auth_failure_delay_ms / 2),
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
    // TLS listeners: AMQPS whenever a certificate is configured, HTTPS when asked for.
    let tls = match cfg.tls_files() {
        Some(files) => Some(tls::TlsServer::load(files)?),
        None => None,
    };
    let mut amqps_addrs = Vec::new();
    let mut https_addrs = Vec::new();
    if let Some(tls) = &tls {
        tasks.push(
            tls.clone()
                .spawn_reloader(Duration::from_secs(cfg.tls_reload_interval.max(1))),
        );
        for l in bind_all(&cfg.amqps_bind).await? {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!("AMQPS listener ready on {addr}");
            amqps_addrs.push(addr);
            http.listeners.write().push(ferrymq_http::ListenerInfo {
                protocol: "amqp/ssl".into(),
                addr,
            });
            tasks.push(tokio::spawn(serve_amqps(shared.clone(), l, tls.clone())));
        }
        if let Some(bind) = &cfg.https_bind {
            for l in bind_all(bind).await? {
                let addr = l.local_addr().map_err(|e| e.to_string())?;
                tracing::info!("HTTPS management API ready on https://{addr}/");
                https_addrs.push(addr);
                http.listeners.write().push(ferrymq_http::ListenerInfo {
                    protocol: "https".into(),
                    addr,
                });
                tasks.push(tokio::spawn(serve_https(l, http.clone(), tls.clone())));
            }
        }
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
        amqps_addrs,
        https_addrs,
        tls,
        http,
        federation,
        limits,
        tasks,
    })
}
