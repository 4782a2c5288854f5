//! The power-loss model through the kernel: a real FUSE mount (needs root and
//! `/dev/fuse`), real system calls (`write`, `fdatasync`, `fsync` of a directory,
//! `rename`, `unlink`, `ftruncate`, `O_APPEND`), a cut, and the materialised durable tree.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use ferrymq_powercut::model::Lie;
use ferrymq_powercut::Mount;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn mount(lies: Vec<Lie>) -> (tempfile::TempDir, Mount) {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("mnt")).unwrap();
    let m = Mount::new(
        &tmp.path().join("mnt"),
        &tmp.path().join("backing"),
        None,
        lies,
    )
    .expect("mount (needs root and /dev/fuse)");
    (tmp, m)
}

fn cut(tmp: &Path, m: Mount) -> std::path::PathBuf {
    let out = tmp.join("cut");
    m.model.lock().unwrap().cut();
    let report = m.model.lock().unwrap().materialize(&out).unwrap();
    eprintln!("{report:?}");
    m.unmount().unwrap();
    out
}

#[test]
fn syscalls_through_the_kernel_follow_the_model() {
    let (tmp, m) = mount(Vec::new());
    let mnt = tmp.path().join("mnt");

    // A directory and a log file in it, appended with O_APPEND, fdatasynced, entries
    // synced bottom-up: durable.
    fs::create_dir(mnt.join("data")).unwrap();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(mnt.join("data/log"))
        .unwrap();
    log.write_all(b"one,").unwrap();
    log.write_all(b"two,").unwrap();
    log.sync_data().unwrap();
    sync_dir(&mnt.join("data"));
    sync_dir(&mnt);
    // Appended after the sync: lost.
    log.write_all(b"three").unwrap();
    assert_eq!(fs::read(mnt.join("data/log")).unwrap(), b"one,two,three");

    // Small file replaced durably: tmp, fsync, rename, directory fsync.
    fs::write(mnt.join("data/meta"), b"v1").unwrap();
    File::open(mnt.join("data/meta"))
        .unwrap()
        .sync_all()
        .unwrap();
    sync_dir(&mnt.join("data"));
    fs::write(mnt.join("data/meta.tmp"), b"v2").unwrap();
    File::open(mnt.join("data/meta.tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(mnt.join("data/meta.tmp"), mnt.join("data/meta")).unwrap();
    // ... but the directory is not fsynced after the rename: v1 survives.

    // A file synced but never entered in a synced directory: gone.
    fs::create_dir(mnt.join("data/q")).unwrap();
    let mut seg = File::create(mnt.join("data/q/seg")).unwrap();
    seg.write_all(b"confirmed?").unwrap();
    seg.sync_all().unwrap();
    sync_dir(&mnt.join("data/q")); // its own directory, not data/ where q was made

    // ftruncate after a sync: undone by the cut.
    let f = OpenOptions::new()
        .write(true)
        .open(mnt.join("data/log"))
        .unwrap();
    f.set_len(4).unwrap();

    // An unlink not followed by a directory fsync: undone.
    fs::write(mnt.join("keep"), b"k").unwrap();
    File::open(mnt.join("keep")).unwrap().sync_all().unwrap();
    sync_dir(&mnt);
    fs::remove_file(mnt.join("keep")).unwrap();

    drop((log, seg, f));
    let stats = m.model.lock().unwrap().stats();
    assert!(stats.dir_syncs >= 5 && stats.file_syncs >= 4, "{stats:?}");
    let out = cut(tmp.path(), m);
    assert_eq!(fs::read(out.join("data/log")).unwrap(), b"one,two,");
    assert_eq!(fs::read(out.join("data/meta")).unwrap(), b"v1");
    assert!(!out.join("data/meta.tmp").exists());
    assert!(!out.join("data/q").exists());
    assert_eq!(fs::read(out.join("keep")).unwrap(), b"k");
}

#[test]
fn the_cut_freezes_the_mount_and_a_remount_starts_from_it() {
    let (tmp, m) = mount(Vec::new());
    let mnt = tmp.path().join("mnt");
    let mut f = File::create(mnt.join("f")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    sync_dir(&mnt);
    m.model.lock().unwrap().cut();
    // Frozen: writes, syncs and new entries fail with EIO; reads go on.
    assert_eq!(
        f.write_all(b"x").unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(
        File::create(mnt.join("g")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"durable");
    drop(f);
    let out = tmp.path().join("cut");
    m.model.lock().unwrap().materialize(&out).unwrap();
    m.unmount().unwrap();

    // Boot again on what the cut left.
    let mnt2 = tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let m2 = Mount::new(&mnt2, &tmp.path().join("backing2"), Some(&out), Vec::new()).unwrap();
    assert_eq!(fs::read(mnt2.join("f")).unwrap(), b"durable");
    fs::write(mnt2.join("f"), b"rewritten, unsynced").unwrap();
    m2.model.lock().unwrap().cut();
    let out2 = tmp.path().join("cut2");
    m2.model.lock().unwrap().materialize(&out2).unwrap();
    m2.unmount().unwrap();
    assert_eq!(fs::read(out2.join("f")).unwrap(), b"durable");
}

#[test]
fn a_lie_drops_exactly_the_matching_directory_syncs() {
    let (tmp, m) = mount(vec!["dir:queues".parse().unwrap()]);
    let mnt = tmp.path().join("mnt");
    for d in ["queues", "kafka"] {
        fs::create_dir(mnt.join(d)).unwrap();
        let mut f = File::create(mnt.join(d).join("seg")).unwrap();
        f.write_all(b"rec").unwrap();
        f.sync_data().unwrap();
        sync_dir(&mnt.join(d));
    }
    sync_dir(&mnt);
    let out = cut(tmp.path(), m);
    assert_eq!(fs::read(out.join("kafka/seg")).unwrap(), b"rec");
    assert!(out.join("queues").is_dir());
    assert!(!out.join("queues/seg").exists());
}
