//! A [`Log`] that remembers whether anything was written since its last sync began.
//!
//! The delay and half logs sync from their owner's loop when there is something to make
//! durable; the dirty flag is that "something": set by every append and ack, cleared when a
//! sync begins, and raised again by `finish_sync` when writes made meanwhile (or the acks
//! a sync wrote) still wait for an fsync. It is not the same as [`Log::has_unsynced`]: a
//! sync in flight makes the log unsynced but not dirty (another sync must not begin for
//! the same writes).

use super::{Backend, Log, LogError, Offset, Record, SyncJob};

/// See the module docs.
pub struct TrackedLog<B: Backend> {
    log: Log<B>,
    dirty: bool,
}

impl<B: Backend> TrackedLog<B> {
    pub fn new(log: Log<B>) -> Self {
        TrackedLog { log, dirty: false }
    }

    /// The log itself, for reads and settings that do not write.
    pub fn log(&self) -> &Log<B> {
        &self.log
    }

    /// Appends one record; durable after a sync.
    pub fn append(&mut self, payload: &[u8], now: i64) -> Result<Offset, LogError> {
        let o = self.log.append(payload, now)?;
        self.dirty = true;
        Ok(o)
    }

    /// Acks one record; durable after a sync.
    pub fn ack(&mut self, offset: Offset) -> Result<(), LogError> {
        self.log.ack(offset)?;
        self.dirty = true;
        Ok(())
    }

    /// Reads one record, flushing buffered appends first when there are any.
    pub fn read(&mut self, offset: Offset) -> Result<Record, LogError> {
        self.flush_if_dirty()?;
        self.log.read(offset)
    }

    /// Hands buffered appends to the OS when something was written since the last sync.
    pub fn flush_if_dirty(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.log.flush()?;
        }
        Ok(())
    }

    /// Hands buffered writes to the OS (survives a process crash).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.log.flush()
    }

    /// Makes every earlier append and ack durable, on the caller's thread.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.log.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Starts making every earlier append and ack durable without waiting: the returned
    /// job does the fsyncs ([`SyncJob::run`], on any thread), and they are durable once
    /// [`Self::finish_sync`] accepted it. Writes made meanwhile are not covered. `None`:
    /// nothing to fsync.
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob<B>>, LogError> {
        if !self.dirty {
            return Ok(None);
        }
        let job = self.log.begin_sync()?;
        self.dirty = false;
        Ok(job)
    }

    /// Like [`Self::begin_sync`] for the records only (one fsync of the active segment);
    /// acks are left for a later `begin_sync`, so the log stays dirty while any wait.
    pub fn begin_sync_records(&mut self) -> Result<Option<SyncJob<B>>, LogError> {
        if !self.dirty {
            return Ok(None);
        }
        let job = self.log.begin_sync_records()?;
        self.dirty = self.log.has_unsynced() && job.is_none();
        Ok(job)
    }

    /// Ends a sync with its job's outcome. `Ok`: every append below the job's target is
    /// durable. A failed fsync poisons the log. Writes made during the sync, and the acks
    /// it wrote for the records it covered, leave the log dirty for the next one.
    pub fn finish_sync(
        &mut self,
        job: SyncJob<B>,
        result: Result<(), LogError>,
    ) -> Result<Offset, LogError> {
        let outcome = self.log.finish_sync(job, result);
        self.dirty |= self.log.has_unsynced();
        outcome
    }

    /// Whether anything was written since the last sync began.
    pub fn needs_sync(&self) -> bool {
        self.dirty
    }

    /// Every append below this offset is durable.
    pub fn durable_offset(&self) -> Offset {
        self.log.durable_offset()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    pub fn set_deferred_seal(&mut self, on: bool) {
        self.log.set_deferred_seal(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FileBackend, LogConfig};

    fn open(dir: &std::path::Path) -> TrackedLog<FileBackend> {
        TrackedLog::new(Log::open(FileBackend, dir, LogConfig::default()).expect("open"))
    }

    #[test]
    fn writes_make_it_dirty_and_a_begun_sync_clears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path());
        assert!(!log.needs_sync());
        assert!(log.begin_sync().expect("begin").is_none());
        let o = log.append(b"one", 0).expect("append");
        assert!(log.needs_sync());
        let job = log.begin_sync().expect("begin").expect("a job");
        assert!(
            !log.needs_sync(),
            "a sync in flight is not a reason for another"
        );
        // Written while the sync runs: not covered, dirty again.
        log.append(b"two", 0).expect("append");
        let r = job.run();
        let durable = log.finish_sync(job, r).expect("finish");
        assert_eq!(durable, o + 1);
        assert!(log.needs_sync());
        log.sync().expect("sync");
        assert!(!log.needs_sync());
        assert_eq!(log.read(o).expect("read").payload, b"one");
    }

    #[test]
    fn acks_left_by_a_records_only_sync_keep_it_dirty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path());
        let o = log.append(b"one", 0).expect("append");
        log.sync().expect("sync");
        log.ack(o).expect("ack");
        log.append(b"two", 0).expect("append");
        let job = log.begin_sync_records().expect("begin").expect("a job");
        let r = job.run();
        log.finish_sync(job, r).expect("finish");
        assert!(log.needs_sync(), "the ack still waits for an fsync");
        log.sync().expect("sync");
        assert!(!log.needs_sync());
    }
}
