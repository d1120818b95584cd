//! The duplicate-removal window of a link: identities of messages already stored
//! downstream (FerryMQ's `x-ferrymq-id` from a FerryMQ upstream, `message-id`
//! from others), kept as 64-bit digests in memory and in an append-only file.
//!
//! An identity is recorded after its message is durable and the upstream ack is
//! sent only once the record itself is on disk: if we crash after the message is
//! stored but before the ack, the upstream redelivers and the window drops the
//! copy. The file is written and fsync'd by a recorder thread, so the link keeps
//! moving messages while records reach the disk; acks come back from the thread
//! in order. Only redeliveries of unacknowledged messages can come back, at most
//! the prefetch count, so a window of a few hundred thousand suffices.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Digests are hashes already: the set uses them as they are.
#[derive(Default)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type DigestSet = HashSet<u64, BuildHasherDefault<Passthrough>>;

/// An ack to send once a record is durable: (session generation, delivery tag).
pub type Ack = (u64, u64);

struct Record {
    digests: Vec<u64>,
    ack: Option<Ack>,
}

/// Bounded set of recent message identities, optionally persisted.
pub struct DedupWindow {
    capacity: usize,
    order: VecDeque<u64>,
    set: DigestSet,
    pending: Vec<u64>,
    recorder: Option<mpsc::Sender<Record>>,
    done_tx: UnboundedSender<Ack>,
    done_rx: UnboundedReceiver<Ack>,
}

/// The 64-bit digest an identity is stored as (fixed keys: stable across runs).
pub fn digest(identity: &str) -> u64 {
    let mut h = DefaultHasher::new();
    identity.hash(&mut h);
    h.finish()
}

impl DedupWindow {
    /// An empty in-memory window.
    pub fn in_memory(capacity: usize) -> Self {
        let (done_tx, done_rx) = unbounded_channel();
        DedupWindow {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: DigestSet::default(),
            pending: Vec::new(),
            recorder: None,
            done_tx,
            done_rx,
        }
    }

