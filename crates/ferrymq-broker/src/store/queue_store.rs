//! One durable queue's files: segments of records and the ack log.

use super::durability::Durability;
use super::record::{self, Loc, Read, Scan};
use super::SEGMENT_SIZE;
use crate::message::Message;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const ACK: u8 = b'A';
const DELIVERED: u8 = b'D';
/// An ack-log entry carrying the identity digest of a federated message whose
/// segment is gone (the record carried it while the segment existed).
const IDENTITY: u8 = b'I';
/// An ack-log entry opening a run of [`IDENTITY`] entries: the segment their records
/// were in. Segments drain in any order (one unacked message holds an old one), so
/// the segment number, not the log order, says which identities are the newest.
const IDENTITY_SEGMENT: u8 = b'S';
const ACK_ENTRY: usize = 9;
/// Identity entries kept by a compaction: enough for the largest window a
/// federation link can need (four times the largest prefetch count).
pub const IDENTITIES_KEPT: u64 = 1 << 18;

struct Segment {
    file: Arc<File>,
    /// Bytes already written to the file.
    flushed: u64,
    /// Records not yet acked.
    live: u32,
    /// Checksum seed of its records ([`record::seed`]; 0 in a segment written
    /// before files were reused, named `.dat`).
    seed: u32,
}

/// Segment bytes a sync round is writing outside the writer lock.
#[derive(Clone)]
struct InFlight {
    segment: u32,
    /// File offset of the first byte.
    at: u64,
    /// The records, then the end mark.
    data: Arc<Vec<u8>>,
}

impl InFlight {
    /// The bytes from `loc` on, if a record at `loc` is among these.
    fn at(&self, loc: Loc) -> Option<&[u8]> {
        let start = loc.offset as u64;
        let records_end = self.at + (self.data.len() - record::HEADER) as u64;
        if loc.segment != self.segment || start < self.at || start >= records_end {
            return None;
        }
        self.data.get((start - self.at) as usize..)
    }
}

struct Writer {
    segments: BTreeMap<u32, Segment>,
    current: u32,
    /// Logical length of the current segment, including `buf`.
    current_len: u64,
    buf: Vec<u8>,
    acks: Arc<File>,
    acks_len: u64,
    acks_buf: Vec<u8>,
    /// Ack-log entries naming each live segment.
    entries_per_segment: HashMap<u32, u64>,
    /// Ack-log entries naming deleted segments (dropped by the next compaction).
    garbage_entries: u64,
    /// Last durability epoch this store was registered for.
    registered_epoch: u64,
    /// Segments with nothing live, deleted by the next round once their acks and
    /// identities are written and fsynced: a consumed message's identity must not
    /// vanish from the disk with its record.
    doomed: Vec<u32>,
    /// Drained segments a round has taken: their files are renamed away once the
    /// round's fsync made the acks (and identities) naming them durable.
    retiring: Vec<u32>,
    /// The ack log is due a compaction (done by the next round).
    compact_due: bool,
    /// Identity entries in the ack log (file and buffer). A federated message's
    /// identity is written in its record, so it is durable with the message and
    /// costs the round no second file. While the segment exists its identities are
    /// also kept here, in `seg_identities`; when the segment is drained they move
    /// into the ack log, which the round that retires the segment fsyncs first. So
    /// a consumed message's identity is always on disk.
    identities: u64,
    /// Identity digests of each segment's records, with their offsets, oldest first.
    seg_identities: BTreeMap<u32, Vec<(u32, u64)>>,
    /// Ack-log bytes written but not fsynced: a round with records to sync leaves
    /// the ack log to a later round (at most [`ACKS_SYNC_EVERY`] later), as acks
    /// are not promised durable; that saves most rounds a second fsync.
    acks_unsynced: bool,
    /// When a round last took the ack log's fsync.
    acks_synced_at: Instant,
    /// Identity entries a compaction keeps ([`IDENTITIES_KEPT`]; smaller in tests).
    identities_kept: u64,
    /// Segment bytes being written by a sync round outside the lock.
    /// `Segment::flushed` already counts the records; reads take them from here
    /// until the write is done.
    in_flight: Option<InFlight>,
    /// Ack-log bytes being written by a sync round: (offset, bytes).
    acks_in_flight: Option<(u64, Arc<Vec<u8>>)>,
    destroyed: bool,
    /// A drained segment file kept to become the next segment. Overwriting
    /// allocated blocks needs no block allocation, no size change and no journal
    /// commit at fsync, and no block is freed: on the ext4 (`discard`) disk here, a
    /// federation drain went from ~92k to ~118k msg/s with the sync round ~35%
    /// shorter.
    spare: Option<PathBuf>,
    /// Recovered segments in the `.dat` format (plain CRC32C).
    legacy: HashSet<u32>,
}

/// The longest a written ack waits for its fsync while rounds keep coming. A crash
/// can bring back about this much of the newest acked messages as redeliveries
/// (acks were never promised durable).
const ACKS_SYNC_EVERY: std::time::Duration = super::durability::LAZY_ROUND_DELAY;

/// The identities in ack-log bytes with the segment each came from, in log order.
/// Entries logged before identities were grouped by segment count as segment 0.
fn logged_identities(log: &[u8]) -> Vec<(u32, u64)> {
    let mut segment = 0;
    let mut out = Vec::new();
    for e in log.chunks_exact(ACK_ENTRY) {
        match e[0] {
            IDENTITY => out.push((segment, u64::from_le_bytes(e[1..].try_into().expect("8")))),
            IDENTITY_SEGMENT => segment = u32::from_be_bytes(e[1..5].try_into().expect("4")),
            _ => {}
        }
    }
    out
}

/// Appends identities as ack-log entries: a segment entry before each run.
fn log_identities(out: &mut Vec<u8>, ids: &[(u32, u64)]) {
    let mut run = None;
    for &(segment, d) in ids {
        if run != Some(segment) {
            run = Some(segment);
            out.push(IDENTITY_SEGMENT);
            out.extend_from_slice(&segment.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        out.push(IDENTITY);
        out.extend_from_slice(&d.to_le_bytes());
    }
}

/// The newest `n` identities (by segment, then position), oldest first.
fn newest_identities(mut ids: Vec<(u32, u64)>, n: usize) -> Vec<(u32, u64)> {
    // Stable: within a segment, log and record order are append order.
    ids.sort_by_key(|&(segment, _)| segment);
    let extra = ids.len().saturating_sub(n);
    ids.drain(..extra);
    ids
}

impl Writer {
    /// Bytes of segment `id` a round has written (a range still being written counts not).
    fn written_len(&self, id: u32, s: &Segment) -> u64 {
        match &self.in_flight {
            Some(f) if f.segment == id => f.at.min(s.flushed),
            _ => s.flushed,
        }
    }

    /// Takes a segment with nothing live out of the queue. The next round writes
    /// the acks that drained it and its identities (moved to the ack log here),
    /// fsyncs them, and only then deletes the file.
    fn doom(&mut self, segment: u32) {
        self.segments.remove(&segment);
        self.doomed.push(segment);
        let dead = self.entries_per_segment.remove(&segment).unwrap_or(0);
        self.garbage_entries += dead;
        let ids = self.seg_identities.remove(&segment).unwrap_or_default();
        let ids: Vec<_> = ids.into_iter().map(|(_, d)| (segment, d)).collect();
        log_identities(&mut self.acks_buf, &ids);
        self.identities += ids.len() as u64;
        if self.identities > 2 * self.identities_kept {
            self.compact_due = true;
        }
        let live: u64 = self.entries_per_segment.values().sum();
        if self.garbage_entries >= COMPACT_AFTER && self.garbage_entries > live {
            self.compact_due = true;
        }
    }
}

/// State shared between a queue and the sync thread.
pub struct StoreShared {
    /// The queue's directory.
    pub dir: PathBuf,
    w: Mutex<Writer>,
    /// Held by a round while it writes segment bytes outside `w`, and by a roll()
    /// before it writes to the old segment: the round's end mark must not land on
    /// records the roll wrote after it. Taken only while holding `w`.
    writing: Mutex<()>,
}

/// The messages found at recovery, as packed references ([`Loc::pack`], with the
/// redelivered bit set for those delivered before the restart), oldest first.
/// 8 bytes per message: a deep queue recovers without loading its messages.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Packed references.
    pub refs: Vec<u64>,
    /// Total body bytes.
    pub bytes: u64,
}

impl Recovered {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// Whether nothing was recovered.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// (location, delivered before the restart) of each message.
    pub fn iter(&self) -> impl Iterator<Item = (Loc, bool)> + '_ {
        self.refs.iter().map(|r| Loc::unpack(*r))
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// Messages recovered.
    pub messages: usize,
    /// Bytes cut off segment tails (torn writes, corruption).
    pub truncated_bytes: u64,
    /// Segments that had a torn or corrupt tail.
    pub damaged_segments: Vec<u32>,
    /// Transient messages skipped (they do not survive a restart).
    pub transient_dropped: usize,
}

/// A durable queue's store handle.
pub struct QueueStore {
    shared: Arc<StoreShared>,
    durability: Arc<Durability>,
    incarnation: u64,
}

/// Reads the store's incarnation id, creating it for a new store: a random id that
/// lives as long as the store, so message identities (incarnation, seq) never repeat
/// across a delete and re-create of a queue with the same name.
fn incarnation(dir: &Path) -> io::Result<u64> {
    let path = dir.join("incarnation");
    match fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id: u64 = rand::random();
            let tmp = dir.join("incarnation.tmp");
            {
                let mut f = File::create(&tmp)?;
                f.write_all(format!("{id:016x}\n").as_bytes())?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// A segment's file. Records in `.seg` files carry per-segment checksum seeds.
fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n:08}.seg"))
}

/// A segment written before files were reused: plain CRC32C. (A different name,
/// not a flag file, so that neither a lost flag nor an older FerryMQ can read
/// one format as the other: an older version ignores `.seg` files instead of
/// cutting them as corrupt.)
fn legacy_seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n:08}.dat"))
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Atomically replaces `dir/name` with `data` (temp file, fsync, rename, fsync dir);
/// returns the new file opened for reading and writing.
fn replace_file(dir: &Path, name: &str, data: &[u8]) -> io::Result<File> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let f = File::create(&tmp)?;
        f.write_all_at(data, 0)?;
        f.sync_all()?;
    }
    let path = dir.join(name);
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    open_rw(&path)
}

