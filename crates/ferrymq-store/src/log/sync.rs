//! Making a log durable: [`Log::sync`] in one go, or split as [`Log::begin_sync`] (on the
//! owner), [`SyncJob::run`] (the fsyncs, on any thread) and [`Log::finish_sync`] (back on
//! the owner), so the owner keeps appending while the fsync runs.

use super::*;

/// The fsync work of one [`Log::begin_sync`]: handles on the files to fsync and whether
/// the directory needs one. [`SyncJob::run`] may run on any thread; the job then goes
/// back to [`Log::finish_sync`].
pub struct SyncJob<B: Backend> {
    backend: B,
    dir: PathBuf,
    sync_dir: bool,
    /// The active segment at the start: its base, a handle and the bytes the fsync covers.
    segment: Option<(Offset, B::File, u64)>,
    /// Segments sealed by a deferred roll and not fsynced yet: base, handle, bytes, and
    /// their `.idx` content (written once the segment is durable).
    sealed: Vec<(Offset, B::File, u64, Vec<u8>)>,
    ack_files: Vec<(PathBuf, B::File)>,
    /// Every record below this offset is durable once the job succeeded.
    target: Offset,
}

impl<B: Backend> std::fmt::Debug for SyncJob<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field("dir", &self.dir)
            .field("sync_dir", &self.sync_dir)
            .field("target", &self.target)
            .finish()
    }
}

impl<B: Backend> SyncJob<B> {
    /// The offset below which every record is durable once this job has succeeded.
    pub fn target(&self) -> Offset {
        self.target
    }

    /// The fsyncs: the active segment's data, the ack files, then the directory (so that
    /// new segment and ack files are found after a power cut).
    pub fn run(&self) -> Result<(), LogError> {
        for (base, file, _, _) in &self.sealed {
            file.sync()
                .map_err(|e| LogError::io("fsync", path_in(&self.dir, *base, "seg"), e))?;
        }
        for (base, _, _, index) in &self.sealed {
            // Only after the segment is durable (recovery trusts an `.idx` whose length
            // matches its segment). Failure costs a rescan at the next open, nothing more.
            let path = path_in(&self.dir, *base, "idx");
            let written = self.backend.create(&path).and_then(|mut f| {
                f.append(index)?;
                f.sync()
            });
            match written {
                Ok(()) => {}
                // An earlier job for the same sealed segment wrote it (same content).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "could not write segment index");
                    let _ = self.backend.remove(&path);
                }
            }
        }
        if let Some((base, file, _)) = &self.segment {
            file.sync()
                .map_err(|e| LogError::io("fsync", path_in(&self.dir, *base, "seg"), e))?;
        }
        for (path, file) in &self.ack_files {
            file.sync().map_err(|e| LogError::io("fsync", path, e))?;
        }
        if self.sync_dir {
            self.backend
                .sync_dir(&self.dir)
                .map_err(|e| LogError::io("fsync", &self.dir, e))?;
        }
        Ok(())
    }
}

impl<B: Backend> Log<B> {
    /// Makes every appended record and every ack durable: fsync of the active segment,
    /// then ack entries written and their files fsynced, the directory fsynced if files
    /// were created in it, then fully acked sealed segments deleted. Returns the durable
    /// offset (every record below it is durable).
    pub fn sync(&mut self) -> Result<Offset, LogError> {
        let Some(job) = self.begin_sync()? else {
            return Ok(self.durable);
        };
        let result = job.run();
        self.finish_sync(job, result)?;
        // Acks of the records this sync made durable can be written now: one more round.
        if self.segments.values().any(|s| s.ack_dirty) || self.dir_dirty {
            if let Some(job) = self.begin_sync()? {
                let result = job.run();
                self.finish_sync(job, result)?;
            }
        }
        Ok(self.durable)
    }

    /// Starts a sync without waiting for it: the write buffer goes to the file, acks of
    /// records already durable go to their ack files, and the returned job holds what
    /// must be fsynced. Until [`Log::finish_sync`] gets the job back, the durable offset
    /// does not move; the owner may keep appending, acking and reading meanwhile. `None`:
    /// nothing to fsync (everything appended is durable already).
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob<B>>, LogError> {
        self.begin_sync_with(true, true)
    }

