//! The `throughput` command: publishers and consumers on their own connections, a progress line
//! per second, and a summary at the end.
//!
//! Every worker owns its connection and keeps its own counts and latency histogram; the only
//! shared state is a handful of atomic counters (added to once per socket write or read, not per
//! message) and the stop signal.

mod consumer;
mod publisher;
mod report;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, confirm, exchange, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::latency::{self, Histogram};
use crate::sys;
use ferrymq_client::AmqpUri;
use ferrymq_client::{short, Connection, PublishTemplate};
pub use report::Report;

/// Options of `ferryperf throughput`.
#[derive(Args, Clone, Debug)]
pub struct ThroughputArgs {
    /// Broker to load (amqp:// only; vhost percent-encoded, `%2F` is `/`).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    pub uri: String,
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Consuming connections.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes; from 8 bytes on, the body carries a send timestamp for latency.
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Publisher confirms with at most WINDOW unconfirmed messages per publisher (0 = off).
    #[arg(long, value_name = "WINDOW", default_value_t = 0)]
    pub confirm: u64,
    /// Publish with delivery-mode 2 (persistent).
    #[arg(long)]
    pub persistent: bool,
    /// basic.qos prefetch count per consumer (0 = no qos, unlimited).
    #[arg(long, default_value_t = 0)]
    pub prefetch: u16,
    /// Consume with no-ack; otherwise ack with multiple=true every prefetch/2 deliveries
    /// (every socket read when prefetch is 0).
    #[arg(long)]
    pub autoack: bool,
    /// Target publish rate in msg/s for all publishers together (0 = as fast as possible).
    #[arg(long, value_name = "MSG_PER_S", default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many seconds (0 = no time limit; then --pmessages/--cmessages or
    /// Ctrl-C end the run).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Each publisher stops after N messages (0 = no limit). Consumers without --cmessages then
    /// stop once everything published has arrived.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub pmessages: u64,
    /// Each consumer stops after exactly N deliveries (0 = no limit), e.g. to time draining a
    /// backlog. With manual acks, deliveries past N are requeued when the connection closes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cmessages: u64,
    /// Queue to declare, publish to (via the default exchange) and consume from.
    #[arg(long, default_value = "ferryperf")]
    pub queue: String,
    /// Declare the queue durable.
    #[arg(long)]
    pub durable_queue: bool,
    /// Publish to this exchange (declared as direct, bound to the queue) instead of the default.
    #[arg(long, default_value = "")]
    pub exchange: String,
    /// Routing key for publishes and the binding (default: the queue name).
    #[arg(long)]
    pub routing_key: Option<String>,
    /// Declare nothing: the queue (and exchange, binding) must already exist.
    #[arg(long)]
    pub no_declare: bool,
    /// Delete the queue when the run ends (so the next run starts from an empty queue).
    #[arg(long)]
    pub delete_queue: bool,
    /// Read deliveries the moment they arrive. By default a consumer in an unlimited-rate run
    /// with autoack or no prefetch is woken when 32 KiB arrived or 1 ms passed: a broker that
    /// sends one TCP segment per delivery (RabbitMQ) would otherwise cost ferryperf a wake-up
    /// per few messages (~5-7 µs of CPU per message) on cores the broker needs. Runs with
    /// --rate, or manual acks with a prefetch, always read eagerly, since there batching would
    /// distort latency or throttle the broker.
    #[arg(long)]
    pub eager_reads: bool,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// State every worker sees.
struct Shared {
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    consumed: AtomicU64,
    stop: watch::Sender<bool>,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn new() -> Self {
        Self {
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            stop: watch::channel(false).0,
            errors: Mutex::new(Vec::new()),
        }
    }

    fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Records a worker's failure and ends the run: numbers from a half-broken run mislead.
    fn fail(&self, who: &str, e: io::Error) {
        self.errors.lock().unwrap().push(format!("{who}: {e}"));
        self.stop();
    }

    /// The counters right now (each exact; together only as consistent as a progress line needs).
    fn counts(&self) -> report::Counts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        report::Counts {
            published: load(&self.published),
            confirmed: load(&self.confirmed),
            nacked: load(&self.nacked),
            consumed: load(&self.consumed),
        }
    }
}

