//! The `ferrymq` broker binary: loads configuration, binds listeners, serves
//! until SIGINT/SIGTERM.

use clap::Parser;
use ferrymq::config::{Config, Flags};

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
    rt.block_on(async {
        let running = match ferrymq::start(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                std::process::exit(1);
            }
        };
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
