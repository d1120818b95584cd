//! The write side of a connection: a shared buffer that any task appends frames
//! to, drained by one writer task with one syscall per batch.
//!
//! Publishers on other connections deliver straight into a consumer's buffer,
//! so frames from many messages coalesce into a single `write`.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Above this many buffered bytes, consumers on the connection stop receiving
/// until the socket drains: a client that does not read cannot exhaust memory.
pub const HIGH_WATER: usize = 4 << 20;

/// Shared outbound buffer of one connection.
pub struct Outbound {
    buf: Mutex<Vec<u8>>,
    pending: AtomicUsize,
    wake_writer: Notify,
    /// Signalled when a full buffer drained, so stalled consumers resume.
    pub drained: Notify,
    stalled: AtomicBool,
    closed: AtomicBool,
    last_write: AtomicUsize,
}

impl Default for Outbound {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbound {
    /// An empty buffer.
    pub fn new() -> Self {
        Outbound {
            // No allocation until the connection writes: idle connections stay small.
            buf: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            stalled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            last_write: AtomicUsize::new(0),
        }
    }

    /// Appends frames with `f` and wakes the writer.
    pub fn write<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let r = {
            let mut b = self.buf.lock();
            let r = f(&mut b);
            self.pending.store(b.len(), Ordering::Relaxed);
            r
        };
        self.wake_writer.notify_one();
        r
    }

    /// Appends frames without waking the writer (the caller flushes at the end of a batch).
    pub fn append<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut b = self.buf.lock();
        let r = f(&mut b);
        self.pending.store(b.len(), Ordering::Relaxed);
        r
    }

    /// Wakes the writer.
    pub fn flush(&self) {
        self.wake_writer.notify_one();
    }

    /// Whether more deliveries may be buffered; records a stall when not.
    pub fn has_room(&self) -> bool {
        if self.pending.load(Ordering::Relaxed) < HIGH_WATER {
            true
        } else {
            self.stalled.store(true, Ordering::Relaxed);
            false
        }
    }

    /// Stops the writer once what is buffered has been written.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_writer.notify_one();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Seconds-resolution tick of the last socket write (for heartbeats).
    pub fn last_write_tick(&self) -> usize {
        self.last_write.load(Ordering::Relaxed)
    }

    /// Runs the writer: drains the buffer into `socket` until closed or the socket fails.
    pub async fn run_writer<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut socket: W,
        clock: Arc<AtomicUsize>,
    ) {
        let mut spare: Vec<u8> = Vec::new();
        loop {
            {
                let mut b = self.buf.lock();
                std::mem::swap(&mut *b, &mut spare);
                self.pending.store(0, Ordering::Relaxed);
            }
            if spare.is_empty() {
                if self.is_closed() {
                    break;
                }
                self.wake_writer.notified().await;
                continue;
            }
            if socket.write_all(&spare).await.is_err() {
                self.closed.store(true, Ordering::Release);
                break;
            }
            self.last_write
                .store(clock.load(Ordering::Relaxed), Ordering::Relaxed);
            // Keep the allocation unless one huge burst made it large.
            if spare.capacity() > 8 * HIGH_WATER {
                spare = Vec::new();
            } else {
                spare.clear();
            }
            if self.stalled.swap(false, Ordering::Relaxed) {
                self.drained.notify_one();
            }
        }
        let _ = socket.shutdown().await;
    }
}
