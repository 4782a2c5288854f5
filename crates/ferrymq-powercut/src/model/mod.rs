//! The power-loss model: a file system tree whose every file and directory has a current
//! state (what processes see) and a durable state (what a power cut leaves), following
//! POSIX's guarantees and nothing more:
//!
//! - a file's data and size become durable at its `fsync`/`fdatasync` ([`Model::sync_file`]);
//!   writes and truncations since the last one are lost on a cut;
//! - a directory's entries (names created, renamed or removed in it: `create`, `mkdir`,
//!   `rename`, `unlink`, `rmdir`) become durable at an fsync of that directory
//!   ([`Model::sync_dir`]), all at once; until then the cut brings back the entries the
//!   directory had at its last sync. A file whose entry never reached a synced directory
//!   is gone, whatever was synced in it; a file unlinked or replaced by a rename since its
//!   directory's last sync comes back with its durable content.
//!
//! [`Model::cut`] freezes the tree (every later change fails with [`FsError::Frozen`],
//! reads go on) and [`Model::materialize`] writes the durable tree out as a plain
//! directory. The model is pure (contents live behind [`Blobs`]); the FUSE glue is
//! `crate::fs`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

use crate::blobs::{BlobId, Blobs};
use crate::ranges::Ranges;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

/// An inode number (FUSE's node id).
pub type Ino = u64;
/// The root directory's inode number.
pub const ROOT: Ino = 1;

/// What an operation on the model can fail with; [`FsError::errno`] is what the FUSE
/// glue answers.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// ENOENT
    #[error("no such file or directory")]
    NotFound,
    /// EEXIST
    #[error("file exists")]
    Exists,
    /// ENOTDIR
    #[error("not a directory")]
    NotDir,
    /// EISDIR
    #[error("is a directory")]
    IsDir,
    /// ENOTEMPTY
    #[error("directory not empty")]
    NotEmpty,
    /// EINVAL
    #[error("invalid argument")]
    Invalid,
    /// EIO: the power is cut, nothing changes any more.
    #[error("the power is cut: the file system is frozen")]
    Frozen,
    /// The backing store failed (EIO).
    #[error("backing store: {0}")]
    Io(#[from] io::Error),
}

impl FsError {
    /// The errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid => libc::EINVAL,
            FsError::Frozen | FsError::Io(_) => libc::EIO,
        }
    }
}

/// Result of a model operation.
pub type FsResult<T> = Result<T, FsError>;

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// What `stat` shows of an inode (its current state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// A sync the model acknowledges without doing, to show that a test notices a missing
/// fsync: `dir:SUB` for directory fsyncs, `file:SUB` for file fsyncs, of paths (relative
/// to the mount, e.g. `data/kafka`) containing `SUB` (empty: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lie {
    /// Directory fsyncs of matching directories do nothing.
    DirSync(String),
    /// File fsyncs of matching files do nothing.
    FileSync(String),
}

impl FromStr for Lie {
    type Err = String;

    fn from_str(s: &str) -> Result<Lie, String> {
        match s.split_once(':') {
            Some(("dir", sub)) => Ok(Lie::DirSync(sub.to_string())),
            Some(("file", sub)) => Ok(Lie::FileSync(sub.to_string())),
            _ => Err(format!(
                "expected dir:SUBSTRING or file:SUBSTRING, got {s:?}"
            )),
        }
    }
}

/// Counters since the mount.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub writes: u64,
    pub bytes_written: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    /// Syncs acknowledged without effect ([`Lie`]).
    pub lies: u64,
}

/// What a cut kept and lost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    /// Directories in the durable tree (the root included).
    pub dirs: u64,
    /// Files in the durable tree.
    pub files: u64,
    /// Bytes of file content in the durable tree.
    pub bytes: u64,
    /// Paths of the current tree missing from the durable one.
    pub paths_lost: u64,
    /// Bytes written or truncated since the last sync of their file (of files still
    /// linked).
    pub unsynced_bytes: u64,
}

#[derive(Debug)]
struct FileState {
    size: u64,
    /// Bytes written since the last sync (within `size`).
    dirty: Ranges,
    /// The smallest size since the last sync: the durable content past it is stale.
    min_len: u64,
    durable_size: u64,
}

#[derive(Debug, Default)]
struct DirState {
    entries: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
}

#[derive(Debug)]
enum Body {
    File(FileState),
    Dir(DirState),
}

#[derive(Debug)]
struct Inode {
    body: Body,
    /// Names in the current tree (0 or 1: no hard links).
    nlink: u32,
    /// Open handles.
    open: u32,
    /// Names in durable directory states.
    durable_refs: u32,
    /// Where it was last linked (for paths in reports and [`Lie`] matching).
    parent: Ino,
    name: OsString,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Inode {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }
}

