//! Rewriting sealed segments off the owner (compaction). The owner hands out
//! [`SealedSegment`]s (where a sealed segment lives: sealed segments never change but by a
//! rewrite, which only the owner installs); a background thread reads them and writes a
//! replacement to `<base>.cmp` (synced) with its sparse index built on the way
//! ([`PreparedRewrite`]); the owner then installs it with [`Log::install_rewrite`]: remove
//! the `.idx`, rename `.cmp` over `.seg` (durable when it returns: the directory is
//! fsynced), write the new `.idx`. A crash before the rename leaves the old segment and a
//! `.cmp` that open removes; after it, the new segment, whose index is rebuilt if its
//! `.idx` is missing. A replacement keeps the segment's record count (one payload for one
//! payload), so log offsets never move.

use std::collections::HashMap;

use super::*;

/// A sealed segment as it was when the owner handed it out.
#[derive(Debug, Clone)]
pub struct SealedSegment<B: Backend> {
    backend: B,
    dir: PathBuf,
    pub base: Offset,
    /// One past its last record.
    pub next: Offset,
    /// Bytes of its file.
    pub bytes: u64,
    /// Its largest record timestamp (`i64::MIN` if empty).
    pub max_timestamp: i64,
    max_record_bytes: u32,
    index_interval: u32,
}

/// A replacement segment written and synced, not yet installed.
#[derive(Debug)]
pub struct PreparedRewrite {
    base: Offset,
    next: Offset,
    len: u64,
    index: SparseIndex,
    cmp: PathBuf,
}

impl PreparedRewrite {
    /// Base offset of the segment it replaces.
    pub fn base(&self) -> Offset {
        self.base
    }
}

impl<B: Backend> SealedSegment<B> {
    fn open(&self) -> Result<Segment<B::File>, LogError> {
        let path = path_in(&self.dir, self.base, "seg");
        let file = self
            .backend
            .open(&path)
            .map_err(|e| LogError::io("open", &path, e))?;
        Ok(Segment {
            base: self.base,
            next: self.next,
            file,
            path,
            flushed: self.bytes,
            buf: Vec::new(),
            synced: self.bytes,
            index: SparseIndex::new(self.index_interval),
            sealed: true,
            acks: AckSet::default(),
            ack_file: None,
            ack_dirty: false,
        })
    }

