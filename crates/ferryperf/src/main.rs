//! `ferryperf`: FerryMQ's AMQP 0-9-1 load generator.
//!
//! A benchmark is only as good as its client. General-purpose clients spend microseconds per
//! message (lapin ~20 µs per publish), which on a 2-core machine caps the broker's apparent
//! throughput and steals the CPU it needs. ferryperf speaks AMQP through a small client of its
//! own (the `ferrymq-client` crate): the publish frames are encoded once and copied per
//! message, frames are sent and parsed in large batches, and only the fields a benchmark needs
//! are decoded.
//!
//! Modules: `throughput` (publishers, consumers, progress, summary), `latency` (body timestamps
//! and histogram), `connections` (idle-connection test), `churn` (queue declare/delete rate),
//! `federation` (drain of an upstream backlog through a federation link), `sys` (clock, CPU
//! time, file limit).

mod churn;
mod connections;
mod federation;
mod latency;
mod sys;
mod throughput;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shown by `ferryperf --help`: what the tool measures, and what it costs itself.
const LONG_ABOUT: &str = "\
AMQP 0-9-1 load generator for FerryMQ (and any AMQP 0-9-1 broker).

ferryperf uses a lean client of its own instead of a general-purpose library: the publish
method, header and body frames are encoded once and copied into a large write buffer, incoming
frames are split in place (only delivery and confirm tags are decoded), and consumers read in
batches. Every summary reports the client's own CPU per message (\"client CPU\").

Its ceiling, measured against RabbitMQ 3.10 on a 2-core VM (client CPU per message):
  publish-only 16 B                          ~0.06 µs  (~15M msg/s per core)
  transient 16 B, 1 publisher + 1 consumer   ~0.2-0.7 µs (1.5-5M msg/s per core)
  consume-only drain 16 B                    ~0.4 µs
  transient 1 KiB, 1p1c                      ~1.6 µs
RabbitMQ itself spent 20-30 µs per message in the same runs, so the broker is what limits.
Window-limited and paced runs cost more per message because each message, or each few, needs
its own wake-up and syscall: ~10 µs with confirms + manual acks at ~13k msg/s (0.13 core),
~30 µs (mostly kernel loopback TCP) at --rate 10000 (0.3 core).";

#[derive(Parser, Debug)]
#[command(name = "ferryperf", version, about = "AMQP 0-9-1 load generator", long_about = LONG_ABOUT)]
struct Cli {
    /// Runtime threads. One is the default: on a small machine every extra thread that wakes
    /// up is CPU taken from the broker, and one thread already moves millions of msg/s.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish and/or consume as fast as possible (or at --rate) and report msg/s and latency.
    Throughput(throughput::ThroughputArgs),
    /// Open N idle connections and hold them, to measure what connections cost the broker.
    Connections(connections::ConnectionsArgs),
    /// Declare and delete queues as fast as the broker answers.
    QueueChurn(churn::ChurnArgs),
    /// Pre-load a backlog upstream, then time its drain from the downstream through federation.
    Federation(federation::FederationArgs),
}

/// Prints a report as JSON or text.
fn show<T: serde::Serialize>(json: bool, report: &T, text: impl Fn(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).expect("a report always serialises")
        );
    } else {
        print!("{}", text(report));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferryperf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Throughput(args) => throughput::run(&args).await.map(|report| {
                if args.json {
                    println!("{}", report.to_json());
                } else {
                    print!("{}", report.to_text());
                }
                report.errors.is_empty()
            }),
            Command::Connections(args) => connections::run(&args).await.map(|report| {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string(&report).expect("a report always serialises")
                    );
                } else {
                    print!("{}", report.to_text());
                }
                report.failed == 0
            }),
            Command::QueueChurn(args) => churn::run(&args).await.map(|report| {
                show(args.json, &report, churn::ChurnReport::to_text);
                true
            }),
            Command::Federation(args) => federation::run(&args).await.map(|report| {
                show(args.json, &report, federation::FederationReport::to_text);
                report.errors.is_empty()
                    && (args.only.as_deref() == Some("preload") || report.drained == args.messages)
            }),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ferryperf: {e}");
            ExitCode::FAILURE
        }
    }
}
