//! `ScratchStore`: where a transient (non-durable or exclusive) queue pages its backlog
//! beyond its in-memory head. Nothing here is durable: files are written through a buffer
//! and never fsynced, the directory is removed when the queue goes away (delete, broker
//! stop) and the broker removes every scratch directory when it starts, since a transient
//! queue does not survive a restart.
//!
//! Files are created lazily: a queue that never pages writes nothing. A queue's directory
//! (`<data dir>/scratch/<queue id>/`) holds numbered files `<n>.scratch`, each a plain
//! sequence of records (layout in `docs/storage-format.md`, "Scratch logs"):
//!
//! ```text
//! 0   offset    u64 LE   the queue offset of the message
//! 8   len       u32 LE   payload length
//! 12  payload   len bytes, `queue_log::encode_message`
//! ```
//!
//! An in-memory index of runs maps each paged queue offset to its record: a run is a
//! sequence of consecutive offsets written back to back in one file, kept as the end
//! position of each record (4 bytes) and a live bit per record, so a paged message costs
//! about 4 bytes of index and lookups are a search among runs, not a hash per message. A
//! message paged out twice (read back, then paged out again) is not written twice. A file
//! whose records have all left the queue is deleted once another file is being written.
//! Read-back sorts the wanted records by position and reads each run of adjacent records
//! with one `pread`, so a drain reads the files sequentially in large blocks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrymq_core::queue::Offset;
use ferrymq_core::Message;

use crate::queue_log::{decode_message_bytes, encode_message};
use crate::{QueueStore, Recovered, StoreError};

/// Bytes of a record's header.
pub const RECORD_HEADER: usize = 12;
/// A new file is started when the current one reaches this size.
pub const FILE_BYTES: u64 = 64 << 20;
/// One read covers at most this many bytes of adjacent records.
const MAX_READ: usize = 8 << 20;

#[derive(Debug, Clone, Copy)]
struct Loc {
    file: u32,
    len: u32,
    pos: u64,
}

/// Records of consecutive queue offsets `start..start + ends.len()` written back to back in
/// one file from `pos`.
#[derive(Debug)]
struct Run {
    file: u32,
    pos: u64,
    /// End of each record, relative to `pos`.
    ends: Vec<u32>,
    /// One bit per record: still in the queue.
    live: Vec<u64>,
    live_count: u32,
}

impl Run {
    fn is_live(&self, i: usize) -> bool {
        self.live[i / 64] & (1 << (i % 64)) != 0
    }

    fn loc(&self, i: usize) -> Loc {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Loc {
            file: self.file,
            len: self.ends[i] - start - RECORD_HEADER as u32,
            pos: self.pos + u64::from(start),
        }
    }
}

struct ScratchFile {
    file: File,
    /// Records in it still in the queue's index.
    live: u64,
}

/// The scratch log of one transient queue.
pub struct ScratchStore {
    dir: PathBuf,
    files: BTreeMap<u32, ScratchFile>,
    /// The file being appended to: its number, buffered writer and length.
    active: Option<(u32, std::io::BufWriter<File>, u64)>,
    /// The writer holds bytes the files do not have yet.
    unflushed: bool,
    /// Runs by first offset.
    runs: BTreeMap<Offset, Run>,
    /// The run the last record went to (the next consecutive one extends it).
    tail: Option<Offset>,
    /// Live records over all runs.
    live: usize,
    next_file: u32,
    buf: Vec<u8>,
    file_bytes: u64,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ScratchStore {
    /// A scratch log in `dir` (created on the first page-out).
    pub fn new(dir: PathBuf) -> ScratchStore {
        ScratchStore {
            dir,
            files: BTreeMap::new(),
            active: None,
            unflushed: false,
            runs: BTreeMap::new(),
            tail: None,
            live: 0,
            next_file: 0,
            buf: Vec::new(),
            file_bytes: FILE_BYTES,
        }
    }

    /// Rolls files at `bytes` instead of `FILE_BYTES` (tests).
    pub fn set_file_bytes(&mut self, bytes: u64) {
        self.file_bytes = bytes.max(1);
    }

    /// The directory (it exists once something was paged out).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Messages the scratch log holds.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Runs in the index (a measure of its size).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The run holding `offset` and the record's index in it, if the offset was written.
    fn find(&self, offset: Offset) -> Option<(Offset, usize)> {
        let (&start, run) = self.runs.range(..=offset).next_back()?;
        let i = usize::try_from(offset - start).ok()?;
        (i < run.ends.len()).then_some((start, i))
    }

    /// Where a live record of `offset` is.
    fn locate(&self, offset: Offset) -> Option<Loc> {
        let (start, i) = self.find(offset)?;
        let run = &self.runs[&start];
        run.is_live(i).then(|| run.loc(i))
    }

    /// Scratch files on disk now.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{n}.scratch"))
    }

