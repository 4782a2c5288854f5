//! The storage backend: the handful of file operations a segmented log needs, behind a
//! trait so that tests can swap the real file system for a fault-injecting one
//! ([`super::fault::FaultBackend`]). The real implementation, [`FileBackend`], uses
//! `std::fs`, positional reads and `fdatasync` (`File::sync_data`).
//!
//! Directory entries follow POSIX: a new file's (or directory's) entry survives a power
//! cut only once its parent directory is fsynced. [`Backend::create`] and
//! [`Backend::create_dir`] leave that to the caller ([`Backend::sync_dir`]), so that one
//! directory fsync can cover several creations and run where the caller's fsync runs;
//! [`Backend::create_dir_all`], [`Backend::remove`] and [`Backend::rename`] fsync the
//! parent themselves and are durable when they return.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of files the log lives in.
///
/// `create_dir_all`, `remove` and `rename` are durable when they return (the parent
/// directory is fsynced); a file or directory made by `create` or `create_dir` is durable
/// only after [`Backend::sync_dir`] of its parent; file contents are durable only after
/// [`BackendFile::sync`].
pub trait Backend: Clone + Send + Sync + 'static {
    /// An open file.
    type File: BackendFile;

    /// Creates `dir` and its missing parents; every directory it creates is durable on
    /// return (each one's parent is fsynced).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates one directory (its parent must exist); fails with `AlreadyExists` if it is
    /// there. Its entry is durable after [`Backend::sync_dir`] of the parent.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` durable (files and directories created in it, `fsync`
    /// of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new empty file; fails if it exists. Its entry is durable after
    /// [`Backend::sync_dir`] of the parent.
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
    /// A second handle on the same file, for an fsync run on another thread while this
    /// one keeps appending (`dup` of the descriptor).
    fn try_clone(&self) -> io::Result<Self>
    where
        Self: Sized;
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

/// Fsyncs a directory, making the entries created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    crate::io_stats::sync_all(&File::open(dir)?)
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Creates `dir` and its missing parents on the real file system, fsyncing the parent of
/// each directory it creates: the whole chain is durable on return (`mkdir -p` alone is not:
/// after a power cut an entry whose parent was never fsynced may be gone, and everything
/// under it with it).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    // Outermost first: each fsync makes one new entry durable.
    for d in missing.iter().rev() {
        sync_dir(&parent(d))?;
    }
    Ok(())
}

/// Writes a small file durably on `backend`: written to `<path>.tmp`, fsynced, renamed
/// into place (the rename fsyncs the directory). A crash leaves the old file or the new
/// one, never a torn one.
pub fn write_durably<B: Backend>(backend: &B, path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match backend.remove(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = backend.create(&tmp)?;
    f.append(contents)?;
    f.sync()?;
    drop(f);
    backend.rename(&tmp, path)
}

impl Backend for FileBackend {
    type File = FsFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        create_dir_all(dir)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }

    fn create(&self, path: &Path) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
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
        crate::io_stats::sync_data(&self.file)
    }

    fn try_clone(&self) -> io::Result<FsFile> {
        Ok(FsFile {
            file: self.file.try_clone()?,
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}