/// Compact the ack log once this many entries name deleted segments and they
/// outnumber the live ones: restart cost then follows the backlog, not history.
const COMPACT_AFTER: u64 = 100_000;

impl StoreShared {
    /// Writes what is buffered: the records first, then the ack log (acks and the
    /// identities of drained segments, in the order they were logged); then
    /// compacts the ack log if due. Returns the files to fsync and the drained
    /// segments to delete once they are synced ([`StoreShared::retire`]). The
    /// writes happen outside the writer lock, so publishers and acks to this queue
    /// do not wait for the page cache. The ack log is left unsynced (`deferred`)
    /// when records are being synced anyway, nothing was drained, its last fsync is
    /// recent, and `all` (shutdown, tests) is not asked.
    pub(super) fn flush(&self, all: bool) -> io::Result<Flushed> {
        let (records, acks, drained, writing, sync_acks, w_unsynced) = {
            let mut w = self.w.lock();
            if w.destroyed {
                return Ok(Flushed::default());
            }
            let w = &mut *w;
            // Every ack that drained these segments is in the ack-log bytes taken below.
            let drained = std::mem::take(&mut w.doomed);
            w.retiring.extend_from_slice(&drained);
            let (records, writing) = if w.buf.is_empty() {
                (None, None)
            } else {
                let capacity = w.buf.capacity();
                let mut data = std::mem::replace(&mut w.buf, Vec::with_capacity(capacity));
                let seg = w.segments.get_mut(&w.current).expect("current segment");
                // Reserve the range: a roll() meanwhile writes after it, once this
                // write (end mark included, one pwrite) is done.
                let at = seg.flushed;
                seg.flushed += data.len() as u64;
                data.extend_from_slice(&record::end_mark(seg.seed));
                let data = Arc::new(data);
                w.in_flight = Some(InFlight {
                    segment: w.current,
                    at,
                    data: data.clone(),
                });
                (
                    Some((seg.file.clone(), at, data)),
                    Some(self.writing.lock()),
                )
            };
            let acks = if w.acks_buf.is_empty() {
                None
            } else {
                let data = Arc::new(std::mem::take(&mut w.acks_buf));
                let at = w.acks_len;
                w.acks_len += data.len() as u64;
                w.acks_in_flight = Some((at, data.clone()));
                Some((w.acks.clone(), at, data))
            };
            let unsynced = w.acks_unsynced || acks.is_some();
            let due = all
                || records.is_none()
                || !drained.is_empty()
                || w.acks_synced_at.elapsed() >= ACKS_SYNC_EVERY;
            let sync_acks = (unsynced && due).then(|| w.acks.clone());
            if sync_acks.is_some() {
                w.acks_unsynced = false;
                w.acks_synced_at = Instant::now();
            } else {
                w.acks_unsynced = unsynced;
            }
            (records, acks, drained, writing, sync_acks, unsynced)
        };
        // After a failed write nothing more is confirmed (the sync thread announces
        // no epoch from then on), so the bytes need not be kept for a retry.
        let mut out = Flushed {
            files: Vec::new(),
            deferred: sync_acks.is_none() && w_unsynced,
            drained,
        };
        if let Some((file, at, data)) = &records {
            file.write_all_at(data, *at)?;
            out.files.push(file.clone());
        }
        drop(writing);
        if let Some((file, at, data)) = &acks {
            file.write_all_at(data, *at)?;
        }
        out.files.extend(sync_acks);
        let mut w = self.w.lock();
        let w = &mut *w;
        if records.is_some() {
            w.in_flight = None;
        }
        if acks.is_some() {
            w.acks_in_flight = None;
        }
        if w.compact_due && !w.destroyed {
            w.compact_due = false;
            match compact(&self.dir, w) {
                Ok(()) => {
                    // The new log was fsynced whole.
                    w.acks_unsynced = false;
                    w.acks_synced_at = Instant::now();
                }
                Err(e) => tracing::warn!("compacting {}/acks.log: {e}", self.dir.display()),
            }
        }
        Ok(out)
    }

    /// Registers the store for the next round (a lazy one if nothing else comes),
    /// which fsyncs the ack log a round left unsynced.
    pub(super) fn defer(self: &Arc<Self>, durability: &Durability) {
        let mut w = self.w.lock();
        if !w.destroyed {
            durability.written(self, &mut w.registered_epoch, false);
        }
    }

    /// Takes drained segments out of the queue after the round that wrote their
    /// acks is synced: they are renamed under the lock (fast, and a re-created queue
    /// in the same directory cannot be hit), and the caller unlinks the returned
    /// paths, which takes milliseconds for an 8 MiB file, outside it.
    /// One drained file is kept as the next segment if `spares` (held across all
    /// stores) allows.
    pub(super) fn retire(&self, drained: &[u32], spares: &AtomicUsize) -> Vec<PathBuf> {
        let mut renamed = Vec::new();
        if drained.is_empty() {
            return renamed;
        }
        {
            let mut w = self.w.lock();
            if w.destroyed {
                return renamed;
            }
            for id in drained {
                let path = if w.legacy.remove(id) {
                    legacy_seg_path(&self.dir, *id)
                } else {
                    seg_path(&self.dir, *id)
                };
                // A segment that held one huge message is not worth keeping.
                let usual = fs::metadata(&path).is_ok_and(|m| m.len() <= SEGMENT_SIZE + (1 << 20));
                if w.spare.is_none() && usual && take_slot(spares) {
                    let spare = spare_path(&self.dir, *id);
                    if fs::rename(&path, &spare).is_ok() {
                        w.spare = Some(spare);
                        continue;
                    }
                    spares.fetch_sub(1, Ordering::AcqRel);
                }
                let trash = retired_path(&self.dir, *id);
                if fs::rename(&path, &trash).is_ok() {
                    renamed.push(trash);
                }
            }
            w.retiring.retain(|id| !drained.contains(id));
        }
        renamed
    }
}

/// What a round's write of one store produced.
#[derive(Default)]
pub(super) struct Flushed {
    /// Files to fsync.
    pub files: Vec<Arc<File>>,
    /// Ack-log bytes were written but left for a later round to fsync: the store
    /// must be in the next round's list ([`StoreShared::defer`]).
    pub deferred: bool,
    /// Drained segments to delete once the fsync is done.
    pub drained: Vec<u32>,
}

/// Where a drained segment is renamed before it is unlinked (ignored by recovery).
fn retired_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n:08}.retired"))
}

/// Where a drained segment waits to be reused (removed by recovery).
fn spare_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("seg-{n:08}.spare"))
}

/// Spare segment files kept across all stores (8 MiB each at most).
pub const MAX_SPARES: usize = 64;

