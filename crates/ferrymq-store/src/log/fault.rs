//! A fault-injecting in-memory [`Backend`] for tests. Every file has "durable" contents
//! (what survived the last fsync) and "volatile" contents (what the process sees).
//! [`FaultBackend::crash`] models a power loss: each file falls back to its durable
//! contents, optionally keeping a random prefix of the unsynced tail (a torn write) and
//! flipping or zeroing bytes in that kept tail. [`FaultBackend::fail_next_sync`] and
//! [`FaultBackend::fail_next_write`] make the next fsync or append fail like `EIO` or
//! `ENOSPC`. Directory entries follow POSIX: a file made by `create` or a directory made
//! by `create_dir` survives a crash only once its parent was fsynced
//! ([`Backend::sync_dir`]), and only if every directory above it survives too;
//! `create_dir_all`, `remove` and `rename` are durable at once, as [`super::FileBackend`]
//! fsyncs the parent for them. Directories the test never created (the data dir itself)
//! count as durable. Everything random comes from one seeded generator, so a run is
//! reproducible from its seed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::backend::{Backend, BackendFile};

/// `errno` values as Linux numbers them (the crate has no `libc` dependency).
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// A small deterministic generator (SplitMix64): the same seed gives the same faults.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next_u64()
        } else {
            self.next_u64() % (max + 1)
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        den != 0 && self.next_u64() % den < num
    }
}

/// What a crash does to the unsynced part of each file.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrashMode {
    /// Keep a random prefix of each file's unsynced tail instead of dropping all of it.
    pub torn: bool,
    /// Flip random bits in the kept unsynced tail.
    pub flip: bool,
    /// Sometimes replace the kept unsynced tail by zeros (a file extended, data not written).
    pub zero: bool,
}

impl CrashMode {
    /// Every kind of damage enabled.
    pub fn all() -> Self {
        CrashMode {
            torn: true,
            flip: true,
            zero: true,
        }
    }
}

/// The kind of error an injected write failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// `EIO`.
    Io,
    /// `ENOSPC`; a random prefix of the data is written first, as a short write would.
    NoSpace,
}

#[derive(Debug, Default)]
struct FileState {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    /// The directory entry survives a crash (the parent was fsynced since creation).
    linked: bool,
}

#[derive(Debug)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    /// Directories created through the backend, and whether their entry is durable.
    dirs: BTreeMap<PathBuf, bool>,
    rng: SimRng,
    generation: u64,
    fail_sync: bool,
    fail_write: Option<WriteFault>,
    syncs: u64,
    dir_syncs: u64,
    /// Directory fsyncs do nothing (to show what a store that forgot them would lose).
    ignore_dir_syncs: bool,
    /// Each file fsync takes at least this long (to widen the window of an fsync running
    /// beside its owner's loop).
    sync_delay: Option<std::time::Duration>,
}

impl State {
    /// Whether `path`'s entry and the entries of all directories above it are durable.
    fn reachable(&self, path: &Path) -> bool {
        path.ancestors()
            .skip(1)
            .all(|a| self.dirs.get(a).copied().unwrap_or(true))
    }
}

/// The fault-injecting backend. Clones share the same simulated disk.
#[derive(Debug, Clone)]
pub struct FaultBackend {
    state: Arc<Mutex<State>>,
}

