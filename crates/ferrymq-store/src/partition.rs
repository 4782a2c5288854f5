//! A Kafka partition on the segmented log. Each produced record batch (magic 2) is one
//! log record whose payload is the batch exactly as the producer sent it, with its base
//! offset rewritten to the partition's next Kafka offset; the log record's timestamp is
//! the batch's max timestamp, so the log's time index answers ListOffsets by timestamp.
//! Kafka offsets and log offsets differ (a log record holds many Kafka offsets): a sparse
//! in-memory index maps every [`INDEX_EVERY`]th batch's base offset to its log offset; a
//! lookup reads forward at most that many batches. Recovery scans the stored batch headers
//! once to rebuild the index, the end offset and (through the caller's hook) producer
//! state. The log start offset moved by DeleteRecords is kept in a checkpoint file.
//! Byte layouts: `docs/storage-format.md`, "Kafka partitions".

use std::path::{Path, PathBuf};

use ferrymq_core::queue::Offset;

use crate::cleaner_state::CleanerState;
use crate::log::{Backend, Log, LogConfig, LogError, PreparedRewrite, SealedSegment, SyncJob};

/// One sparse index entry per this many batches.
pub const INDEX_EVERY: u64 = 16;
/// Suffix of the log start offset marker files (see [`Partition`]'s recovery).
pub const START_MARKER: &str = ".start";

/// The batch header fields the store reads (fixed positions of a v2 batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Reads base offset (bytes 0..8), last offset delta (23..27) and max timestamp (35..43).
pub fn read_meta(batch: &[u8]) -> Option<BatchMeta> {
    if batch.len() < 61 {
        return None;
    }
    let i64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&batch[at..at + 8]);
        i64::from_be_bytes(a)
    };
    let delta = i32::from_be_bytes([batch[23], batch[24], batch[25], batch[26]]);
    let base_offset = i64_at(0);
    Some(BatchMeta {
        base_offset,
        last_offset: base_offset + i64::from(delta.max(0)),
        max_timestamp: i64_at(35),
    })
}

/// A sync begun by [`Partition::begin_sync`]: the log's fsync work and the Kafka offset
/// below which every batch is durable once it succeeded.
pub struct PartitionSync<B: Backend> {
    job: SyncJob<B>,
    covers: i64,
}

impl<B: Backend> PartitionSync<B> {
    /// The fsyncs; runs on any thread.
    pub fn run(&self) -> Result<(), LogError> {
        self.job.run()
    }

    /// Every batch below this Kafka offset is durable once the job succeeded.
    pub fn covers(&self) -> i64 {
        self.covers
    }
}

impl<B: Backend> std::fmt::Debug for PartitionSync<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionSync")
            .field("covers", &self.covers)
            .field("job", &self.job)
            .finish()
    }
}

/// A batch read back, with its log offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub meta: BatchMeta,
    pub bytes: Vec<u8>,
}

/// A partition's log with Kafka offsets; one owner task calls it.
pub struct Partition<B: Backend + Clone> {
    backend: B,
    log: Log<B>,
    dir: PathBuf,
    /// (Kafka base offset, log offset), ascending; every `INDEX_EVERY`th batch.
    index: Vec<(i64, Offset)>,
    /// Log end offset: the offset the next record gets.
    next: i64,
    /// Offsets below this are readable (durable under `always`).
    high_watermark: i64,
    /// Log start offset.
    start: i64,
}

impl<B: Backend + Clone> std::fmt::Debug for Partition<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("dir", &self.dir)
            .field("start", &self.start)
            .field("next", &self.next)
            .finish()
    }
}