/// Takes one of the [`MAX_SPARES`] slots, if one is free.
fn take_slot(spares: &AtomicUsize) -> bool {
    spares
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_SPARES).then_some(n + 1)
        })
        .is_ok()
}

/// Most bytes `read_batch` reads with one `pread`.
const READ_BLOCK: usize = 1 << 20;

thread_local! {
    /// Each thread's read buffer for `read_batch`: reused, so a refill neither
    /// zero-fills nor faults in a fresh megabyte every time.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bytes to read for a block starting at `locs[0]`: up to the last following record
/// of the same segment that fits in [`READ_BLOCK`], plus a guess at that record's size
/// (the spacing before it). Reading a fixed megabyte would read twice what a batch of
/// 1 KiB messages needs; a wrong guess costs one more `pread`.
fn block_len(locs: &[Loc], file_len: u64) -> usize {
    let first = locs[0];
    let mut last = first.offset as u64;
    let mut spacing = 4096;
    for pair in locs.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        let next_at = next.offset as u64;
        if next.segment != first.segment
            || next.offset <= prev.offset
            || next_at - first.offset as u64 >= READ_BLOCK as u64
        {
            break;
        }
        spacing = next_at - prev.offset as u64;
        last = next_at;
    }
    let want = last - first.offset as u64 + spacing;
    want.min(READ_BLOCK as u64)
        .min(file_len.saturating_sub(first.offset as u64)) as usize
}

/// Reads `len` bytes at `at` into the start of `scratch`, growing it if needed.
fn fill(scratch: &mut Vec<u8>, file: &File, at: u64, len: usize) -> io::Result<()> {
    if scratch.len() < len {
        // Exact: doubling could keep almost twice the block size per thread.
        scratch.reserve_exact(len - scratch.len());
        scratch.resize(len, 0);
    }
    file.read_exact_at(&mut scratch[..len], at)
}

/// The bytes from `loc` on, if `loc` is in the range a sync round is writing.
fn in_flight_at(in_flight: &Option<InFlight>, loc: Loc) -> Option<&[u8]> {
    in_flight.as_ref()?.at(loc)
}

/// Rewrites the ack log keeping only entries for live segments (and the newest
/// identities).
/// Only what is in the file is compacted: the buffer still holds entries for
/// records not written yet, and must not reach the disk before them.
fn compact(dir: &Path, w: &mut Writer) -> io::Result<()> {
    let mut old = vec![0u8; w.acks_len as usize];
    w.acks.read_exact_at(&mut old, 0)?;
    let buffered_ids = w
        .acks_buf
        .chunks_exact(ACK_ENTRY)
        .filter(|e| e[0] == IDENTITY)
        .count() as u64;
    // A drained segment's file exists until its round retires it: keep its entries.
    let present = |segment: u32| {
        w.segments.contains_key(&segment)
            || w.doomed.contains(&segment)
            || w.retiring.contains(&segment)
    };
    let mut kept = Vec::new();
    for e in old.chunks_exact(ACK_ENTRY) {
        if e[0] == IDENTITY || e[0] == IDENTITY_SEGMENT {
            continue;
        }
        let segment = u32::from_be_bytes(e[1..5].try_into().expect("4"));
        if present(segment) {
            kept.extend_from_slice(e);
        }
    }
    let ids = newest_identities(logged_identities(&old), w.identities_kept as usize);
    log_identities(&mut kept, &ids);
    let file = replace_file(dir, "acks.log", &kept)?;
    w.acks = Arc::new(file);
    w.acks_len = kept.len() as u64;
    w.garbage_entries = 0;
    w.identities = ids.len() as u64 + buffered_ids;
    Ok(())
}

