//! Resource alarms: free disk under the data dir and the broker's own memory.
//!
//! When either crosses its limit, publishing connections are blocked (the AMQP
//! server stops reading from them and sends `connection.blocked`) until the
//! resource recovers, as RabbitMQ does. Consumers keep going, so queues drain.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Limits checked by the monitor; changeable at runtime.
pub struct Limits {
    /// Block publishers when free disk under the data dir falls below this (bytes).
    pub disk_free_limit: AtomicU64,
    /// Block publishers when the broker's resident memory exceeds this (bytes, 0 = off).
    pub memory_limit: AtomicU64,
}

/// Free bytes on the filesystem holding `path`.
pub fn disk_free(path: &std::path::Path) -> std::io::Result<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The process's resident memory in bytes.
pub fn resident_memory() -> u64 {
    let page = 4096u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

/// Total memory of the machine in bytes (for a relative watermark).
pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Checks the limits every `every` and publishes the alarm reason (or none).
pub fn spawn_monitor(
    dir: PathBuf,
    limits: Arc<Limits>,
    alarm: watch::Sender<Option<String>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        loop {
            t.tick().await;
            let mut reasons = Vec::new();
            let disk_limit = limits.disk_free_limit.load(Ordering::Relaxed);
            match disk_free(&dir) {
                Ok(free) if free < disk_limit => reasons.push(format!(
                    "low on disk: {free} bytes free under {}, limit {disk_limit}",
                    dir.display()
                )),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot read free disk space of {}: {e}", dir.display()),
            }
            let mem_limit = limits.memory_limit.load(Ordering::Relaxed);
            let rss = resident_memory();
            if mem_limit > 0 && rss > mem_limit {
                reasons.push(format!(
                    "memory high watermark: {rss} bytes used, limit {mem_limit}"
                ));
            }
            let now = if reasons.is_empty() {
                None
            } else {
                Some(reasons.join("; "))
            };
            let changed = *alarm.borrow() != now;
            if changed {
                match &now {
                    Some(r) => tracing::warn!("resource alarm set, publishers blocked: {r}"),
                    None => tracing::info!("resource alarm cleared, publishers unblocked"),
                }
                alarm.send_replace(now);
            }
        }
    })
}
