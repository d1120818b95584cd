//! Group commit: one thread flushes and fsyncs every store written since the
//! last round, then announces the epoch that is now on disk.
//!
//! A writer labels its write with the current epoch (read under the same lock
//! that registers its store as dirty). The syncer bumps the epoch and takes the
//! dirty list in one critical section, so every write labelled `e` is flushed
//! by the round that announces `e`.

use super::queue_store::StoreShared;
use parking_lot::{Condvar, Mutex, RwLock};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

type Listener = Box<dyn Fn(u64) + Send + Sync>;

/// How long a round waits when only writes nobody waits for (acks) are pending.
pub const LAZY_ROUND_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

struct State {
    epoch: u64,
    dirty: Vec<Arc<StoreShared>>,
    /// Whether a write since the last round may have someone waiting for it.
    urgent: bool,
    stop: bool,
}

/// The shared durability point of all stores.
pub struct Durability {
    state: Mutex<State>,
    wake: Condvar,
    synced: AtomicU64,
    listeners: RwLock<Vec<Listener>>,
    rounds: AtomicU64,
    failed: std::sync::atomic::AtomicBool,
    failure_listeners: RwLock<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// Unlinks retired segment files off the sync thread (set by [`Durability::spawn`]).
    janitor: Mutex<Option<std::sync::mpsc::Sender<PathBuf>>>,
    /// Spare segment files kept by all stores (see `queue_store::MAX_SPARES`).
    spares: AtomicUsize,
    /// One round at a time, in epoch order (shutdown's final round may meet one
    /// the sync thread is running).
    rounds_lock: Mutex<()>,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            state: Mutex::new(State {
                epoch: 1,
                dirty: Vec::new(),
                urgent: false,
                stop: false,
            }),
            wake: Condvar::new(),
            synced: AtomicU64::new(0),
            listeners: RwLock::new(Vec::new()),
            rounds: AtomicU64::new(0),
            failed: std::sync::atomic::AtomicBool::new(false),
            failure_listeners: RwLock::new(Vec::new()),
            janitor: Mutex::new(None),
            spares: AtomicUsize::new(0),
            rounds_lock: Mutex::new(()),
        }
    }
}

impl Durability {
    /// A new durability point; call [`Durability::spawn`] to start syncing.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a store written to; returns the epoch the write belongs to.
    /// Called while holding the store's writer lock; `registered` is the store's
    /// record of the last epoch it was registered for. Registering once per epoch
    /// (not once per "dirty" period) matters: a write that lands while a round is
    /// flushing this store belongs to the next epoch, so the store must be in the
    /// next round's list even though the current round also flushes the bytes.
    /// `urgent` says someone may wait for the write (a message record a publisher
    /// confirm or a federation ack waits for); log entries nobody waits for (acks)
    /// let the round wait up to [`LAZY_ROUND_DELAY`] for more.
    pub(super) fn written(
        &self,
        store: &Arc<StoreShared>,
        registered: &mut u64,
        urgent: bool,
    ) -> u64 {
        let mut st = self.state.lock();
        let epoch = st.epoch;
        let mut wake = urgent && !st.urgent;
        st.urgent |= urgent;
        if *registered != epoch {
            *registered = epoch;
            st.dirty.push(store.clone());
            wake = true;
        }
        if wake {
            self.wake.notify_one();
        }
        epoch
    }

    /// The highest epoch whose writes are on disk.
    pub fn synced_epoch(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Number of completed sync rounds (fsync batches), for metrics.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Calls `f(epoch)` after every round (e.g. to wake connections waiting for confirms).
    pub fn on_synced(&self, f: impl Fn(u64) + Send + Sync + 'static) {
        self.listeners.write().push(Box::new(f));
    }

    /// Calls `f` once if the store fails (publishers waiting for confirms must hear).
    pub fn on_failed(&self, f: impl Fn() + Send + Sync + 'static) {
        self.failure_listeners.write().push(Box::new(f));
    }

    fn fail(&self, what: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!("durable store failed ({what}); persistent messages are nacked until a restart (free disk space, then restart: what was confirmed is recovered)");
            for l in self.failure_listeners.read().iter() {
                l();
            }
        }
    }

