//! End-to-end latency: the timestamp format carried in message bodies and a histogram.
//!
//! Publishers write the host's monotonic clock (nanoseconds) into the first 8 bytes of each body;
//! consumers subtract it from the time the frame arrived. The clock is CLOCK_MONOTONIC, shared by
//! every process on the host, so a consume-only run measures how long a publish-only run's
//! messages waited in the broker. Bodies of 16 bytes or more also carry a marker, so messages
//! that ferryperf did not publish are not mistaken for timestamps.

/// Marker written after the timestamp in bodies of 16 bytes or more.
const MARKER: [u8; 8] = *b"FerryPrf";

/// A body of `size` bytes laid out for [`read_stamp`]; the timestamp itself is written per
/// batch by [`ferrymq_client::PublishTemplate::append`].
pub fn body(size: usize) -> Vec<u8> {
    let mut body = vec![0u8; size];
    if size >= 16 {
        body[8..16].copy_from_slice(&MARKER);
    }
    body
}

/// The send timestamp in the first body frame of a message, if it carries one.
pub fn read_stamp(first_body_bytes: &[u8]) -> Option<u64> {
    let stamp = u64::from_le_bytes(first_body_bytes.get(..8)?.try_into().ok()?);
    match first_body_bytes.get(8..16) {
        Some(marker) if marker != MARKER => None,
        _ => Some(stamp),
    }
}

/// Linear sub-buckets per power of two: 64 bounds the relative error at 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `SUB` get exact buckets; each power of two above gets `SUB` buckets.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// Log-linear histogram of nanosecond values: constant-time record, no allocation after
/// creation, mergeable, so each consumer keeps its own and nothing is shared on the hot path.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) - SUB; // 0..SUB
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// Midpoint of bucket `i`: the value reported for every sample that fell in it.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// Records one value (nanoseconds).
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest sample, exact.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Value at quantile `q` (0..=1), within 1.6 %; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 2, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last);
            last = i;
            let rep = value(i);
            let err = rep.abs_diff(v) as f64 / v.max(1) as f64;
            assert!(err <= 1.0 / SUB as f64, "v={v} rep={rep}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), Some(10_000_000));
        let mut other = Histogram::default();
        other.record(50_000_000);
        h.merge(&other);
        assert_eq!((h.count(), h.max()), (10_001, 50_000_000));
    }

    #[test]
    fn stamps() {
        let mut b = body(16);
        b[..8].copy_from_slice(&42u64.to_le_bytes());
        assert_eq!(read_stamp(&b), Some(42));
        b[9] = 0;
        assert_eq!(read_stamp(&b), None);
        assert_eq!(read_stamp(&42u64.to_le_bytes()), Some(42));
        assert_eq!(read_stamp(&[1, 2, 3]), None);
    }
}
