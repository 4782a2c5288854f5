//! Opening a log: creating segments and recovering them (records, indexes, ack files)
//! from what is on disk, and the directory fsync that makes new entries durable.

use super::*;

impl<B: Backend> Log<B> {
    /// Fsyncs the log directory if a file was created in it since the last time.
    pub(super) fn sync_dir(&mut self) -> Result<(), LogError> {
        if self.dir_dirty {
            if let Err(e) = self.backend.sync_dir(&self.dir) {
                self.poisoned = true;
                return Err(LogError::io("fsync", &self.dir, e));
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    pub(super) fn create_segment(&mut self, base: Offset) -> Result<(), LogError> {
        let path = path_in(&self.dir, base, "seg");
        let file = self
            .backend
            .create(&path)
            .map_err(|e| LogError::io("create", &path, e))?;
        self.dir_dirty = true;
        self.segments.insert(
            base,
            Segment {
                base,
                next: base,
                file,
                path,
                flushed: 0,
                buf: Vec::new(),
                synced: 0,
                index: SparseIndex::new(self.config.index_interval_bytes),
                sealed: false,
                acks: AckSet::default(),
                ack_file: None,
                ack_dirty: false,
            },
        );
        self.next = self.next.max(base);
        Ok(())
    }

    pub(super) fn recover_segment(
        &self,
        base: Offset,
        is_last: bool,
        has_idx: bool,
    ) -> Result<Segment<B::File>, LogError> {
        let path = path_in(&self.dir, base, "seg");
        let mut file = self
            .backend
            .open(&path)
            .map_err(|e| LogError::io("open", &path, e))?;
        let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
        let idx_path = path_in(&self.dir, base, "idx");
        let mut seg = Segment {
            base,
            next: base,
            file,
            path: path.clone(),
            flushed: len,
            buf: Vec::new(),
            synced: len,
            index: SparseIndex::new(self.config.index_interval_bytes),
            sealed: !is_last,
            acks: AckSet::default(),
            ack_file: None,
            ack_dirty: false,
        };
        if !is_last && has_idx {
            match self.load_index(&idx_path, base, len) {
                Ok((index, next)) => {
                    seg.index = index;
                    seg.next = next;
                    return Ok(seg);
                }
                Err(e) => warn!(path = %idx_path.display(), error = %e, "rebuilding index"),
            }
        }
        let scan = segment::scan(
            &seg,
            self.config.max_record_bytes,
            self.config.index_interval_bytes,
        )?;
        if let Some((position, reason)) = scan.damage {
            warn!(
                path = %path.display(),
                position,
                %reason,
                cut_bytes = len - scan.valid_len,
                "torn or corrupt segment tail: truncating it"
            );
            file = seg.file;
            file.truncate(scan.valid_len)
                .map_err(|e| LogError::io("truncate", &path, e))?;
            seg.file = file;
            seg.flushed = scan.valid_len;
            seg.synced = scan.valid_len;
        }
        // A sealed segment without its `.idx` may never have been fsynced (a deferred
        // seal whose sync job had not completed; a process crash keeps the page cache):
        // what recovery reports must be durable.
        if scan.damage.is_some() || is_last || !has_idx {
            seg.file
                .sync()
                .map_err(|e| LogError::io("fsync", &path, e))?;
        }
        seg.index = scan.index;
        seg.next = scan.next;
        if has_idx {
            self.backend
                .remove(&idx_path)
                .map_err(|e| LogError::io("remove", &idx_path, e))?;
        }
        if !is_last {
            self.write_index(&seg);
        }
        Ok(seg)
    }

    pub(super) fn load_index(
        &self,
        path: &Path,
        base: Offset,
        seg_len: u64,
    ) -> Result<(SparseIndex, Offset), LogError> {
        let file = self
            .backend
            .open(path)
            .map_err(|e| LogError::io("open", path, e))?;
        let len = file.len().map_err(|e| LogError::io("stat", path, e))?;
        let mut buf = vec![0; usize::try_from(len).unwrap_or(0).min(256 << 20)];
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| LogError::io("read", path, e))?;
        let corrupt = |reason| LogError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason,
        };
        let (index, next, described_len) = SparseIndex::decode(&buf, base).map_err(corrupt)?;
        if described_len != seg_len {
            return Err(corrupt(Corruption::BadHeader));
        }
        Ok((index, next))
    }

    /// Writes a sealed segment's `.idx`. Failure only costs a rescan at the next open,
    /// so it is logged, not returned.
    pub(super) fn write_index(&self, seg: &Segment<B::File>) {
        let path = path_in(&self.dir, seg.base, "idx");
        let bytes = seg.index.encode(seg.base, seg.next, seg.len());
        let result = self.backend.create(&path).and_then(|mut f| {
            f.append(&bytes)?;
            f.sync()
        });
        if let Err(e) = result {
            warn!(path = %path.display(), error = %e, "could not write segment index");
            let _ = self.backend.remove(&path);
        }
    }

    pub(super) fn recover_acks(&mut self, base: Offset) -> Result<(), LogError> {
        let path = path_in(&self.dir, base, "ack");
        let mut file = self
            .backend
            .open(&path)
            .map_err(|e| LogError::io("open", &path, e))?;
        let len = file.len().map_err(|e| LogError::io("stat", &path, e))?;
        let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| LogError::io("read", &path, e))?;
        let (rels, _) = ack::decode(&buf, base);
        let Some(seg) = self.segments.get_mut(&base) else {
            return Ok(());
        };
        let count = seg.count();
        // Stop at the first entry for a record that is not there: everything before it is
        // trusted, everything after is dropped (those messages are redelivered, never lost).
        let valid = rels
            .iter()
            .position(|&r| u64::from(r) >= count)
            .unwrap_or(rels.len());
        for &rel in &rels[..valid] {
            seg.acks.insert(rel);
        }
        let valid_len = (valid * ack::ENTRY_LEN) as u64;
        if valid_len < len {
            warn!(
                path = %path.display(),
                valid_entries = valid,
                cut_bytes = len - valid_len,
                "torn or corrupt ack file tail: truncating it"
            );
            file.truncate(valid_len)
                .map_err(|e| LogError::io("truncate", &path, e))?;
        }
        // What recovery reports must be durable, even if the last run wrote these acks
        // without fsyncing them (a clean restart keeps the page cache).
        file.sync().map_err(|e| LogError::io("fsync", &path, e))?;
        seg.ack_file = Some((file, valid_len));
        Ok(())
    }
}
