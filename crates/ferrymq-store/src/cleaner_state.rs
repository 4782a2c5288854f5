//! A compacted partition's cleaner checkpoint, the file `cleaner.ckpt` in its directory:
//! where the dirty part of the log starts (log offset; every batch below it has been
//! mapped by a pass, and it may lie inside a segment when a pass's offset map filled) and when each segment was first cleaned (milliseconds), from which
//! `delete.retention.ms` counts before its tombstones may go. Text, one entry a line:
//! `dirty <log offset>` then `<segment base> <first cleaned ms>`. Written durably (temp
//! file, fsync, rename); a missing or unreadable file means "nothing cleaned yet".

use std::collections::BTreeMap;
use std::path::Path;

use ferrymq_core::queue::Offset;

use crate::log::backend::write_durably;
use crate::log::{Backend, BackendFile, LogError};

/// File name of the checkpoint in a partition directory.
pub const FILE: &str = "cleaner.ckpt";

/// What the cleaner remembers about a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanerState {
    /// Batches at or above this log offset are dirty (never mapped by a pass).
    pub dirty_from: Offset,
    /// Segment base → when a pass first cleaned it.
    pub cleaned_at: BTreeMap<Offset, i64>,
}

impl CleanerState {
    pub fn encode(&self) -> String {
        let mut s = format!("dirty {}\n", self.dirty_from);
        for (base, ms) in &self.cleaned_at {
            s.push_str(&format!("{base} {ms}\n"));
        }
        s
    }

    /// `None` for anything malformed.
    pub fn decode(text: &str) -> Option<CleanerState> {
        let mut lines = text.lines();
        let dirty_from = lines.next()?.strip_prefix("dirty ")?.parse().ok()?;
        let mut cleaned_at = BTreeMap::new();
        for line in lines {
            let (base, ms) = line.split_once(' ')?;
            cleaned_at.insert(base.parse().ok()?, ms.parse().ok()?);
        }
        Some(CleanerState {
            dirty_from,
            cleaned_at,
        })
    }

    /// Reads the checkpoint in `dir` (default if missing or unreadable).
    pub fn read<B: Backend>(backend: &B, dir: &Path) -> CleanerState {
        let path = dir.join(FILE);
        let Ok(file) = backend.open(&path) else {
            return CleanerState::default();
        };
        let mut buf = vec![0; file.len().unwrap_or(0).min(16 << 20) as usize];
        if file.read_exact_at(&mut buf, 0).is_err() {
            return CleanerState::default();
        }
        std::str::from_utf8(&buf)
            .ok()
            .and_then(CleanerState::decode)
            .unwrap_or_default()
    }

    /// Writes the checkpoint to `dir` durably.
    pub fn write<B: Backend>(&self, backend: &B, dir: &Path) -> Result<(), LogError> {
        let path = dir.join(FILE);
        write_durably(backend, &path, self.encode().as_bytes())
            .map_err(|e| LogError::io("write", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fault::FaultBackend;

    #[test]
    fn round_trip_and_garbage() {
        let mut s = CleanerState {
            dirty_from: 7,
            ..Default::default()
        };
        s.cleaned_at.insert(0, 1_000);
        s.cleaned_at.insert(3, 2_000);
        assert_eq!(CleanerState::decode(&s.encode()), Some(s.clone()));
        assert_eq!(CleanerState::decode("dirty x\n"), None);
        assert_eq!(CleanerState::decode("0 1\n"), None);
        assert_eq!(CleanerState::decode(""), None);
        let disk = FaultBackend::new(1);
        let dir = Path::new("/p");
        disk.create_dir_all(dir).unwrap();
        assert_eq!(CleanerState::read(&disk, dir), CleanerState::default());
        s.write(&disk, dir).unwrap();
        assert_eq!(CleanerState::read(&disk, dir), s);
    }
}
