//! The `queue-churn` command: declare and delete queues as fast as the broker
//! answers, one synchronous round trip each, and report cycles per second — the
//! cost of topology changes (short-lived queues, reply queues, reconnect storms).

use std::io;
use std::time::Instant;

use amq_protocol::protocol::{queue, AMQPClass};
use amq_protocol::types::FieldTable;
use clap::Args;
use serde::Serialize;

use ferrymq_client::{short, AmqpUri, Connection};

/// Options of `ferryperf queue-churn`.
#[derive(Args, Clone, Debug)]
pub struct ChurnArgs {
    /// Broker to load.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    pub uri: String,
    /// Declare + delete cycles.
    #[arg(long, default_value_t = 10_000)]
    pub cycles: u64,
    /// Declare durable queues (each gets a store on disk).
    #[arg(long)]
    pub durable: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Outcome of a churn run.
#[derive(Debug, Serialize)]
pub struct ChurnReport {
    /// Cycles completed.
    pub cycles: u64,
    /// Cycles per second.
    pub rate: f64,
    /// Seconds taken.
    pub elapsed_s: f64,
    /// Durable queues.
    pub durable: bool,
    /// Problems seen (a failed round trip ends the run with an error instead).
    pub errors: Vec<String>,
}

impl ChurnReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        format!(
            "queue churn: {} declare+delete cycles ({}) in {:.2} s: {:.0} cycles/s\n",
            self.cycles,
            if self.durable { "durable" } else { "transient" },
            self.elapsed_s,
            self.rate
        )
    }
}

/// Runs the churn.
pub async fn run(args: &ChurnArgs) -> io::Result<ChurnReport> {
    let uri = AmqpUri::parse(&args.uri)?;
    let mut conn = Connection::open(&uri, "ferryperf queue-churn").await?;
    conn.open_channel(1).await?;
    let start = Instant::now();
    for i in 0..args.cycles {
        let name = short(&format!("ferryperf-churn-{i}"))?;
        let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.clone(),
            passive: false,
            durable: args.durable,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        conn.call(1, declare).await?;
        let delete = AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: name,
            if_unused: false,
            if_empty: false,
            nowait: false,
        }));
        conn.call(1, delete).await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(ChurnReport {
        cycles: args.cycles,
        rate: args.cycles as f64 / elapsed.max(1e-9),
        elapsed_s: elapsed,
        durable: args.durable,
        errors: Vec::new(),
    })
}