    /// Opens (or creates) the window persisted at `path` and starts its recorder.
    pub fn open(path: PathBuf, capacity: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut w = Self::in_memory(capacity);
        let mut data = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // A torn last entry (crash mid-write) is ignored.
        for chunk in data.chunks_exact(8) {
            w.remember(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if data.len() % 8 != 0 {
            file.set_len((data.len() / 8 * 8) as u64)?;
        }
        let (tx, rx) = mpsc::channel();
        let log = Log {
            path,
            file,
            order: w.order.clone(),
            capacity: w.capacity,
            entries_in_file: data.len() / 8,
            failed: false,
        };
        let done = w.done_tx.clone();
        std::thread::Builder::new()
            .name("ferrymq-fed-dedup".into())
            .spawn(move || log.run(rx, done))?;
        w.recorder = Some(tx);
        Ok(w)
    }

    fn remember(&mut self, d: u64) -> bool {
        if !self.set.insert(d) {
            return false;
        }
        self.order.push_back(d);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Whether an identity was stored already.
    pub fn contains(&self, identity: &str) -> bool {
        self.contains_digest(digest(identity))
    }

    /// [`DedupWindow::contains`] for a digest computed earlier.
    pub fn contains_digest(&self, d: u64) -> bool {
        self.set.contains(&d)
    }

    /// Records an identity (written to the file by [`DedupWindow::record`]).
    pub fn insert(&mut self, identity: &str) {
        self.insert_digest(digest(identity));
    }

    /// [`DedupWindow::insert`] for a digest computed earlier.
    pub fn insert_digest(&mut self, d: u64) {
        if self.remember(d) && self.recorder.is_some() {
            self.pending.push(d);
        }
    }

    /// Sends what was inserted to the file; `ack` comes back from
    /// [`DedupWindow::acks`] once it is durable (at once for an in-memory window).
    pub fn record(&mut self, ack: Option<Ack>) {
        let digests = std::mem::take(&mut self.pending);
        match &self.recorder {
            Some(tx) => {
                if tx.send(Record { digests, ack }).is_err() {
                    tracing::error!("federation duplicate window: recorder gone; acks withheld");
                }
            }
            None => {
                if let Some(a) = ack {
                    let _ = self.done_tx.send(a);
                }
            }
        }
    }

    /// Acks whose records are durable.
    pub fn acks(&mut self) -> &mut UnboundedReceiver<Ack> {
        &mut self.done_rx
    }

    /// Identities held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The window's file, owned by the recorder thread.
struct Log {
    path: PathBuf,
    file: File,
    order: VecDeque<u64>,
    capacity: usize,
    entries_in_file: usize,
    failed: bool,
}

impl Log {
    fn run(mut self, rx: mpsc::Receiver<Record>, done: UnboundedSender<Ack>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let mut bytes = Vec::new();
            for r in &batch {
                for d in &r.digests {
                    bytes.extend_from_slice(&d.to_le_bytes());
                }
            }
            if let Err(e) = self.append(&bytes) {
                // Not durable, so not acknowledged: the upstream keeps the messages
                // and redelivers them, and the in-memory window drops the copies.
                tracing::error!(
                    "federation duplicate window {}: {e}; acks withheld",
                    self.path.display()
                );
                continue;
            }
            for r in batch {
                for d in r.digests {
                    self.order.push_back(d);
                }
                if let Some(a) = r.ack {
                    let _ = done.send(a);
                }
            }
            while self.order.len() > self.capacity {
                self.order.pop_front();
            }
            if self.entries_in_file > self.capacity * 2 {
                if let Err(e) = self.compact() {
                    tracing::warn!(
                        "federation duplicate window {}: compaction failed: {e}",
                        self.path.display()
                    );
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.failed {
            // After a failed fsync the kernel may have dropped earlier pages: nothing
            // written since can be trusted, so no ack is released any more.
            return Err(io::Error::other("an earlier fsync failed"));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let good = (self.entries_in_file * 8) as u64;
        if let Err(e) = self.file.write_all(bytes) {
            // Cut a partial entry, so later entries stay aligned.
            let _ = self.file.set_len(good);
            return Err(e);
        }
        if let Err(e) = self.file.sync_data() {
            self.failed = true;
            return Err(e);
        }
        self.entries_in_file += bytes.len() / 8;
        Ok(())
    }

    /// Rewrites the file with only the window's entries.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut bytes = Vec::with_capacity(self.order.len() * 8);
        for d in &self.order {
            bytes.extend_from_slice(&d.to_le_bytes());
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.entries_in_file = self.order.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn recorded(w: &mut DedupWindow, tag: u64) {
        w.record(Some((1, tag)));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), w.acks().recv())
            .await
            .unwrap();
        assert_eq!(got, Some((1, tag)));
    }

    #[tokio::test]
    async fn bounded_persistent_and_acks_after_the_write() {
        let dir = std::env::temp_dir().join(format!("ferrymq-dedup-{}", std::process::id()));
        let path = dir.join("w.dedup");
        let _ = std::fs::remove_file(&path);
        {
            let mut w = DedupWindow::open(path.clone(), 3).unwrap();
            for id in ["a", "b", "c", "d"] {
                w.insert(id);
            }
            recorded(&mut w, 7).await;
            assert!(!w.contains("a"), "evicted");
            assert!(w.contains("d"));
        }
        // A torn tail is ignored on reopen.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        let w = DedupWindow::open(path.clone(), 3).unwrap();
        assert!(w.contains("b") && w.contains("c") && w.contains("d"));
        assert_eq!(w.len(), 3);
        let mut w = DedupWindow::open(path.clone(), 2).unwrap();
        for i in 0..20 {
            w.insert(&format!("x{i}"));
            recorded(&mut w, i).await;
        }
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 8 * 5,
            "compacted"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn in_memory_acks_at_once() {
        let mut w = DedupWindow::in_memory(10);
        w.insert("x");
        recorded(&mut w, 3).await;
        assert!(w.contains("x"));
    }
}