    /// The active file, started (directory included) if there is none or it is full.
    fn writer(&mut self) -> Result<(), StoreError> {
        if let Some((_, _, len)) = &self.active {
            if *len < self.file_bytes {
                return Ok(());
            }
            self.seal()?;
        }
        if self.files.is_empty() {
            std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        }
        let n = self.next_file;
        self.next_file += 1;
        let path = self.path(n);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let writer = file.try_clone().map_err(|e| io(&path, e))?;
        self.files.insert(n, ScratchFile { file, live: 0 });
        self.active = Some((n, std::io::BufWriter::with_capacity(1 << 20, writer), 0));
        Ok(())
    }

    /// Ends the active file; deletes it at once if nothing in it is live.
    fn seal(&mut self) -> Result<(), StoreError> {
        self.flush_writer()?;
        if let Some((n, _, _)) = self.active.take() {
            self.drop_if_dead(n);
        }
        Ok(())
    }

    fn flush_writer(&mut self) -> Result<(), StoreError> {
        if self.unflushed {
            if let Some((_, w, _)) = &mut self.active {
                w.flush().map_err(|e| io(&self.dir, e))?;
            }
            self.unflushed = false;
        }
        Ok(())
    }

    fn drop_if_dead(&mut self, n: u32) {
        let active = self.active.as_ref().map(|(a, _, _)| *a);
        if active == Some(n) || self.files.get(&n).is_none_or(|f| f.live > 0) {
            return;
        }
        self.files.remove(&n);
        let _ = std::fs::remove_file(self.path(n));
    }

    fn write_one(&mut self, offset: Offset, msg: &Message) -> Result<(), StoreError> {
        if self.locate(offset).is_some() {
            return Ok(());
        }
        self.writer()?;
        encode_message(msg, &mut self.buf);
        let len = u32::try_from(self.buf.len()).map_err(|_| {
            io(
                &self.dir,
                std::io::Error::other("message too large for a scratch record"),
            )
        })?;
        let (n, w, flen) = self.active.as_mut().expect("writer() made one");
        let mut head = [0u8; RECORD_HEADER];
        head[..8].copy_from_slice(&offset.to_le_bytes());
        head[8..].copy_from_slice(&len.to_le_bytes());
        w.write_all(&head)
            .and_then(|()| w.write_all(&self.buf))
            .map_err(|e| io(&self.dir, e))?;
        let (file, pos) = (*n, *flen);
        *flen += (RECORD_HEADER + self.buf.len()) as u64;
        self.unflushed = true;
        if let Some(f) = self.files.get_mut(&file) {
            f.live += 1;
        }
        self.live += 1;
        let size = RECORD_HEADER as u32 + len;
        // Extend the last run when this record follows it in offsets and in its file.
        if let Some(run) = self.tail.and_then(|t| {
            let run = self.runs.get_mut(&t)?;
            let next = t + run.ends.len() as u64;
            let end = run.pos + u64::from(*run.ends.last()?);
            (next == offset && run.file == file && end == pos).then_some(run)
        }) {
            let i = run.ends.len();
            let last = *run.ends.last().expect("runs are not empty");
            run.ends.push(last + size);
            if i % 64 == 0 {
                run.live.push(0);
            }
            run.live[i / 64] |= 1 << (i % 64);
            run.live_count += 1;
            return Ok(());
        }
        // A new run. The old tail, if all of it left meanwhile, goes now.
        if let Some(t) = self.tail {
            if self.runs.get(&t).is_some_and(|r| r.live_count == 0) {
                self.runs.remove(&t);
            }
        }
        self.runs.insert(
            offset,
            Run {
                file,
                pos,
                ends: vec![size],
                live: vec![1],
                live_count: 1,
            },
        );
        self.tail = Some(offset);
        Ok(())
    }

