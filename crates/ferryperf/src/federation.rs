//! The `federation` command: pre-load N messages into a queue on the upstream, then
//! attach a consumer to the same queue on the downstream and time the drain. The
//! downstream's federation (upstream parameter and policy) is the caller's to set
//! up, so the command measures any broker pair (FerryMQ, RabbitMQ, mixed).

use std::io;

use clap::{Args, Parser};
use serde::Serialize;

use crate::throughput::{self, ThroughputArgs};
use ferrymq_client::{short, AmqpUri, Connection};

/// Options of `ferryperf federation`.
#[derive(Args, Clone, Debug)]
pub struct FederationArgs {
    /// The broker holding the backlog.
    #[arg(long)]
    pub upstream: String,
    /// The broker that federates the queue and where the consumer drains it.
    #[arg(long)]
    pub downstream: String,
    /// Queue name (declared durable on both brokers).
    #[arg(long, default_value = "ferryperf-federation")]
    pub queue: String,
    /// Messages to pre-load and drain.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Publish transient messages (default: persistent).
    #[arg(long)]
    pub transient: bool,
    /// Downstream consumer prefetch.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Run only one phase: `preload` or `drain` (scripts measure broker CPU per phase).
    #[arg(long, value_parser = ["preload", "drain"])]
    pub only: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Outcome of a federation drain.
#[derive(Debug, Serialize)]
pub struct FederationReport {
    /// Messages published upstream (and confirmed).
    pub preloaded: u64,
    /// Upstream publish rate while pre-loading.
    pub preload_rate: f64,
    /// Messages consumed downstream.
    pub drained: u64,
    /// Drain rate through the federation link.
    pub drain_rate: f64,
    /// Seconds the drain took.
    pub drain_s: f64,
    /// Problems seen.
    pub errors: Vec<String>,
}

impl FederationReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "pre-loaded {} messages upstream at {:.0} msg/s\ndrained {} through federation in {:.2} s: {:.0} msg/s\n",
            self.preloaded, self.preload_rate, self.drained, self.drain_s, self.drain_rate
        );
        for e in &self.errors {
            out += &format!("error: {e}\n");
        }
        out
    }
}

/// Builds throughput options from flags, as the `throughput` command would parse them.
fn throughput_args(flags: Vec<String>) -> io::Result<ThroughputArgs> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ThroughputArgs,
    }
    let argv = std::iter::once("ferryperf".to_string()).chain(flags);
    Wrap::try_parse_from(argv)
        .map(|w| w.args)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

async fn declare_durable(uri: &str, queue: &str) -> io::Result<()> {
    use amq_protocol::protocol::{queue as q, AMQPClass};
    let mut conn = Connection::open(&AmqpUri::parse(uri)?, "ferryperf-federation-setup").await?;
    conn.open_channel(1).await?;
    let declare = AMQPClass::Queue(q::AMQPMethod::Declare(q::Declare {
        queue: short(queue)?,
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: Default::default(),
    }));
    conn.call(1, declare).await?;
    conn.close().await
}

/// Runs the pre-load and the drain.
pub async fn run(args: &FederationArgs) -> io::Result<FederationReport> {
    let common = |uri: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "--uri",
            uri,
            "--queue",
            &args.queue,
            "--durable-queue",
            "--duration",
            "0",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(["--size".into(), args.size.to_string()]);
        v
    };
    let (preload, drain) = match args.only.as_deref() {
        Some("preload") => (true, false),
        Some("drain") => (false, true),
        _ => (true, true),
    };
    let mut report = FederationReport {
        preloaded: 0,
        preload_rate: 0.0,
        drained: 0,
        drain_rate: 0.0,
        drain_s: 0.0,
        errors: Vec::new(),
    };
    if preload {
        // The downstream queue first, so the link exists before the backlog does.
        declare_durable(&args.downstream, &args.queue).await?;
        preload_upstream(args, &common, &mut report).await?;
    }
    if drain {
        drain_downstream(args, &common, &mut report).await?;
    }
    Ok(report)
}

async fn preload_upstream(
    args: &FederationArgs,
    common: &dyn Fn(&str) -> Vec<String>,
    report: &mut FederationReport,
) -> io::Result<()> {
    let mut fill = common(&args.upstream);
    fill.extend(["--publishers", "1", "--consumers", "0", "--confirm", "256"].map(String::from));
    fill.extend(["--pmessages".into(), args.messages.to_string()]);
    if !args.transient {
        fill.push("--persistent".into());
    }
    let filled = throughput::run(&throughput_args(fill)?).await?;
    report.errors.extend(filled.errors.iter().cloned());
    if filled.lost.unwrap_or(0) > 0 {
        let lost = filled.lost.unwrap_or(0);
        report
            .errors
            .push(format!("{lost} pre-load messages were not confirmed"));
    }
    report.preloaded = filled.confirmed.unwrap_or(filled.published);
    report.preload_rate = filled.publish_rate;
    Ok(())
}

async fn drain_downstream(
    args: &FederationArgs,
    common: &dyn Fn(&str) -> Vec<String>,
    report: &mut FederationReport,
) -> io::Result<()> {
    let mut drain = common(&args.downstream);
    drain.extend(["--publishers", "0", "--consumers", "1"].map(String::from));
    drain.extend(["--prefetch".into(), args.prefetch.to_string()]);
    drain.extend(["--cmessages".into(), args.messages.to_string()]);
    let drained = throughput::run(&throughput_args(drain)?).await?;
    report.errors.extend(drained.errors.iter().cloned());
    report.drained = drained.consumed;
    report.drain_rate = drained.consume_rate;
    report.drain_s = if drained.consume_rate > 0.0 {
        drained.consumed as f64 / drained.consume_rate
    } else {
        0.0
    };
    Ok(())
}
