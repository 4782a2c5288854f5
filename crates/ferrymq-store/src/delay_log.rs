//! `DelayLog`: the messages a delayed-message exchange holds, in their own segmented log
//! (`crate::log`). Each held message is one record whose payload is its due time followed
//! by the queue-log message encoding; delivering (or discarding) a message acks its
//! offset, and fully acked segments are deleted by the log. Memory holds only what the
//! scheduler keeps per message (due time and offset); bodies are read back at due time.
//!
//! Payload of one record (after the log's own framing, see `docs/storage-format.md`):
//! `due:u64` (big-endian, ms since the Unix epoch) then exactly the `queue_log` payload
//! (`flags:u8 priority:u8 exchange_len:u8 exchange routing_key_len:u8 routing_key
//! properties_len:u32 properties body`).
//!
//! Each exchange has a directory `delayed/<id>` under the data dir (`id`: 16 hex digits,
//! the creation time in ns, so a deleted and re-declared exchange never shares one), with
//! the exchange name in a `name` file.

use std::path::{Path, PathBuf};

use ferrymq_core::queue::Offset;
use ferrymq_core::Message;

use crate::log::{Backend, FileBackend, Log, LogConfig, LogError, SyncJob, TrackedLog};
use crate::queue_log::{decode_message, encode_message};
use crate::StoreError;

/// Bytes before the message encoding in a record payload.
const DUE_LEN: usize = 8;
/// In [`DelayLog::read_batch`], wanted offsets at most this far apart are read in one
/// sequential pass instead of one positioned read each.
const RUN_GAP: Offset = 32;

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The directory holding every delayed exchange's log.
pub fn delayed_root(data_dir: &Path) -> PathBuf {
    data_dir.join("delayed")
}

/// A delay log directory found on disk: its path, the exchange it belongs to and its
/// creation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayDir {
    pub path: PathBuf,
    pub exchange: String,
    pub id: u64,
}