impl QueueStore {
    /// The store's incarnation id (stable across restarts).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Opens (or creates) the store in `dir` and reads back every unacked message.
    pub fn open(
        dir: PathBuf,
        durability: Arc<Durability>,
    ) -> io::Result<(QueueStore, Recovered, RecoveryReport)> {
        fs::create_dir_all(&dir)?;
        let incarnation = incarnation(&dir)?;
        let mut report = RecoveryReport::default();
        // Drained segments renamed before a crash cut their unlink short, and spares.
        for entry in fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".retired") || name.ends_with(".spare") {
                let _ = fs::remove_file(entry.path());
            }
        }
        // (id, written before files were reused)
        let mut seg_ids: Vec<(u32, bool)> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix("seg-")?;
                if let Some(id) = rest.strip_suffix(".seg") {
                    Some((id.parse().ok()?, false))
                } else {
                    Some((rest.strip_suffix(".dat")?.parse().ok()?, true))
                }
            })
            .collect();
        seg_ids.sort_unstable();
        let legacy: HashSet<u32> = seg_ids.iter().filter(|s| s.1).map(|s| s.0).collect();
        // Ack log: acked and delivered records. Entries naming deleted segments are garbage.
        let acks_path = dir.join("acks.log");
        // A missing log is a new queue; any other read error must not look like "no acks".
        let acks_data = match fs::read(&acks_path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let whole = acks_data.len() / ACK_ENTRY * ACK_ENTRY;
        let existing: HashSet<u32> = seg_ids.iter().map(|s| s.0).collect();
        let mut acked = HashSet::new();
        let mut delivered = HashSet::new();
        let logged = logged_identities(&acks_data[..whole]);
        for e in acks_data[..whole].chunks_exact(ACK_ENTRY) {
            if e[0] == IDENTITY || e[0] == IDENTITY_SEGMENT {
                continue;
            }
            let loc = Loc {
                segment: u32::from_be_bytes(e[1..5].try_into().expect("4")),
                offset: u32::from_be_bytes(e[5..9].try_into().expect("4")),
            };
            if !existing.contains(&loc.segment) {
                continue;
            }
            match e[0] {
                ACK => {
                    acked.insert(loc);
                }
                DELIVERED => {
                    delivered.insert(loc);
                }
                _ => {}
            }
        }
        drop(acks_data);
        let mut segments = BTreeMap::new();
        let mut seg_identities: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
        let mut messages = Recovered::default();
        for &(id, is_legacy) in &seg_ids {
            let (path, seed) = if is_legacy {
                (legacy_seg_path(&dir, id), 0)
            } else {
                (seg_path(&dir, id), record::seed(id))
            };
            let data = fs::read(&path)?;
            let mut at = 0usize;
            let mut live = 0u32;
            let mut ids = Vec::new();
            while at < data.len() {
                match record::scan(&data[at..], seed) {
                    Scan::Record {
                        persistent,
                        size,
                        len,
                        identity,
                    } => {
                        let loc = Loc {
                            segment: id,
                            offset: at as u32,
                        };
                        at += len;
                        // Consumed or not: the identity outlives the message.
                        if let Some(d) = identity {
                            ids.push((loc.offset, d));
                        }
                        if acked.contains(&loc) {
                            continue;
                        }
                        if !persistent {
                            // Transient messages do not survive a restart; count them as settled.
                            report.transient_dropped += 1;
                            continue;
                        }
                        live += 1;
                        messages.refs.push(loc.pack(delivered.contains(&loc)));
                        messages.bytes += size;
                    }
                    // Cut below as well: what follows is from before (a reused
                    // file) or from a write that never completed.
                    Scan::End => break,
                    Scan::Truncated | Scan::Corrupt => {
                        report.truncated_bytes += (data.len() - at) as u64;
                        report.damaged_segments.push(id);
                        break;
                    }
                }
            }
            if !ids.is_empty() {
                seg_identities.insert(id, ids);
            }
            let file = open_rw(&path)?;
            if (at as u64) < data.len() as u64 {
                file.set_len(at as u64)?;
                file.sync_all()?;
            }
            segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    flushed: at as u64,
                    live,
                    seed,
                },
            );
        }
        // New writes go to a fresh segment so recovered ones can be deleted once drained.
        let current = seg_ids.last().map_or(1, |l| l.0 + 1);
        let file = open_rw(&seg_path(&dir, current))?;
        file.set_len(0)?;
        segments.insert(
            current,
            Segment {
                file: Arc::new(file),
                flushed: 0,
                live: 0,
                seed: record::seed(current),
            },
        );
        // Segments with nothing live are garbage now. Their identities move to the
        // ack log; the files go only once the new log is on disk.
        let empty: Vec<u32> = segments
            .iter()
            .filter(|(id, s)| s.live == 0 && **id != current)
            .map(|(id, _)| *id)
            .collect();
        // A segment still on disk holds its identities in its records: the log's
        // copy (a crash after the log was written, before the file went) would be a
        // second one.
        let mut identities: Vec<(u32, u64)> = logged
            .into_iter()
            .filter(|(segment, _)| !existing.contains(segment))
            .collect();
        for id in &empty {
            let ids = seg_identities.remove(id).unwrap_or_default();
            identities.extend(ids.into_iter().map(|(_, d)| (*id, d)));
        }
        let identities = newest_identities(identities, IDENTITIES_KEPT as usize);
        // Start from a compact ack log: only entries for segments still present
        // (the empty ones' too, until their files are gone).
        let mut entries = Vec::with_capacity((acked.len() + delivered.len()) * ACK_ENTRY);
        let mut per_segment: HashMap<u32, u64> = HashMap::new();
        let mut garbage_entries = 0;
        for (tag, set) in [(ACK, &acked), (DELIVERED, &delivered)] {
            for loc in set.iter().filter(|l| segments.contains_key(&l.segment)) {
                entries.push(tag);
                entries.extend_from_slice(&loc.segment.to_be_bytes());
                entries.extend_from_slice(&loc.offset.to_be_bytes());
                if empty.contains(&loc.segment) {
                    garbage_entries += 1;
                } else {
                    *per_segment.entry(loc.segment).or_default() += 1;
                }
            }
        }
        log_identities(&mut entries, &identities);
        let identity_count = identities.len() as u64;
        let acks_file = replace_file(&dir, "acks.log", &entries)?;
        let mut legacy = legacy;
        for id in empty {
            segments.remove(&id);
            let path = if legacy.remove(&id) {
                legacy_seg_path(&dir, id)
            } else {
                seg_path(&dir, id)
            };
            let _ = fs::remove_file(path);
        }
        let shared = Arc::new(StoreShared {
            dir,
            writing: Mutex::new(()),
            w: Mutex::new(Writer {
                segments,
                current,
                current_len: 0,
                buf: Vec::with_capacity(64 * 1024),
                acks: Arc::new(acks_file),
                acks_len: entries.len() as u64,
                acks_buf: Vec::new(),
                entries_per_segment: per_segment,
                garbage_entries,
                registered_epoch: 0,
                doomed: Vec::new(),
                retiring: Vec::new(),
                compact_due: false,
                identities: identity_count,
                identities_kept: IDENTITIES_KEPT,
                seg_identities,
                acks_unsynced: false,
                acks_synced_at: Instant::now(),
                in_flight: None,
                acks_in_flight: None,
                destroyed: false,
                spare: None,
                legacy,
            }),
        });
        report.messages = messages.len();
        Ok((
            QueueStore {
                shared,
                durability,
                incarnation,
            },
            messages,
            report,
        ))
    }

    /// Appends a message; returns its location and the epoch after which it is on disk.
    pub fn append(&self, m: &Message) -> io::Result<(Loc, u64)> {
        self.append_identified(m, None)
    }

    /// [`QueueStore::append`] that also logs the message's identity digest (for
    /// persistent messages), durable in the same round as the message.
    pub fn append_identified(&self, m: &Message, identity: Option<u64>) -> io::Result<(Loc, u64)> {
        let mut w = self.shared.w.lock();
        if w.destroyed {
            return Err(io::Error::new(io::ErrorKind::NotFound, "queue deleted"));
        }
        let identity = identity.filter(|_| m.is_persistent());
        let len = record::encoded_len(m, identity.is_some()) as u64;
        if w.current_len > 0 && w.current_len + len > SEGMENT_SIZE {
            self.roll(&mut w)?;
        }
        let loc = Loc {
            segment: w.current,
            offset: w.current_len as u32,
        };
        // The current segment is always one this process created: no lookup.
        record::encode(&mut w.buf, m, record::seed(loc.segment), identity);
        if let Some(d) = identity {
            let ids = w.seg_identities.entry(loc.segment).or_default();
            ids.push((loc.offset, d));
        }
        w.current_len += len;
        let cur = w.current;
        w.segments.get_mut(&cur).expect("current segment").live += 1;
        let epoch = self
            .durability
            .written(&self.shared, &mut w.registered_epoch, true);
        Ok((loc, epoch))
    }

    /// Starts a new segment; the old one's buffered bytes are written now and
    /// fsynced by the next round (the store is registered for every epoch it writes in).
    fn roll(&self, w: &mut Writer) -> io::Result<()> {
        let cur = w.current;
        {
            // A round still writing this segment's earlier bytes finishes first.
            let _writing = self.shared.writing.lock();
            let seg = w.segments.get_mut(&cur).expect("current segment");
            let records = w.buf.len() as u64;
            w.buf.extend_from_slice(&record::end_mark(seg.seed));
            seg.file.write_all_at(&w.buf, seg.flushed)?;
            seg.flushed += records;
            // The data is in the page cache; fsync it before the new segment's first sync completes.
            seg.file.sync_data()?;
        }
        w.buf.clear();
        let next = cur + 1;
        let path = seg_path(&self.shared.dir, next);
        let file = match w.spare.take() {
            Some(spare) => {
                self.durability.spare_released();
                if fs::rename(&spare, &path).is_ok() {
                    // Records of its earlier life fail the new segment number's
                    // checksum; the end mark at 0 spares recovery from reporting them
                    // as damage after a crash before the first round.
                    let file = open_rw(&path)?;
                    file.write_all_at(&record::end_mark(record::seed(next)), 0)?;
                    file.sync_data()?;
                    // The rename must be durable before a record in the file is
                    // confirmed: overwriting needs no journal commit, so no fsync of the
                    // file would carry it, and recovery deletes `.spare` files.
                    File::open(&self.shared.dir)?.sync_all()?;
                    file
                } else {
                    let file = open_rw(&path)?;
                    file.set_len(0)?;
                    file
                }
            }
            None => {
                let file = open_rw(&path)?;
                file.set_len(0)?;
                file
            }
        };
        w.segments.insert(
            next,
            Segment {
                file: Arc::new(file),
                flushed: 0,
                live: 0,
                seed: record::seed(next),
            },
        );
        w.current = next;
        w.current_len = 0;
        if w.segments.get(&cur).is_some_and(|s| s.live == 0) {
            w.doom(cur);
        }
        Ok(())
    }

    fn log(&self, tag: u8, loc: Loc) {
        let mut w = self.shared.w.lock();
        if w.destroyed {
            return;
        }
        w.acks_buf.push(tag);
        w.acks_buf.extend_from_slice(&loc.segment.to_be_bytes());
        w.acks_buf.extend_from_slice(&loc.offset.to_be_bytes());
        *w.entries_per_segment.entry(loc.segment).or_default() += 1;
        if tag == ACK {
            let cur = w.current;
            let gone = match w.segments.get_mut(&loc.segment) {
                Some(s) => {
                    s.live = s.live.saturating_sub(1);
                    s.live == 0 && loc.segment != cur
                }
                None => false,
            };
            if gone {
                w.doom(loc.segment);
            }
        }
        self.durability
            .written(&self.shared, &mut w.registered_epoch, false);
    }

    /// The newest `limit` identity digests logged by [`QueueStore::append_identified`]
    /// whose records a round has written, oldest first (by segment, then position),
    /// from the ack log (drained segments) and from the segments still there.
    pub fn recent_identities(&self, limit: usize) -> io::Result<Vec<u64>> {
        // Only records a round has written: a buffered record may never reach the
        // disk (a store that stopped syncing), and dropping its redelivery would
        // lose it. The ack log's buffered and in-flight entries are identities of
        // drained segments, whose records a roll already wrote and fsynced.
        let (file, written, mut not_in_file) = {
            let w = self.shared.w.lock();
            let written = w.acks_in_flight.as_ref().map_or(w.acks_len, |(at, _)| *at);
            let mut ids = Vec::new();
            if let Some((_, data)) = &w.acks_in_flight {
                ids.extend(logged_identities(data));
            }
            ids.extend(logged_identities(&w.acks_buf));
            // Newest segments first, and no more than `limit` of them: a deep
            // federated backlog holds millions, and publishers wait for this lock.
            let mut in_segments = Vec::new();
            for (id, in_segment) in w.seg_identities.iter().rev() {
                let upto = w.segments.get(id).map_or(0, |s| w.written_len(*id, s));
                // Offsets grow within a segment.
                let done = in_segment.partition_point(|(offset, _)| u64::from(*offset) < upto);
                let take = done.min(limit - in_segments.len());
                let newest = &in_segment[done - take..done];
                in_segments.extend(newest.iter().rev().map(|(_, d)| (*id, *d)));
                if in_segments.len() >= limit {
                    break;
                }
            }
            in_segments.reverse();
            ids.append(&mut in_segments);
            (w.acks.clone(), written, ids)
        };
        let mut log = vec![0u8; written as usize];
        file.read_exact_at(&mut log, 0)?;
        let mut ids = logged_identities(&log);
        ids.append(&mut not_in_file);
        Ok(newest_identities(ids, limit)
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Memory the store holds per message beyond the queue's own: the identities of
    /// federated messages in live segments.
    pub fn memory_estimate(&self) -> u64 {
        let w = self.shared.w.lock();
        let ids: usize = w.seg_identities.values().map(Vec::len).sum();
        (ids * std::mem::size_of::<(u32, u64)>()) as u64
    }

    /// Records that a stored message left the queue (acked, expired, purged…).
    pub fn ack(&self, loc: Loc) {
        self.log(ACK, loc);
    }

    /// Records that a stored message was handed to a consumer (for `redelivered` after a crash).
    pub fn delivered(&self, loc: Loc) {
        self.log(DELIVERED, loc);
    }

    /// Reads a stored message back.
    pub fn read(&self, loc: Loc) -> io::Result<Message> {
        let w = self.shared.w.lock();
        if w.destroyed {
            return Err(io::Error::new(io::ErrorKind::NotFound, "queue deleted"));
        }
        let seg = w
            .segments
            .get(&loc.segment)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment gone"))?;
        let start = loc.offset as u64;
        let data = if loc.segment == w.current && start >= seg.flushed {
            w.buf[(start - seg.flushed) as usize..].to_vec()
        } else if let Some(bytes) = in_flight_at(&w.in_flight, loc) {
            bytes.to_vec()
        } else {
            let mut head = [0u8; record::HEADER];
            seg.file.read_exact_at(&mut head, start)?;
            let len = u32::from_be_bytes(head[0..4].try_into().expect("4")) as usize;
            let mut data = vec![0u8; record::HEADER + len];
            seg.file.read_exact_at(&mut data, start)?;
            data
        };
        match record::decode(&data, seg.seed) {
            Read::Record(m) => Ok(m),
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt record")),
        }
    }

    /// Reads many stored messages, in the order given. Consecutive records of a
    /// segment are read with one `pread` per block instead of one per message.
    pub fn read_batch(&self, locs: &[Loc]) -> Vec<io::Result<Message>> {
        // Snapshot what is needed under the lock; read files outside it.
        let (files, current, unflushed_from, unflushed, in_flight) = {
            let w = self.shared.w.lock();
            // How far each segment's file can be read: a range a round is still
            // writing (counted in `flushed` already) is read from `in_flight` instead.
            let files: BTreeMap<u32, (Arc<File>, u64, u32)> = w
                .segments
                .iter()
                .filter(|(id, _)| locs.iter().any(|l| l.segment == **id))
                .map(|(id, s)| (*id, (s.file.clone(), w.written_len(*id, s), s.seed)))
                .collect();
            let cur = w.current;
            let flushed = w.segments.get(&cur).map_or(0, |s| s.flushed);
            let needs_buf = locs
                .iter()
                .any(|l| l.segment == cur && l.offset as u64 >= flushed);
            (
                files,
                cur,
                flushed,
                if needs_buf { w.buf.clone() } else { Vec::new() },
                w.in_flight.clone(),
            )
        };
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        SCRATCH.with_borrow_mut(|scratch| {
            // (segment, file offset, length) of the block `scratch` holds.
            let mut block: Option<(u32, u64, usize)> = None;
            let mut out = Vec::with_capacity(locs.len());
            let mut decoder = record::Decoder::new();
            for (i, &loc) in locs.iter().enumerate() {
                // Buffered and in-flight bytes are always of a segment this process
                // created, whose seed is its number's.
                let seed = record::seed(loc.segment);
                let start = loc.offset as u64;
                if loc.segment == current && start >= unflushed_from {
                    let at = (start - unflushed_from) as usize;
                    out.push(match decoder.decode(unflushed.get(at..).unwrap_or(&[]), seed) {
                        Read::Record(m) => Ok(m),
                        _ => Err(bad("corrupt buffered record")),
                    });
                    continue;
                }
                if let Some(bytes) = in_flight_at(&in_flight, loc) {
                    out.push(match decoder.decode(bytes, seed) {
                        Read::Record(m) => Ok(m),
                        _ => Err(bad("corrupt buffered record")),
                    });
                    continue;
                }
                let Some((file, flushed, seed)) = files.get(&loc.segment) else {
                    out.push(Err(io::Error::new(io::ErrorKind::NotFound, "segment gone")));
                    continue;
                };
                let covered = |b: &Option<(u32, u64, usize)>| {
                    matches!(*b, Some((s, at, len)) if s == loc.segment && start >= at && start < at + len as u64)
                };
                let mut read = || -> io::Result<Message> {
                    if !covered(&block) {
                        let want = block_len(&locs[i..], *flushed);
                        block = None;
                        fill(scratch, file, start, want)?;
                        block = Some((loc.segment, start, want));
                    }
                    let (_, at, len) = block.expect("block read");
                    match decoder.decode(&scratch[(start - at) as usize..len], *seed) {
                        Read::Record(m) => return Ok(m),
                        Read::Truncated => {}
                        _ => return Err(bad("corrupt record")),
                    }
                    // The record runs past the block: read exactly it. Its size comes
                    // from the header, itself in the block unless the block ended
                    // inside it.
                    let from = (start - at) as usize;
                    let mut head = [0u8; record::HEADER];
                    match scratch.get(from..(from + record::HEADER).min(len)) {
                        Some(h) if h.len() == record::HEADER => head.copy_from_slice(h),
                        _ => file.read_exact_at(&mut head, start)?,
                    }
                    let size = u32::from_be_bytes(head[0..4].try_into().expect("4"));
                    let want = record::HEADER + size as usize;
                    if start + want as u64 > *flushed {
                        // A damaged size field: no allocation of up to 4 GiB for it.
                        return Err(bad("corrupt record"));
                    }
                    block = None;
                    fill(scratch, file, start, want)?;
                    block = Some((loc.segment, start, want));
                    match decoder.decode(&scratch[..want], *seed) {
                        Read::Record(m) => Ok(m),
                        _ => Err(bad("corrupt record")),
                    }
                };
                out.push(read());
            }
            // A block grown for one big record is not kept for the thread's lifetime.
            if scratch.capacity() > READ_BLOCK {
                *scratch = Vec::new();
            }
            out
        })
    }

    /// Whether the broker's store has failed (a write or fsync error): nothing
    /// written since will be announced durable.
    pub fn failed(&self) -> bool {
        self.durability.failed()
    }

    /// Deletes the store's files (the queue was deleted).
    pub fn destroy(&self) {
        let mut w = self.shared.w.lock();
        w.destroyed = true;
        w.segments.clear();
        w.seg_identities.clear();
        if w.spare.take().is_some() {
            self.durability.spare_released();
        }
        let _ = fs::remove_dir_all(&self.shared.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use bytes::Bytes;

    fn msg(body: &str, persistent: bool) -> Message {
        let props = if persistent {
            AMQPProperties::default().with_delivery_mode(2)
        } else {
            AMQPProperties::default()
        };
        Message::new("".into(), "q".into(), props, Bytes::from(body.to_owned()))
    }

    /// A new store in a scratch directory, with a durability point not running
    /// (rounds happen on `sync_now`).
    fn fresh(name: &str) -> (PathBuf, Arc<Durability>, QueueStore) {
        let dir = tmp(name);
        let d = Durability::new();
        let (s, _, _) = QueueStore::open(dir.clone(), d.clone()).unwrap();
        (dir, d, s)
    }

    /// Appends a persistent message with `identity`, big enough that the next
    /// append rolls to a new segment: tests drain segments one message at a time.
    fn append_own_segment(s: &QueueStore, identity: u64) -> Loc {
        let big = "x".repeat(SEGMENT_SIZE as usize / 2 + 1);
        s.append_identified(&msg(&big, true), Some(identity))
            .unwrap()
            .0
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrymq-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// `read_batch` sizes each `pread` from the locations it was given: records much
    /// bigger than their neighbours, bigger than a block, out of order or across
    /// segments must all come back whole.
    #[test]
    fn batched_reads_return_every_record_whatever_its_size_and_order() {
        let (dir, d, s) = fresh("read-batch");
        let sizes = [10, 10, 10, 5000, 10, READ_BLOCK + 3000, 10, 10, 200_000, 10];
        let bodies: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}:{}", "y".repeat(*n)))
            .collect();
        let mut locs: Vec<Loc> = bodies
            .iter()
            .map(|b| s.append(&msg(b, true)).unwrap().0)
            .collect();
        // Records that fill a segment put the rest in the next one.
        append_own_segment(&s, 1);
        append_own_segment(&s, 2);
        let after: Vec<Loc> = (0..3)
            .map(|i| s.append(&msg(&format!("late{i}"), true)).unwrap().0)
            .collect();
        d.sync_now();
        assert_ne!(locs[0].segment, after[0].segment);
        let read = |locs: &[Loc]| -> Vec<String> {
            s.read_batch(locs)
                .into_iter()
                .map(|m| String::from_utf8(m.unwrap().body.to_vec()).unwrap())
                .collect()
        };
        let mut expected = bodies.clone();
        expected.extend((0..3).map(|i| format!("late{i}")));
        locs.extend(&after);
        assert_eq!(read(&locs), expected);
        // Backwards, and every other one: no block guess holds.
        let backwards: Vec<Loc> = locs.iter().rev().copied().collect();
        let reversed: Vec<String> = expected.iter().rev().cloned().collect();
        assert_eq!(read(&backwards), reversed);
        let sparse: Vec<Loc> = locs.iter().step_by(2).copied().collect();
        let every_other: Vec<String> = expected.iter().step_by(2).cloned().collect();
        assert_eq!(read(&sparse), every_other);
        // That call left its buffer to the thread (no block went over the limit): a
        // shorter block read into it ends where the read did, not at stale bytes.
        let short = vec![expected[2].clone(), expected[3].clone()];
        assert_eq!(read(&[locs[2], locs[3]]), short);
        // Records still in the write buffer, between records read from the files.
        let buffered: Vec<Loc> = (0..2)
            .map(|i| s.append(&msg(&format!("buf{i}"), true)).unwrap().0)
            .collect();
        let mixed = [
            locs[0],
            buffered[0],
            locs[1],
            locs[8],
            buffered[1],
            locs[12],
        ];
        let want: Vec<String> = vec![
            expected[0].clone(),
            "buf0".into(),
            expected[1].clone(),
            expected[8].clone(),
            "buf1".into(),
            expected[12].clone(),
        ];
        assert_eq!(read(&mixed), want);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn append_ack_recover() {
        let dir = tmp("recover");
        let d = Durability::new();
        let (s, rec, _) = QueueStore::open(dir.clone(), d.clone()).unwrap();
        assert!(rec.is_empty());
        let (a, _) = s.append(&msg("a", true)).unwrap();
        let (b, _) = s.append(&msg("b", true)).unwrap();
        s.append(&msg("t", false)).unwrap();
        s.append(&msg("c", true)).unwrap();
        s.ack(a);
        s.delivered(b);
        assert_eq!(&s.read(b).unwrap().body[..], b"b");
        d.sync_now();
        assert_eq!(&s.read(b).unwrap().body[..], b"b");
        drop(s);
        let (s, rec, report) = QueueStore::open(dir.clone(), d).unwrap();
        let locs: Vec<Loc> = rec.iter().map(|(l, _)| l).collect();
        let bodies: Vec<_> = s
            .read_batch(&locs)
            .into_iter()
            .zip(rec.iter())
            .map(|(m, (_, delivered))| {
                (
                    String::from_utf8(m.unwrap().body.to_vec()).unwrap(),
                    delivered,
                )
            })
            .collect();
        assert_eq!(
            bodies,
            vec![("b".to_string(), true), ("c".to_string(), false)]
        );
        assert_eq!(report.transient_dropped, 1);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn ack_log_is_compacted_as_segments_go() {
        let (dir, d, s) = fresh("compact");
        let body = "x".repeat(100);
        let mut last = None;
        for i in 0..300_000u32 {
            let (loc, _) = s.append(&msg(&body, true)).unwrap();
            s.delivered(loc);
            s.ack(loc);
            if i % 10_000 == 0 {
                d.sync_now();
            }
            last = Some(loc);
        }
        d.sync_now();
        // ~600k entries were logged; all but the current segment's are garbage by now.
        let size = fs::metadata(dir.join("acks.log")).unwrap().len();
        assert!(size < 300_000 * 9, "ack log compacted, {size} bytes");
        drop(s);
        let (_s, rec, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert!(rec.is_empty(), "everything was acked");
        assert!(last.is_some());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn identities_are_logged_with_their_messages_and_outlive_them() {
        let (dir, d, s) = fresh("identities");
        let (a, _) = s.append_identified(&msg("a", true), Some(11)).unwrap();
        s.append_identified(&msg("t", false), Some(12)).unwrap();
        let (b, _) = s.append_identified(&msg("b", true), Some(13)).unwrap();
        assert_eq!(s.memory_estimate(), 32, "two identities held in memory");
        assert!(
            s.recent_identities(10).unwrap().is_empty(),
            "not written yet"
        );
        // Consumed in the same round it was stored: the ack follows the identity.
        s.ack(a);
        d.sync_now();
        assert_eq!(s.recent_identities(10).unwrap(), vec![11, 13]);
        s.ack(b);
        d.sync_now();
        assert_eq!(s.recent_identities(1).unwrap(), vec![13]);
        drop(s);
        let (s, rec, _) = QueueStore::open(dir.clone(), d.clone()).unwrap();
        assert!(rec.is_empty(), "both consumed");
        assert_eq!(s.recent_identities(10).unwrap(), vec![11, 13]);
        drop(s);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn identity_entries_are_bounded_by_compaction() {
        let (dir, d, s) = fresh("identities-bounded");
        s.shared.w.lock().identities_kept = 3;
        // Each message fills a segment of its own: every ack drains one, and its
        // identity moves to the ack log.
        for i in 0..12u64 {
            let loc = append_own_segment(&s, i);
            d.sync_now();
            s.ack(loc);
            d.sync_now();
        }
        // 11 drained segments (the last is current): at most 2 × 3 of their
        // identities in the log, not 11.
        let log = fs::read(dir.join("acks.log")).unwrap();
        let in_log = log
            .chunks_exact(ACK_ENTRY)
            .filter(|e| e[0] == IDENTITY)
            .count();
        assert!((3..=6).contains(&in_log), "compacted: {in_log} identities");
        let ids = s.recent_identities(100).unwrap();
        assert_eq!(ids.last(), Some(&11), "the current segment's identity last");
        assert!(
            ids.windows(2).all(|w| w[0] + 1 == w[1]),
            "newest, in order: {ids:?}"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn identities_ride_in_records_and_move_to_the_ack_log_with_their_segment() {
        let (dir, d, s) = fresh("identities-move");
        let first = append_own_segment(&s, 7);
        let second = append_own_segment(&s, 8);
        d.sync_now();
        let logged = |dir: &Path| {
            let log = fs::read(dir.join("acks.log")).unwrap();
            log.chunks_exact(ACK_ENTRY)
                .filter(|e| e[0] == IDENTITY)
                .count()
        };
        assert_eq!(
            logged(&dir),
            0,
            "while the segment exists, only the record holds it"
        );
        assert_eq!(s.recent_identities(10).unwrap(), vec![7, 8]);
        // Consumed, the first segment drains: its identity goes to the ack log.
        s.ack(first);
        d.sync_now();
        assert_eq!(logged(&dir), 1);
        assert_eq!(s.recent_identities(10).unwrap(), vec![7, 8]);
        // Both consumed: at the restart the second segment (not current any more) is
        // empty, so it is deleted there and 8 joins 7 in the log.
        s.ack(second);
        d.sync_now();
        drop(s);
        let (s, rec, _) = QueueStore::open(dir.clone(), d.clone()).unwrap();
        assert!(rec.is_empty());
        assert_eq!(s.recent_identities(10).unwrap(), vec![7, 8]);
        drop(s);
        assert_eq!(logged(&dir), 2);
        let (s, _, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(s.recent_identities(10).unwrap(), vec![7, 8]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn identities_keep_append_order_whatever_order_segments_drain_in() {
        let (dir, d, s) = fresh("identities-order");
        let locs: Vec<Loc> = (1..=4u64).map(|i| append_own_segment(&s, i)).collect();
        d.sync_now();
        // The oldest segment is held by an unacked message while the next two drain
        // (the fourth is current).
        s.ack(locs[1]);
        s.ack(locs[2]);
        d.sync_now();
        s.ack(locs[0]);
        d.sync_now();
        assert_eq!(s.recent_identities(3).unwrap(), vec![2, 3, 4]);
        s.shared.w.lock().identities_kept = 2;
        compact(&dir, &mut s.shared.w.lock()).unwrap();
        assert_eq!(
            s.recent_identities(10).unwrap(),
            vec![2, 3, 4],
            "compaction keeps the newest"
        );
        drop(s);
        let (s, _, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(s.recent_identities(10).unwrap(), vec![2, 3, 4]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_crash_before_a_drained_segment_goes_leaves_one_copy_of_its_identities() {
        let (dir, d, s) = fresh("identities-once");
        let first = append_own_segment(&s, 1);
        append_own_segment(&s, 2);
        d.sync_now();
        // The round writes the ack and moves 1 into the log, then the process dies
        // before the drained file goes.
        s.ack(first);
        let flushed = s.shared.flush(true).unwrap();
        for f in flushed.files {
            f.sync_data().unwrap();
        }
        drop(s);
        let (s, _, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(s.recent_identities(10).unwrap(), vec![1, 2]);
        assert_eq!(s.recent_identities(1).unwrap(), vec![2]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn identities_logged_before_records_carried_them_are_still_read() {
        let dir = tmp("identities-legacy");
        fs::create_dir_all(&dir).unwrap();
        let mut log = Vec::new();
        for d in [21u64, 22] {
            log.push(IDENTITY);
            log.extend_from_slice(&d.to_le_bytes());
        }
        fs::write(dir.join("acks.log"), &log).unwrap();
        let d = Durability::new();
        let (s, _, _) = QueueStore::open(dir.clone(), d.clone()).unwrap();
        // An acked identified record in a segment that survives the restart (its
        // neighbour is live) keeps its identity too.
        let (a, _) = s.append_identified(&msg("a", true), Some(23)).unwrap();
        s.append_identified(&msg("b", true), Some(24)).unwrap();
        s.ack(a);
        d.sync_now();
        drop(s);
        let (s, rec, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(s.recent_identities(10).unwrap(), vec![21, 22, 23, 24]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_round_with_records_leaves_the_ack_log_unsynced_for_a_while() {
        let (dir, d, s) = fresh("acks-deferred");
        let (a, _) = s.append(&msg("a", true)).unwrap();
        d.sync_now();
        let acks_file = |f: &Flushed| {
            f.files
                .iter()
                .any(|x| Arc::ptr_eq(x, &s.shared.w.lock().acks))
        };
        // Records and an ack: only the segment is fsynced.
        s.append(&msg("b", true)).unwrap();
        s.ack(a);
        s.shared.w.lock().acks_synced_at = Instant::now();
        let f = s.shared.flush(false).unwrap();
        assert_eq!(f.files.len(), 1);
        assert!(!acks_file(&f) && f.deferred);
        // Records alone: the log stays unsynced, and the store asks for a round again.
        s.append(&msg("c", true)).unwrap();
        let f = s.shared.flush(false).unwrap();
        assert!(!acks_file(&f) && f.deferred);
        // The next round without records takes it.
        let f = s.shared.flush(false).unwrap();
        assert!(acks_file(&f) && !f.deferred);
        // So does a round with records once the last fsync of the log is old.
        s.append(&msg("c", true)).unwrap();
        s.delivered(a);
        s.shared.w.lock().acks_synced_at -= ACKS_SYNC_EVERY;
        let f = s.shared.flush(false).unwrap();
        assert!(acks_file(&f) && f.files.len() == 2);
        // And shutdown's round.
        s.append(&msg("d", true)).unwrap();
        s.delivered(a);
        let f = s.shared.flush(true).unwrap();
        assert!(acks_file(&f));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_deferred_ack_log_is_synced_by_a_lazy_round() {
        let (dir, d, s) = fresh("acks-lazy");
        let (a, _) = s.append(&msg("a", true)).unwrap();
        d.sync_now();
        // A log "just synced" for the next hour: the round that takes the records
        // below is sure to leave the ack unsynced.
        s.shared.w.lock().acks_synced_at = Instant::now() + std::time::Duration::from_secs(3600);
        s.ack(a);
        let (_, epoch) = s.append(&msg("b", true)).unwrap();
        d.spawn();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.synced_epoch() < epoch || s.shared.w.lock().acks_unsynced {
            assert!(
                std::time::Instant::now() < deadline,
                "the ack log was never synced"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        d.stop();
        let _ = fs::remove_dir_all(dir);
    }

    /// A synced store whose first segment holds one message and whose second is current.
    fn two_segments(dir: &Path) -> (QueueStore, Arc<Durability>, Loc) {
        let d = Durability::new();
        let (s, _, _) = QueueStore::open(dir.to_path_buf(), d.clone()).unwrap();
        let big = "x".repeat(SEGMENT_SIZE as usize / 2 + 1);
        let (first, _) = s.append(&msg(&big, true)).unwrap();
        s.append(&msg(&big, true)).unwrap();
        d.sync_now();
        (s, d, first)
    }

    #[test]
    fn drained_segments_are_deleted_by_the_round_after_their_acks() {
        let dir = tmp("doomed");
        let (s, d, first) = two_segments(&dir);
        assert!(seg_path(&dir, first.segment).exists());
        s.ack(first);
        assert!(
            seg_path(&dir, first.segment).exists(),
            "kept until the ack is written"
        );
        d.sync_now();
        assert!(!seg_path(&dir, first.segment).exists());
        let _ = fs::remove_dir_all(dir);
    }

    /// Seven 1 MiB "old" records in segment 1 (in the plain-CRC `.dat` format if
    /// `legacy`), drained; seven "mid" in segment 2; then two "new" ones in
    /// segment 3, which reuses segment 1's file. Returns the old file's bytes and
    /// where segment 3's records end.
    fn reused_segment(dir: &Path, legacy: bool) -> (Vec<u8>, u64) {
        let body = |tag: &str| format!("{tag}{}", "x".repeat(1 << 20));
        if legacy {
            fs::create_dir_all(dir).unwrap();
            let mut data = Vec::new();
            for _ in 0..7 {
                record::encode(&mut data, &msg(&body("old"), true), 0, None);
            }
            fs::write(legacy_seg_path(dir, 1), &data).unwrap();
        }
        let d = Durability::new();
        let (s, rec, _) = QueueStore::open(dir.to_path_buf(), d.clone()).unwrap();
        let old: Vec<Loc> = if legacy {
            rec.iter().map(|(l, _)| l).collect()
        } else {
            (0..7)
                .map(|_| s.append(&msg(&body("old"), true)).unwrap().0)
                .collect()
        };
        for _ in 0..7 {
            assert_eq!(s.append(&msg(&body("mid"), true)).unwrap().0.segment, 2);
        }
        assert!(old.len() == 7 && old.iter().all(|l| l.segment == 1));
        d.sync_now();
        let old_path = if legacy {
            legacy_seg_path(dir, 1)
        } else {
            seg_path(dir, 1)
        };
        let old_bytes = fs::read(&old_path).unwrap();
        for l in old {
            s.ack(l);
        }
        d.sync_now();
        assert!(!old_path.exists());
        assert!(spare_path(dir, 1).exists(), "the drained file is kept");
        let (n0, _) = s.append(&msg(&body("new"), true)).unwrap();
        let (n1, _) = s.append(&msg(&body("new"), true)).unwrap();
        assert_eq!((n0.segment, n1.segment), (3, 3));
        assert!(!spare_path(dir, 1).exists(), "reused as segment 3");
        d.sync_now();
        let len = fs::metadata(seg_path(dir, 3)).unwrap().len();
        assert!(
            len >= 6 << 20,
            "segment 3 still holds the old records past its own"
        );
        let end = n1.offset as u64 + (n1.offset - n0.offset) as u64;
        (old_bytes, end)
    }

    /// Opens the store in `dir`: the first `prefix` bytes of each recovered body.
    fn recovered(dir: &Path, prefix: usize) -> (Vec<String>, RecoveryReport) {
        let (s, rec, report) = QueueStore::open(dir.to_path_buf(), Durability::new()).unwrap();
        let locs: Vec<Loc> = rec.iter().map(|(l, _)| l).collect();
        let got = s
            .read_batch(&locs)
            .into_iter()
            .map(|m| {
                let body = m.unwrap().body;
                String::from_utf8_lossy(&body[..prefix.min(body.len())]).into_owned()
            })
            .collect();
        (got, report)
    }

    #[test]
    fn reused_segment_files_never_bring_back_old_records() {
        let expected: Vec<String> = ["mid"; 7]
            .iter()
            .chain(&["new"; 2])
            .map(|s| s.to_string())
            .collect();
        for legacy in [false, true] {
            // The end mark after the last round stops the scan.
            let dir = tmp(&format!("reuse-{legacy}"));
            reused_segment(&dir, legacy);
            let (got, report) = recovered(&dir, 3);
            assert_eq!(got, expected, "legacy {legacy}");
            assert!(
                report.damaged_segments.is_empty(),
                "a clean end is no damage"
            );
            let _ = fs::remove_dir_all(&dir);
            // Without the end mark (a round torn after overwriting it), the old record
            // now sitting where a new one would start fails the new segment's checksum.
            let dir = tmp(&format!("reuse-torn-{legacy}"));
            let (old_bytes, end) = reused_segment(&dir, legacy);
            let at = end as usize;
            let old_seed = if legacy { 0 } else { record::seed(1) };
            assert!(matches!(
                record::scan(&old_bytes[at..], old_seed),
                Scan::Record { .. }
            ));
            let f = OpenOptions::new()
                .write(true)
                .open(seg_path(&dir, 3))
                .unwrap();
            f.write_all_at(&old_bytes[at..at + record::HEADER], end)
                .unwrap();
            let (got, report) = recovered(&dir, 3);
            assert_eq!(got, expected, "legacy {legacy}");
            assert_eq!(report.damaged_segments, vec![3]);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn segments_written_with_plain_checksums_are_still_read() {
        let dir = tmp("legacy");
        fs::create_dir_all(&dir).unwrap();
        let mut data = Vec::new();
        record::encode(&mut data, &msg("before", true), 0, None);
        fs::write(legacy_seg_path(&dir, 1), &data).unwrap();
        {
            let d = Durability::new();
            let (s, rec, _) = QueueStore::open(dir.clone(), d.clone()).unwrap();
            assert_eq!(rec.len(), 1);
            s.append(&msg("after", true)).unwrap();
            d.sync_now();
        }
        assert!(legacy_seg_path(&dir, 1).exists());
        assert!(
            seg_path(&dir, 2).exists(),
            "new records go to a seeded segment"
        );
        let (got, report) = recovered(&dir, usize::MAX);
        assert_eq!(got, ["before", "after"]);
        assert!(report.damaged_segments.is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_hole_of_zeros_is_damage_not_an_end() {
        let (dir, d, s) = fresh("zeros");
        let (a, _) = s.append(&msg("kept", true)).unwrap();
        let (b, _) = s.append(&msg("lost", true)).unwrap();
        d.sync_now();
        drop(s);
        // A crash can leave a block of the file as zeros.
        let f = OpenOptions::new()
            .write(true)
            .open(seg_path(&dir, a.segment))
            .unwrap();
        f.write_all_at(&[0; 16], b.offset as u64).unwrap();
        let (_s, rec, report) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(report.damaged_segments, vec![a.segment]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn spares_are_bounded_and_removed_at_start() {
        let spares = AtomicUsize::new(MAX_SPARES - 1);
        assert!(take_slot(&spares));
        assert!(!take_slot(&spares), "no more than MAX_SPARES");
        let dir = tmp("spare-start");
        let (s, d, first) = two_segments(&dir);
        s.ack(first);
        d.sync_now();
        assert!(spare_path(&dir, first.segment).exists());
        drop(s);
        QueueStore::open(dir.clone(), d).unwrap();
        assert!(!spare_path(&dir, first.segment).exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn reads_during_a_round_write_see_every_record() {
        let (dir, d, s) = fresh("in-flight");
        let mut locs = Vec::new();
        for i in 0..5 {
            locs.push(s.append(&msg(&format!("old{i}"), true)).unwrap().0);
        }
        d.sync_now();
        for i in 0..5 {
            locs.push(s.append(&msg(&format!("new{i}"), true)).unwrap().0);
        }
        // What a round does before its write: reserve the range, park the bytes.
        let (file, at, data) = {
            let mut w = s.shared.w.lock();
            let w = &mut *w;
            let mut data = std::mem::take(&mut w.buf);
            let seg = w.segments.get_mut(&w.current).unwrap();
            let at = seg.flushed;
            seg.flushed += data.len() as u64;
            data.extend_from_slice(&record::end_mark(seg.seed));
            let data = Arc::new(data);
            w.in_flight = Some(InFlight {
                segment: w.current,
                at,
                data: data.clone(),
            });
            (seg.file.clone(), at, data)
        };
        let bodies = |s: &QueueStore| -> Vec<String> {
            s.read_batch(&locs)
                .into_iter()
                .map(|m| String::from_utf8(m.unwrap().body.to_vec()).unwrap())
                .collect()
        };
        let expected: Vec<String> = (0..5)
            .map(|i| format!("old{i}"))
            .chain((0..5).map(|i| format!("new{i}")))
            .collect();
        assert_eq!(bodies(&s), expected, "not yet written");
        assert_eq!(&s.read(locs[7]).unwrap().body[..], b"new2");
        file.write_all_at(&data, at).unwrap();
        s.shared.w.lock().in_flight = None;
        assert_eq!(bodies(&s), expected, "written");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn compaction_never_writes_an_identity_ahead_of_its_record() {
        let (dir, d, s) = fresh("compact-ahead");
        s.shared.w.lock().identities_kept = 1;
        s.append_identified(&msg("one", true), Some(1)).unwrap();
        d.sync_now();
        // Record and identity both still buffered when a compaction runs.
        s.append_identified(&msg("two", true), Some(2)).unwrap();
        compact(&dir, &mut s.shared.w.lock()).unwrap();
        drop(s); // a crash: the buffers are gone
        let (s, rec, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(s.recent_identities(10).unwrap(), vec![1]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn compaction_keeps_the_acks_of_a_drained_segment_until_it_is_deleted() {
        let dir = tmp("compact-drained");
        let (s, d, first) = two_segments(&dir);
        s.ack(first);
        // A round writes the ack, then compacts before it deletes the segment.
        let flushed = s.shared.flush(false).unwrap();
        assert_eq!(flushed.drained, vec![first.segment]);
        compact(&dir, &mut s.shared.w.lock()).unwrap();
        drop(s); // a crash before the segment is deleted
        let (_s, rec, _) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(rec.len(), 1, "the acked message stays acked");
        let _ = fs::remove_dir_all(dir);
    }

    /// A record whose size field was damaged after recovery read it is an error,
    /// found before a buffer of that size is allocated.
    #[test]
    fn a_damaged_size_field_is_a_read_error() {
        let (dir, d, s) = fresh("damaged-size");
        let (a, _) = s.append(&msg("a", true)).unwrap();
        let (b, _) = s.append(&msg("b", true)).unwrap();
        d.sync_now();
        let file = OpenOptions::new()
            .write(true)
            .open(seg_path(&dir, a.segment))
            .unwrap();
        file.write_all_at(&0xffff_fff0u32.to_be_bytes(), a.offset as u64)
            .unwrap();
        let read = s.read_batch(&[a, b]);
        assert_eq!(
            read[0].as_ref().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(&read[1].as_ref().unwrap().body[..], b"b");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn torn_tail_is_truncated() {
        let (dir, d, s) = fresh("torn");
        for i in 0..10 {
            s.append(&msg(&format!("m{i}"), true)).unwrap();
        }
        d.sync_now();
        drop(s);
        let seg = seg_path(&dir, 1);
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        // The last record loses its last 3 bytes (the end mark after it goes too).
        f.set_len(len - record::HEADER as u64 - 3).unwrap();
        let (_s, rec, report) = QueueStore::open(dir.clone(), d).unwrap();
        assert_eq!(rec.len(), 9);
        assert_eq!(report.damaged_segments, vec![1]);
        assert!(report.truncated_bytes > 0);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn acks_alone_wait_for_a_lazy_round_records_do_not() {
        use crate::store::durability::LAZY_ROUND_DELAY;
        use std::time::{Duration, Instant};
        let (dir, d, s) = fresh("lazy");
        d.spawn();
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let (a, epoch) = s.append(&msg("a", true)).unwrap();
        wait("the record's round", &|| d.synced_epoch() >= epoch);
        let rounds = d.rounds();
        let acked_at = Instant::now();
        s.ack(a);
        std::thread::sleep(Duration::from_millis(2));
        if acked_at.elapsed() < LAZY_ROUND_DELAY {
            assert_eq!(d.rounds(), rounds, "an ack alone started a round at once");
        }
        wait("the ack's lazy round", &|| d.rounds() > rounds);
        d.stop();
        let (_, rec, _) = QueueStore::open(dir.clone(), Durability::new()).unwrap();
        assert!(rec.is_empty(), "the ack reached the disk");
        let _ = fs::remove_dir_all(dir);
    }
}
