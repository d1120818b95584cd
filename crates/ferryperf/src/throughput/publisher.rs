//! A publisher: one connection, a writer loop that copies a pre-encoded message into a batch
//! buffer, and a reader task that counts publisher confirms.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{stopped, Shared};
use crate::sys::{self, Ticker};
use ferrymq_client::{ids, Connection, FrameReader, PublishTemplate};

/// How long a finished publisher waits for its outstanding confirms before counting them lost.
const CONFIRM_GRACE: Duration = Duration::from_secs(5);
/// How long a publisher stopped in the middle of a write may take to finish it.
const FINISH_WRITE_GRACE: Duration = Duration::from_secs(5);
/// How long a finished publisher waits for close-ok. The broker answers only after it has read
/// everything we sent before, which can be seconds of backlog in socket buffers; hanging up
/// earlier would reset the connection and throw those messages away.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// What every publisher does.
pub struct Config {
    /// The message, encoded once.
    pub template: PublishTemplate,
    /// Messages per socket write at most.
    pub batch: u64,
    /// Unconfirmed messages allowed in flight (0 = confirms off).
    pub window: u64,
    /// Messages to publish before stopping (0 = until the run stops).
    pub limit: u64,
}

/// What a publisher reports when done.
pub struct Outcome {
    /// When the broker acknowledged the end of its publishing (connection close-ok).
    pub end_ns: u64,
}

/// Confirm progress handed from the reader task to the writer loop.
#[derive(Default)]
struct Confirms {
    /// Messages acked or nacked so far.
    settled: AtomicU64,
    /// Wakes the writer when `settled` moved or the reader ended.
    progress: Notify,
    reader_done: AtomicBool,
    /// Set once we sent connection.close, after which the broker hanging up is no error.
    closing: AtomicBool,
}

/// Publishes until the run stops or `limit` is reached, then collects outstanding confirms and
/// closes the connection.
pub async fn run(
    who: String,
    conn: Connection,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mut pacer: Option<Pacer>,
) -> io::Result<Outcome> {
    let (reader, mut writer) = conn.into_parts();
    let confirms = Arc::new(Confirms::default());
    let reader_task = tokio::spawn(read_confirms(who, reader, confirms.clone(), shared.clone()));
    let mut stop = shared.stop.subscribe();
    let mut published = 0u64;
    let mut cut_mid_write = false;

    loop {
        if *stop.borrow() || (cfg.limit > 0 && published >= cfg.limit) {
            break;
        }
        let mut n = cfg.batch;
        if cfg.limit > 0 {
            n = n.min(cfg.limit - published);
        }
        if cfg.window > 0 {
            let in_flight = published - confirms.settled.load(Ordering::Acquire);
            if in_flight >= cfg.window {
                if confirms.reader_done.load(Ordering::Acquire) {
                    break;
                }
                tokio::select! {
                    _ = confirms.progress.notified() => {}
                    _ = stopped(&mut stop) => break,
                }
                continue;
            }
            n = n.min(cfg.window - in_flight);
        }
        if let Some(pacer) = &mut pacer {
            tokio::select! {
                due = pacer.release(n) => n = due?,
                _ = stopped(&mut stop) => break,
            }
        }
        cfg.template
            .append(writer.buffer(), n as usize, sys::monotonic_ns());
        let flushed = tokio::select! {
            written = writer.flush() => Some(written),
            _ = stopped(&mut stop) => None,
        };
        match flushed {
            Some(written) => written?,
            // The run ended mid-write: finish the batch so the connection can close cleanly,
            // unless the broker has stopped reading (flow control) and would hold us hostage.
            None => match tokio::time::timeout(FINISH_WRITE_GRACE, writer.flush()).await {
                Ok(written) => written?,
                Err(_) => {
                    cut_mid_write = true;
                    break;
                }
            },
        }
        published += n;
        shared.published.fetch_add(n, Ordering::Relaxed);
    }

    if cfg.window > 0 && !cut_mid_write {
        let deadline = tokio::time::Instant::now() + CONFIRM_GRACE;
        while confirms.settled.load(Ordering::Acquire) < published
            && !confirms.reader_done.load(Ordering::Acquire)
        {
            tokio::select! {
                _ = confirms.progress.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    if cut_mid_write {
        // Half a frame went out: no polite close is possible, just hang up.
        reader_task.abort();
    } else {
        confirms.closing.store(true, Ordering::Release);
        writer.push_close()?;
        let mut reader_task = reader_task;
        let closed = tokio::time::timeout(CLOSE_GRACE, async {
            writer.flush().await?;
            (&mut reader_task).await.map_err(io::Error::other)
        })
        .await;
        if closed.is_err() {
            reader_task.abort();
        }
    }
    // close-ok means the broker has taken in everything we wrote (and confirmed what it will):
    // that, not the last write into a socket buffer, is when publishing ended.
    let end_ns = sys::monotonic_ns();
    Ok(Outcome { end_ns })
}

/// Reads the publisher connection: counts confirms, reports broker-initiated closes.
/// A failure ends the whole run at once, so a publisher never writes into a dead channel.
async fn read_confirms(
    who: String,
    mut reader: FrameReader,
    confirms: Arc<Confirms>,
    shared: Arc<Shared>,
) {
    if let Err(e) = read_confirms_until_closed(&mut reader, &confirms, &shared).await {
        if !(confirms.closing.load(Ordering::Acquire) && e.kind() == io::ErrorKind::UnexpectedEof) {
            shared.fail(&who, e);
        }
    }
    confirms.reader_done.store(true, Ordering::Release);
    confirms.progress.notify_one();
}

async fn read_confirms_until_closed(
    reader: &mut FrameReader,
    confirms: &Confirms,
    shared: &Shared,
) -> io::Result<()> {
    let mut tracker = ConfirmTracker::default();
    loop {
        let (mut acked, mut nacked, mut closed) = (0, 0, false);
        while let Some(frame) = reader.next_frame()? {
            match frame.method_id() {
                Some(ids::BASIC_ACK) => {
                    let (tag, multiple) = frame.confirm_tag().ok_or_else(bad_confirm)?;
                    acked += tracker.settle(tag, multiple);
                }
                Some(ids::BASIC_NACK) => {
                    let (tag, multiple) = frame.confirm_tag().ok_or_else(bad_confirm)?;
                    nacked += tracker.settle(tag, multiple);
                }
                Some(ids::CONNECTION_CLOSE_OK) => closed = true,
                Some(ids::CONNECTION_CLOSE | ids::CHANNEL_CLOSE) => return Err(frame.close_error()),
                Some(ids::CONNECTION_BLOCKED) => eprintln!("ferryperf: broker blocked a publisher"),
                Some(ids::CONNECTION_UNBLOCKED) => eprintln!("ferryperf: publisher unblocked"),
                _ => {} // basic.return and the like: not counted
            }
        }
        if acked + nacked > 0 {
            shared.confirmed.fetch_add(acked, Ordering::Relaxed);
            shared.nacked.fetch_add(nacked, Ordering::Relaxed);
            confirms
                .settled
                .fetch_add(acked + nacked, Ordering::Release);
            confirms.progress.notify_one();
        }
        if closed {
            return Ok(());
        }
        if reader.fill().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "broker closed the connection",
            ));
        }
    }
}

