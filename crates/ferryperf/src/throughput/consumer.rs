//! A consumer: one connection, one task that splits deliveries out of large socket reads, reads
//! the timestamp in each body, and acks in batches.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{stopped, Shared};
use crate::latency::{read_stamp, Histogram};
use crate::sys;
use ferrymq_client::{close_parts, ids, Connection, FRAME_BODY, FRAME_HEADER, FRAME_METHOD};

/// A coalescing consumer is woken once this much has arrived...
const LOW_WATER: usize = 32 * 1024;
/// ...or, at the latest, after this long.
const COALESCE_PAUSE: Duration = Duration::from_millis(1);

/// What every consumer does.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Consuming with no-ack: never send acks.
    pub autoack: bool,
    /// With manual acks, ack (multiple=true) once this many deliveries are unacked; 0 acks
    /// after every socket read.
    pub ack_every: u64,
    /// Deliveries to take before stopping (0 = until the run stops).
    pub limit: u64,
    /// Read in batches: wake when 32 KiB arrived or 1 ms passed, not for every TCP segment.
    /// Only for runs that measure throughput with nothing window-limited: it adds up to a
    /// millisecond to latency, and with a prefetch window it would throttle the broker.
    pub coalesce: bool,
}

/// What a consumer reports when done.
pub struct Outcome {
    /// When its last delivery arrived (CLOCK_MONOTONIC ns), or 0 if none did.
    pub last_delivery_ns: u64,
    /// End-to-end latency of the messages it received.
    pub latency: Histogram,
}

/// Consumes until the run stops or `limit` deliveries arrived, then acks what is left
/// (manual acks) and closes the connection.
pub async fn run(conn: Connection, cfg: Config, shared: &Shared) -> io::Result<Outcome> {
    let (mut reader, mut writer) = conn.into_parts();
    let mut stop = shared.stop.subscribe();
    let mut latency = Histogram::default();
    let mut consumed = 0u64;
    let mut last_tag = 0u64;
    let mut unacked = 0u64;
    // The next body frame is the first of a message we count: it carries the timestamp.
    let mut expect_stamp = false;
    let mut last_delivery_ns = 0;
    // One clock read per socket read: every frame in it arrived at the same moment.
    let mut now = sys::monotonic_ns();
    if cfg.coalesce {
        reader.set_low_water(LOW_WATER)?;
    }

    loop {
        let before = consumed;
        while let Some(frame) = reader.next_frame()? {
            match frame.kind {
                FRAME_METHOD => match frame.method_id() {
                    Some(ids::BASIC_DELIVER) => {
                        if cfg.limit > 0 && consumed >= cfg.limit {
                            continue; // past the quota: left unacked, requeued on close
                        }
                        last_tag = frame.deliver_tag().ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "truncated basic.deliver")
                        })?;
                        consumed += 1;
                        unacked += 1;
                        expect_stamp = true;
                    }
                    Some(ids::CONNECTION_CLOSE | ids::CHANNEL_CLOSE) => {
                        return Err(frame.close_error());
                    }
                    Some(ids::BASIC_CANCEL) => {
                        return Err(io::Error::other(
                            "broker cancelled the consumer (queue deleted?)",
                        ));
                    }
                    _ => {}
                },
                FRAME_HEADER if expect_stamp && frame.body_size().unwrap_or(0) < 8 => {
                    expect_stamp = false;
                }
                FRAME_BODY if expect_stamp => {
                    expect_stamp = false;
                    if let Some(sent) = read_stamp(frame.payload) {
                        // A stamp from the future is not ours (or not a stamp): skip it.
                        if sent <= now {
                            latency.record(now - sent);
                        }
                    }
                }
                _ => {}
            }
        }
        if consumed > before {
            shared
                .consumed
                .fetch_add(consumed - before, Ordering::Relaxed);
            last_delivery_ns = now;
        }
        let quota_reached = cfg.limit > 0 && consumed >= cfg.limit;
        if !cfg.autoack && unacked > 0 && (unacked >= cfg.ack_every || quota_reached) {
            writer.push_ack(1, last_tag, true);
            writer.flush().await?;
            unacked = 0;
        }
        if quota_reached {
            break;
        }
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            read = reader.fill() => {
                if read? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "broker closed the connection",
                    ));
                }
            }
            _ = tokio::time::sleep(COALESCE_PAUSE), if cfg.coalesce => {
                reader.sweep()?;
            }
        }
        now = sys::monotonic_ns();
    }

    if !cfg.autoack && unacked > 0 {
        // Acked, not requeued: what we counted as consumed must leave the queue.
        writer.push_ack(1, last_tag, true);
    }
    if cfg.coalesce {
        let _ = reader.set_low_water(1); // close-ok is a small frame
    }
    // The numbers are in; a broker that fumbles the goodbye does not change them.
    let _ = close_parts(&mut reader, &mut writer).await;
    Ok(Outcome {
        last_delivery_ns,
        latency,
    })
}
