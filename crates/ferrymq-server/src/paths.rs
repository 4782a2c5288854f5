//! Where each virtual host keeps its data. Vhost `/` uses the data directory itself, which
//! is where every data dir written before vhosts existed keeps its queues, definitions,
//! Kafka topics and offsets: such a data dir upgrades in place into vhost `/`. Every other
//! vhost lives in `vhosts/<encoded name>/` with the same layout.

use std::path::{Path, PathBuf};

/// The directory of vhost `name` under the data directory.
pub fn vhost_dir(data_dir: &Path, name: &str) -> PathBuf {
    if name == "/" {
        return data_dir.to_path_buf();
    }
    data_dir.join("vhosts").join(encode(name))
}

/// The file holding users, vhosts and permissions (broker-wide).
pub const AUTH_FILE: &str = "auth.json";

/// Entries of the data directory that belong to the broker rather than to vhost `/`.
pub fn is_broker_wide(entry: &str) -> bool {
    entry == "vhosts" || entry == "trash" || entry == SCRATCH_DIR || entry.starts_with(AUTH_FILE)
}

/// Where transient queues page their backlogs (`scratch/<queue id>/`), broker-wide
/// (queue ids are): removed at every start.
pub const SCRATCH_DIR: &str = "scratch";

/// The scratch directory under the data directory.
pub fn scratch_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SCRATCH_DIR)
}

/// Makes a directory's entries durable (after creating, renaming or removing one).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    ferrymq_store::log::backend::sync_dir(dir)
}

/// Creates a directory and its missing parents durably (each new entry's parent is
/// fsynced): a vhost directory, the trash, the Kafka root.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    ferrymq_store::log::backend::create_dir_all(dir)
}

/// Percent-encodes every byte outside `[A-Za-z0-9_.-]` (so `..`, `/` and empty names are
/// safe file names: an empty name cannot occur, `.`/`..` are encoded).
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && name.len() > 2) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_dirs() {
        let d = Path::new("/data");
        assert_eq!(vhost_dir(d, "/"), PathBuf::from("/data"));
        assert_eq!(vhost_dir(d, "team-a"), PathBuf::from("/data/vhosts/team-a"));
        assert_eq!(
            vhost_dir(d, "a/b c"),
            PathBuf::from("/data/vhosts/a%2Fb%20c")
        );
        assert_eq!(vhost_dir(d, ".."), PathBuf::from("/data/vhosts/%2E%2E"));
        assert_eq!(vhost_dir(d, "."), PathBuf::from("/data/vhosts/%2E"));
    }
}