/// Runs a worker as its own task; a failure is recorded in the report and ends the run.
fn spawn_worker<T: Send + 'static>(
    shared: &Arc<Shared>,
    who: String,
    work: impl Future<Output = io::Result<T>> + Send + 'static,
) -> JoinHandle<Option<T>> {
    let shared = shared.clone();
    tokio::spawn(async move {
        match work.await {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                shared.fail(&who, e);
                None
            }
        }
    })
}

/// Resolves when the run's stop signal is raised.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Runs the scenario and returns its summary (worker errors are listed in it, not returned).
pub async fn run(args: &ThroughputArgs) -> io::Result<Report> {
    if args.duration < 0.0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--duration must be >= 0",
        ));
    }
    let uri = AmqpUri::parse(&args.uri)?;
    let routing_key = args
        .routing_key
        .clone()
        .unwrap_or_else(|| args.queue.clone());

    let mut setup = Connection::open(&uri, "ferryperf-setup").await?;
    setup.open_channel(1).await?;
    if !args.no_declare {
        declare(&mut setup, args, &routing_key).await?;
    }

    // Consumers subscribe before anyone publishes, so the first messages are not left behind.
    let mut consumer_conns = Vec::with_capacity(args.consumers);
    for i in 0..args.consumers {
        consumer_conns.push(open_consumer(&uri, args, i).await?);
    }
    let mut publisher_conns = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        publisher_conns.push(open_publisher(&uri, args, i).await?);
    }
    let frame_max = publisher_conns.first().map_or(0, |c| c.frame_max());
    let mut properties = basic::AMQPProperties::default();
    if args.persistent {
        properties = properties.with_delivery_mode(2);
    }
    let template = PublishTemplate::new(
        1,
        &args.exchange,
        &routing_key,
        properties,
        &latency::body(args.size),
        frame_max,
    )?;
    let publisher_cfg = Arc::new(publisher::Config {
        // ~128 KiB per write: enough messages to amortise the syscall, small enough that a
        // latency-sensitive broker is not handed a huge burst.
        batch: (128 * 1024 / template.len()).max(1) as u64,
        template,
        window: args.confirm,
        limit: args.pmessages,
    });
    let consumer_cfg = consumer::Config {
        autoack: args.autoack,
        ack_every: u64::from(args.prefetch / 2).max(u64::from(args.prefetch > 0)),
        limit: args.cmessages,
        coalesce: !args.eager_reads && args.rate == 0 && (args.autoack || args.prefetch == 0),
    };

    let shared = Arc::new(Shared::new());
    let cpu_start = sys::process_cpu();
    let start_ns = sys::monotonic_ns();
    let started = Instant::now();

    let consumers: Vec<_> = consumer_conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let shared_ = shared.clone();
            spawn_worker(&shared, format!("consumer {i}"), async move {
                consumer::run(conn, consumer_cfg, &shared_).await
            })
        })
        .collect();
    let publishers: Vec<_> = publisher_conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let (cfg, shared_) = (publisher_cfg.clone(), shared.clone());
            // --rate is for all publishers together: split it, spreading the remainder.
            let n = args.publishers as u64;
            let rate = args.rate / n + u64::from((i as u64) < args.rate % n);
            let who = format!("publisher {i}");
            spawn_worker(&shared, who.clone(), async move {
                let pacer = (rate > 0)
                    .then(|| publisher::Pacer::new(rate))
                    .transpose()?;
                publisher::run(who, conn, cfg, shared_, pacer).await
            })
        })
        .collect();
    supervise(args, &shared, &publishers, &consumers, started).await;

    let mut publish_end_ns = start_ns;
    for handle in publishers {
        if let Ok(Some(outcome)) = handle.await {
            publish_end_ns = publish_end_ns.max(outcome.end_ns);
        }
    }
    let mut latency = Histogram::default();
    let mut consume_end_ns = start_ns;
    for handle in consumers {
        if let Ok(Some(outcome)) = handle.await {
            latency.merge(&outcome.latency);
            consume_end_ns = consume_end_ns.max(outcome.last_delivery_ns);
        }
    }
    let wall = started.elapsed();
    let cpu = sys::process_cpu().saturating_sub(cpu_start);

    if args.delete_queue {
        let delete = AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: short(&args.queue)?,
            if_unused: false,
            if_empty: false,
            nowait: false,
        }));
        if let Err(e) = setup.call(1, delete).await {
            shared
                .errors
                .lock()
                .unwrap()
                .push(format!("queue.delete: {e}"));
        }
    }
    let _ = setup.close().await;

    let errors = std::mem::take(&mut *shared.errors.lock().unwrap());
    Ok(Report::new(
        args,
        shared.counts(),
        report::Timings {
            wall,
            publish: Duration::from_nanos(publish_end_ns - start_ns),
            consume: Duration::from_nanos(consume_end_ns - start_ns),
            client_cpu: cpu,
        },
        &latency,
        errors,
    ))
}

