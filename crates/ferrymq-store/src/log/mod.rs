//! The segmented append-only log that queues and (later) Kafka partitions sit on. A log is
//! a directory of segment files named by their base offset; records are framed with a
//! length and a CRC32C ([`record`]), indexed sparsely by offset and time ([`index`]), and
//! read back from the files (the page cache), never from copies kept in memory: the only
//! bodies in RAM are those in the active segment's small write buffer. Per-segment ack
//! files ([`ack`]) give queue semantics: recovery rebuilds which offsets are unacked, and
//! a segment whose records are all acked is deleted. [`GroupCommit`] lets many writers
//! share one fsync. Everything goes through a [`Backend`], so tests run the same code on a
//! fault-injecting disk ([`fault::FaultBackend`]). The byte layout and the recovery
//! algorithm are documented in `docs/storage-format.md`.
//!
//! Durability contract: [`Log::sync`] returns an offset below which every record is
//! durable, directory entries included (a new segment or ack file is only durable once
//! the log directory is fsynced, which the sync does). [`Log::begin_sync`] splits a sync
//! in two so that the fsync itself ([`SyncJob::run`]) can run on another thread while the
//! owner keeps appending; [`Log::finish_sync`] then moves the durable offset to what the
//! job covered (everything appended before it began). Sealed (non-last) segments are
//! durable when the roll seals them, or — with [`Log::set_deferred_seal`] — once the next
//! sync job (which fsyncs them first and then writes their `.idx`) completed, so a roll
//! never fsyncs on the owner's loop. An ack is written to its ack
//! file only once the record it acks is durable, so an ack on disk never refers to a
//! record that a crash could lose (offsets of lost records are reused). After a failed
//! fsync the log refuses writes ([`LogError::Poisoned`]) until reopened, since the kernel
//! may have dropped the dirty pages (a retried fsync could "succeed" without them).

pub mod ack;
pub mod backend;
mod error;
pub mod fault;
pub mod group;
pub mod index;
pub mod record;
mod recover;
mod rewrite;
mod segment;
mod sync;
pub mod tracked;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ferrymq_core::queue::Offset;
use tracing::{debug, warn};

pub use backend::{Backend, BackendFile, FileBackend};
pub use error::{Corruption, LogError};
pub use group::{Commit, FsyncPolicy, GroupCommit};
pub use rewrite::{PreparedRewrite, SealedSegment};
pub use sync::SyncJob;
pub use tracked::TrackedLog;

use ack::AckSet;
use index::SparseIndex;
use segment::{path_in, Cursor, Segment};

/// Pending acks above this count are written out (without fsync) at once.
const ACK_FLUSH_THRESHOLD: usize = 4096;
/// Chunk size of sequential reads.
const READ_CHUNK: usize = 64 * 1024;

/// Tunables of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment starts when the active one would grow past this (a single larger
    /// record still gets a segment of its own). Capped at 2 GiB so index positions fit u32.
    pub max_segment_bytes: u64,
    /// Bytes of records between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Largest payload accepted; a length field above it marks a record as corrupt.
    pub max_record_bytes: u32,
    /// Appends are buffered up to this many bytes before being written to the file.
    pub write_buffer_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_segment_bytes: 8 << 20,
            index_interval_bytes: 4096,
            max_record_bytes: 16 << 20,
            write_buffer_bytes: 256 << 10,
        }
    }
}

/// What [`Log::segment_infos`] reports about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base: Offset,
    pub next: Offset,
    pub bytes: u64,
    pub max_timestamp: i64,
    /// False for the active (last) segment.
    pub sealed: bool,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: Offset,
    /// Milliseconds since the Unix epoch, as given to [`Log::append`].
    pub timestamp: i64,
    pub payload: Vec<u8>,
}

/// A segmented append-only log in one directory. One owner (a queue or partition task, or
/// the [`GroupCommit`] thread) calls it; nothing inside is shared.
pub struct Log<B: Backend> {
    backend: B,
    dir: PathBuf,
    config: LogConfig,
    /// By base offset; the last one is the active segment.
    segments: BTreeMap<Offset, Segment<B::File>>,
    next: Offset,
    durable: Offset,
    /// Acked offsets not yet written to an ack file.
    pending_acks: Vec<Offset>,
    /// The durable offset at the last early ack write: pending acks above it cannot be
    /// written until `durable` moves, so the threshold check waits for that (otherwise
    /// every ack would rescan the whole pending list when nothing syncs, e.g. `never`).
    acks_written_at: Offset,
    poisoned: bool,
    /// A file was created in the log directory since its last fsync.
    dir_dirty: bool,
    /// A roll leaves the sealed segment's fsync and `.idx` to the next sync job.
    defer_seal: bool,
}