fn bad_confirm() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated basic.ack/nack")
}

/// Counts settled delivery tags exactly, whether the broker confirms one tag or a range
/// (multiple=true), and however the two kinds interleave.
#[derive(Default)]
struct ConfirmTracker {
    /// Every tag up to here is settled.
    watermark: u64,
    /// Tags above the watermark settled one by one.
    singles: BTreeSet<u64>,
}

impl ConfirmTracker {
    /// Settles `tag` (and all earlier tags when `multiple`); returns how many were newly settled.
    fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag <= self.watermark {
            return 0;
        }
        let newly = if multiple {
            let above = self.singles.split_off(&(tag + 1));
            let already = self.singles.len() as u64;
            self.singles = above;
            let newly = tag - self.watermark - already;
            self.watermark = tag;
            newly
        } else {
            u64::from(self.singles.insert(tag))
        };
        // Keep the set small: fold singles that became contiguous into the watermark.
        while self.singles.first() == Some(&(self.watermark + 1)) {
            self.singles.pop_first();
            self.watermark += 1;
        }
        newly
    }
}

/// Releases messages at a steady rate: the number due is computed from elapsed time (so timer
/// jitter never accumulates into drift), and the timer wakes the publisher about once per
/// message, at most every 100 µs.
pub struct Pacer {
    ticker: Ticker,
    start: Instant,
    rate: u64,
    granted: u64,
    /// Most messages released at once after a stall (10 ms worth): a broker that fell behind
    /// is not answered with a burst.
    max_burst: u64,
}

impl Pacer {
    /// A pacer for `rate` messages per second, starting now.
    pub fn new(rate: u64) -> io::Result<Self> {
        let rate = rate.max(1);
        let period = Duration::from_nanos(1_000_000_000 / rate).max(Duration::from_micros(100));
        Ok(Self {
            ticker: Ticker::new(period)?,
            start: Instant::now(),
            rate,
            granted: 0,
            max_burst: (rate / 100).max(1),
        })
    }

    /// Waits until at least one message is due; returns how many (at most `want`) to send.
    async fn release(&mut self, want: u64) -> io::Result<u64> {
        loop {
            let due =
                (self.start.elapsed().as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
            self.granted = self.granted.max(due.saturating_sub(self.max_burst));
            if due > self.granted {
                let n = (due - self.granted).min(want);
                self.granted += n;
                return Ok(n);
            }
            self.ticker.tick().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConfirmTracker;

    #[test]
    fn confirm_tracker_counts_each_tag_once() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(3, false), 1);
        assert_eq!(t.settle(5, false), 1);
        assert_eq!(t.settle(3, false), 0);
        assert_eq!(t.settle(4, true), 3); // 1, 2, 4 (3 was already settled)
        assert_eq!(t.watermark, 5); // 5 folded in
        assert_eq!(t.settle(5, true), 0);
        assert_eq!(t.settle(10, true), 5);
        assert_eq!(t.settle(7, false), 0);
    }
}
