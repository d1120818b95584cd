//! The run's summary: each figure's definition, and its text and JSON forms.

use std::time::Duration;

use serde::Serialize;

use super::ThroughputArgs;
use crate::latency::Histogram;

/// Message counts at the end of a run, summed over workers.
pub struct Counts {
    /// Messages written to publisher sockets.
    pub published: u64,
    /// Messages the broker acked (publisher confirms).
    pub confirmed: u64,
    /// Messages the broker nacked.
    pub nacked: u64,
    /// Deliveries received by consumers.
    pub consumed: u64,
}

/// Time spans of a run; publish and consume spans start when the workers start.
pub struct Timings {
    /// Start of the workers to the end of the last one.
    pub wall: Duration,
    /// Until the broker had read (and confirmed) all that the last publisher sent.
    pub publish: Duration,
    /// Until the last delivery arrived.
    pub consume: Duration,
    /// CPU time (user + system) ferryperf used over `wall`.
    pub client_cpu: Duration,
}

/// Summary of a throughput run; `--json` prints it as one flat object with these keys.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Publisher connections.
    pub publishers: usize,
    /// Consumer connections.
    pub consumers: usize,
    /// Body size in bytes.
    pub size: usize,
    /// Confirm window per publisher (0 = confirms off).
    pub confirm_window: u64,
    /// Messages were published persistent.
    pub persistent: bool,
    /// Consumers used no-ack.
    pub autoack: bool,
    /// Consumer prefetch (0 = none).
    pub prefetch: u16,
    /// Target publish rate, all publishers together (0 = unlimited).
    pub rate_target: u64,
    /// Seconds from the start of the workers to the end of the last one.
    pub duration_s: f64,
    /// Messages written to the broker.
    pub published: u64,
    /// Messages the broker confirmed (null without confirms).
    pub confirmed: Option<u64>,
    /// Messages the broker nacked (null without confirms).
    pub nacked: Option<u64>,
    /// published − confirmed: nacked, or unanswered 5 s after publishing stopped
    /// (null without confirms, where the client cannot know).
    pub lost: Option<u64>,
    /// Deliveries received.
    pub consumed: u64,
    /// published ÷ seconds until the broker had read everything published (close-ok).
    pub publish_rate: f64,
    /// consumed ÷ seconds until the last delivery arrived.
    pub consume_rate: f64,
    /// Deliveries that carried a timestamp.
    pub latency_samples: u64,
    /// Median publish-to-delivery time in ms.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile in ms.
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile in ms.
    pub latency_p99_ms: Option<f64>,
    /// 99.9th percentile in ms.
    pub latency_p999_ms: Option<f64>,
    /// Largest latency seen, in ms.
    pub latency_max_ms: Option<f64>,
    /// CPU seconds ferryperf itself used during the run.
    pub client_cpu_s: f64,
    /// ferryperf's CPU per message moved (µs): client CPU ÷ max(published, consumed).
    /// A message that is both published and consumed here counts once.
    pub client_cpu_us_per_msg: Option<f64>,
    /// Worker failures; a run with errors exits non-zero.
    pub errors: Vec<String>,
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn per_second(count: u64, span: Duration) -> f64 {
    if span.is_zero() {
        0.0
    } else {
        round(count as f64 / span.as_secs_f64(), 1)
    }
}

impl Report {
    /// Derives rates, losses and percentiles from the raw counts.
    pub fn new(
        args: &ThroughputArgs,
        counts: Counts,
        timings: Timings,
        latency: &Histogram,
        errors: Vec<String>,
    ) -> Self {
        let confirms = args.confirm > 0;
        let ms = |q: f64| latency.quantile(q).map(|ns| round(ns as f64 / 1e6, 3));
        let moved = counts.published.max(counts.consumed);
        Self {
            publishers: args.publishers,
            consumers: args.consumers,
            size: args.size,
            confirm_window: args.confirm,
            persistent: args.persistent,
            autoack: args.autoack,
            prefetch: args.prefetch,
            rate_target: args.rate,
            duration_s: round(timings.wall.as_secs_f64(), 3),
            published: counts.published,
            confirmed: confirms.then_some(counts.confirmed),
            nacked: confirms.then_some(counts.nacked),
            lost: confirms.then(|| counts.published.saturating_sub(counts.confirmed)),
            consumed: counts.consumed,
            publish_rate: per_second(counts.published, timings.publish),
            consume_rate: per_second(counts.consumed, timings.consume),
            latency_samples: latency.count(),
            latency_p50_ms: ms(0.5),
            latency_p95_ms: ms(0.95),
            latency_p99_ms: ms(0.99),
            latency_p999_ms: ms(0.999),
            latency_max_ms: (latency.count() > 0).then(|| round(latency.max() as f64 / 1e6, 3)),
            client_cpu_s: round(timings.client_cpu.as_secs_f64(), 3),
            client_cpu_us_per_msg: (moved > 0)
                .then(|| round(timings.client_cpu.as_secs_f64() * 1e6 / moved as f64, 3)),
            errors,
        }
    }

    /// One-line JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "ferryperf throughput: {} publisher(s), {} consumer(s), {} B {}, confirms {}, {}, rate {}\n",
            self.publishers,
            self.consumers,
            self.size,
            if self.persistent { "persistent" } else { "transient" },
            match self.confirm_window {
                0 => "off".to_string(),
                w => format!("window {w}"),
            },
            match (self.consumers, self.autoack) {
                (0, _) => "no consumers".to_string(),
                (_, true) => "autoack".to_string(),
                (_, false) => format!("manual acks (prefetch {})", self.prefetch),
            },
            match self.rate_target {
                0 => "unlimited".to_string(),
                r => format!("{r} msg/s"),
            },
        );
        out += &format!("duration     {:.2} s\n", self.duration_s);
        out += &format!(
            "published    {:>12}  {:>12.0} msg/s\n",
            self.published, self.publish_rate
        );
        out += &format!(
            "consumed     {:>12}  {:>12.0} msg/s\n",
            self.consumed, self.consume_rate
        );
        if let (Some(confirmed), Some(nacked), Some(lost)) =
            (self.confirmed, self.nacked, self.lost)
        {
            out += &format!(
                "confirms     {confirmed} confirmed, {nacked} nacked, {lost} lost (published - confirmed)\n"
            );
        }
        match (
            self.latency_p50_ms,
            self.latency_p95_ms,
            self.latency_p99_ms,
            self.latency_p999_ms,
            self.latency_max_ms,
        ) {
            (Some(p50), Some(p95), Some(p99), Some(p999), Some(max)) => {
                out += &format!(
                    "latency ms   p50 {p50:.3}  p95 {p95:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}  ({} samples)\n",
                    self.latency_samples
                );
            }
            _ => out += "latency      no samples (needs consumers and --size >= 8)\n",
        }
        out += &format!(
            "client CPU   {:.2} s{}\n",
            self.client_cpu_s,
            self.client_cpu_us_per_msg
                .map(|us| format!(" = {us:.3} µs per message"))
                .unwrap_or_default()
        );
        for e in &self.errors {
            out += &format!("error        {e}\n");
        }
        out
    }
}
