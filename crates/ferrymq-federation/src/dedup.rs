//! The duplicate-removal window of a link: identities of messages already stored
//! downstream (FerryMQ's `x-ferrymq-id` from a FerryMQ upstream, `message-id`
//! from others), kept as 64-bit digests in memory and in an append-only file.
//!
//! An identity is recorded after its message is durable and before the upstream
//! ack is sent, and the file is fsync'd before that ack: if we crash after the
//! message is stored but before the ack, the upstream redelivers and the window
//! drops the copy. Only redeliveries of unacknowledged messages can come back,
//! at most the prefetch count, so a window of a few hundred thousand suffices.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Bounded set of recent message identities, optionally persisted.
pub struct DedupWindow {
    capacity: usize,
    order: VecDeque<u64>,
    set: HashSet<u64>,
    file: Option<(PathBuf, File)>,
    pending: Vec<u8>,
    entries_in_file: usize,
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
        DedupWindow {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
            file: None,
            pending: Vec::new(),
            entries_in_file: 0,
        }
    }

    /// Opens (or creates) the window persisted at `path`.
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
        w.entries_in_file = data.len() / 8;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if data.len() % 8 != 0 {
            file.set_len((data.len() / 8 * 8) as u64)?;
        }
        w.file = Some((path, file));
        Ok(w)
    }

    fn remember(&mut self, d: u64) {
        if self.set.insert(d) {
            self.order.push_back(d);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// Whether an identity was stored already.
    pub fn contains(&self, identity: &str) -> bool {
        self.set.contains(&digest(identity))
    }

    /// Records an identity (written to the file by [`DedupWindow::sync`]).
    pub fn insert(&mut self, identity: &str) {
        let d = digest(identity);
        if !self.set.contains(&d) {
            self.remember(d);
            if self.file.is_some() {
                self.pending.extend_from_slice(&d.to_le_bytes());
            }
        }
    }

    /// Writes recorded identities and fsyncs the file (a no-op in memory).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some((_, file)) = self.file.as_mut() else {
            self.pending.clear();
            return Ok(());
        };
        file.write_all(&self.pending)?;
        file.sync_data()?;
        self.entries_in_file += self.pending.len() / 8;
        self.pending.clear();
        if self.entries_in_file > self.capacity * 2 {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the window's entries.
    fn compact(&mut self) -> io::Result<()> {
        let Some((path, _)) = self.file.as_ref() else {
            return Ok(());
        };
        let path = path.clone();
        let tmp = path.with_extension("tmp");
        let mut bytes = Vec::with_capacity(self.order.len() * 8);
        for d in &self.order {
            bytes.extend_from_slice(&d.to_le_bytes());
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(&path)?;
        self.file = Some((path, file));
        self.entries_in_file = self.order.len();
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_persistent() {
        let dir = std::env::temp_dir().join(format!("ferrymq-dedup-{}", std::process::id()));
        let path = dir.join("w.dedup");
        let _ = std::fs::remove_file(&path);
        {
            let mut w = DedupWindow::open(path.clone(), 3).unwrap();
            for id in ["a", "b", "c", "d"] {
                w.insert(id);
            }
            w.sync().unwrap();
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
            w.sync().unwrap();
        }
        assert!(
            std::fs::metadata(&path).unwrap().len() <= 8 * 5,
            "compacted"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