impl<B: Backend> std::fmt::Debug for Log<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("segments", &self.segments.keys().collect::<Vec<_>>())
            .field("next", &self.next)
            .field("durable", &self.durable)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<B: Backend> Log<B> {
    /// Opens the log in `dir`, creating it if needed, and recovers: sealed segments'
    /// indexes are loaded (or rebuilt), the last segment is scanned and a torn or corrupt
    /// tail is cut off and logged, ack files are replayed up to their first bad entry, and
    /// fully acked segments are deleted. Everything recovered is durable on return.
    pub fn open(
        backend: B,
        dir: impl AsRef<Path>,
        mut config: LogConfig,
    ) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        config.max_segment_bytes = config.max_segment_bytes.clamp(1, 2 << 30);
        config.index_interval_bytes = config.index_interval_bytes.max(1);
        backend
            .create_dir_all(&dir)
            .map_err(|e| LogError::io("create dir", &dir, e))?;
        let names = backend
            .list(&dir)
            .map_err(|e| LogError::io("list", &dir, e))?;
        let mut files: BTreeMap<Offset, (bool, bool, bool)> = BTreeMap::new();
        for name in &names {
            match segment::parse_file_name(name) {
                Some((base, "seg")) => files.entry(base).or_default().0 = true,
                Some((base, "idx")) => files.entry(base).or_default().1 = true,
                Some((base, "ack")) => files.entry(base).or_default().2 = true,
                Some((base, "cmp")) => {
                    // A rewrite (compaction) interrupted before its rename: the segment
                    // it was replacing is intact.
                    let path = path_in(&dir, base, "cmp");
                    warn!(path = %path.display(), "removing an unfinished segment rewrite");
                    backend
                        .remove(&path)
                        .map_err(|e| LogError::io("remove", &path, e))?;
                }
                _ => debug!(dir = %dir.display(), name, "ignoring unknown file in log directory"),
            }
        }
        // Index and ack files whose segment is gone: left over from an interrupted delete.
        for (&base, &(seg, idx, ack)) in &files {
            if seg {
                continue;
            }
            for (present, ext) in [(idx, "idx"), (ack, "ack")] {
                if present {
                    let path = path_in(&dir, base, ext);
                    warn!(path = %path.display(), "removing orphan file of a deleted segment");
                    backend
                        .remove(&path)
                        .map_err(|e| LogError::io("remove", &path, e))?;
                }
            }
        }
        files.retain(|_, f| f.0);

        let mut log = Log {
            backend,
            dir,
            config,
            segments: BTreeMap::new(),
            next: 0,
            durable: 0,
            pending_acks: Vec::new(),
            acks_written_at: 0,
            poisoned: false,
            dir_dirty: false,
            defer_seal: false,
        };
        if files.is_empty() {
            log.create_segment(0)?;
        }
        let last = files.keys().next_back().copied();
        for (&base, &(_, has_idx, has_ack)) in &files {
            let is_last = Some(base) == last;
            let seg = log.recover_segment(base, is_last, has_idx)?;
            if seg.base < log.next && !log.segments.is_empty() {
                return Err(LogError::Corrupt {
                    path: seg.path.clone(),
                    position: 0,
                    reason: Corruption::WrongOffset {
                        expected: log.next,
                        found: seg.base,
                    },
                });
            }
            log.next = seg.next;
            log.segments.insert(base, seg);
            if has_ack {
                log.recover_acks(base)?;
            }
        }
        log.durable = log.next;
        log.reap()?;
        // What recovery reports must be durable, entries included: the last run may have
        // created files without fsyncing the directory (a restart keeps the page cache).
        log.dir_dirty = true;
        log.sync_dir()?;
        Ok(log)
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Offset the next append gets.
    pub fn next_offset(&self) -> Offset {
        self.next
    }

    /// Every record below this offset is durable.
    pub fn durable_offset(&self) -> Offset {
        self.durable
    }

    /// The lowest offset still stored (records below it were deleted).
    pub fn start_offset(&self) -> Offset {
        self.segments.keys().next().copied().unwrap_or(self.next)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, in order (the last is the active segment).
    pub fn segment_bases(&self) -> impl Iterator<Item = Offset> + '_ {
        self.segments.keys().copied()
    }

    /// Per segment, in order: base offset, next offset, size in bytes and the largest
    /// record timestamp (`i64::MIN` if empty). Retention decides from these.
    pub fn segment_infos(&self) -> Vec<SegmentInfo> {
        self.segments
            .values()
            .map(|s| SegmentInfo {
                base: s.base,
                next: s.next,
                bytes: s.len(),
                max_timestamp: if s.count() == 0 {
                    i64::MIN
                } else {
                    s.index.max_timestamp()
                },
                sealed: s.sealed,
            })
            .collect()
    }

    /// Whether a roll leaves the sealed segment's fsync (and its `.idx`) to the next sync
    /// job instead of doing it inline. Only for owners that begin a sync after every round
    /// (the `always` policy): under `never` the roll's fsync is the only one.
    pub fn set_deferred_seal(&mut self, on: bool) {
        self.defer_seal = on;
    }

    /// Changes the size at which the active segment rolls (takes effect on next append).
    pub fn set_max_segment_bytes(&mut self, bytes: u64) {
        self.config.max_segment_bytes = bytes.clamp(1, 2 << 30);
    }

    /// Whether something is not durable yet: records, acks or directory entries.
    pub fn has_unsynced(&self) -> bool {
        self.durable < self.next
            || !self.pending_acks.is_empty()
            || self.dir_dirty
            || self.segments.values().any(|s| s.ack_dirty)
    }

    /// Whether a failed fsync or write has stopped writes until the log is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.poisoned {
            Err(LogError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn active(&mut self) -> &mut Segment<B::File> {
        // The map is never empty: `open` creates a segment and the last is never deleted.
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Appends one record; returns its offset. It is durable after the next [`Log::sync`].
    pub fn append(&mut self, payload: &[u8], timestamp: i64) -> Result<Offset, LogError> {
        self.append_framed(payload.len(), timestamp, |buf, offset| {
            record::encode(buf, offset, timestamp, payload)
        })
    }

    /// Appends one record whose payload is `head ‖ tail` without joining them first (a
    /// Kafka partition stores a batch this way: the rewritten base offset as `head`, the
    /// rest of the batch as received as `tail`, copied once, into the write buffer).
    pub fn append_parts(
        &mut self,
        head: &[u8],
        tail: &[u8],
        timestamp: i64,
    ) -> Result<Offset, LogError> {
        self.append_framed(head.len() + tail.len(), timestamp, |buf, offset| {
            record::encode_parts(buf, offset, timestamp, head, tail)
        })
    }

    /// The common part of the appends: size checks, rolling, buffering, indexing; `encode`
    /// frames the record (of `len` payload bytes) at the offset it is given.
    fn append_framed(
        &mut self,
        len: usize,
        timestamp: i64,
        encode: impl FnOnce(&mut Vec<u8>, Offset),
    ) -> Result<Offset, LogError> {
        self.check_writable()?;
        if len > self.config.max_record_bytes as usize {
            return Err(LogError::RecordTooLarge {
                size: len,
                max: self.config.max_record_bytes,
            });
        }
        let frame = record::frame_len(len);
        let (active_len, active_count) = {
            let a = self.active();
            (a.len(), a.count())
        };
        if active_count > 0 && active_len + frame > self.config.max_segment_bytes {
            self.roll()?;
        }
        if !self.active().buf.is_empty()
            && self.active().buf.len() as u64 + frame > self.config.write_buffer_bytes as u64
        {
            self.flush()?;
        }
        let offset = self.next;
        let seg = self.active();
        let rel = u32::try_from(offset - seg.base)
            .map_err(|_| LogError::RecordTooLarge { size: len, max: 0 })?;
        let position = seg.len();
        seg.index.on_append(rel, position, frame, timestamp);
        encode(&mut seg.buf, offset);
        seg.next = offset + 1;
        self.next = offset + 1;
        Ok(offset)
    }

    /// Appends records in order; returns their offsets. Not atomic: on error, records
    /// before the failing one stay appended.
    pub fn append_batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a [u8], i64)>,
    ) -> Result<Range<Offset>, LogError> {
        let first = self.next;
        for (payload, ts) in records {
            self.append(payload, ts)?;
        }
        Ok(first..self.next)
    }

    /// Hands the write buffer to the OS (no fsync): survives a process crash, not a power
    /// loss. On a failed write the file is cut back and the buffer kept, so a later call
    /// can retry; if even the cut fails the log is poisoned.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_writable()?;
        let seg = self.active();
        if seg.buf.is_empty() {
            return Ok(());
        }
        match seg.file.append(&seg.buf) {
            Ok(()) => {
                seg.flushed += seg.buf.len() as u64;
                seg.buf.clear();
                Ok(())
            }
            Err(e) => {
                let err = LogError::io("write", &seg.path, e);
                let flushed = seg.flushed;
                if let Err(e2) = seg.file.truncate(flushed) {
                    warn!(path = %seg.path.display(), error = %e2, "cannot undo a failed write");
                    self.poisoned = true;
                }
                Err(err)
            }
        }
    }

    /// Seals the active segment now if it holds a record (a time-based roll, as Kafka's
    /// `segment.ms`); true if it did.
    pub fn roll_now(&mut self) -> Result<bool, LogError> {
        self.check_writable()?;
        if self.active().count() == 0 {
            return Ok(false);
        }
        self.roll()?;
        Ok(true)
    }

    /// Seals the active segment (fsync, index file) and starts a new one.
    fn roll(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let next = self.next;
        if self.defer_seal {
            // The next sync job fsyncs it, writes its `.idx` and the directory; until
            // that job completed its records are not durable (`durable` stays).
            self.active().sealed = true;
            if let Err(e) = self.create_segment(next) {
                self.active().sealed = false;
                return Err(e);
            }
            debug!(dir = %self.dir.display(), base = next, "new segment (seal deferred)");
            return Ok(());
        }
        let seg = self.active();
        if let Err(e) = seg.file.sync() {
            let err = LogError::io("fsync", &seg.path, e);
            self.poisoned = true;
            return Err(err);
        }
        seg.synced = seg.flushed;
        seg.sealed = true;
        let base = seg.base;
        // The sealed segment's entry must be durable before its records count as such;
        // unconditionally, as a sync in flight may have taken the dirty flag.
        if let Err(e) = self.backend.sync_dir(&self.dir) {
            self.poisoned = true;
            return Err(LogError::io("fsync", &self.dir, e));
        }
        self.durable = next;
        if let Some(seg) = self.segments.get(&base) {
            self.write_index(seg);
        }
        if let Err(e) = self.create_segment(next) {
            if let Some(seg) = self.segments.get_mut(&base) {
                seg.sealed = false;
            }
            let _ = self.backend.remove(&path_in(&self.dir, base, "idx"));
            return Err(e);
        }
        debug!(dir = %self.dir.display(), base = next, "new segment");
        Ok(())
    }

    fn segment_of(&self, offset: Offset) -> Result<&Segment<B::File>, LogError> {
        match self.segments.range(..=offset).next_back() {
            Some((_, seg)) if offset < seg.next => Ok(seg),
            _ => Err(LogError::NoSuchOffset {
                offset,
                start: self.start_offset(),
                end: self.next,
            }),
        }
    }

    /// Reads the record at `offset` from its segment file.
    pub fn read(&self, offset: Offset) -> Result<Record, LogError> {
        let seg = self.segment_of(offset)?;
        let rel = (offset - seg.base) as u32;
        let (start_rel, pos) = seg.index.floor(rel);
        let chunk = (self.config.index_interval_bytes as usize)
            .saturating_mul(2)
            .min(READ_CHUNK);
        let mut cursor = Cursor::new(pos, chunk);
        let max = self.config.max_record_bytes;
        match cursor.seek(seg, max, seg.base + u64::from(start_rel), offset)? {
            Some(found) => Ok(Record {
                offset,
                timestamp: found.timestamp,
                payload: cursor.payload(&found).to_vec(),
            }),
            None => Err(LogError::Corrupt {
                path: seg.path.clone(),
                position: cursor.pos,
                reason: Corruption::Truncated,
            }),
        }
    }

    /// Iterates records from `offset` on (skipping deleted segments), reading the files in
    /// chunks.
    pub fn reader(&self, offset: Offset) -> LogReader<'_, B> {
        LogReader {
            log: self,
            next: offset,
            cursor: None,
        }
    }

    /// The first offset whose record has a timestamp `>= ts`, if any.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<Offset>, LogError> {
        let Some(seg) = self
            .segments
            .values()
            .find(|s| s.count() > 0 && s.index.max_timestamp() >= ts)
        else {
            return Ok(None);
        };
        let (rel, pos) = seg.index.floor_time(ts);
        let mut cursor = Cursor::new(pos, READ_CHUNK);
        let mut expected = seg.base + u64::from(rel);
        while let Some(found) = cursor.next(seg, self.config.max_record_bytes)? {
            if found.offset != expected {
                break;
            }
            if found.timestamp >= ts {
                return Ok(Some(found.offset));
            }
            expected += 1;
        }
        Err(LogError::Corrupt {
            path: seg.path.clone(),
            position: cursor.pos,
            reason: Corruption::BadHeader,
        })
    }

    /// Marks `offset` acked. Returns false if it already was (or its segment is gone).
    /// The ack is durable after the next [`Log::sync`].
    pub fn ack(&mut self, offset: Offset) -> Result<bool, LogError> {
        self.check_writable()?;
        let seg = match self.segments.range_mut(..=offset).next_back() {
            Some((_, seg)) if offset < seg.next => seg,
            _ if offset < self.next => return Ok(false),
            _ => {
                return Err(LogError::NoSuchOffset {
                    offset,
                    start: self.start_offset(),
                    end: self.next,
                })
            }
        };
        if !seg.acks.insert((offset - seg.base) as u32) {
            return Ok(false);
        }
        self.pending_acks.push(offset);
        if self.pending_acks.len() >= ACK_FLUSH_THRESHOLD && self.durable > self.acks_written_at {
            self.acks_written_at = self.durable;
            self.write_acks()?;
        }
        Ok(true)
    }

    /// Whether `offset` is acked (offsets of deleted segments count as acked).
    pub fn is_acked(&self, offset: Offset) -> bool {
        match self.segments.range(..=offset).next_back() {
            Some((_, seg)) if offset < seg.next => seg.acks.contains((offset - seg.base) as u32),
            _ => offset < self.next,
        }
    }

    /// Offsets not yet acked, in order: after [`Log::open`], exactly the messages to
    /// redeliver.
    pub fn unacked(&self) -> impl Iterator<Item = Offset> + '_ {
        self.segments.values().flat_map(|seg| {
            (0..seg.count())
                .filter_map(move |rel| (!seg.acks.contains(rel as u32)).then_some(seg.base + rel))
        })
    }

    /// Writes the pending acks of durable records to the ack files (no fsync). Acks of
    /// records not yet durable wait, so that an ack on disk never outlives its record.
    fn write_acks(&mut self) -> Result<(), LogError> {
        /// Adds a run of encoded ack entries to its segment's (moved in if it is the first).
        fn add_entries(by_segment: &mut BTreeMap<Offset, Vec<u8>>, base: Offset, bytes: Vec<u8>) {
            match by_segment.entry(base) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(bytes);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    o.get_mut().extend_from_slice(&bytes);
                }
            }
        }

        if self.pending_acks.is_empty() {
            return Ok(());
        }
        let durable = self.durable;
        let mut waiting = Vec::new();
        let mut by_segment: BTreeMap<Offset, Vec<u8>> = BTreeMap::new();
        // The segment of the previous ack (acks mostly come in runs within one segment):
        // its base, its end, and its entries so far.
        let mut run: Option<(Offset, Offset, Vec<u8>)> = None;
        for offset in std::mem::take(&mut self.pending_acks) {
            if offset >= durable {
                waiting.push(offset);
                continue;
            }
            if !matches!(&run, Some((base, end, _)) if (*base..*end).contains(&offset)) {
                if let Some((base, _, bytes)) = run.take() {
                    add_entries(&mut by_segment, base, bytes);
                }
                match self.segments.range(..=offset).next_back() {
                    Some((&base, seg)) if offset < seg.next => {
                        run = Some((base, seg.next, Vec::with_capacity(64 * ack::ENTRY_LEN)));
                    }
                    _ => continue,
                }
            }
            if let Some((base, _, bytes)) = &mut run {
                ack::encode_entry(bytes, *base, (offset - *base) as u32);
            }
        }
        if let Some((base, _, bytes)) = run {
            add_entries(&mut by_segment, base, bytes);
        }
        self.pending_acks = waiting;
        for (base, bytes) in by_segment {
            let Some(seg) = self.segments.get_mut(&base) else {
                continue;
            };
            // The path is only built when it is needed (a new file, an error).
            let path = || path_in(&self.dir, base, "ack");
            if seg.ack_file.is_none() {
                let path = path();
                match self.backend.create(&path) {
                    Ok(f) => {
                        seg.ack_file = Some((f, 0));
                        self.dir_dirty = true;
                    }
                    Err(e) => {
                        self.poisoned = true;
                        return Err(LogError::io("create", &path, e));
                    }
                }
            }
            if let Some((file, len)) = &mut seg.ack_file {
                if let Err(e) = file.append(&bytes) {
                    // A partial entry would hide every later one: stop writing.
                    self.poisoned = true;
                    return Err(LogError::io("write", path(), e));
                }
                *len += bytes.len() as u64;
                seg.ack_dirty = true;
            }
        }
        Ok(())
    }

    /// Deletes sealed segments whose records are all acked.
    fn reap(&mut self) -> Result<(), LogError> {
        let done: Vec<Offset> = self
            .segments
            .values()
            .filter(|s| s.sealed && s.all_acked())
            .map(|s| s.base)
            .collect();
        for base in done {
            self.delete_segment(base)?;
        }
        Ok(())
    }

    /// Removes a segment's files: the `.seg` first, so an interrupted delete leaves only
    /// orphans that `open` cleans up, never a segment without its acks.
    fn delete_segment(&mut self, base: Offset) -> Result<(), LogError> {
        let seg_path = path_in(&self.dir, base, "seg");
        self.backend
            .remove(&seg_path)
            .map_err(|e| LogError::io("remove", &seg_path, e))?;
        if let Some(seg) = self.segments.remove(&base) {
            self.pending_acks.retain(|o| !(base..seg.next).contains(o));
            if seg.ack_file.is_some() {
                let path = path_in(&self.dir, base, "ack");
                self.backend
                    .remove(&path)
                    .map_err(|e| LogError::io("remove", &path, e))?;
            }
        }
        let idx = path_in(&self.dir, base, "idx");
        if self.backend.remove(&idx).is_ok() {
            debug!(path = %idx.display(), "removed index");
        }
        debug!(dir = %self.dir.display(), base, "deleted segment");
        Ok(())
    }

    /// Deletes every sealed segment whose records are all below `offset` (retention).
    /// Returns the new start offset.
    pub fn truncate_before(&mut self, offset: Offset) -> Result<Offset, LogError> {
        self.check_writable()?;
        let doomed: Vec<Offset> = self
            .segments
            .values()
            .filter(|s| s.sealed && s.next <= offset)
            .map(|s| s.base)
            .collect();
        for base in doomed {
            self.delete_segment(base)?;
        }
        Ok(self.start_offset())
    }
}