    /// Reads the records at `locs` (sorted by file and position, all in `file`), each run
    /// of adjacent records with one read.
    fn read_runs(
        &self,
        file: &File,
        locs: &[(Offset, Loc)],
        out: &mut Vec<(Offset, Arc<Message>)>,
    ) -> Result<(), StoreError> {
        let mut i = 0;
        while i < locs.len() {
            let start = locs[i].1.pos;
            let mut end = start + RECORD_HEADER as u64 + u64::from(locs[i].1.len);
            let mut j = i + 1;
            while j < locs.len() && locs[j].1.pos == end && (end - start) < MAX_READ as u64 {
                end += RECORD_HEADER as u64 + u64::from(locs[j].1.len);
                j += 1;
            }
            let mut block = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut block, start)
                .map_err(|e| io(&self.dir, e))?;
            let block = bytes::Bytes::from(block);
            let mut at = 0usize;
            for &(offset, loc) in &locs[i..j] {
                let stored = u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"));
                let body = block.slice(at + RECORD_HEADER..at + RECORD_HEADER + loc.len as usize);
                at += RECORD_HEADER + loc.len as usize;
                if stored != offset {
                    continue;
                }
                if let Some(m) = decode_message_bytes(body) {
                    out.push((offset, Arc::new(m)));
                }
            }
            i = j;
        }
        Ok(())
    }

    fn remove_dir(&mut self) -> Result<(), StoreError> {
        self.active = None;
        self.files.clear();
        self.runs.clear();
        self.tail = None;
        self.live = 0;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.dir, e)),
        }
    }
}