/// Lists the delay log directories under `data_dir` (unreadable ones are skipped).
pub fn list_dirs(data_dir: &Path) -> Vec<DelayDir> {
    let root = delayed_root(data_dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = e
            .file_name()
            .to_str()
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        let name = std::fs::read(path.join("name"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        out.push(DelayDir {
            path,
            exchange: name,
            id,
        });
    }
    out.sort_by_key(|d| d.id);
    out
}

/// Creates a new, empty delay log directory for `exchange`.
pub fn create_dir(data_dir: &Path, exchange: &str) -> Result<PathBuf, StoreError> {
    create_dir_with(&FileBackend, data_dir, exchange)
}

/// Creates a new, empty delay log directory for `exchange` on `backend`, durably: the
/// `delayed/` root, the directory's entry in it and its `name` file survive a power cut
/// once this returns.
pub fn create_dir_with<B: Backend>(
    backend: &B,
    data_dir: &Path,
    exchange: &str,
) -> Result<PathBuf, StoreError> {
    let root = delayed_root(data_dir);
    backend.create_dir_all(&root).map_err(|e| io(&root, e))?;
    let mut id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    loop {
        let dir = root.join(format!("{id:016x}"));
        match backend.create_dir(&dir) {
            Ok(()) => {
                backend.sync_dir(&root).map_err(|e| io(&root, e))?;
                let name = dir.join("name");
                crate::log::backend::write_durably(backend, &name, exchange.as_bytes())
                    .map_err(|e| io(&name, e))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
            Err(e) => return Err(io(&dir, e)),
        }
    }
}

/// One delayed exchange's held messages.
pub struct DelayLog<B: Backend = FileBackend> {
    dir: PathBuf,
    log: TrackedLog<B>,
    scratch: Vec<u8>,
}

impl DelayLog<FileBackend> {
    /// Opens the log in `dir` on real files; see [`DelayLog::open_with`].
    pub fn open(dir: &Path) -> Result<(Self, Vec<(u64, Offset)>), StoreError> {
        Self::open_with(FileBackend, dir, LogConfig::default())
    }
}

impl<B: Backend> DelayLog<B> {
    /// Opens (or creates) the log in `dir` and recovers it: returns the `(due, offset)`
    /// of every held persistent message. Held transient messages are discarded (acked),
    /// as RabbitMQ drops non-persistent messages of durable queues on restart.
    pub fn open_with(
        backend: B,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(Self, Vec<(u64, Offset)>), StoreError> {
        let mut log = Log::open(backend, dir, config)?;
        let mut held = Vec::new();
        let mut transient = Vec::new();
        for record in log.reader(log.start_offset()) {
            let record = record?;
            if log.is_acked(record.offset) {
                continue;
            }
            let p = &record.payload;
            match (p.get(..DUE_LEN), p.get(DUE_LEN)) {
                (Some(due), Some(flags)) if flags & 1 != 0 => {
                    let due = u64::from_be_bytes(due.try_into().expect("8 bytes"));
                    held.push((due, record.offset));
                }
                _ => transient.push(record.offset),
            }
        }
        for &o in &transient {
            log.ack(o)?;
        }
        if !transient.is_empty() {
            log.sync()?;
        }
        Ok((
            DelayLog {
                dir: dir.to_path_buf(),
                log: TrackedLog::new(log),
                scratch: Vec::new(),
            },
            held,
        ))
    }

    /// Segment rolls leave the sealed segment's fsync to the next sync job (see
    /// [`crate::log::Log::set_deferred_seal`]): under `always`, so that a roll never
    /// fsyncs on the release/append loop.
    pub fn set_deferred_seal(&mut self, on: bool) {
        self.log.set_deferred_seal(on);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a message due at `due`; returns its offset (durable after [`Self::sync`]).
    pub fn append(&mut self, due: u64, msg: &Message, now: i64) -> Result<Offset, StoreError> {
        encode_message(msg, &mut self.scratch);
        let mut payload = Vec::with_capacity(DUE_LEN + self.scratch.len());
        payload.extend_from_slice(&due.to_be_bytes());
        payload.extend_from_slice(&self.scratch);
        Ok(self.log.append(&payload, now)?)
    }

    /// Reads a held message back.
    pub fn read(&mut self, offset: Offset) -> Result<Message, StoreError> {
        let record = self.log.read(offset);
        self.decode(offset, record)
    }

    /// Reads held messages back in one batch: `offsets` are sorted, runs of nearby
    /// offsets are read in one sequential pass over the segment (one read per 64 KiB
    /// chunk, not per message), isolated ones by a positioned read each, and the write
    /// buffer is flushed once. Returns each offset with its message or the error reading
    /// it, in ascending offset order.
    pub fn read_batch(
        &mut self,
        offsets: &mut [Offset],
    ) -> Vec<(Offset, Result<Message, StoreError>)> {
        let mut out = Vec::with_capacity(offsets.len());
        if offsets.is_empty() {
            return out;
        }
        if let Err(e) = self.log.flush_if_dirty() {
            let e = StoreError::from(e);
            return offsets
                .iter()
                .map(|&o| (o, Err(io(&self.dir, std::io::Error::other(e.to_string())))))
                .collect();
        }
        offsets.sort_unstable();
        let mut i = 0;
        while i < offsets.len() {
            // The run starting at i: each next offset within RUN_GAP of the previous one.
            let mut j = i + 1;
            while j < offsets.len() && offsets[j] - offsets[j - 1] <= RUN_GAP {
                j += 1;
            }
            let run = &offsets[i..j];
            if run.len() == 1 {
                let o = run[0];
                out.push((o, self.decode(o, self.log.log().read(o))));
            } else {
                self.read_run(run, &mut out);
            }
            i = j;
        }
        out
    }

    /// One sequential pass from `run[0]` to `run[last]`.
    fn read_run(&self, run: &[Offset], out: &mut Vec<(Offset, Result<Message, StoreError>)>) {
        let mut want = run.iter().copied().peekable();
        for record in self.log.log().reader(run[0]) {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    // Whatever is left of the run gets the error.
                    let msg = e.to_string();
                    for o in want.by_ref() {
                        out.push((o, Err(io(&self.dir, std::io::Error::other(msg.clone())))));
                    }
                    return;
                }
            };
            while want.peek().is_some_and(|&w| w < record.offset) {
                let o = want.next().expect("peeked");
                out.push((o, Err(corrupt(&self.dir, o))));
            }
            match want.peek() {
                None => return,
                Some(&w) if w == record.offset => {
                    want.next();
                    out.push((w, self.decode(w, Ok(record))));
                }
                Some(_) => {}
            }
        }
        for o in want {
            out.push((o, Err(corrupt(&self.dir, o))));
        }
    }

    fn decode(
        &self,
        offset: Offset,
        record: Result<crate::log::Record, LogError>,
    ) -> Result<Message, StoreError> {
        let mut p = record?.payload;
        if p.len() < DUE_LEN {
            return Err(corrupt(&self.dir, offset));
        }
        p.drain(..DUE_LEN);
        decode_message(p).ok_or_else(|| corrupt(&self.dir, offset))
    }

    /// The message left (delivered or discarded); durable after [`Self::sync`].
    pub fn ack(&mut self, offset: Offset) -> Result<(), StoreError> {
        Ok(self.log.ack(offset)?)
    }

    /// Hands buffered writes to the OS (survives a process crash).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        Ok(self.log.flush()?)
    }

    /// Makes every earlier append and ack durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        Ok(self.log.sync()?)
    }

    /// Starts making every earlier append and ack durable without waiting (see
    /// [`TrackedLog::begin_sync`]). The job's [`SyncJob::target`] is the offset below
    /// which every append is covered.
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob<B>>, StoreError> {
        Ok(self.log.begin_sync()?)
    }

    /// Like [`Self::begin_sync`] for the held messages only: one fsync of the active
    /// segment; acks are left for a later `begin_sync` (a lost ack is a redelivery, a lost
    /// hold would be a lost message), so confirms do not wait on ack-file fsyncs.
    pub fn begin_sync_holds(&mut self) -> Result<Option<SyncJob<B>>, StoreError> {
        Ok(self.log.begin_sync_records()?)
    }

    /// Ends a sync begun by [`Self::begin_sync`] with the outcome of its job. `Ok`: every
    /// append below the job's target is durable. A failed fsync poisons the log: nothing
    /// appended after it can become durable, so nothing after it may be confirmed.
    pub fn finish_sync(
        &mut self,
        job: SyncJob<B>,
        result: Result<(), LogError>,
    ) -> Result<Offset, StoreError> {
        Ok(self.log.finish_sync(job, result)?)
    }

    /// Every append below this offset is durable.
    pub fn durable_offset(&self) -> Offset {
        self.log.durable_offset()
    }

    /// Whether anything was written since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.log.needs_sync()
    }

    /// Number of segment files (tests check that delivered segments are deleted).
    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }
}

