//! The storage backend: the handful of file operations a segmented log needs, behind a
//! trait so that tests can swap the real file system for a fault-injecting one
//! ([`super::fault::FaultBackend`]). The real implementation, [`FileBackend`], uses
//! `std::fs`, positional reads, `fdatasync` (`File::sync_data`) and fsyncs the directory
//! after creating or removing a file so that the directory entry itself is durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of files the log lives in.
///
/// `create` and `remove` are durable when they return (the directory is fsynced); file
/// contents are durable only after [`BackendFile::sync`].
pub trait Backend: Send + Sync + 'static {
    /// An open file.
    type File: BackendFile;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new empty file; fails if it exists. The new directory entry is durable.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and appending.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file; the removal is durable when this returns.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the files in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames `from` over `to` atomically (replacing it); durable when this returns.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// One open file: appended at the end, read anywhere.
pub trait BackendFile: Send + Sync + 'static {
    /// Current length in bytes, including unsynced appends.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Appends all of `data` at the end of the file. On error a prefix of `data` may have
    /// been written.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes every append and truncation so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `pos`, failing with `UnexpectedEof` past the end.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the file",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileBackend;

/// A file of [`FileBackend`], opened with `O_APPEND`.
#[derive(Debug)]
pub struct FsFile {
    file: File,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Backend for FileBackend {
    type File = FsFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        sync_dir(&parent(dir))
    }

    fn create(&self, path: &Path) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
        sync_dir(&parent(path))?;
        Ok(FsFile { file })
    }

    fn open(&self, path: &Path) -> io::Result<FsFile> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(FsFile { file })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)?;
        sync_dir(&parent(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)?;
        sync_dir(&parent(to))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
}

impl BackendFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(&self.file, buf, pos)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}
