//! The `connections` command: open many idle connections and hold them, so the caller can read
//! what each one costs the broker (memory, file descriptors) while they are up.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::sys;
use ferrymq_client::AmqpUri;
use ferrymq_client::Connection;

/// Options of `ferryperf connections`.
#[derive(Args, Clone, Debug)]
pub struct ConnectionsArgs {
    /// Broker to connect to.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    pub uri: String,
    /// Connections to open (each with one channel, heartbeats off).
    #[arg(long)]
    pub count: usize,
    /// Seconds to hold them open once all attempts are done.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub hold: f64,
    /// Handshakes in progress at once; a burst of thousands would measure the broker's accept
    /// backlog rather than its per-connection cost.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Outcome of a `connections` run.
#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections that completed the handshake and opened a channel.
    pub succeeded: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Seconds spent opening them.
    pub open_s: f64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl ConnectionsReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "connections: {} of {} succeeded ({} failed) in {:.2} s\n",
            self.succeeded, self.requested, self.failed, self.open_s
        );
        if let Some(e) = &self.first_error {
            out += &format!("first error: {e}\n");
        }
        out
    }
}

/// Opens the connections, holds them for `--hold` seconds (or until Ctrl-C), closes them.
pub async fn run(args: &ConnectionsArgs) -> io::Result<ConnectionsReport> {
    let uri = Arc::new(AmqpUri::parse(&args.uri)?);
    let limit = sys::raise_open_files_limit();
    if limit > 0 && (args.count as u64) + 64 > limit {
        eprintln!("ferryperf: open-files limit {limit} is below --count; expect failures");
    }
    let gate = Arc::new(Semaphore::new(args.parallel.max(1)));
    let started = Instant::now();
    let attempts: Vec<_> = (0..args.count)
        .map(|i| {
            let (uri, gate) = (uri.clone(), gate.clone());
            tokio::spawn(async move {
                let _slot = gate.acquire_owned().await.map_err(io::Error::other)?;
                let mut conn = Connection::open(&uri, &format!("ferryperf-idle-{i}")).await?;
                conn.open_channel(1).await?;
                Ok::<_, io::Error>(conn)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(args.count);
    let mut first_error = None;
    for attempt in attempts {
        match attempt.await.map_err(io::Error::other).and_then(|r| r) {
            Ok(conn) => open.push(conn),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let report = ConnectionsReport {
        requested: args.count,
        succeeded: open.len(),
        failed: args.count - open.len(),
        open_s: started.elapsed().as_secs_f64(),
        first_error,
    };
    eprintln!(
        "ferryperf: holding {} open connections for {} s",
        open.len(),
        args.hold
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let closing: Vec<_> = open
        .into_iter()
        .map(|conn| tokio::spawn(conn.close()))
        .collect();
    for c in closing {
        let _ = c.await;
    }
    Ok(report)
}
