//! Message rates for `message_stats.*_details.rate`: counters sampled every few
//! seconds (as RabbitMQ's management does), rate = change per second between the
//! last two samples. Nothing on the message path pays for this beyond the
//! relaxed counters it already keeps.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::time::Instant;

/// One sampling pass: counters keyed by object.
#[derive(Default)]
pub struct Sample {
    counters: HashMap<String, Vec<u64>>,
}

impl Sample {
    /// Records the counters of one object.
    pub fn observe(&mut self, key: String, values: Vec<u64>) {
        self.counters.insert(key, values);
    }
}

struct Table {
    at: Instant,
    counters: HashMap<String, Vec<u64>>,
    rates: HashMap<String, Vec<f64>>,
}

/// The latest rates of every sampled object.
pub struct Rates {
    table: RwLock<Table>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            table: RwLock::new(Table {
                at: Instant::now(),
                counters: HashMap::new(),
                rates: HashMap::new(),
            }),
        }
    }
}

impl Rates {
    /// Replaces the previous sample, computing per-second rates against it.
    pub fn record(&self, sample: Sample) {
        let now = Instant::now();
        let mut t = self.table.write();
        let secs = now.duration_since(t.at).as_secs_f64().max(0.001);
        let mut rates = HashMap::with_capacity(sample.counters.len());
        for (key, values) in &sample.counters {
            if let Some(old) = t.counters.get(key) {
                let r = values
                    .iter()
                    .zip(old)
                    .map(|(n, o)| n.saturating_sub(*o) as f64 / secs)
                    .collect();
                rates.insert(key.clone(), r);
            }
        }
        t.at = now;
        t.counters = sample.counters;
        t.rates = rates;
    }

    /// The rate of counter `index` of object `key` (0 before two samples exist).
    pub fn rate(&self, key: &str, index: usize) -> f64 {
        let r = self
            .table
            .read()
            .rates
            .get(key)
            .and_then(|r| r.get(index).copied())
            .unwrap_or(0.0);
        (r * 10.0).round() / 10.0
    }
}

/// Rate key of a queue.
pub fn queue_key(vhost: &str, name: &str) -> String {
    format!("q\0{vhost}\0{name}")
}

/// Rate key of an exchange.
pub fn exchange_key(vhost: &str, name: &str) -> String {
    format!("x\0{vhost}\0{name}")
}

/// Rate key of a connection.
pub fn connection_key(id: u64) -> String {
    format!("c\0{id}")
}

/// Rate key of the whole broker.
pub const OVERVIEW_KEY: &str = "overview";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_change_per_second() {
        let rates = Rates::default();
        let mut s = Sample::default();
        s.observe("k".into(), vec![10]);
        rates.record(s);
        assert_eq!(rates.rate("k", 0), 0.0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut s = Sample::default();
        s.observe("k".into(), vec![110]);
        rates.record(s);
        let r = rates.rate("k", 0);
        assert!(r > 100.0 && r <= 1000.0, "{r}");
    }
}