    /// The timestamp of its first record (`None` if empty): one read of a record header.
    pub fn first_timestamp(&self) -> Result<Option<i64>, LogError> {
        if self.next == self.base {
            return Ok(None);
        }
        let path = path_in(&self.dir, self.base, "seg");
        let file = self
            .backend
            .open(&path)
            .map_err(|e| LogError::io("open", &path, e))?;
        let mut head = [0u8; 24];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| LogError::io("read", &path, e))?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&head[16..24]);
        Ok(Some(i64::from_le_bytes(ts)))
    }

    /// Calls `f(offset, timestamp, payload)` for each record, in order.
    pub fn for_each(
        &self,
        mut f: impl FnMut(Offset, i64, &[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let seg = self.open()?;
        let mut cursor = Cursor::new(0, 1 << 20);
        let mut expected = self.base;
        while expected < self.next {
            let Some(found) = cursor.next(&seg, self.max_record_bytes)? else {
                break;
            };
            if found.offset != expected {
                return Err(LogError::Corrupt {
                    path: seg.path.clone(),
                    position: found.position,
                    reason: Corruption::WrongOffset {
                        expected,
                        found: found.offset,
                    },
                });
            }
            f(found.offset, found.timestamp, cursor.payload(&found))?;
            expected += 1;
        }
        if expected != self.next {
            return Err(LogError::Corrupt {
                path: seg.path.clone(),
                position: cursor.pos,
                reason: Corruption::Truncated,
            });
        }
        Ok(())
    }

    /// Writes the segment with each payload passed through `rewrite` (`None`: kept as it
    /// is) to `<base>.cmp` and syncs it; `Ok(None)` if no payload was replaced (nothing
    /// is written then).
    pub fn rewrite(
        &self,
        mut rewrite: impl FnMut(Offset, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<Option<PreparedRewrite>, LogError> {
        let mut replaced = HashMap::new();
        self.for_each(|offset, _, payload| {
            if let Some(new) = rewrite(offset, payload) {
                replaced.insert(offset, new);
            }
            Ok(())
        })?;
        if replaced.is_empty() {
            return Ok(None);
        }
        let cmp = path_in(&self.dir, self.base, "cmp");
        if self.backend.remove(&cmp).is_ok() {
            debug!(path = %cmp.display(), "removed a stale rewrite");
        }
        let mut file = self
            .backend
            .create(&cmp)
            .map_err(|e| LogError::io("create", &cmp, e))?;
        let mut index = SparseIndex::new(self.index_interval);
        let mut buf = Vec::new();
        let mut len = 0u64;
        self.for_each(|offset, ts, payload| {
            let payload = replaced.get(&offset).map_or(payload, Vec::as_slice);
            if payload.len() > self.max_record_bytes as usize {
                return Err(LogError::RecordTooLarge {
                    size: payload.len(),
                    max: self.max_record_bytes,
                });
            }
            let at = buf.len();
            record::encode(&mut buf, offset, ts, payload);
            let frame = (buf.len() - at) as u64;
            let rel = u32::try_from(offset - self.base).unwrap_or(u32::MAX);
            index.on_append(rel, len, frame, ts);
            len += frame;
            if buf.len() >= 1 << 20 {
                file.append(&buf)
                    .map_err(|e| LogError::io("write", &cmp, e))?;
                buf.clear();
            }
            Ok(())
        })
        .inspect_err(|_| {
            let _ = self.backend.remove(&cmp);
        })?;
        if let Err(e) = file.append(&buf).and_then(|()| file.sync()) {
            let _ = self.backend.remove(&cmp);
            return Err(LogError::io("write", &cmp, e));
        }
        Ok(Some(PreparedRewrite {
            base: self.base,
            next: self.next,
            len,
            index,
            cmp,
        }))
    }
}

impl<B: Backend> Log<B> {
    /// The sealed segments, oldest first, for a rewrite off the owner: up to the first
    /// one a deferred seal has not fsynced yet (its sync job will write its `.idx`).
    pub fn sealed_segments(&self) -> Vec<SealedSegment<B>> {
        self.segments
            .values()
            .take_while(|s| s.sealed && s.synced >= s.len())
            .map(|s| SealedSegment {
                backend: self.backend.clone(),
                dir: self.dir.clone(),
                base: s.base,
                next: s.next,
                bytes: s.len(),
                max_timestamp: if s.count() == 0 {
                    i64::MIN
                } else {
                    s.index.max_timestamp()
                },
                max_record_bytes: self.config.max_record_bytes,
                index_interval: self.config.index_interval_bytes,
            })
            .collect()
    }

    /// Installs a replacement written by [`SealedSegment::rewrite`]. Returns false (and
    /// removes the `.cmp`) if its segment is gone meanwhile (retention deleted it).
    pub fn install_rewrite(&mut self, prepared: PreparedRewrite) -> Result<bool, LogError> {
        self.check_writable()?;
        let current = self
            .segments
            .get(&prepared.base)
            .filter(|s| s.sealed && s.next == prepared.next);
        if current.is_none() {
            self.discard_rewrite(prepared);
            return Ok(false);
        }
        let base = prepared.base;
        let idx = path_in(&self.dir, base, "idx");
        let _ = self.backend.remove(&idx);
        let seg_path = path_in(&self.dir, base, "seg");
        self.backend
            .rename(&prepared.cmp, &seg_path)
            .map_err(|e| LogError::io("rename", &seg_path, e))?;
        let file = self
            .backend
            .open(&seg_path)
            .map_err(|e| LogError::io("open", &seg_path, e))?;
        let old = self.segments.remove(&base).expect("checked above");
        let fresh = Segment {
            base,
            next: prepared.next,
            file,
            path: seg_path,
            flushed: prepared.len,
            buf: Vec::new(),
            synced: prepared.len,
            index: prepared.index,
            sealed: true,
            acks: old.acks,
            ack_file: old.ack_file,
            ack_dirty: old.ack_dirty,
        };
        self.write_index(&fresh);
        self.segments.insert(base, fresh);
        Ok(true)
    }

    /// Removes a replacement that will not be installed.
    pub fn discard_rewrite(&self, prepared: PreparedRewrite) {
        if let Err(e) = self.backend.remove(&prepared.cmp) {
            warn!(path = %prepared.cmp.display(), error = %e, "removing a rewrite");
        }
    }
}