/// Iterator over records from an offset on; see [`Log::reader`].
pub struct LogReader<'a, B: Backend> {
    log: &'a Log<B>,
    next: Offset,
    /// Segment base the cursor is in, and the cursor (positioned at `next`).
    cursor: Option<(Offset, Cursor)>,
}

impl<B: Backend> Iterator for LogReader<'_, B> {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        let log = self.log;
        if self.next >= log.next {
            return None;
        }
        let seg = match log.segments.range(..=self.next).next_back() {
            Some((_, seg)) if self.next < seg.next => seg,
            _ => {
                // In a gap left by a deleted (or emptied) segment: jump to the next one.
                let (_, seg) = log
                    .segments
                    .range(self.next..)
                    .find(|(_, s)| s.count() > 0)?;
                self.next = seg.base;
                self.cursor = None;
                seg
            }
        };
        let max = log.config.max_record_bytes;
        let result = match &mut self.cursor {
            Some((base, cursor)) if *base == seg.base => {
                cursor.seek(seg, max, self.next, self.next)
            }
            _ => {
                let (rel, pos) = seg.index.floor((self.next - seg.base) as u32);
                let mut cursor = Cursor::new(pos, READ_CHUNK);
                let found = cursor.seek(seg, max, seg.base + u64::from(rel), self.next);
                self.cursor = Some((seg.base, cursor));
                found
            }
        };
        match result {
            Ok(Some(found)) => {
                let payload = match &self.cursor {
                    Some((_, c)) => c.payload(&found).to_vec(),
                    None => Vec::new(),
                };
                self.next += 1;
                if self.next >= seg.next {
                    self.cursor = None;
                }
                Some(Ok(Record {
                    offset: found.offset,
                    timestamp: found.timestamp,
                    payload,
                }))
            }
            Ok(None) => {
                self.next = log.next;
                Some(Err(LogError::Corrupt {
                    path: seg.path.clone(),
                    position: 0,
                    reason: Corruption::Truncated,
                }))
            }
            Err(e) => {
                // Do not loop on the same damage forever.
                self.next = log.next;
                Some(Err(e))
            }
        }
    }
}
