//! The on-disk cache of a de-duplication exchange declared with
//! `x-cache-persistence = disk`: an append-only file of (key, expiry) entries, one per
//! newly remembered key, replayed on start and rewritten compacted when it holds many
//! stale entries. Entries are written to the OS at once (they survive a broker crash,
//! `kill -9` included) and fsynced on compaction and shutdown, not per message (an fsync
//! per publish would cap the exchange at a few hundred messages per second).
//!
//! Entry: `len:u32` (of key) `expires:u64` (ms since the epoch, `u64::MAX` = never)
//! `key` `crc:u32` (CRC32C of the preceding bytes of the entry), all big-endian. Replay
//! stops at the first short or damaged entry, and the file is cut there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

const MAX_KEY: usize = 1 << 20;

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The file of a de-duplication exchange's cache under `data_dir`.
pub fn cache_path(data_dir: &Path, exchange: &str) -> PathBuf {
    let a = crc32c::crc32c(exchange.as_bytes());
    let b = crc32c::crc32c_append(0x9e37_79b9, exchange.as_bytes());
    data_dir.join("dedup").join(format!("{a:08x}{b:08x}.cache"))
}

fn encode(out: &mut Vec<u8>, key: &[u8], expires: u64) {
    let start = out.len();
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(key);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Remembered keys with their expiry, oldest first.
pub type Entries = Vec<(Vec<u8>, u64)>;

/// Parses entries up to the first bad one; returns them and the length of the good part.
pub fn decode(buf: &[u8]) -> (Entries, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(len) = buf.get(pos..pos + 4) {
        let n = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        if n > MAX_KEY {
            break;
        }
        let end = pos + 12 + n + 4;
        let Some(entry) = buf.get(pos..end) else {
            break;
        };
        let crc = u32::from_be_bytes(entry[12 + n..].try_into().expect("4 bytes"));
        if crc32c::crc32c(&entry[..12 + n]) != crc {
            break;
        }
        let expires = u64::from_be_bytes(entry[4..12].try_into().expect("8 bytes"));
        out.push((entry[12..12 + n].to_vec(), expires));
        pos = end;
    }
    (out, pos)
}

/// An open cache file.
pub struct DedupJournal {
    path: PathBuf,
    file: File,
    entries: usize,
    buf: Vec<u8>,
}

impl DedupJournal {
    /// Opens (or creates) the file and returns the entries it holds, oldest first.
    pub fn open(path: &Path) -> Result<(DedupJournal, Entries), StoreError> {
        if let Some(dir) = path.parent() {
            crate::log::backend::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        if let Some(dir) = path.parent() {
            // The file may be new: its entry must outlive a power cut like its contents.
            crate::log::backend::sync_dir(dir).map_err(|e| io(dir, e))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let (entries, good) = decode(&bytes);
        if good < bytes.len() {
            tracing::warn!(path = %path.display(), at = good, "cutting a damaged de-duplication cache file");
            file.set_len(good as u64).map_err(|e| io(path, e))?;
        }
        Ok((
            DedupJournal {
                path: path.to_path_buf(),
                file,
                entries: entries.len(),
                buf: Vec::new(),
            },
            entries,
        ))
    }

    /// Remembers one key (written to the OS, not fsynced).
    pub fn append(&mut self, key: &[u8], expires: u64) -> Result<(), StoreError> {
        self.buf.clear();
        encode(&mut self.buf, key, expires);
        self.file
            .write_all(&self.buf)
            .map_err(|e| io(&self.path, e))?;
        self.entries += 1;
        Ok(())
    }

    /// Entries in the file (live or not).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Replaces the file with `live` (write, fsync, rename).
    pub fn rewrite<'a>(
        &mut self,
        live: impl IntoIterator<Item = (&'a [u8], u64)>,
    ) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("tmp");
        let mut buf = Vec::new();
        let mut n = 0;
        for (k, e) in live {
            encode(&mut buf, k, e);
            n += 1;
        }
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&buf).map_err(|e| io(&tmp, e))?;
        crate::io_stats::sync_all(&f).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            crate::log::backend::sync_dir(dir).map_err(|e| io(dir, e))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        self.entries = n;
        Ok(())
    }

    pub fn sync(&self) -> Result<(), StoreError> {
        crate::io_stats::sync_data(&self.file).map_err(|e| io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let path = cache_path(tmp.path(), "ex");
        let (mut j, e) = DedupJournal::open(&path).unwrap();
        assert!(e.is_empty());
        j.append(b"sa", 10).unwrap();
        j.append(b"sb", u64::MAX).unwrap();
        drop(j);
        // A torn last entry is cut off.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 5, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut j, e) = DedupJournal::open(&path).unwrap();
        assert_eq!(e, vec![(b"sa".to_vec(), 10), (b"sb".to_vec(), u64::MAX)]);
        j.rewrite([(&b"sb"[..], u64::MAX)]).unwrap();
        j.append(b"sc", 7).unwrap();
        drop(j);
        let (_, e) = DedupJournal::open(&path).unwrap();
        assert_eq!(e, vec![(b"sb".to_vec(), u64::MAX), (b"sc".to_vec(), 7)]);
        // Garbage decodes to nothing rather than panicking.
        assert_eq!(decode(&[0xff; 40]).0.len(), 0);
    }
}