/// A file of [`FaultBackend`]. Handles opened before a crash fail afterwards, as the
/// process that held them is gone.
#[derive(Debug)]
pub struct FaultFile {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the disk from the rest of the test.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

impl FaultBackend {
    /// An empty disk whose faults are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        FaultBackend {
            state: Arc::new(Mutex::new(State {
                files: BTreeMap::new(),
                dirs: BTreeMap::new(),
                rng: SimRng::new(seed),
                generation: 0,
                fail_sync: false,
                fail_write: None,
                syncs: 0,
                dir_syncs: 0,
                ignore_dir_syncs: false,
                sync_delay: None,
            })),
        }
    }

    /// Simulates a power loss: entries never made durable vanish (with everything below
    /// them), unsynced data is dropped or damaged as `mode` allows, and every open handle
    /// becomes invalid.
    pub fn crash(&self, mode: CrashMode) {
        let mut st = lock(&self.state);
        st.generation += 1;
        st.fail_sync = false;
        st.fail_write = None;
        let lost_dirs: Vec<PathBuf> = st
            .dirs
            .iter()
            .filter(|&(d, &durable)| !durable || !st.reachable(d))
            .map(|(d, _)| d.clone())
            .collect();
        let lost_files: Vec<PathBuf> = st
            .files
            .iter()
            .filter(|&(p, f)| !f.linked || !st.reachable(p))
            .map(|(p, _)| p.clone())
            .collect();
        for d in lost_dirs {
            st.dirs.remove(&d);
        }
        for p in lost_files {
            st.files.remove(&p);
        }
        let State { files, rng, .. } = &mut *st;
        for file in files.values_mut() {
            let common = file
                .durable
                .iter()
                .zip(&file.volatile)
                .take_while(|(a, b)| a == b)
                .count();
            let appended_only =
                common == file.durable.len() && file.volatile.len() > file.durable.len();
            if appended_only && mode.torn {
                let tail_len = (file.volatile.len() - common) as u64;
                let keep = rng.up_to(tail_len) as usize;
                let mut tail = file.volatile[common..common + keep].to_vec();
                if mode.zero && !tail.is_empty() && rng.chance(1, 8) {
                    tail.iter_mut().for_each(|b| *b = 0);
                } else if mode.flip && !tail.is_empty() && rng.chance(1, 3) {
                    let flips = 1 + rng.up_to(3);
                    for _ in 0..flips {
                        let at = rng.up_to(tail.len() as u64 - 1) as usize;
                        tail[at] ^= 1 << rng.up_to(7);
                    }
                }
                file.durable.extend_from_slice(&tail);
            } else if !appended_only && file.volatile != file.durable && rng.chance(1, 2) {
                // An unsynced truncation may or may not have reached the disk.
                file.durable = file.volatile.clone();
            }
            file.volatile = file.durable.clone();
        }
    }

    /// The next fsync of any file fails with `EIO` and makes nothing durable.
    pub fn fail_next_sync(&self) {
        lock(&self.state).fail_sync = true;
    }

    /// The next append to any file fails with `fault`.
    pub fn fail_next_write(&self, fault: WriteFault) {
        lock(&self.state).fail_write = Some(fault);
    }

    /// Disarms injected faults that have not fired yet.
    pub fn clear_faults(&self) {
        let mut st = lock(&self.state);
        st.fail_sync = false;
        st.fail_write = None;
    }

    /// How many fsyncs succeeded so far (to check that group commit batches them).
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// How many directory fsyncs ran so far.
    pub fn dir_sync_count(&self) -> u64 {
        lock(&self.state).dir_syncs
    }

    /// Makes directory fsyncs do nothing from now on: a crash then loses every entry
    /// created since, as it would for a store that never fsynced its directories.
    pub fn ignore_dir_syncs(&self) {
        lock(&self.state).ignore_dir_syncs = true;
    }

    /// Makes every file fsync sleep `delay` before it completes (the disk lock is not
    /// held meanwhile, so the owner can keep appending and reading).
    pub fn set_sync_delay(&self, delay: Option<std::time::Duration>) {
        lock(&self.state).sync_delay = delay;
    }

    /// Whether a file exists (in the volatile view).
    pub fn exists(&self, path: &Path) -> bool {
        lock(&self.state).files.contains_key(path)
    }

    /// Whether a directory exists (in the volatile view).
    pub fn dir_exists(&self, path: &Path) -> bool {
        lock(&self.state).dirs.contains_key(path)
    }

    /// The volatile contents of a file, if it exists (for tests that corrupt files).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        lock(&self.state)
            .files
            .get(path)
            .map(|f| f.volatile.clone())
    }

    /// Overwrites a file's contents, durably (for tests that corrupt files on purpose).
    pub fn set_contents(&self, path: &Path, data: Vec<u8>) {
        let mut st = lock(&self.state);
        let file = st.files.entry(path.to_path_buf()).or_default();
        file.durable = data.clone();
        file.volatile = data;
        file.linked = true;
    }
}