/// Declares the queue, and the exchange plus binding when one is named.
async fn declare(
    setup: &mut Connection,
    args: &ThroughputArgs,
    routing_key: &str,
) -> io::Result<()> {
    setup
        .call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: short(&args.queue)?,
                passive: false,
                durable: args.durable_queue,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
    if args.exchange.is_empty() {
        return Ok(());
    }
    setup
        .call(
            1,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: short(&args.exchange)?,
                kind: "direct".into(),
                // Brokers refuse to (re)declare their predefined amq.* exchanges actively.
                passive: args.exchange.starts_with("amq."),
                durable: args.durable_queue,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
    setup
        .call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: short(&args.queue)?,
                exchange: short(&args.exchange)?,
                routing_key: short(routing_key)?,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
    Ok(())
}

async fn open_consumer(uri: &AmqpUri, args: &ThroughputArgs, i: usize) -> io::Result<Connection> {
    let mut conn = Connection::open(uri, &format!("ferryperf-consumer-{i}")).await?;
    conn.open_channel(1).await?;
    if args.prefetch > 0 {
        conn.call(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: args.prefetch,
                global: false,
            })),
        )
        .await?;
    }
    conn.call(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: short(&args.queue)?,
            consumer_tag: short(&format!("ferryperf-{i}"))?,
            no_local: false,
            no_ack: args.autoack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    Ok(conn)
}

async fn open_publisher(uri: &AmqpUri, args: &ThroughputArgs, i: usize) -> io::Result<Connection> {
    let mut conn = Connection::open(uri, &format!("ferryperf-publisher-{i}")).await?;
    conn.open_channel(1).await?;
    if args.confirm > 0 {
        conn.call(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
    }
    Ok(conn)
}

/// Waits for the end of the run (duration, all work done, Ctrl-C or an error), printing a
/// progress line per second.
async fn supervise(
    args: &ThroughputArgs,
    shared: &Shared,
    publishers: &[JoinHandle<Option<publisher::Outcome>>],
    consumers: &[JoinHandle<Option<consumer::Outcome>>],
    started: Instant,
) {
    let limit = (args.duration > 0.0).then(|| Duration::from_secs_f64(args.duration));
    let mut last = [0u64; 3];
    let mut next_report = Duration::from_secs(1);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut ctrl_c => shared.stop(),
        }
        if shared.stopped() {
            return;
        }
        let elapsed = started.elapsed();
        let report::Counts {
            published,
            confirmed,
            nacked,
            consumed,
        } = shared.counts();
        if elapsed >= next_report {
            if !args.quiet {
                eprintln!(
                    "[{:5.0}s] published {:>9} msg/s  consumed {:>9} msg/s{}  backlog {}",
                    elapsed.as_secs_f64(),
                    published - last[0],
                    consumed - last[1],
                    if args.confirm > 0 {
                        format!("  confirmed {:>9} msg/s", confirmed - last[2])
                    } else {
                        String::new()
                    },
                    published.saturating_sub(consumed),
                );
            }
            last = [published, consumed, confirmed];
            next_report += Duration::from_secs(1);
        }
        if limit.is_some_and(|limit| elapsed >= limit) {
            shared.stop();
            return;
        }
        // Publishers only finish on their own with --pmessages; consumers with --cmessages, or
        // once everything the (finished) publishers got accepted has arrived.
        let publishers_done = publishers.iter().all(JoinHandle::is_finished);
        let consumers_done = consumers.iter().all(JoinHandle::is_finished)
            || (args.cmessages == 0
                && !publishers.is_empty()
                && publishers_done
                && consumed >= published - nacked);
        if publishers_done && consumers_done {
            shared.stop();
            return;
        }
    }
}
