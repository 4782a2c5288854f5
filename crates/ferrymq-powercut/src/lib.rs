//! `ferrymq-powercut`: a FUSE file system that models POSIX power loss, for testing that a
//! broker's acknowledgements survive a power cut (not just a process kill, which leaves
//! the page cache intact).
//!
//! Writes land in a current state; only `fsync`/`fdatasync` makes a file's data and size
//! durable, and only an fsync of its parent directory makes a file's or directory's entry
//! (creation, rename, removal) durable. A cut freezes the file system and writes what was
//! durable into a plain directory, which the broker is restarted on. The rules are in
//! [`model`]; [`fs`] serves them over FUSE, [`control`] takes the commands. See
//! `docs/durability.md` ("The power-cut test").

pub mod blobs;
pub mod control;
pub mod fs;
pub mod model;
pub mod ranges;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use blobs::FileBlobs;
use fs::{PowercutFs, SharedModel};
use model::{Lie, Model};

/// A mounted power-cut file system.
pub struct Mount {
    /// The model behind the mount.
    pub model: SharedModel,
    session: fuser::BackgroundSession,
}

impl Mount {
    /// Mounts on `mountpoint` with contents under `backing` (a new directory), starting
    /// from a copy of `from` (all durable) if given, acknowledging `lies` without doing
    /// them.
    pub fn new(
        mountpoint: &Path,
        backing: &Path,
        from: Option<&Path>,
        lies: Vec<Lie>,
    ) -> anyhow::Result<Mount> {
        let mut model = Model::new(FileBlobs::new(backing)?);
        if let Some(from) = from {
            model.import(from)?;
        }
        model.set_lies(lies);
        let model = Arc::new(Mutex::new(model));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("ferrymq-powercut".into()),
            fuser::MountOption::RW,
        ];
        config.n_threads = Some(1);
        let fs = PowercutFs::new(model.clone(), backing.to_path_buf());
        let session = fuser::Session::new(fs, mountpoint, &config)?.spawn()?;
        Ok(Mount { model, session })
    }

    /// Serves the control socket until `quit`, then unmounts.
    pub fn serve_control(self, listener: &UnixListener, quit: &AtomicBool) -> anyhow::Result<()> {
        control::serve(listener, &self.model, quit)?;
        self.unmount()
    }

    /// Unmounts and waits for the session to end.
    pub fn unmount(self) -> anyhow::Result<()> {
        self.session.umount_and_join()?;
        Ok(())
    }
}
