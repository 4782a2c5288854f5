//! The durable journal of Kafka committed offsets: every `OffsetCommit` a group coordinator
//! accepts is appended as one CRC-framed record, and every deleted group as a tombstone. The
//! owner (the group service) appends a round of commits and then calls [`OffsetJournal::sync`]
//! once before any of them is acknowledged, so one fsync covers a whole round.
//!
//! The journal lives in `offsets-<generation>.journal` files. Every file starts with a
//! snapshot of the live offsets ended by a `SnapshotEnd` record; appends follow. Compaction
//! writes the live offsets into the next generation's file, fsyncs it, and only then removes
//! the old one, so a crash at any point leaves one file with a complete snapshot. On open the
//! newest file holding a complete snapshot wins, newer incomplete files and older files are
//! removed, and a torn or corrupt tail is cut off. Layout: `docs/storage-format.md`,
//! "Committed offsets journal". Generic over [`Backend`] so tests can crash the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::framing::{self, HEADER};
use crate::log::{Backend, BackendFile};
use crate::StoreError;

/// One committed offset of one partition, as the group coordinator stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// When the commit was accepted (milliseconds since the Unix epoch).
    pub commit_timestamp_ms: i64,
}

/// One change recorded in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetOp {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        committed: CommittedOffset,
    },
    /// The group and all its offsets were deleted.
    DeleteGroup { group: String },
    /// One offset of a group expired (`offsets.retention.minutes`).
    DeleteOffset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// Marks the end of the snapshot that starts every file.
    SnapshotEnd,
}

/// The live offsets: group → (topic, partition) → offset.
pub type OffsetMap = BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>;

const TAG_COMMIT: u8 = 1;
const TAG_DELETE_GROUP: u8 = 2;
const TAG_SNAPSHOT_END: u8 = 3;
const TAG_DELETE_OFFSET: u8 = 4;
const MAX_RECORD: usize = 1 << 20;
/// Default compaction threshold (see `compact_min_bytes`).
const COMPACT_MIN_BYTES: u64 = 4 << 20;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl OffsetOp {
    /// Encodes the payload (tag + fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            OffsetOp::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                o.push(TAG_COMMIT);
                put_str(&mut o, group);
                put_str(&mut o, topic);
                o.extend_from_slice(&partition.to_be_bytes());
                o.extend_from_slice(&committed.offset.to_be_bytes());
                o.extend_from_slice(&committed.leader_epoch.to_be_bytes());
                o.extend_from_slice(&committed.commit_timestamp_ms.to_be_bytes());
                match &committed.metadata {
                    None => o.push(0),
                    Some(m) => {
                        o.push(1);
                        put_str(&mut o, m);
                    }
                }
            }
            OffsetOp::DeleteGroup { group } => {
                o.push(TAG_DELETE_GROUP);
                put_str(&mut o, group);
            }
            OffsetOp::DeleteOffset {
                group,
                topic,
                partition,
            } => {
                o.push(TAG_DELETE_OFFSET);
                put_str(&mut o, group);
                put_str(&mut o, topic);
                o.extend_from_slice(&partition.to_be_bytes());
            }
            OffsetOp::SnapshotEnd => o.push(TAG_SNAPSHOT_END),
        }
        o
    }

    /// Decodes a payload; `None` if it is malformed.
    pub fn decode(p: &[u8]) -> Option<OffsetOp> {
        let mut r = Reader { p, pos: 0 };
        let op = match r.u8()? {
            TAG_COMMIT => {
                let group = r.str()?;
                let topic = r.str()?;
                let partition = r.i32()?;
                let offset = r.i64()?;
                let leader_epoch = r.i32()?;
                let commit_timestamp_ms = r.i64()?;
                let metadata = match r.u8()? {
                    0 => None,
                    1 => Some(r.str()?),
                    _ => return None,
                };
                OffsetOp::Commit {
                    group,
                    topic,
                    partition,
                    committed: CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                    },
                }
            }
            TAG_DELETE_GROUP => OffsetOp::DeleteGroup { group: r.str()? },
            TAG_SNAPSHOT_END => OffsetOp::SnapshotEnd,
            TAG_DELETE_OFFSET => OffsetOp::DeleteOffset {
                group: r.str()?,
                topic: r.str()?,
                partition: r.i32()?,
            },
            _ => return None,
        };
        (r.pos == p.len()).then_some(op)
    }

    fn apply(self, live: &mut OffsetMap) {
        match self {
            OffsetOp::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                live.entry(group)
                    .or_default()
                    .insert((topic, partition), committed);
            }
            OffsetOp::DeleteGroup { group } => {
                live.remove(&group);
            }
            OffsetOp::DeleteOffset {
                group,
                topic,
                partition,
            } => {
                if let Some(g) = live.get_mut(&group) {
                    g.remove(&(topic, partition));
                    if g.is_empty() {
                        live.remove(&group);
                    }
                }
            }
            OffsetOp::SnapshotEnd => {}
        }
    }
}