    /// Like [`Log::begin_sync`] but for the records only: ack files are neither written
    /// nor fsynced (acks stay pending for a later `begin_sync`), so the job is one fsync
    /// of the active segment (and of the directory if a file was created in it). For
    /// owners whose confirms wait on records while acks may lag (the delay log).
    pub fn begin_sync_records(&mut self) -> Result<Option<SyncJob<B>>, LogError> {
        self.begin_sync_with(false, false)
    }

    /// Like [`Log::begin_sync`] but the ack entries only go to the OS (a process crash
    /// keeps them): the ack files are left out of the job and stay unsynced until a later
    /// [`Log::begin_sync`] ([`Log::has_unsynced_acks`]). The job is the fsync of the records
    /// (and of the directory if a file was created in it). For owners whose confirms wait
    /// on records and who fsync acks on a slower cadence (a durable queue): a lost ack is
    /// a redelivery after a power cut, never a lost message.
    pub fn begin_sync_records_writing_acks(&mut self) -> Result<Option<SyncJob<B>>, LogError> {
        self.begin_sync_with(true, false)
    }

    /// Whether acks were taken that are not durable yet (pending, or written to an ack
    /// file not fsynced since).
    pub fn has_unsynced_acks(&self) -> bool {
        !self.pending_acks.is_empty() || self.segments.values().any(|s| s.ack_dirty)
    }

    fn begin_sync_with(
        &mut self,
        write_acks: bool,
        sync_acks: bool,
    ) -> Result<Option<SyncJob<B>>, LogError> {
        let acks = write_acks && sync_acks;
        self.flush()?;
        if write_acks {
            self.write_acks()?;
        }
        let target = self.next;
        let dir = self.dir.clone();
        let seg = self.active();
        let segment = if seg.synced < seg.flushed {
            let handle = seg
                .file
                .try_clone()
                .map_err(|e| LogError::io("dup", &seg.path, e))?;
            Some((seg.base, handle, seg.flushed))
        } else {
            None
        };
        let mut sealed = Vec::new();
        for seg in self.segments.values() {
            if seg.sealed && seg.synced < seg.flushed {
                let handle = seg
                    .file
                    .try_clone()
                    .map_err(|e| LogError::io("dup", &seg.path, e))?;
                let index = seg.index.encode(seg.base, seg.next, seg.len());
                sealed.push((seg.base, handle, seg.flushed, index));
            }
        }
        let mut ack_files = Vec::new();
        for seg in self.segments.values_mut() {
            if !acks || !seg.ack_dirty {
                continue;
            }
            if let Some((file, _)) = &seg.ack_file {
                let path = path_in(&dir, seg.base, "ack");
                let handle = file
                    .try_clone()
                    .map_err(|e| LogError::io("dup", &path, e))?;
                ack_files.push((path, handle));
            }
            seg.ack_dirty = false;
        }
        // A sealed segment's `.idx` is a new entry too.
        let sync_dir = std::mem::take(&mut self.dir_dirty) || !sealed.is_empty();
        if segment.is_none() && sealed.is_empty() && ack_files.is_empty() && !sync_dir {
            self.durable = self.durable.max(target);
            self.reap()?;
            return Ok(None);
        }
        Ok(Some(SyncJob {
            backend: self.backend.clone(),
            dir,
            sync_dir,
            segment,
            sealed,
            ack_files,
            target,
        }))
    }

    /// Ends a sync begun by [`Log::begin_sync`] with the outcome of [`SyncJob::run`]. On
    /// success every record below the job's target is durable (returned: the durable
    /// offset), acks waiting for those records are written (durable after the next sync)
    /// and fully acked sealed segments are deleted. A failed fsync poisons the log.
    pub fn finish_sync(
        &mut self,
        job: SyncJob<B>,
        result: Result<(), LogError>,
    ) -> Result<Offset, LogError> {
        if let Err(e) = result {
            self.poisoned = true;
            return Err(e);
        }
        self.check_writable()?;
        if let Some((base, _, covered)) = job.segment {
            if let Some(seg) = self.segments.get_mut(&base) {
                seg.synced = seg.synced.max(covered);
            }
        }
        for (base, _, covered, _) in job.sealed {
            if let Some(seg) = self.segments.get_mut(&base) {
                seg.synced = seg.synced.max(covered);
            }
        }
        self.durable = self.durable.max(job.target);
        self.write_acks()?;
        self.reap()?;
        Ok(self.durable)
    }
}