    /// Starts the sync thread (and the thread that deletes drained segments:
    /// unlinking an 8 MiB file takes up to ~10 ms on ext4, and on the sync thread
    /// every waiting confirm and federation ack would wait for it too).
    pub fn spawn(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        std::thread::Builder::new()
            .name("ferrymq-unlink".into())
            .spawn(move || {
                // Ends when the durability point (holding the sender) is dropped. A
                // file left behind by a crash is removed when its store is opened.
                for path in rx {
                    let _ = std::fs::remove_file(path);
                }
            })
            .expect("spawn unlink thread");
        *self.janitor.lock() = Some(tx);
        let me = self.clone();
        std::thread::Builder::new()
            .name("ferrymq-sync".into())
            .spawn(move || me.run())
            .expect("spawn sync thread")
    }

    /// Stops the sync thread after a final round.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    /// Runs one round now (tests and shutdown).
    pub fn sync_now(&self) {
        let _one = self.rounds_lock.lock();
        let (epoch, dirty) = self.take_round();
        self.round(epoch, dirty, true);
    }

    /// Starts a round: its epoch, and the stores written in it.
    fn take_round(&self) -> (u64, Vec<Arc<StoreShared>>) {
        let mut st = self.state.lock();
        let e = st.epoch;
        st.epoch += 1;
        st.urgent = false;
        (e, std::mem::take(&mut st.dirty))
    }

    /// A store reused its spare segment file or was deleted with one.
    pub(super) fn spare_released(&self) {
        self.spares.fetch_sub(1, Ordering::AcqRel);
    }

    fn run(&self) {
        loop {
            let stop = {
                let mut st = self.state.lock();
                while st.dirty.is_empty() && !st.stop {
                    self.wake.wait(&mut st);
                }
                // Only acks waiting: gather more of them per fsync. A round per ack
                // batch would keep the disk's journal busy for nothing, and a
                // message's round, which someone does wait for, would queue behind it.
                let deadline = std::time::Instant::now() + LAZY_ROUND_DELAY;
                while !st.urgent && !st.stop {
                    if self.wake.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                st.stop
            };
            let _one = self.rounds_lock.lock();
            let (epoch, dirty) = self.take_round();
            self.round(epoch, dirty, stop);
            if stop {
                return;
            }
        }
    }

    /// Whether a write or fsync failed: no epoch is announced after that.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Writes and fsyncs the stores written in `epoch`, then announces it. `all`:
    /// leave nothing unsynced (shutdown, tests), not even the ack logs.
    fn round(&self, epoch: u64, dirty: Vec<Arc<StoreShared>>, all: bool) {
        let mut files = Vec::new();
        let mut drained = Vec::new();
        let mut deferred = Vec::new();
        for store in &dirty {
            match store.flush(all) {
                Ok(f) => {
                    files.extend(f.files);
                    drained.push((store, f.drained));
                    if f.deferred {
                        deferred.push(store);
                    }
                }
                Err(e) => self.fail(&format!("writing {}: {e}", store.dir.display())),
            }
        }
        for f in files {
            if let Err(e) = f.sync_data() {
                // Linux does not retry a failed fsync: the data may be gone for good.
                self.fail(&format!("fsync: {e}"));
            }
        }
        // Announcing any epoch after a failure would confirm data that may not be
        // on disk (a later epoch releases earlier confirms too), so stop for good.
        if self.failed() {
            return;
        }
        self.synced.store(epoch, Ordering::Release);
        self.rounds.fetch_add(1, Ordering::Relaxed);
        for l in self.listeners.read().iter() {
            l(epoch);
        }
        for store in deferred {
            store.defer(self);
        }
        // Drained segments go only now that the acks (and identities) naming their
        // messages are durable.
        let janitor = self.janitor.lock().clone();
        for (store, segments) in drained {
            for path in store.retire(&segments, &self.spares) {
                match &janitor {
                    Some(tx) => {
                        if let Err(e) = tx.send(path) {
                            let _ = std::fs::remove_file(e.0);
                        }
                    }
                    None => {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
    }
}
