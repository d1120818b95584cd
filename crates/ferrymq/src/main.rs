//! The `ferrymq` broker binary: loads configuration, binds listeners, serves
//! until SIGINT/SIGTERM.

mod config;

use clap::Parser;
use config::{Config, Flags};
use ferrymq_amqp::{AmqpConfig, Shared};
use ferrymq_broker::Broker;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn main() {
    let flags = Flags::parse();
    let cfg = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrymq: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cfg.log).unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cfg)) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

/// Binds `addr`; for the IPv4 wildcard also binds the IPv6 wildcard (v6-only),
/// since clients resolve `localhost` to `::1` first.
async fn bind_all(addr: &str) -> Result<Vec<TcpListener>, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("invalid listener address '{addr}': {e}"))?;
    let mut out = vec![TcpListener::bind(sock)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?];
    if sock.ip() == std::net::Ipv4Addr::UNSPECIFIED {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, sock.port()));
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

async fn run(cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", cfg.data_dir.display()))?;
    let broker = Arc::new(Broker::new());
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

    let shared = Shared::new(
        broker.clone(),
        AmqpConfig {
            frame_max: cfg.frame_max,
            channel_max: cfg.channel_max,
            heartbeat: cfg.heartbeat,
            max_message_size: cfg.max_message_size,
            loopback_users: cfg.loopback_users.clone(),
            ..Default::default()
        },
    );
    for l in bind_all(&cfg.amqp_bind).await? {
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("AMQP listener ready on {addr}");
        tokio::spawn(ferrymq_amqp::serve(shared.clone(), l));
    }
    // TTL expiry and x-expires run on a coarse tick; precise enough for both.
    let ticker = broker.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_millis(100));
        loop {
            t.tick().await;
            ticker.tick();
        }
    });
    shutdown_signal().await;
    tracing::info!("shutting down");
    shared
        .connections
        .close_all("broker forced connection closure with reason 'shutdown'");
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