impl<B: Backend + Clone> Partition<B> {
    /// Opens (or creates) the partition in `dir` and recovers it; `on_batch` sees every
    /// stored batch in order (to rebuild producer state).
    pub fn open(
        backend: B,
        dir: impl AsRef<Path>,
        config: LogConfig,
        mut on_batch: impl FnMut(&[u8]),
    ) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let log = Log::open(backend.clone(), &dir, config)?;
        let checkpoint = read_checkpoint(&backend, &dir)?;
        let mut index = Vec::new();
        let mut next = checkpoint.unwrap_or(0);
        let mut first = None;
        for record in log.reader(log.start_offset()) {
            let record = record?;
            let Some(meta) = read_meta(&record.payload) else {
                return Err(LogError::Corrupt {
                    path: dir.clone(),
                    position: record.offset,
                    reason: crate::log::Corruption::BadHeader,
                });
            };
            first.get_or_insert(meta.base_offset);
            if record.offset % INDEX_EVERY == 0 || index.is_empty() {
                index.push((meta.base_offset, record.offset));
            }
            on_batch(&record.payload);
            next = next.max(meta.last_offset + 1);
        }
        let start = match (first, checkpoint) {
            (Some(f), Some(c)) => f.max(c),
            (Some(f), None) => f,
            (None, Some(c)) => c,
            (None, None) => 0,
        }
        .min(next);
        Ok(Partition {
            backend,
            log,
            dir,
            index,
            next,
            high_watermark: next,
            start,
        })
    }

    /// The offset the next record gets (log end offset).
    pub fn next_offset(&self) -> i64 {
        self.next
    }

    /// Records below this are visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The log start offset.
    pub fn start_offset(&self) -> i64 {
        self.start
    }

    /// Bytes stored (all segments).
    pub fn size_bytes(&self) -> u64 {
        self.log.segment_infos().iter().map(|s| s.bytes).sum()
    }

    /// Appends one batch holding `last_offset_delta + 1` offsets, as received: its base
    /// offset is rewritten to the partition's next offset on the way into the log (the
    /// rest of the bytes are copied once, into the log's write buffer) and returned.
    /// Readable once a sync covering it has finished ([`Partition::sync`],
    /// [`Partition::finish_sync`]) or after [`Partition::flush`].
    pub fn append(&mut self, batch: &[u8]) -> Result<i64, LogError> {
        let Some(meta) = read_meta(batch) else {
            return Err(LogError::Corrupt {
                path: self.dir.clone(),
                position: 0,
                reason: crate::log::Corruption::BadHeader,
            });
        };
        let base = self.next;
        let log_offset =
            self.log
                .append_parts(&base.to_be_bytes(), &batch[8..], meta.max_timestamp)?;
        if log_offset % INDEX_EVERY == 0 || self.index.is_empty() {
            self.index.push((base, log_offset));
        }
        self.next = base + (meta.last_offset - meta.base_offset) + 1;
        Ok(base)
    }

    /// Makes every append durable (fsync) and visible.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.log.sync()?;
        self.high_watermark = self.next;
        Ok(())
    }

    /// Starts a sync of everything appended so far without waiting for it (the log's
    /// [`Log::begin_sync`]): the returned job's [`PartitionSync::run`] does the fsyncs on
    /// any thread while the owner keeps appending and reading; [`Partition::finish_sync`]
    /// then moves the high watermark to the Kafka offset the job covers. `None`: nothing
    /// to fsync, the high watermark is already at the log end.
    pub fn begin_sync(&mut self) -> Result<Option<PartitionSync<B>>, LogError> {
        let covers = self.next;
        match self.log.begin_sync()? {
            Some(job) => Ok(Some(PartitionSync { job, covers })),
            None => {
                self.high_watermark = self.high_watermark.max(covers);
                Ok(None)
            }
        }
    }

    /// Ends a sync begun by [`Partition::begin_sync`] with the outcome of its
    /// [`PartitionSync::run`]. On success every batch below the job's Kafka offset is
    /// durable and visible: returns the new high watermark. A failed fsync poisons the log
    /// (no later append succeeds until the partition is reopened) and leaves the high
    /// watermark where it was: nothing appended since the last good sync becomes visible.
    pub fn finish_sync(
        &mut self,
        sync: PartitionSync<B>,
        result: Result<(), LogError>,
    ) -> Result<i64, LogError> {
        let covers = sync.covers;
        self.log.finish_sync(sync.job, result)?;
        self.high_watermark = self.high_watermark.max(covers);
        Ok(self.high_watermark)
    }

    /// Whether a failed write or fsync has stopped appends until the partition is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.log.is_poisoned()
    }

    /// Hands appends to the OS without fsync and makes them visible (`interval`/`never`).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.log.flush()?;
        self.high_watermark = self.next;
        Ok(())
    }

    /// The log offset to start reading at for Kafka offset `offset`.
    fn floor(&self, offset: i64) -> Offset {
        let i = self.index.partition_point(|&(k, _)| k <= offset);
        if i == 0 {
            self.log.start_offset()
        } else {
            self.index[i - 1].1.max(self.log.start_offset())
        }
    }

    /// Reads whole batches from the one containing `offset` on, below the high
    /// watermark, while `take(size_of_next, bytes_so_far)` says yes.
    pub fn read(
        &self,
        offset: i64,
        mut take: impl FnMut(usize, usize) -> bool,
    ) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::new();
        if offset >= self.high_watermark || offset < self.start {
            return Ok(out);
        }
        for record in self.log.reader(self.floor(offset)) {
            let record = record?;
            let Some(meta) = read_meta(&record.payload) else {
                break;
            };
            if meta.base_offset >= self.high_watermark {
                break;
            }
            if meta.last_offset < offset {
                continue;
            }
            if !take(record.payload.len(), out.len()) {
                break;
            }
            out.extend_from_slice(&record.payload);
        }
        Ok(out)
    }

    /// The base offset of the first batch whose max timestamp is `>= ts`, if any.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>, LogError> {
        let Some(log_offset) = self.log.offset_for_timestamp(ts)? else {
            return Ok(None);
        };
        let record = self.log.read(log_offset)?;
        Ok(read_meta(&record.payload).map(|m| m.base_offset.max(self.start)))
    }

    /// Moves the log start offset up to `offset` (DeleteRecords), durably, and deletes
    /// whole segments below it. Returns the new start offset.
    pub fn delete_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let offset = offset.min(self.high_watermark);
        if offset <= self.start {
            return Ok(self.start);
        }
        write_checkpoint(&self.backend, &self.dir, self.start, offset)?;
        self.start = offset;
        // Log offset of the batch holding `offset`: segments wholly below it can go.
        let mut cut = self.log.start_offset();
        for record in self.log.reader(self.floor(offset)) {
            let record = record?;
            match read_meta(&record.payload) {
                Some(m) if m.last_offset < offset => cut = record.offset + 1,
                _ => break,
            }
        }
        self.log.truncate_before(cut)?;
        self.prune_index();
        Ok(self.start)
    }

    /// Retention: deletes the oldest sealed segments whose newest record is older than
    /// `now_ms - retention_ms`, then while the partition is above `retention_bytes`
    /// (either -1: no limit). Returns how many segments went.
    pub fn enforce_retention(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<usize, LogError> {
        let infos = self.log.segment_infos();
        let mut total: u64 = infos.iter().map(|s| s.bytes).sum();
        let mut cut = None;
        for s in infos.iter().filter(|s| s.sealed) {
            let old = retention_ms >= 0 && s.max_timestamp < now_ms.saturating_sub(retention_ms);
            let big =
                retention_bytes >= 0 && total.saturating_sub(s.bytes) >= retention_bytes as u64;
            if !(old || big) {
                break;
            }
            total -= s.bytes;
            cut = Some(s.next);
        }
        let Some(cut) = cut else {
            return Ok(0);
        };
        let before = self.log.segment_count();
        self.log.truncate_before(cut)?;
        let gone = before - self.log.segment_count();
        // The new start: the first batch left.
        let first = self
            .log
            .reader(self.log.start_offset())
            .next()
            .transpose()?
            .and_then(|r| read_meta(&r.payload));
        let new_start = first.map_or(self.next, |m| m.base_offset);
        if new_start > self.start {
            write_checkpoint(&self.backend, &self.dir, self.start, new_start)?;
            self.start = new_start;
        }
        self.prune_index();
        Ok(gone)
    }

    /// Every stored batch from the log start on, oldest first, with whether it lies in a
    /// sealed segment (compaction may rewrite those; the active segment is left alone).
    pub fn batches(&self) -> Result<Vec<(bool, Vec<u8>)>, LogError> {
        let infos = self.log.segment_infos();
        let mut out = Vec::new();
        for record in self.log.reader(self.log.start_offset()) {
            let record = record?;
            let sealed = infos
                .iter()
                .any(|s| s.sealed && (s.base..s.next).contains(&record.offset));
            out.push((sealed, record.payload));
        }
        Ok(out)
    }

    /// Rewrites sealed segments: `rewrite` gets each stored batch and returns a
    /// replacement (which must keep the batch's base offset and last offset delta) or
    /// `None` to keep it. Segments with no replaced batch are not touched. Returns how many
    /// segments were rewritten.
    pub fn rewrite_sealed(
        &mut self,
        mut rewrite: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<usize, LogError> {
        let mut rewritten = 0;
        for seg in self.log.sealed_segments() {
            if let Some(prepared) = seg.rewrite(|_, payload| rewrite(payload))? {
                if self.log.install_rewrite(prepared)? {
                    rewritten += 1;
                }
            }
        }
        Ok(rewritten)
    }

    /// The sealed segments, oldest first, for compaction off the owner (see
    /// [`crate::log::SealedSegment`]).
    pub fn sealed_segments(&self) -> Vec<SealedSegment<B>> {
        self.log.sealed_segments()
    }

    /// Installs a compacted segment (rename + index, on the owner). False if the segment
    /// is gone meanwhile. Kafka offsets and the sparse index are unchanged: a rewrite
    /// keeps every batch's base and last offset.
    pub fn install_rewrite(&mut self, prepared: PreparedRewrite) -> Result<bool, LogError> {
        self.log.install_rewrite(prepared)
    }

    /// Removes a compacted segment that will not be installed.
    pub fn discard_rewrite(&self, prepared: PreparedRewrite) {
        self.log.discard_rewrite(prepared);
    }

    /// The cleaner checkpoint (default if none was written).
    pub fn cleaner_state(&self) -> CleanerState {
        CleanerState::read(&self.backend, &self.dir)
    }

    /// Writes the cleaner checkpoint durably.
    pub fn write_cleaner_state(&self, state: &CleanerState) -> Result<(), LogError> {
        state.write(&self.backend, &self.dir)
    }

    fn prune_index(&mut self) {
        let log_start = self.log.start_offset();
        let keep_from = self.index.partition_point(|&(_, l)| l < log_start);
        self.index.drain(..keep_from);
    }

    /// Seals the active segment if it holds a record (a time-based roll); true if it did.
    pub fn roll(&mut self) -> Result<bool, LogError> {
        self.log.roll_now()
    }

    /// The timestamp of the active segment's first record (`None` if it is empty).
    pub fn active_first_timestamp(&self) -> Result<Option<i64>, LogError> {
        let base = self.active_segment_base();
        match self.log.reader(base).next().transpose()? {
            Some(r) if r.offset == base => Ok(Some(r.timestamp)),
            _ => Ok(None),
        }
    }

    /// Changes the segment size for later rolls.
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        self.log.set_max_segment_bytes(bytes);
    }

    /// The base log offset of the active segment (changes when a segment is sealed).
    pub fn active_segment_base(&self) -> Offset {
        self.log.segment_bases().last().unwrap_or_default()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// The directory of this partition.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The log start offset is kept as the name of an empty marker file `<offset>.start`:
/// creating a file is durable when the backend returns (directory fsync), so moving the
/// start is one create (then the older markers are removed). The largest marker wins.
fn read_checkpoint<B: Backend>(backend: &B, dir: &Path) -> Result<Option<i64>, LogError> {
    let names = backend
        .list(dir)
        .map_err(|e| LogError::io("list", dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| n.strip_suffix(START_MARKER)?.parse::<i64>().ok())
        .max())
}

fn write_checkpoint<B: Backend>(
    backend: &B,
    dir: &Path,
    old: i64,
    start: i64,
) -> Result<(), LogError> {
    let path = dir.join(format!("{start}{START_MARKER}"));
    if let Err(e) = backend.create(&path) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(LogError::io("create", &path, e));
        }
    }
    // The new marker's entry must be durable before the old one is removed.
    backend
        .sync_dir(dir)
        .map_err(|e| LogError::io("fsync", dir, e))?;
    let old_path = dir.join(format!("{old}{START_MARKER}"));
    if old != start {
        let _ = backend.remove(&old_path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fault::{CrashMode, FaultBackend};

    fn config() -> LogConfig {
        LogConfig {
            max_segment_bytes: 2048,
            index_interval_bytes: 256,
            max_record_bytes: 1 << 20,
            write_buffer_bytes: 512,
        }
    }

    /// A stand-in v2 batch: the header fields the store reads, `n` offsets, a payload
    /// naming the batch so reads can be checked.
    fn batch(n: i32, max_ts: i64, tag: u32) -> Vec<u8> {
        let mut b = vec![0u8; 61];
        b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        b[35..43].copy_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&tag.to_be_bytes());
        b.extend_from_slice(&[0xab; 40]);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn tags(bytes: &[u8]) -> Vec<(i64, u32)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let m = read_meta(rest).unwrap();
            out.push((
                m.base_offset,
                u32::from_be_bytes(rest[61..65].try_into().unwrap()),
            ));
            rest = &rest[105..];
        }
        out
    }

    fn open(disk: &FaultBackend, seen: &mut Vec<i64>) -> Partition<FaultBackend> {
        Partition::open(disk.clone(), "p", config(), |b| {
            seen.push(read_meta(b).unwrap().base_offset)
        })
        .unwrap()
    }

    #[test]
    fn a_time_roll_seals_the_active_segment() {
        let disk = FaultBackend::new(2);
        let mut p = open(&disk, &mut Vec::new());
        assert_eq!(p.active_first_timestamp().unwrap(), None);
        assert!(!p.roll().unwrap(), "an empty active segment stays");
        p.append(&batch(2, 700, 1)).unwrap();
        p.append(&batch(1, 900, 2)).unwrap();
        assert_eq!(p.active_first_timestamp().unwrap(), Some(700));
        let before = p.segment_count();
        assert!(p.roll().unwrap());
        p.sync().unwrap();
        assert_eq!(p.segment_count(), before + 1);
        assert_eq!(p.active_first_timestamp().unwrap(), None);
        let sealed = p.sealed_segments();
        let last = sealed.last().unwrap();
        assert_eq!(
            (last.max_timestamp, last.first_timestamp().unwrap()),
            (900, Some(700))
        );
        assert!(!p.roll().unwrap());
        // Appends go on in the new segment; everything reads back after a reopen.
        p.append(&batch(1, 950, 3)).unwrap();
        p.sync().unwrap();
        drop(p);
        let p = open(&disk, &mut Vec::new());
        let got = p.read(0, |_, _| true).unwrap();
        assert_eq!(tags(&got), [(0, 1), (2, 2), (3, 3)]);
    }

    #[test]
    fn offsets_reads_and_lookups() {
        let disk = FaultBackend::new(1);
        let mut p = open(&disk, &mut Vec::new());
        let mut bases = Vec::new();
        for tag in 0..100u32 {
            let b = batch(1 + (tag % 3) as i32, 1000 + i64::from(tag), tag);
            bases.push(p.append(&b).unwrap());
        }
        // Not visible before publish.
        assert!(p.read(0, |_, _| true).unwrap().is_empty());
        p.sync().unwrap();
        assert_eq!(p.high_watermark(), p.next_offset());
        assert!(p.segment_count() > 2);
        // Every offset lands in the batch that holds it.
        for (tag, &base) in bases.iter().enumerate() {
            let n = 1 + (tag % 3) as i64;
            for o in base..base + n {
                let got = p.read(o, |_, so_far| so_far == 0).unwrap();
                assert_eq!(tags(&got), [(base, tag as u32)], "offset {o}");
            }
        }
        // A budget stops at whole batches.
        let got = p.read(0, |_, so_far| so_far < 300).unwrap();
        assert_eq!(tags(&got).len(), 3);
        assert!(p.read(p.next_offset(), |_, _| true).unwrap().is_empty());
        // Time lookup: the first batch whose max timestamp reaches the target.
        assert_eq!(p.offset_for_timestamp(1050).unwrap(), Some(bases[50]));
        assert_eq!(p.offset_for_timestamp(0).unwrap(), Some(0));
        assert_eq!(p.offset_for_timestamp(5000).unwrap(), None);
    }

    #[test]
    fn crash_keeps_what_was_synced_and_rebuilds_state() {
        for seed in 0..40 {
            let disk = FaultBackend::new(seed);
            let mut p = open(&disk, &mut Vec::new());
            for tag in 0..30u32 {
                let b = batch(2, 10, tag);
                p.append(&b).unwrap();
                if tag % 7 == 6 {
                    p.sync().unwrap();
                }
            }
            // Tags 0..=27 were synced, 28 and 29 not; power loss.
            drop(p);
            disk.crash(CrashMode::all());
            let mut seen = Vec::new();
            let mut p = open(&disk, &mut seen);
            assert!(
                (28..=30).contains(&seen.len()),
                "seed {seed}: {}",
                seen.len()
            );
            assert_eq!(p.next_offset(), seen.len() as i64 * 2, "seed {seed}");
            // Offsets continue densely after recovery.
            assert_eq!(
                seen,
                (0..seen.len() as i64).map(|i| i * 2).collect::<Vec<_>>()
            );
            let b = batch(1, 10, 99);
            assert_eq!(p.append(&b).unwrap(), seen.len() as i64 * 2, "seed {seed}");
        }
    }

    #[test]
    fn rewriting_sealed_segments_keeps_offsets_and_survives_crashes() {
        for seed in 0..20 {
            let disk = FaultBackend::new(seed);
            let mut p = open(&disk, &mut Vec::new());
            for tag in 0..40u32 {
                let b = batch(2, i64::from(tag), tag);
                p.append(&b).unwrap();
            }
            p.sync().unwrap();
            let before = p.segment_count();
            // Shrink every even-tagged batch to its header (a stand-in for compaction).
            let n = p
                .rewrite_sealed(|b| {
                    let tag = u32::from_be_bytes(b[61..65].try_into().unwrap());
                    (tag % 2 == 0).then(|| {
                        let mut short = b[..65].to_vec();
                        short.extend_from_slice(&[0xcd; 40]);
                        short[65..].fill(0xee);
                        short
                    })
                })
                .unwrap();
            assert_eq!(n, before - 1, "every sealed segment held an even tag");
            assert_eq!(p.segment_count(), before);
            let check = |p: &Partition<FaultBackend>| {
                for tag in 0..40u32 {
                    let base = i64::from(tag) * 2;
                    let got = p.read(base + 1, |_, s| s == 0).unwrap();
                    assert_eq!(tags(&got), [(base, tag)], "seed {seed} tag {tag}");
                }
            };
            check(&p);
            // A crash right after: everything rewritten was fsynced and renamed.
            drop(p);
            disk.crash(CrashMode::all());
            let mut seen = Vec::new();
            let p = open(&disk, &mut seen);
            assert_eq!(seen.len(), 40);
            check(&p);
            let sealed_even = p
                .batches()
                .unwrap()
                .into_iter()
                .filter(|(sealed, b)| *sealed && b[64] % 2 == 0)
                .all(|(_, b)| b[65..].iter().all(|&x| x == 0xee));
            assert!(sealed_even, "seed {seed}");
        }
    }

    #[test]
    fn a_rewrite_prepared_off_the_owner_is_installed_or_discarded() {
        let disk = FaultBackend::new(5);
        let mut p = open(&disk, &mut Vec::new());
        for tag in 0..60u32 {
            p.append(&batch(1, i64::from(tag), tag)).unwrap();
        }
        p.sync().unwrap();
        let mark = |b: &[u8]| {
            let mut m = b.to_vec();
            m[65..].fill(0xee);
            m
        };
        let marked = |b: &[u8]| b[65..].iter().all(|&x| x == 0xee);
        let prepare = |p: &mut Partition<FaultBackend>, more: std::ops::Range<u32>| {
            let sealed = p.sealed_segments();
            assert!(sealed.len() >= 3);
            let end = sealed.last().unwrap().next;
            // The copies are written on another thread while the owner appends.
            std::thread::scope(|s| {
                let job = s.spawn(|| {
                    sealed
                        .iter()
                        .map(|seg| seg.rewrite(|_, b| Some(mark(b))).unwrap().unwrap())
                        .collect::<Vec<_>>()
                });
                for tag in more {
                    p.append(&batch(1, i64::from(tag), tag)).unwrap();
                }
                p.sync().unwrap();
                (job.join().unwrap(), end)
            })
        };
        // A crash before the install: the old segments, the copies removed at open.
        let (prepared, _) = prepare(&mut p, 60..80);
        drop(prepared);
        drop(p);
        disk.crash(CrashMode::all());
        let mut seen = Vec::new();
        let mut p = open(&disk, &mut seen);
        assert_eq!(seen.len(), 80);
        assert!(p.batches().unwrap().iter().all(|(_, b)| !marked(b)));
        let cmp_left = |disk: &FaultBackend| {
            disk.list(Path::new("p"))
                .unwrap()
                .iter()
                .any(|n| n.ends_with(".cmp"))
        };
        assert!(!cmp_left(&disk));
        // Retention deletes the first segment while its copy is being written: that copy
        // is discarded, the others installed.
        let (prepared, end) = prepare(&mut p, 80..100);
        let first = p.sealed_segments()[0].next as i64;
        assert_eq!(p.enforce_retention(first, 0, -1).unwrap(), 1);
        let installed: Vec<bool> = prepared
            .into_iter()
            .map(|r| p.install_rewrite(r).unwrap())
            .collect();
        assert!(!installed[0], "its segment is gone");
        assert!(installed[1..].iter().all(|&i| i));
        assert!(!cmp_left(&disk));
        let check = |p: &Partition<FaultBackend>| {
            assert!(p.start_offset() > 0);
            for (_, b) in p.batches().unwrap() {
                let tag = read_meta(&b).unwrap().base_offset as u64;
                assert_eq!(marked(&b), tag < end, "tag {tag}");
            }
            for tag in (p.start_offset() as u32)..100 {
                let got = p.read(i64::from(tag), |_, s| s == 0).unwrap();
                assert_eq!(tags(&got)[0], (i64::from(tag), tag));
            }
        };
        check(&p);
        drop(p);
        disk.crash(CrashMode::all());
        let p = open(&disk, &mut Vec::new());
        check(&p);
    }

    #[test]
    fn an_unfinished_rewrite_is_discarded() {
        let disk = FaultBackend::new(9);
        let mut p = open(&disk, &mut Vec::new());
        for tag in 0..40u32 {
            let b = batch(1, 0, tag);
            p.append(&b).unwrap();
        }
        p.sync().unwrap();
        drop(p);
        // A leftover rewrite file (crash before its rename) is removed at open.
        let stray = std::path::Path::new("p").join("00000000000000000000.cmp");
        disk.set_contents(&stray, vec![1, 2, 3]);
        let p = open(&disk, &mut Vec::new());
        assert!(disk.contents(&stray).is_none());
        assert_eq!(p.next_offset(), 40);
    }

    #[test]
    fn delete_records_and_retention_survive_reopen() {
        let disk = FaultBackend::new(3);
        let mut p = open(&disk, &mut Vec::new());
        for tag in 0..60u32 {
            let b = batch(1, i64::from(tag) * 100, tag);
            p.append(&b).unwrap();
        }
        p.sync().unwrap();
        let segments = p.segment_count();
        assert_eq!(p.delete_before(25).unwrap(), 25);
        assert!(p.segment_count() < segments);
        assert!(p.read(24, |_, _| true).unwrap().is_empty());
        assert_eq!(tags(&p.read(25, |_, s| s == 0).unwrap()), [(25, 25)]);
        drop(p);
        let p = open(&disk, &mut Vec::new());
        assert_eq!(p.start_offset(), 25);
        assert_eq!(p.next_offset(), 60);
        drop(p);
        // Retention by time: segments whose newest record is older than 5000 - 1000.
        let mut p = open(&disk, &mut Vec::new());
        let gone = p.enforce_retention(5000, 1000, -1).unwrap();
        assert!(gone > 0);
        assert!(p.start_offset() > 25);
        let first = tags(&p.read(p.start_offset(), |_, s| s == 0).unwrap())[0];
        assert_eq!(first.0, p.start_offset());
        // Retention by size keeps at most the active segment plus what fits.
        let gone = p.enforce_retention(5000, -1, 0).unwrap();
        assert!(gone > 0);
        assert_eq!(p.segment_count(), 1);
        let start = p.start_offset();
        drop(p);
        let p = open(&disk, &mut Vec::new());
        assert_eq!(p.start_offset(), start);
        assert_eq!(p.next_offset(), 60);
    }
}