/// The tree, its durable shadow and the contents' store.
#[derive(Debug)]
pub struct Model<S: Blobs> {
    blobs: S,
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    frozen: bool,
    lies: Vec<Lie>,
    stats: Stats,
}

/// A node of a tree read out of the model (tests, reports): a directory or a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
}

impl<S: Blobs> Model<S> {
    /// An empty tree (its root is durable).
    pub fn new(blobs: S) -> Model<S> {
        let now = SystemTime::now();
        let root = Inode {
            body: Body::Dir(DirState::default()),
            nlink: 1,
            open: 0,
            durable_refs: 1,
            parent: ROOT,
            name: OsString::new(),
            perm: 0o755,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            ctime: now,
        };
        Model {
            blobs,
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            frozen: false,
            lies: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Syncs to acknowledge without doing.
    pub fn set_lies(&mut self, lies: Vec<Lie>) {
        self.lies = lies;
    }

    /// Counters since the mount.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the power is cut.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Cuts the power: from now on every change fails with [`FsError::Frozen`].
    pub fn cut(&mut self) {
        self.frozen = true;
    }

    fn inode(&self, ino: Ino) -> FsResult<&Inode> {
        self.inodes.get(&ino).ok_or(FsError::NotFound)
    }

    fn inode_mut(&mut self, ino: Ino) -> FsResult<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(FsError::NotFound)
    }

    fn dir(&self, ino: Ino) -> FsResult<&DirState> {
        match &self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(FsError::NotDir),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> FsResult<&mut DirState> {
        match &mut self.inode_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(FsError::NotDir),
        }
    }

    fn check_live(&self) -> FsResult<()> {
        if self.frozen {
            Err(FsError::Frozen)
        } else {
            Ok(())
        }
    }

    /// The current attributes of `ino`.
    pub fn attr(&self, ino: Ino) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        let size = match &i.body {
            Body::File(f) => f.size,
            Body::Dir(d) => d.entries.len() as u64,
        };
        Ok(Attr {
            ino,
            kind: i.kind(),
            size,
            perm: i.perm,
            nlink: match i.body {
                Body::Dir(_) => 2,
                Body::File(_) => i.nlink,
            },
            uid: i.uid,
            gid: i.gid,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
        })
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Attr> {
        let ino = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        self.attr(ino)
    }

    /// The current entries of a directory, in name order.
    pub fn readdir(&self, dir: Ino) -> FsResult<Vec<(OsString, Ino, Kind)>> {
        let d = self.dir(dir)?;
        Ok(d.entries
            .iter()
            .map(|(n, &i)| (n.clone(), i, self.inodes[&i].kind()))
            .collect())
    }

    /// The path of `ino` relative to the root, by where it was last linked.
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let Some(i) = self.inodes.get(&at) else { break };
            parts.push(i.name.to_string_lossy().into_owned());
            at = i.parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }

    fn add_inode(
        &mut self,
        parent: Ino,
        name: &OsStr,
        body: Body,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> FsResult<Ino> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        if name.is_empty() || name == "." || name == ".." {
            return Err(FsError::Invalid);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let now = SystemTime::now();
        self.inodes.insert(
            ino,
            Inode {
                body,
                nlink: 1,
                open: 0,
                durable_refs: 0,
                parent,
                name: name.to_owned(),
                perm,
                uid,
                gid,
                atime: now,
                mtime: now,
                ctime: now,
            },
        );
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: Ino) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            i.mtime = now;
            i.ctime = now;
        }
    }

    /// Creates an empty file `name` in `parent` (`EEXIST` if the name is taken).
    pub fn create(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.check_live()?;
        let body = Body::File(FileState {
            size: 0,
            dirty: Ranges::default(),
            min_len: 0,
            durable_size: 0,
        });
        let ino = self.add_inode(parent, name, body, perm, uid, gid)?;
        self.attr(ino)
    }

    /// Creates an empty directory `name` in `parent`.
    pub fn mkdir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> FsResult<Attr> {
        self.check_live()?;
        let ino = self.add_inode(parent, name, Body::Dir(DirState::default()), perm, uid, gid)?;
        self.attr(ino)
    }

    /// Removes the file `name` from `parent`.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.check_live()?;
        let ino = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        if self.inode(ino)?.kind() == Kind::Dir {
            return Err(FsError::IsDir);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch(parent);
        self.unlinked(ino)
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.check_live()?;
        let ino = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        if !self.dir(ino)?.entries.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch(parent);
        self.unlinked(ino)
    }

    fn unlinked(&mut self, ino: Ino) -> FsResult<()> {
        let i = self.inode_mut(ino)?;
        i.nlink = i.nlink.saturating_sub(1);
        i.ctime = SystemTime::now();
        self.maybe_free(ino)
    }

    /// Renames `parent/name` to `newparent/newname`, replacing a file there (or an empty
    /// directory, if the source is a directory). With `noreplace` an existing target is
    /// `EEXIST`.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        noreplace: bool,
    ) -> FsResult<()> {
        self.check_live()?;
        let ino = *self
            .dir(parent)?
            .entries
            .get(name)
            .ok_or(FsError::NotFound)?;
        self.dir(newparent)?;
        if newname.is_empty() || newname == "." || newname == ".." {
            return Err(FsError::Invalid);
        }
        let kind = self.inode(ino)?.kind();
        if kind == Kind::Dir {
            // Not into itself or its own subtree.
            let mut at = newparent;
            loop {
                if at == ino {
                    return Err(FsError::Invalid);
                }
                if at == ROOT {
                    break;
                }
                at = self.inode(at)?.parent;
            }
        }
        let replaced = self.dir(newparent)?.entries.get(newname).copied();
        if let Some(old) = replaced {
            if old == ino {
                return Ok(());
            }
            if noreplace {
                return Err(FsError::Exists);
            }
            match (kind, self.inode(old)?.kind()) {
                (Kind::File, Kind::Dir) => return Err(FsError::IsDir),
                (Kind::Dir, Kind::File) => return Err(FsError::NotDir),
                (Kind::Dir, Kind::Dir) if !self.dir(old)?.entries.is_empty() => {
                    return Err(FsError::NotEmpty)
                }
                _ => {}
            }
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(newparent)?
            .entries
            .insert(newname.to_owned(), ino);
        self.touch(parent);
        self.touch(newparent);
        let i = self.inode_mut(ino)?;
        i.parent = newparent;
        i.name = newname.to_owned();
        i.ctime = SystemTime::now();
        if let Some(old) = replaced {
            self.unlinked(old)?;
        }
        Ok(())
    }

    /// Counts an open handle (an unlinked file stays readable while open).
    pub fn open(&mut self, ino: Ino) -> FsResult<()> {
        self.inode_mut(ino)?.open += 1;
        Ok(())
    }

    /// Drops an open handle.
    pub fn release(&mut self, ino: Ino) -> FsResult<()> {
        let i = self.inode_mut(ino)?;
        i.open = i.open.saturating_sub(1);
        self.maybe_free(ino)
    }

    /// Forgets an inode nothing refers to any more: not linked, not open, in no durable
    /// directory state. A directory's durable entries go with it.
    fn maybe_free(&mut self, ino: Ino) -> FsResult<()> {
        let mut todo = vec![ino];
        while let Some(ino) = todo.pop() {
            let Some(i) = self.inodes.get(&ino) else {
                continue;
            };
            if ino == ROOT || i.nlink > 0 || i.open > 0 || i.durable_refs > 0 {
                continue;
            }
            let i = self.inodes.remove(&ino).expect("present");
            match i.body {
                Body::File(_) => {
                    self.blobs.remove(BlobId::current(ino))?;
                    self.blobs.remove(BlobId::durable(ino))?;
                }
                Body::Dir(d) => {
                    for child in d.durable.into_values() {
                        if let Some(c) = self.inodes.get_mut(&child) {
                            c.durable_refs -= 1;
                            todo.push(child);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn file_mut(&mut self, ino: Ino) -> FsResult<&mut FileState> {
        match &mut self.inode_mut(ino)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(FsError::IsDir),
        }
    }

    /// Writes `data` at `off` (current state only).
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8]) -> FsResult<usize> {
        self.check_live()?;
        let end = off.checked_add(data.len() as u64).ok_or(FsError::Invalid)?;
        self.file_mut(ino)?;
        self.blobs.write(BlobId::current(ino), off, data)?;
        let f = self.file_mut(ino)?;
        f.dirty.insert(off, end);
        f.size = f.size.max(end);
        self.touch(ino);
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        Ok(data.len())
    }

    /// Reads up to `len` bytes at `off` of the current state.
    pub fn read(&mut self, ino: Ino, off: u64, len: u32) -> FsResult<Vec<u8>> {
        let size = self.file_mut(ino)?.size;
        if off >= size {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (len as u64).min(size - off) as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .blobs
                .read(BlobId::current(ino), off + done as u64, &mut buf[done..])?;
            if n == 0 {
                break; // a hole past the blob's end reads as zeros
            }
            done += n;
        }
        Ok(buf)
    }

    /// Cuts or zero-extends a file (current state only).
    pub fn set_size(&mut self, ino: Ino, len: u64) -> FsResult<Attr> {
        self.check_live()?;
        self.file_mut(ino)?;
        self.blobs.set_len(BlobId::current(ino), len)?;
        let f = self.file_mut(ino)?;
        if len < f.size {
            f.dirty.clip(len);
            f.min_len = f.min_len.min(len);
        }
        f.size = len;
        self.touch(ino);
        self.attr(ino)
    }

    /// Changes permission bits and times (not part of the power-loss model).
    pub fn set_meta(
        &mut self,
        ino: Ino,
        perm: Option<u16>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> FsResult<Attr> {
        self.check_live()?;
        let i = self.inode_mut(ino)?;
        if let Some(p) = perm {
            i.perm = p;
        }
        if let Some(t) = atime {
            i.atime = t;
        }
        if let Some(t) = mtime {
            i.mtime = t;
        }
        i.ctime = SystemTime::now();
        self.attr(ino)
    }

    fn lies_about(&self, ino: Ino, dir: bool) -> bool {
        if self.lies.is_empty() {
            return false;
        }
        let path = self.path_of(ino);
        self.lies.iter().any(|l| match l {
            Lie::DirSync(sub) => dir && path.contains(sub.as_str()),
            Lie::FileSync(sub) => !dir && path.contains(sub.as_str()),
        })
    }

    /// `fsync`/`fdatasync` of a file: its data and size become durable (not its entry).
    pub fn sync_file(&mut self, ino: Ino) -> FsResult<()> {
        self.check_live()?;
        if self.inode(ino)?.kind() == Kind::Dir {
            return self.sync_dir(ino);
        }
        self.stats.file_syncs += 1;
        if self.lies_about(ino, false) {
            self.stats.lies += 1;
            return Ok(());
        }
        let f = self.file_mut(ino)?;
        let (min_len, size) = (f.min_len, f.size);
        let dirty: Vec<(u64, u64)> = f.dirty.iter().collect();
        let dur = BlobId::durable(ino);
        // Past the smallest size since the last sync the old durable bytes are stale:
        // cut them, zero-extend to the current size, then copy what was written.
        self.blobs.set_len(dur, min_len)?;
        self.blobs.set_len(dur, size)?;
        for (s, e) in dirty {
            self.blobs.copy(BlobId::current(ino), dur, s, e - s)?;
        }
        let f = self.file_mut(ino)?;
        f.dirty.clear();
        f.min_len = size;
        f.durable_size = size;
        Ok(())
    }

    /// `fsync` of a directory: its current entries become its durable ones.
    pub fn sync_dir(&mut self, ino: Ino) -> FsResult<()> {
        self.check_live()?;
        self.dir(ino)?;
        self.stats.dir_syncs += 1;
        if self.lies_about(ino, true) {
            self.stats.lies += 1;
            return Ok(());
        }
        let d = self.dir_mut(ino)?;
        let now = d.entries.clone();
        let old = std::mem::replace(&mut d.durable, now.clone());
        for c in now.values() {
            self.inode_mut(*c)?.durable_refs += 1;
        }
        for c in old.values() {
            if let Some(i) = self.inodes.get_mut(c) {
                i.durable_refs -= 1;
            }
        }
        for c in old.into_values() {
            self.maybe_free(c)?;
        }
        Ok(())
    }

    /// The paths of a tree in pre-order (a directory before what is in it): the durable
    /// tree (what a cut leaves) or the current one.
    fn paths(&self, durable: bool) -> Vec<(String, Ino, Kind)> {
        let mut out = Vec::new();
        // (path, directory, the directories above it): durable states left by renames of
        // directories may show one directory in two places, or inside itself; each place
        // is listed, a directory inside itself is not followed.
        let mut stack = vec![(String::new(), ROOT, vec![ROOT])];
        while let Some((path, dir, above)) = stack.pop() {
            let Some(Inode {
                body: Body::Dir(d), ..
            }) = self.inodes.get(&dir)
            else {
                continue;
            };
            let entries = if durable { &d.durable } else { &d.entries };
            let mut subdirs = Vec::new();
            for (name, &ino) in entries {
                let Some(i) = self.inodes.get(&ino) else {
                    continue;
                };
                if above.contains(&ino) {
                    continue;
                }
                let p = if path.is_empty() {
                    name.to_string_lossy().into_owned()
                } else {
                    format!("{path}/{}", name.to_string_lossy())
                };
                out.push((p.clone(), ino, i.kind()));
                if i.kind() == Kind::Dir {
                    let mut above = above.clone();
                    above.push(ino);
                    subdirs.push((p, ino, above));
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        out
    }

    /// The durable tree, read into memory: what a cut now would leave.
    pub fn durable_tree(&mut self) -> FsResult<BTreeMap<String, Node>> {
        let mut out = BTreeMap::new();
        for (path, ino, kind) in self.paths(true) {
            let node = match kind {
                Kind::Dir => Node::Dir,
                Kind::File => Node::File(self.durable_content(ino)?),
            };
            out.insert(path, node);
        }
        Ok(out)
    }

    /// The current tree, read into memory.
    pub fn current_tree(&mut self) -> FsResult<BTreeMap<String, Node>> {
        let mut out = BTreeMap::new();
        for (path, ino, kind) in self.paths(false) {
            let node = match kind {
                Kind::Dir => Node::Dir,
                Kind::File => {
                    let size = self.attr(ino)?.size;
                    Node::File(
                        self.blobs
                            .read_all(BlobId::current(ino), size)?
                            .into_iter()
                            .chain(std::iter::repeat(0))
                            .take(size as usize)
                            .collect(),
                    )
                }
            };
            out.insert(path, node);
        }
        Ok(out)
    }

    fn durable_content(&mut self, ino: Ino) -> FsResult<Vec<u8>> {
        let size = match &self.inode(ino)?.body {
            Body::File(f) => f.durable_size,
            Body::Dir(_) => return Err(FsError::IsDir),
        };
        let mut v = self.blobs.read_all(BlobId::durable(ino), size)?;
        v.resize(size as usize, 0);
        Ok(v)
    }

    /// Writes the durable tree into `target` (an empty or missing directory): the state a
    /// machine would boot with after a power cut now.
    pub fn materialize(&mut self, target: &Path) -> FsResult<CutReport> {
        std::fs::create_dir_all(target)?;
        let mut report = CutReport {
            dirs: 1,
            ..CutReport::default()
        };
        let durable = self.paths(true);
        let durable_names: std::collections::HashSet<&str> =
            durable.iter().map(|(p, _, _)| p.as_str()).collect();
        for (path, ino, _) in self.paths(false) {
            if !durable_names.contains(path.as_str()) {
                report.paths_lost += 1;
            }
            if let Some(Inode {
                body: Body::File(f),
                ..
            }) = self.inodes.get(&ino)
            {
                report.unsynced_bytes += f.dirty.bytes() + f.durable_size.saturating_sub(f.min_len);
            }
        }
        for (path, ino, kind) in &durable {
            let at = target.join(path);
            match kind {
                Kind::Dir => {
                    std::fs::create_dir(&at)?;
                    report.dirs += 1;
                }
                Kind::File => {
                    let bytes = self.durable_content(*ino)?;
                    report.files += 1;
                    report.bytes += bytes.len() as u64;
                    std::fs::write(&at, bytes)?;
                }
            }
            let perm = self.inode(*ino)?.perm;
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(u32::from(perm)))?;
        }
        Ok(report)
    }

    /// Loads a real directory tree into the root, all of it durable (the state a machine
    /// boots with). The root must be empty.
    pub fn import(&mut self, source: &Path) -> FsResult<()> {
        self.check_live()?;
        if !self.dir(ROOT)?.entries.is_empty() {
            return Err(FsError::NotEmpty);
        }
        // Imported files and entries are durable whatever syncs are lied about.
        let lies = std::mem::take(&mut self.lies);
        let r = self.import_dir(source, ROOT);
        self.lies = lies;
        self.stats = Stats::default();
        r
    }

    fn import_dir(&mut self, source: &Path, dir: Ino) -> FsResult<()> {
        let mut entries: Vec<_> = std::fs::read_dir(source)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let meta = e.metadata()?;
            let name = e.file_name();
            let perm = (meta.mode() & 0o7777) as u16;
            if meta.is_dir() {
                let ino = self.mkdir(dir, &name, perm, meta.uid(), meta.gid())?.ino;
                self.import_dir(&e.path(), ino)?;
            } else if meta.is_file() {
                let ino = self.create(dir, &name, perm, meta.uid(), meta.gid())?.ino;
                let bytes = std::fs::read(e.path())?;
                self.write(ino, 0, &bytes)?;
                self.sync_file(ino)?;
            }
            // Anything else (symlinks, sockets) is not part of a broker's data dir.
        }
        self.sync_dir(dir)
    }
}
