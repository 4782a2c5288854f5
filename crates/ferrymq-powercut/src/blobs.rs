//! Where file contents live: two byte strings per file, the current one (what the broker
//! reads and writes) and the durable one (what was there at the file's last sync, what a
//! power cut leaves). [`FileBlobs`] keeps them as files in a backing directory;
//! [`MemBlobs`] in memory, for the model's unit tests.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::model::Ino;

/// One of a file's two contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId {
    /// The file.
    pub ino: Ino,
    /// The durable content (else the current one).
    pub durable: bool,
}

impl BlobId {
    /// The current content of `ino`.
    pub fn current(ino: Ino) -> BlobId {
        BlobId {
            ino,
            durable: false,
        }
    }

    /// The durable content of `ino`.
    pub fn durable(ino: Ino) -> BlobId {
        BlobId { ino, durable: true }
    }
}

/// Byte strings addressed by [`BlobId`]. A blob that was never written reads as empty.
pub trait Blobs {
    /// Writes `data` at `off`, zero-filling any gap past the end.
    fn write(&mut self, b: BlobId, off: u64, data: &[u8]) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `off`; returns how many (0 at or past the end).
    fn read(&mut self, b: BlobId, off: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Cuts or zero-extends the blob to `len` bytes.
    fn set_len(&mut self, b: BlobId, len: u64) -> io::Result<()>;
    /// Removes the blob (reads as empty afterwards).
    fn remove(&mut self, b: BlobId) -> io::Result<()>;

    /// Copies `[off, off + len)` of `from` to the same place in `to`.
    fn copy(&mut self, from: BlobId, to: BlobId, off: u64, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = self.read(from, off + done, &mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "copy past the end of a blob",
                ));
            }
            self.write(to, off + done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// The whole blob.
    fn read_all(&mut self, b: BlobId, len: u64) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        let mut done = 0usize;
        while done < out.len() {
            let n = self.read(b, done as u64, &mut out[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        out.truncate(done);
        Ok(out)
    }
}

/// Blobs in memory.
#[derive(Debug, Default)]
pub struct MemBlobs {
    blobs: HashMap<BlobId, Vec<u8>>,
}

impl Blobs for MemBlobs {
    fn write(&mut self, b: BlobId, off: u64, data: &[u8]) -> io::Result<()> {
        let v = self.blobs.entry(b).or_default();
        let end = off as usize + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, b: BlobId, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(v) = self.blobs.get(&b) else {
            return Ok(0);
        };
        if off as usize >= v.len() {
            return Ok(0);
        }
        let n = buf.len().min(v.len() - off as usize);
        buf[..n].copy_from_slice(&v[off as usize..off as usize + n]);
        Ok(n)
    }

    fn set_len(&mut self, b: BlobId, len: u64) -> io::Result<()> {
        self.blobs.entry(b).or_default().resize(len as usize, 0);
        Ok(())
    }

    fn remove(&mut self, b: BlobId) -> io::Result<()> {
        self.blobs.remove(&b);
        Ok(())
    }
}

/// Blobs as files `<ino>.cur` and `<ino>.dur` in a backing directory, kept open.
#[derive(Debug)]
pub struct FileBlobs {
    dir: PathBuf,
    open: HashMap<BlobId, File>,
}

impl FileBlobs {
    /// Blobs under `dir` (created if missing; must hold no blobs of another run).
    pub fn new(dir: &Path) -> io::Result<FileBlobs> {
        std::fs::create_dir_all(dir)?;
        Ok(FileBlobs {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
        })
    }

    /// The backing directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, b: BlobId) -> PathBuf {
        self.dir.join(format!(
            "{}.{}",
            b.ino,
            if b.durable { "dur" } else { "cur" }
        ))
    }

    fn file(&mut self, b: BlobId) -> io::Result<&File> {
        if !self.open.contains_key(&b) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.path(b))?;
            self.open.insert(b, f);
        }
        Ok(&self.open[&b])
    }
}

impl Blobs for FileBlobs {
    fn write(&mut self, b: BlobId, off: u64, data: &[u8]) -> io::Result<()> {
        self.file(b)?.write_all_at(data, off)
    }

    fn read(&mut self, b: BlobId, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        if !self.open.contains_key(&b) && !self.path(b).exists() {
            return Ok(0);
        }
        self.file(b)?.read_at(buf, off)
    }

    fn set_len(&mut self, b: BlobId, len: u64) -> io::Result<()> {
        self.file(b)?.set_len(len)
    }

    fn remove(&mut self, b: BlobId) -> io::Result<()> {
        self.open.remove(&b);
        match std::fs::remove_file(self.path(b)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