struct Reader<'a> {
    p: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.p.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn frame(op: &OffsetOp, out: &mut Vec<u8>) {
    framing::frame(&op.encode(), out);
}

/// Splits journal bytes into their valid records; returns them and the valid prefix length.
pub fn parse_journal(bytes: &[u8]) -> (Vec<OffsetOp>, usize) {
    framing::parse(bytes, MAX_RECORD, OffsetOp::decode)
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn file_name(generation: u64) -> String {
    format!("offsets-{generation:020}.journal")
}

fn parse_generation(name: &str) -> Option<u64> {
    name.strip_prefix("offsets-")?
        .strip_suffix(".journal")?
        .parse()
        .ok()
}

/// The open journal.
pub struct OffsetJournal<B: Backend> {
    backend: B,
    dir: PathBuf,
    generation: u64,
    file: B::File,
    /// Encoded records not yet handed to the file.
    pending: Vec<u8>,
    /// Whether something was appended since the last successful sync.
    dirty: bool,
    /// Bytes in the current file.
    file_bytes: u64,
    /// The live offsets (what a replay of the current file gives).
    live: OffsetMap,
    /// A write or fsync failed: the file's unsynced pages may be lost, so the next sync
    /// rewrites the live state into a fresh file instead of trusting it.
    broken: bool,
    /// Compaction runs once the file is larger than this and four times the live data.
    compact_min_bytes: u64,
}

impl<B: Backend> OffsetJournal<B> {
    /// Opens the journal in `dir` (creating it if needed) and returns it with the live offsets.
    pub fn open(backend: B, dir: &Path) -> Result<(OffsetJournal<B>, OffsetMap), StoreError> {
        backend.create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut gens: Vec<u64> = backend
            .list(dir)
            .map_err(|e| io(dir, e))?
            .iter()
            .filter_map(|n| parse_generation(n))
            .collect();
        gens.sort_unstable_by(|a, b| b.cmp(a));
        let mut chosen = None;
        for &g in &gens {
            let path = dir.join(file_name(g));
            let file = backend.open(&path).map_err(|e| io(&path, e))?;
            let len = file.len().map_err(|e| io(&path, e))?;
            let mut bytes = vec![0; len as usize];
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| io(&path, e))?;
            let (ops, valid) = parse_journal(&bytes);
            let Some(end) = ops.iter().position(|op| *op == OffsetOp::SnapshotEnd) else {
                continue; // an interrupted compaction (or a wrecked file): not usable
            };
            if valid < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    "offsets journal: dropping {} bytes of torn or corrupt tail after {} records",
                    bytes.len() - valid,
                    ops.len()
                );
            }
            let _ = end;
            chosen = Some((g, file, ops, valid as u64, len));
            break;
        }
        let (generation, file, live, file_bytes) = match chosen {
            Some((g, mut file, ops, valid, len)) => {
                let path = dir.join(file_name(g));
                if valid < len {
                    file.truncate(valid).map_err(|e| io(&path, e))?;
                    file.sync().map_err(|e| io(&path, e))?;
                }
                let mut live = OffsetMap::new();
                for op in ops {
                    op.apply(&mut live);
                }
                (g, file, live, valid)
            }
            None => {
                let (file, bytes) = write_snapshot(&backend, dir, 0, &OffsetMap::new())?;
                (0, file, OffsetMap::new(), bytes)
            }
        };
        for g in gens.into_iter().filter(|&g| g != generation) {
            let path = dir.join(file_name(g));
            backend.remove(&path).map_err(|e| io(&path, e))?;
        }
        let journal = OffsetJournal {
            backend,
            dir: dir.to_path_buf(),
            generation,
            file,
            pending: Vec::new(),
            dirty: false,
            file_bytes,
            live: live.clone(),
            compact_min_bytes: COMPACT_MIN_BYTES,
            broken: false,
        };
        Ok((journal, live))
    }

    /// Appends a change (buffered; durable after [`OffsetJournal::sync`]).
    pub fn append(&mut self, op: OffsetOp) {
        frame(&op, &mut self.pending);
        op.apply(&mut self.live);
        self.dirty = true;
    }

    /// Whether anything was appended since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.dirty
    }

    /// Writes and fsyncs everything appended so far; compacts the journal if it has grown
    /// well beyond the live data.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.broken {
            self.pending.clear();
            self.compact()?;
            self.broken = false;
            self.dirty = false;
            return Ok(());
        }
        let r = self.write_and_sync();
        if r.is_err() {
            self.broken = true;
            return r;
        }
        if self.file_bytes > self.compact_min_bytes && self.file_bytes > 4 * self.live_bytes() {
            self.compact()?;
        }
        Ok(())
    }

    fn write_and_sync(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            let path = self.path();
            let buf = std::mem::take(&mut self.pending);
            self.file.append(&buf).map_err(|e| io(&path, e))?;
            self.file_bytes += buf.len() as u64;
        }
        if self.dirty {
            let path = self.path();
            self.file.sync().map_err(|e| io(&path, e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Rewrites the live offsets into the next generation's file and removes the old one.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let next = self.generation + 1;
        let (file, bytes) = write_snapshot(&self.backend, &self.dir, next, &self.live)?;
        let old = self.path();
        self.file = file;
        self.generation = next;
        self.file_bytes = bytes;
        self.backend.remove(&old).map_err(|e| io(&old, e))
    }

    /// Sets the size above which the journal compacts (default 4 MiB).
    pub fn set_compact_min_bytes(&mut self, bytes: u64) {
        self.compact_min_bytes = bytes;
    }

    /// Size of the current file in bytes (written records).
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    fn live_bytes(&self) -> u64 {
        self.live
            .iter()
            .map(|(g, parts)| {
                parts
                    .iter()
                    .map(|((t, _), c)| {
                        (HEADER
                            + 38
                            + g.len()
                            + t.len()
                            + c.metadata.as_ref().map_or(0, |m| m.len()))
                            as u64
                    })
                    .sum::<u64>()
            })
            .sum()
    }

    fn path(&self) -> PathBuf {
        self.dir.join(file_name(self.generation))
    }
}

fn write_snapshot<B: Backend>(
    backend: &B,
    dir: &Path,
    generation: u64,
    live: &OffsetMap,
) -> Result<(B::File, u64), StoreError> {
    let path = dir.join(file_name(generation));
    // A leftover of an interrupted compaction into this generation.
    let _ = backend.remove(&path);
    let mut buf = Vec::new();
    for (group, parts) in live {
        for ((topic, partition), committed) in parts {
            frame(
                &OffsetOp::Commit {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: committed.clone(),
                },
                &mut buf,
            );
        }
    }
    frame(&OffsetOp::SnapshotEnd, &mut buf);
    let mut file = backend.create(&path).map_err(|e| io(&path, e))?;
    file.append(&buf).map_err(|e| io(&path, e))?;
    file.sync().map_err(|e| io(&path, e))?;
    // The new file's entry must be durable before the old generation is removed.
    backend.sync_dir(dir).map_err(|e| io(dir, e))?;
    Ok((file, buf.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fault::{CrashMode, FaultBackend, SimRng};
    use crate::log::FileBackend;

    fn commit(group: &str, topic: &str, partition: i32, offset: i64) -> OffsetOp {
        OffsetOp::Commit {
            group: group.into(),
            topic: topic.into(),
            partition,
            committed: CommittedOffset {
                offset,
                leader_epoch: if offset % 2 == 0 { -1 } else { 7 },
                metadata: if offset % 3 == 0 {
                    None
                } else {
                    Some(format!("m{offset}"))
                },
                commit_timestamp_ms: 1_700_000_000_000i64.wrapping_add(offset),
            },
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let ops = vec![
            commit("g", "t", 0, 5),
            commit("g", "t", 1, 6),
            OffsetOp::DeleteGroup { group: "g".into() },
            OffsetOp::DeleteOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
            },
            OffsetOp::SnapshotEnd,
            commit("h", "ü", -1, i64::MAX),
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            frame(op, &mut bytes);
        }
        let (back, valid) = parse_journal(&bytes);
        assert_eq!(back, ops);
        assert_eq!(valid, bytes.len());
        for cut in 0..bytes.len() {
            let (some, valid) = parse_journal(&bytes[..cut]);
            assert!(valid <= cut);
            assert_eq!(&ops[..some.len()], &some[..]);
        }
        let mut bad = bytes.clone();
        bad[HEADER + 2] ^= 0x01;
        assert!(parse_journal(&bad).0.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = SimRng::new(42);
        for n in 0..3000usize {
            let bytes: Vec<u8> = (0..n % 131).map(|_| rng.next_u64() as u8).collect();
            let _ = parse_journal(&bytes);
            let _ = OffsetOp::decode(&bytes);
        }
    }

    #[test]
    fn file_journal_replays_commits_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, live) = OffsetJournal::open(FileBackend, dir.path()).unwrap();
        assert!(live.is_empty());
        j.append(commit("g", "t", 0, 10));
        j.append(commit("g", "t", 0, 11));
        j.append(commit("g", "t", 1, 3));
        j.append(commit("gone", "t", 0, 1));
        j.append(OffsetOp::DeleteGroup {
            group: "gone".into(),
        });
        assert!(j.needs_sync());
        j.sync().unwrap();
        assert!(!j.needs_sync());
        drop(j);
        let (_, live) = OffsetJournal::open(FileBackend, dir.path()).unwrap();
        assert_eq!(live.len(), 1);
        let g = &live["g"];
        assert_eq!(g[&("t".to_string(), 0)].offset, 11);
        assert_eq!(g[&("t".to_string(), 1)].offset, 3);
        assert_eq!(g[&("t".to_string(), 1)].metadata.as_deref(), None);
    }

    #[test]
    fn expired_offsets_are_removed_on_replay_and_empty_groups_go() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = OffsetJournal::open(FileBackend, dir.path()).unwrap();
        j.append(commit("g", "t", 0, 10));
        j.append(commit("g", "t", 1, 3));
        j.append(commit("h", "t", 0, 1));
        for (group, partition) in [("g", 0), ("h", 0), ("nope", 0)] {
            j.append(OffsetOp::DeleteOffset {
                group: group.into(),
                topic: "t".into(),
                partition,
            });
        }
        j.sync().unwrap();
        drop(j);
        let (_, live) = OffsetJournal::open(FileBackend, dir.path()).unwrap();
        assert_eq!(live.len(), 1, "h lost its only offset: {live:?}");
        assert_eq!(live["g"].len(), 1);
        assert_eq!(live["g"][&("t".to_string(), 1)].offset, 3);
    }

    #[test]
    fn compaction_keeps_live_offsets_and_removes_old_file() {
        let backend = FaultBackend::new(1);
        let dir = Path::new("/groups");
        let (mut j, _) = OffsetJournal::open(backend.clone(), dir).unwrap();
        j.set_compact_min_bytes(64 * 1024);
        // Enough rewrites of a few partitions to cross the compaction threshold.
        let mut n = 0;
        while j.generation == 0 {
            for p in 0..4 {
                j.append(commit("g", "topic", p, n));
            }
            j.sync().unwrap();
            n += 1;
        }
        assert!(j.file_bytes() < 4096, "compacted file is small");
        j.append(commit("g", "topic", 9, 99));
        j.sync().unwrap();
        assert_eq!(
            backend.list(dir).unwrap(),
            vec![file_name(1)],
            "the old generation is removed"
        );
        backend.crash(CrashMode::default());
        let (_, live) = OffsetJournal::open(backend, dir).unwrap();
        assert_eq!(live["g"].len(), 5);
        assert_eq!(live["g"][&("topic".to_string(), 3)].offset, n - 1);
    }

    #[test]
    fn interrupted_compaction_falls_back_to_the_old_file() {
        let backend = FaultBackend::new(2);
        let dir = Path::new("/groups");
        let (mut j, _) = OffsetJournal::open(backend.clone(), dir).unwrap();
        j.append(commit("g", "t", 0, 1));
        j.sync().unwrap();
        drop(j);
        // A newer generation without its SnapshotEnd: a compaction that died half way.
        let mut partial = Vec::new();
        frame(&commit("g", "t", 0, 1), &mut partial);
        backend.set_contents(&dir.join(file_name(1)), partial);
        let (mut j, live) = OffsetJournal::open(backend.clone(), dir).unwrap();
        assert_eq!(live["g"][&("t".to_string(), 0)].offset, 1);
        assert_eq!(backend.list(dir).unwrap(), vec![file_name(0)]);
        j.append(commit("g", "t", 0, 2));
        j.sync().unwrap();
        let (_, live) = OffsetJournal::open(backend, dir).unwrap();
        assert_eq!(live["g"][&("t".to_string(), 0)].offset, 2);
    }

    #[test]
    fn failed_fsync_is_repaired_by_a_rewrite() {
        let backend = FaultBackend::new(3);
        let dir = Path::new("/g");
        let (mut j, _) = OffsetJournal::open(backend.clone(), dir).unwrap();
        j.append(commit("g", "t", 0, 1));
        j.sync().unwrap();
        j.append(commit("g", "t", 1, 2));
        backend.fail_next_sync();
        assert!(j.sync().is_err());
        j.append(commit("g", "t", 2, 3));
        j.sync().unwrap();
        assert_eq!(backend.list(dir).unwrap(), vec![file_name(1)]);
        backend.crash(CrashMode::all());
        let (_, live) = OffsetJournal::open(backend, dir).unwrap();
        assert_eq!(
            live["g"].len(),
            3,
            "the rewrite holds every accepted commit"
        );
    }

    /// Model check: after any crash, every synced commit survives and nothing that was never
    /// written appears; unsynced commits may or may not survive, but only as a prefix.
    #[test]
    fn crashes_keep_every_synced_commit() {
        for seed in 0..200u64 {
            let backend = FaultBackend::new(seed);
            let dir = Path::new("/g");
            let mut rng = SimRng::new(seed ^ 0xabcdef);
            let (mut j, _) = OffsetJournal::open(backend.clone(), dir).unwrap();
            let mut synced: BTreeMap<i32, i64> = BTreeMap::new();
            let mut next = 0i64;
            for _round in 0..rng.up_to(12) {
                let mut round = Vec::new();
                for _ in 0..=rng.up_to(5) {
                    let p = rng.up_to(3) as i32;
                    next += 1;
                    j.append(commit("g", "t", p, next));
                    round.push((p, next));
                }
                if rng.chance(2, 3) {
                    j.sync().unwrap();
                    synced.extend(round);
                }
            }
            backend.crash(CrashMode::all());
            let (_, live) = OffsetJournal::open(backend.clone(), dir)
                .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
            let got: BTreeMap<i32, i64> = live
                .get("g")
                .map(|m| m.iter().map(|((_, p), c)| (*p, c.offset)).collect())
                .unwrap_or_default();
            for (p, off) in &synced {
                let have = got.get(p).copied();
                assert!(
                    have.is_some_and(|h| h >= *off),
                    "seed {seed}: partition {p} lost synced offset {off}, has {have:?}"
                );
            }
            for off in got.values() {
                assert!(*off <= next, "seed {seed}: invented offset {off}");
            }
        }
    }
}