impl QueueStore for ScratchStore {
    /// Nothing is written per publish: a message reaches the scratch log only when it is
    /// paged (`spill`).
    fn append(&mut self, _offset: Offset, _msg: &Arc<Message>) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove(&mut self, offsets: &[Offset]) -> Result<(), StoreError> {
        if self.live == 0 {
            return Ok(());
        }
        for &o in offsets {
            let Some((start, i)) = self.find(o) else {
                continue;
            };
            let run = self.runs.get_mut(&start).expect("found");
            if !run.is_live(i) {
                continue;
            }
            run.live[i / 64] &= !(1 << (i % 64));
            run.live_count -= 1;
            let file = run.file;
            if run.live_count == 0 && self.tail != Some(start) {
                self.runs.remove(&start);
            }
            self.live -= 1;
            if let Some(f) = self.files.get_mut(&file) {
                f.live -= 1;
                if f.live == 0 {
                    self.drop_if_dead(file);
                }
            }
        }
        if self.live == 0 && self.active.is_some() {
            self.runs.clear();
            self.tail = None;
            // Everything left: start over in a fresh file instead of growing this one.
            self.unflushed = false;
            let n = self.active.take().map(|(n, _, _)| n);
            if let Some(n) = n {
                self.drop_if_dead(n);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.flush_writer()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn needs_sync(&self) -> bool {
        false
    }

    fn recover(&mut self) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }

    fn can_page(&self) -> bool {
        true
    }

    fn spill(&mut self, msgs: &[(Offset, Arc<Message>)]) -> Result<(), StoreError> {
        for (o, m) in msgs {
            self.write_one(*o, m)?;
        }
        Ok(())
    }

    fn read(&mut self, offsets: &[Offset]) -> Result<Vec<(Offset, Arc<Message>)>, StoreError> {
        let mut locs: Vec<(Offset, Loc)> = offsets
            .iter()
            .filter_map(|&o| self.locate(o).map(|l| (o, l)))
            .collect();
        if locs.is_empty() {
            return Ok(Vec::new());
        }
        self.flush_writer()?;
        locs.sort_unstable_by_key(|(_, l)| (l.file, l.pos));
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            let n = locs[i].1.file;
            let j = i + locs[i..].iter().take_while(|(_, l)| l.file == n).count();
            if let Some(f) = self.files.get(&n) {
                self.read_runs(&f.file, &locs[i..j], &mut out)?;
            }
            i = j;
        }
        out.sort_unstable_by_key(|(o, _)| *o);
        Ok(out)
    }

    fn destroy(&mut self) -> Result<(), StoreError> {
        self.remove_dir()
    }
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        if !self.files.is_empty() {
            let _ = self.remove_dir();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(id: u64, len: usize) -> Arc<Message> {
        let mut body = id.to_be_bytes().to_vec();
        body.resize(len.max(8), 7);
        Arc::new(Message {
            exchange: Bytes::from_static(b"x"),
            routing_key: Bytes::from_static(b"rk"),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(body),
            persistent: false,
            priority: Some(2),
            headers: None,
            ttl_ms: Some(5),
        })
    }

    #[test]
    fn spill_read_remove_and_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ScratchStore::new(dir.path().join("scratch").join("7"));
        s.set_file_bytes(1000);
        assert!(
            !s.dir().exists(),
            "nothing written until something is paged"
        );
        let batch: Vec<_> = (0..50).map(|i| (i, msg(i, 40))).collect();
        s.spill(&batch).unwrap();
        // Spilling a message again (paged in, then out) writes nothing new.
        s.spill(&batch[10..20]).unwrap();
        assert_eq!(s.len(), 50);
        assert!(s.file_count() > 1, "rolled over");
        // Out of order and missing offsets: the found ones, in offset order, intact.
        let got = s.read(&[49, 3, 4, 5, 100, 17]).unwrap();
        let ids: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(ids, vec![3, 4, 5, 17, 49]);
        for (o, m) in &got {
            assert_eq!(**m, *msg(*o, 40));
        }
        let files_before = s.file_count();
        s.remove(&(0..30).collect::<Vec<_>>()).unwrap();
        assert!(s.file_count() < files_before, "dead files deleted");
        s.remove(&(30..50).collect::<Vec<_>>()).unwrap();
        assert_eq!((s.len(), s.file_count()), (0, 0));
        // Used again after emptying.
        s.spill(&[(60, msg(60, 10))]).unwrap();
        assert_eq!(s.read(&[60]).unwrap().len(), 1);
        let d = s.dir().to_path_buf();
        drop(s);
        assert!(!d.exists(), "dropped with the queue");
    }

    #[test]
    fn runs_with_gaps_and_out_of_order_spills() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ScratchStore::new(dir.path().join("q"));
        // Interleaved levels: even offsets first, then odd ones (a page-out of lower
        // offsets after higher ones were written).
        s.spill(&[(4, msg(4, 9)), (6, msg(6, 9)), (8, msg(8, 9))])
            .unwrap();
        s.spill(&[(1, msg(1, 9)), (2, msg(2, 9)), (3, msg(3, 9))])
            .unwrap();
        s.spill(&[(9, msg(9, 9)), (10, msg(10, 9))]).unwrap();
        assert_eq!(s.len(), 8);
        let got = s.read(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        let ids: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 6, 8, 9, 10]);
        for (o, m) in &got {
            assert_eq!(**m, *msg(*o, 9));
        }
        // Removed records are not found, twice removed is harmless.
        s.remove(&[2, 2, 6]).unwrap();
        assert_eq!(s.len(), 6);
        let ids: Vec<u64> = s
            .read(&[2, 3, 6])
            .unwrap()
            .iter()
            .map(|(o, _)| *o)
            .collect();
        assert_eq!(ids, vec![3]);
        // Consecutive records share a run: the index stays small.
        let batch: Vec<_> = (100..1100).map(|i| (i, msg(i, 9))).collect();
        s.spill(&batch).unwrap();
        assert!(s.run_count() <= 7, "{} runs", s.run_count());
        s.remove(&(0..1100).collect::<Vec<_>>()).unwrap();
        assert_eq!((s.len(), s.run_count(), s.file_count()), (0, 0, 0));
    }

    #[test]
    fn destroy_removes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ScratchStore::new(dir.path().join("q"));
        s.spill(&[(0, msg(0, 10))]).unwrap();
        assert!(s.dir().exists());
        s.destroy().unwrap();
        assert!(!dir.path().join("q").exists());
    }
}