fn corrupt(dir: &Path, offset: Offset) -> StoreError {
    io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed delayed message at offset {offset}"),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fault::{CrashMode, FaultBackend};
    use bytes::Bytes;

    fn msg(body: &'static [u8], persistent: bool) -> Message {
        Message {
            exchange: Bytes::from_static(b"dx"),
            routing_key: Bytes::from_static(b"rk"),
            raw_properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::from_static(body),
            persistent,
            priority: None,
            headers: None,
            ttl_ms: None,
        }
    }

    fn small() -> LogConfig {
        LogConfig {
            max_segment_bytes: 256,
            ..LogConfig::default()
        }
    }

    #[test]
    fn held_messages_survive_a_crash_after_sync_and_acks_free_segments() {
        let disk = FaultBackend::new(7);
        let dir = Path::new("/d/delayed/0000000000000001");
        let (mut log, held) = DelayLog::open_with(disk.clone(), dir, small()).unwrap();
        assert!(held.is_empty());
        let mut offsets = Vec::new();
        for i in 0..40u64 {
            offsets.push(
                log.append(1000 - i, &msg(b"body-of-a-message", true), 1)
                    .unwrap(),
            );
        }
        let t = log.append(5, &msg(b"transient", false), 1).unwrap();
        log.sync().unwrap();
        let segments = log.segment_count();
        assert!(segments > 4);
        let m = log.read(offsets[3]).unwrap();
        assert_eq!(&m.body[..], b"body-of-a-message");
        assert_eq!(&m.routing_key[..], b"rk");
        for &o in &offsets[..20] {
            log.ack(o).unwrap();
        }
        log.sync().unwrap();
        // Unsynced work is lost in a crash; synced work is not.
        log.append(1, &msg(b"lost", true), 1).unwrap();
        drop(log);
        disk.crash(CrashMode::all());
        let (log, mut held) = DelayLog::open_with(disk.clone(), dir, small()).unwrap();
        held.sort_by_key(|h| h.1);
        let want: Vec<(u64, Offset)> = (20..40u64)
            .map(|i| (1000 - i, offsets[i as usize]))
            .collect();
        assert_eq!(held, want, "acked and transient ({t}) messages are gone");
        assert!(
            log.segment_count() <= segments - 4,
            "acked segments were deleted"
        );
    }

    #[test]
    fn directories_by_exchange() {
        let tmp = tempfile::tempdir().unwrap();
        let a = create_dir(tmp.path(), "ex/a").unwrap();
        let b = create_dir(tmp.path(), "ex/a").unwrap();
        assert_ne!(a, b);
        std::fs::create_dir_all(delayed_root(tmp.path()).join("junk")).unwrap();
        let dirs = list_dirs(tmp.path());
        assert_eq!(dirs.len(), 2);
        assert!(dirs.iter().all(|d| d.exchange == "ex/a"));
        assert!(dirs[0].id < dirs[1].id);
        let (mut log, held) = DelayLog::open(&b).unwrap();
        assert!(held.is_empty());
        let o = log.append(9, &msg(b"x", true), 0).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, held) = DelayLog::open(&b).unwrap();
        assert_eq!(held, vec![(9, o)]);
    }
}
