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
        // Handlers first: listeners announce readiness during start-up, and a SIGTERM
        // sent on that announcement must mean a clean shutdown, not the default death.
        let signal = shutdown_signal();
        let running = match ferrymq::start(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                std::process::exit(1);
            }
        };
        signal.await;
        tracing::info!("shutting down");
        running.shutdown().await;
    });
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
