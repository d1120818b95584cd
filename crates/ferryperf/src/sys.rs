//! The few OS facts a load generator needs: a host-wide clock, its own CPU time, and room for
//! many sockets.

use std::time::Duration;

/// CLOCK_MONOTONIC in nanoseconds. Unlike `Instant`, its value means the same in every process
/// on the host, so timestamps written by one ferryperf can be read by another.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User plus system CPU time this process has used so far, all threads included.
pub fn process_cpu() -> Duration {
    // SAFETY: rusage is plain old data, valid when zeroed; getrusage only writes into it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Raises the soft open-files limit to the hard limit and returns the new soft limit, so that
/// `connections --count 10000` is not stopped at the common default of 1024.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    let soft = lim.rlim_cur as u64;
    soft
}

/// A periodic timer with microsecond resolution, on a timerfd driven by tokio's reactor.
///
/// Tokio's own timer ticks in milliseconds, which at 10k msg/s would send bursts of ten; a
/// helper thread with a fine sleep costs a second wake-up per tick. A timerfd wakes the runtime
/// thread directly, once per tick.
#[derive(Debug)]
pub struct Ticker {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl Ticker {
    /// Starts a timer that fires every `period` from now on.
    pub fn new(period: Duration) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls; the returned descriptor is checked, then owned by OwnedFd.
        let fd = unsafe {
            let raw = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            );
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::os::fd::OwnedFd::from_raw_fd(raw)
        };
        let spec = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let timer = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: `timer` is a valid itimerspec and the descriptor is a timerfd we own.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &timer, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open, and refers to the same
        // timer, for as long as the registration exists.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Waits for the next tick.
    pub async fn tick(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        loop {
            let mut ready = self.fd.readable().await?;
            let read = ready.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads exactly 8 bytes into a u64, as timerfd requires.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut expirations as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}