impl Backend for FaultBackend {
    type File = FaultFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Like `FileBackend`: each directory created is made durable; existing ones are
        // left as they are.
        let mut st = lock(&self.state);
        for d in dir.ancestors() {
            if d.as_os_str().is_empty() || st.dirs.contains_key(d) {
                break;
            }
            st.dirs.insert(d.to_path_buf(), true);
        }
        Ok(())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.dirs.contains_key(dir) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", dir.display()),
            ));
        }
        st.dirs.insert(dir.to_path_buf(), false);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.ignore_dir_syncs {
            return Ok(());
        }
        st.dir_syncs += 1;
        for (p, f) in st.files.iter_mut() {
            if p.parent() == Some(dir) {
                f.linked = true;
            }
        }
        for (d, durable) in st.dirs.iter_mut() {
            if d.parent() == Some(dir) {
                *durable = true;
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<FaultFile> {
        let mut st = lock(&self.state);
        if st.files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        st.files.insert(path.to_path_buf(), FileState::default());
        Ok(FaultFile {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        })
    }

    fn open(&self, path: &Path) -> io::Result<FaultFile> {
        let st = lock(&self.state);
        if !st.files.contains_key(path) {
            return Err(not_found(path));
        }
        Ok(FaultFile {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match lock(&self.state).files.remove(path) {
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        let mut file = st.files.remove(from).ok_or_else(|| not_found(from))?;
        file.linked = true;
        st.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.state);
        Ok(st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
}

impl FaultFile {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
        let mut st = lock(&self.state);
        if st.generation != self.generation {
            return Err(io::Error::other("file handle from before a crash"));
        }
        f(&mut st)
    }

    fn file<'a>(st: &'a mut State, path: &Path) -> io::Result<&'a mut FileState> {
        st.files.get_mut(path).ok_or_else(|| not_found(path))
    }
}

impl BackendFile for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|st| Ok(Self::file(st, &self.path)?.volatile.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.with(|st| {
            let data = &Self::file(st, &self.path)?.volatile;
            let start = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.with(|st| {
            let fault = st.fail_write.take();
            let keep = match fault {
                Some(WriteFault::NoSpace) => st.rng.up_to(data.len() as u64) as usize,
                _ => data.len(),
            };
            let file = Self::file(st, &self.path)?;
            match fault {
                None => {
                    file.volatile.extend_from_slice(data);
                    Ok(())
                }
                Some(WriteFault::NoSpace) => {
                    file.volatile.extend_from_slice(&data[..keep]);
                    Err(io::Error::from_raw_os_error(ENOSPC))
                }
                Some(WriteFault::Io) => Err(io::Error::from_raw_os_error(EIO)),
            }
        })
    }

    fn sync(&self) -> io::Result<()> {
        let delay = self.with(|st| Ok(st.sync_delay))?;
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        self.with(|st| {
            if std::mem::take(&mut st.fail_sync) {
                return Err(io::Error::from_raw_os_error(EIO));
            }
            st.syncs += 1;
            let file = Self::file(st, &self.path)?;
            file.durable = file.volatile.clone();
            Ok(())
        })
    }

    fn try_clone(&self) -> io::Result<FaultFile> {
        self.with(|_| {
            Ok(FaultFile {
                state: self.state.clone(),
                path: self.path.clone(),
                generation: self.generation,
            })
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|st| {
            let file = Self::file(st, &self.path)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            file.volatile.resize(len, 0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_drops_unsynced_and_keeps_synced() {
        let disk = FaultBackend::new(1);
        let p = Path::new("d/f");
        let mut f = disk.create(p).unwrap();
        disk.sync_dir(Path::new("d")).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        f.append(b" world").unwrap();
        disk.crash(CrashMode::default());
        assert!(f.len().is_err(), "stale handle must fail");
        let f = disk.open(p).unwrap();
        let mut buf = vec![0; 5];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, b"hello");
        assert_eq!(f.len().unwrap(), 5);
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_the_tail() {
        for seed in 0..50 {
            let disk = FaultBackend::new(seed);
            let p = Path::new("d/f");
            let mut f = disk.create(p).unwrap();
            disk.sync_dir(Path::new("d")).unwrap();
            f.append(b"abc").unwrap();
            f.sync().unwrap();
            f.append(b"defghij").unwrap();
            disk.crash(CrashMode {
                torn: true,
                ..CrashMode::default()
            });
            let data = disk.contents(p).unwrap();
            assert!(data.len() >= 3 && data.len() <= 10);
            assert_eq!(&data[..], &b"abcdefghij"[..data.len()]);
        }
    }

    #[test]
    fn injected_failures_fire_once() {
        let disk = FaultBackend::new(7);
        let mut f = disk.create(Path::new("f")).unwrap();
        disk.fail_next_sync();
        assert!(f.sync().is_err());
        f.sync().unwrap();
        disk.fail_next_write(WriteFault::Io);
        assert!(f.append(b"x").is_err());
        f.append(b"y").unwrap();
        assert_eq!(disk.contents(Path::new("f")).unwrap(), b"y");
    }

    #[test]
    fn entries_survive_only_once_their_parent_is_fsynced() {
        let disk = FaultBackend::new(3);
        disk.create_dir_all(Path::new("/data")).unwrap();
        let q = Path::new("/data/queues");
        disk.create_dir(q).unwrap();
        let mut f = disk.create(&q.join("f")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        // The file's data was fsynced, but neither its entry nor its directory's was.
        disk.crash(CrashMode::default());
        assert!(!disk.exists(&q.join("f")));
        assert!(!disk.dir_exists(q));

        disk.create_dir(q).unwrap();
        let mut f = disk.create(&q.join("f")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        disk.sync_dir(q).unwrap();
        // The file's entry is durable, its directory's is not: both are gone.
        disk.crash(CrashMode::default());
        assert!(!disk.exists(&q.join("f")));

        disk.create_dir(q).unwrap();
        disk.sync_dir(Path::new("/data")).unwrap();
        let mut f = disk.create(&q.join("f")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        disk.sync_dir(q).unwrap();
        disk.crash(CrashMode::default());
        assert_eq!(disk.contents(&q.join("f")).unwrap(), b"x");
        assert!(disk.dir_exists(q));
    }

    #[test]
    fn create_dir_all_rename_and_remove_are_durable_at_once() {
        let disk = FaultBackend::new(4);
        let d = Path::new("/data/kafka/topics");
        disk.create_dir_all(d).unwrap();
        let mut f = disk.create(&d.join("a.tmp")).unwrap();
        f.append(b"meta").unwrap();
        f.sync().unwrap();
        disk.rename(&d.join("a.tmp"), &d.join("a")).unwrap();
        let g = disk.create(&d.join("b")).unwrap();
        g.sync().unwrap();
        disk.sync_dir(d).unwrap();
        disk.remove(&d.join("b")).unwrap();
        disk.crash(CrashMode::default());
        assert!(disk.dir_exists(d));
        assert_eq!(disk.contents(&d.join("a")).unwrap(), b"meta");
        assert!(!disk.exists(&d.join("b")));
    }

    #[test]
    fn ignored_dir_syncs_lose_new_entries() {
        let disk = FaultBackend::new(5);
        disk.ignore_dir_syncs();
        let mut f = disk.create(Path::new("d/f")).unwrap();
        f.append(b"x").unwrap();
        f.sync().unwrap();
        disk.sync_dir(Path::new("d")).unwrap();
        disk.crash(CrashMode::default());
        assert!(!disk.exists(Path::new("d/f")));
    }
}
