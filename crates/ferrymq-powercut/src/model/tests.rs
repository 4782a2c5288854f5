//! The model's guarantees, one scenario per rule, and a randomized comparison with the
//! naive [`Reference`] model.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use super::reference::Reference;
use super::{FsError, Ino, Kind, Lie, Model, Node, ROOT};
use crate::blobs::MemBlobs;

fn model() -> Model<MemBlobs> {
    Model::new(MemBlobs::default())
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Resolves a `/`-separated path of the current tree.
fn resolve(m: &Model<MemBlobs>, path: &str) -> Option<Ino> {
    let mut at = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = m.lookup(at, os(part)).ok()?.ino;
    }
    Some(at)
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn parent_of(m: &Model<MemBlobs>, path: &str) -> Ino {
    resolve(m, split(path).0).expect("parent exists")
}

fn create(m: &mut Model<MemBlobs>, path: &str) -> Ino {
    let p = parent_of(m, path);
    m.create(p, os(split(path).1), 0o644, 0, 0).unwrap().ino
}

fn mkdir(m: &mut Model<MemBlobs>, path: &str) -> Ino {
    let p = parent_of(m, path);
    m.mkdir(p, os(split(path).1), 0o755, 0, 0).unwrap().ino
}

fn sync_dir(m: &mut Model<MemBlobs>, path: &str) {
    let d = resolve(m, path).unwrap();
    m.sync_dir(d).unwrap();
}

fn tree(entries: &[(&str, Option<&[u8]>)]) -> BTreeMap<String, Node> {
    entries
        .iter()
        .map(|(p, c)| {
            (
                p.to_string(),
                match c {
                    None => Node::Dir,
                    Some(b) => Node::File(b.to_vec()),
                },
            )
        })
        .collect()
}

#[test]
fn unsynced_writes_and_entries_are_lost() {
    let mut m = model();
    let f = create(&mut m, "f");
    m.write(f, 0, b"hello").unwrap();
    assert_eq!(m.durable_tree().unwrap(), tree(&[]));
    assert_eq!(m.current_tree().unwrap(), tree(&[("f", Some(b"hello"))]));
}

#[test]
fn a_synced_file_survives_only_once_its_directory_is_synced() {
    let mut m = model();
    let f = create(&mut m, "f");
    m.write(f, 0, b"hello").unwrap();
    m.sync_file(f).unwrap();
    assert_eq!(
        m.durable_tree().unwrap(),
        tree(&[]),
        "file fsync alone keeps no entry"
    );
    sync_dir(&mut m, "");
    assert_eq!(m.durable_tree().unwrap(), tree(&[("f", Some(b"hello"))]));
}

#[test]
fn an_entry_synced_before_its_data_comes_back_empty() {
    let mut m = model();
    let f = create(&mut m, "f");
    sync_dir(&mut m, "");
    m.write(f, 0, b"hello").unwrap();
    assert_eq!(m.durable_tree().unwrap(), tree(&[("f", Some(b""))]));
}

#[test]
fn writes_after_the_last_sync_are_lost_and_earlier_ones_kept() {
    let mut m = model();
    let f = create(&mut m, "f");
    sync_dir(&mut m, "");
    m.write(f, 0, b"abc").unwrap();
    m.sync_file(f).unwrap();
    m.write(f, 3, b"def").unwrap();
    m.write(f, 0, b"X").unwrap();
    assert_eq!(m.durable_tree().unwrap(), tree(&[("f", Some(b"abc"))]));
    m.sync_file(f).unwrap();
    assert_eq!(m.durable_tree().unwrap(), tree(&[("f", Some(b"Xbcdef"))]));
}

#[test]
fn truncations_are_durable_only_after_a_sync() {
    let mut m = model();
    let f = create(&mut m, "f");
    sync_dir(&mut m, "");
    m.write(f, 0, b"abcdef").unwrap();
    m.sync_file(f).unwrap();
    m.set_size(f, 2).unwrap();
    assert_eq!(m.durable_tree().unwrap(), tree(&[("f", Some(b"abcdef"))]));
    // Cut, grown again with a hole, written past the hole: the stale durable bytes in
    // the hole must not come back.
    m.set_size(f, 4).unwrap();
    m.write(f, 5, b"Z").unwrap();
    m.sync_file(f).unwrap();
    assert_eq!(
        m.durable_tree().unwrap(),
        tree(&[("f", Some(b"ab\0\0\0Z"))])
    );
    assert_eq!(m.current_tree().unwrap(), m.durable_tree().unwrap());
}

#[test]
fn nested_directories_need_every_parent_synced() {
    let mut m = model();
    mkdir(&mut m, "a");
    mkdir(&mut m, "a/b");
    let f = create(&mut m, "a/b/f");
    m.write(f, 0, b"x").unwrap();
    m.sync_file(f).unwrap();
    sync_dir(&mut m, "a/b");
    sync_dir(&mut m, "a");
    assert_eq!(
        m.durable_tree().unwrap(),
        tree(&[]),
        "root never synced: a is gone"
    );
    sync_dir(&mut m, "");
    assert_eq!(
        m.durable_tree().unwrap(),
        tree(&[("a", None), ("a/b", None), ("a/b/f", Some(b"x"))])
    );
}

#[test]
fn a_rename_over_a_file_keeps_the_old_one_until_the_directory_is_synced() {
    let mut m = model();
    let old = create(&mut m, "name");
    m.write(old, 0, b"old").unwrap();
    m.sync_file(old).unwrap();
    sync_dir(&mut m, "");
    let tmp = create(&mut m, "name.tmp");
    m.write(tmp, 0, b"new").unwrap();
    m.sync_file(tmp).unwrap();
    m.rename(ROOT, os("name.tmp"), ROOT, os("name"), false)
        .unwrap();
    assert_eq!(m.current_tree().unwrap(), tree(&[("name", Some(b"new"))]));
    assert_eq!(m.durable_tree().unwrap(), tree(&[("name", Some(b"old"))]));
    sync_dir(&mut m, "");
    assert_eq!(m.durable_tree().unwrap(), tree(&[("name", Some(b"new"))]));
    // The replaced inode is gone for good now.
    assert!(matches!(m.attr(old), Err(FsError::NotFound)));
}

#[test]
fn removals_are_undone_until_the_directory_is_synced() {
    let mut m = model();
    let f = create(&mut m, "f");
    mkdir(&mut m, "d");
    m.write(f, 0, b"keep").unwrap();
    m.sync_file(f).unwrap();
    sync_dir(&mut m, "");
    m.unlink(ROOT, os("f")).unwrap();
    m.rmdir(ROOT, os("d")).unwrap();
    assert_eq!(m.current_tree().unwrap(), tree(&[]));
    assert_eq!(
        m.durable_tree().unwrap(),
        tree(&[("d", None), ("f", Some(b"keep"))])
    );
    sync_dir(&mut m, "");
    assert_eq!(m.durable_tree().unwrap(), tree(&[]));
}

#[test]
fn posix_errors() {
    let mut m = model();
    mkdir(&mut m, "d");
    create(&mut m, "d/f");
    let d = resolve(&m, "d").unwrap();
    assert!(matches!(
        m.create(ROOT, os("d"), 0o644, 0, 0),
        Err(FsError::Exists)
    ));
    assert!(matches!(m.rmdir(ROOT, os("d")), Err(FsError::NotEmpty)));
    assert!(matches!(m.unlink(ROOT, os("d")), Err(FsError::IsDir)));
    assert!(matches!(m.rmdir(d, os("f")), Err(FsError::NotDir)));
    assert!(matches!(m.unlink(ROOT, os("nope")), Err(FsError::NotFound)));
    assert!(matches!(
        m.rename(ROOT, os("d"), d, os("inside"), false),
        Err(FsError::Invalid)
    ));
    create(&mut m, "g");
    assert!(matches!(
        m.rename(ROOT, os("g"), d, os("f"), true),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        m.rename(ROOT, os("g"), ROOT, os("d"), false),
        Err(FsError::IsDir)
    ));
}

#[test]
fn after_the_cut_nothing_changes_and_reads_go_on() {
    let mut m = model();
    let f = create(&mut m, "f");
    m.write(f, 0, b"abc").unwrap();
    m.sync_file(f).unwrap();
    sync_dir(&mut m, "");
    m.write(f, 3, b"def").unwrap();
    m.cut();
    assert!(m.is_frozen());
    assert!(matches!(m.write(f, 0, b"x"), Err(FsError::Frozen)));
    assert!(matches!(m.sync_file(f), Err(FsError::Frozen)));
    assert!(matches!(m.sync_dir(ROOT), Err(FsError::Frozen)));
    assert!(matches!(
        m.create(ROOT, os("g"), 0o644, 0, 0),
        Err(FsError::Frozen)
    ));
    assert!(matches!(
        m.mkdir(ROOT, os("h"), 0o755, 0, 0),
        Err(FsError::Frozen)
    ));
    assert!(matches!(m.unlink(ROOT, os("f")), Err(FsError::Frozen)));
    assert!(matches!(
        m.rename(ROOT, os("f"), ROOT, os("g"), false),
        Err(FsError::Frozen)
    ));
    assert!(matches!(m.set_size(f, 0), Err(FsError::Frozen)));
    assert_eq!(m.read(f, 0, 100).unwrap(), b"abcdef");
    assert_eq!(m.durable_tree().unwrap(), tree(&[("f", Some(b"abc"))]));
}

#[test]
fn lies_drop_the_matching_syncs_only() {
    let mut m = model();
    m.set_lies(vec!["dir:kafka".parse().unwrap()]);
    mkdir(&mut m, "data");
    mkdir(&mut m, "data/kafka");
    mkdir(&mut m, "data/queues");
    let k = create(&mut m, "data/kafka/log");
    let q = create(&mut m, "data/queues/log");
    for f in [k, q] {
        m.write(f, 0, b"rec").unwrap();
        m.sync_file(f).unwrap();
    }
    for d in ["data/kafka", "data/queues", "data", ""] {
        sync_dir(&mut m, d);
    }
    assert_eq!(m.stats().lies, 1);
    assert_eq!(
        m.durable_tree().unwrap(),
        tree(&[
            ("data", None),
            ("data/kafka", None),
            ("data/queues", None),
            ("data/queues/log", Some(b"rec")),
        ])
    );
    assert_eq!(
        "file:seg".parse::<Lie>().unwrap(),
        Lie::FileSync("seg".into())
    );
    assert!("nonsense".parse::<Lie>().is_err());
}

#[test]
fn materialize_and_import_round_trip() {
    let mut m = model();
    mkdir(&mut m, "d");
    let f = create(&mut m, "d/f");
    let lost = create(&mut m, "d/lost");
    m.write(f, 0, b"kept").unwrap();
    m.write(lost, 0, b"gone").unwrap();
    m.sync_file(f).unwrap();
    m.sync_file(lost).unwrap();
    sync_dir(&mut m, "");
    sync_dir(&mut m, "d");
    m.unlink(resolve(&m, "d").unwrap(), os("lost")).unwrap();
    let g = create(&mut m, "d/g"); // never reaches a synced directory
    m.write(g, 0, b"unsynced").unwrap();
    m.write(f, 4, b"-more").unwrap();
    m.cut();
    let out = tempfile::tempdir().unwrap();
    let report = m.materialize(out.path()).unwrap();
    assert_eq!(std::fs::read(out.path().join("d/f")).unwrap(), b"kept");
    assert_eq!(std::fs::read(out.path().join("d/lost")).unwrap(), b"gone");
    assert!(!out.path().join("d/g").exists());
    assert_eq!((report.dirs, report.files, report.bytes), (2, 2, 8));
    assert_eq!(report.paths_lost, 1);
    assert_eq!(report.unsynced_bytes, 8 + 5);

    let mut again = model();
    again.import(out.path()).unwrap();
    let want = tree(&[
        ("d", None),
        ("d/f", Some(b"kept")),
        ("d/lost", Some(b"gone")),
    ]);
    assert_eq!(again.durable_tree().unwrap(), want);
    assert_eq!(again.current_tree().unwrap(), want);
}

#[test]
fn freed_inodes_take_their_contents_along() {
    let mut m = model();
    let f = create(&mut m, "f");
    m.write(f, 0, b"x").unwrap();
    m.open(f).unwrap();
    m.unlink(ROOT, os("f")).unwrap();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"x", "readable while open");
    m.release(f).unwrap();
    assert!(matches!(m.attr(f), Err(FsError::NotFound)));
}

/// A small deterministic generator (xorshift64*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, v: &'a [String]) -> Option<&'a String> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len())])
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Runs one random history on the model and the reference; they must agree on every
/// operation's success and on both trees after it.
fn random_history(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut m = model();
    let mut r = Reference::new();
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    for step in 0..steps {
        let current = r.current_tree();
        let mut dirs = vec![String::new()];
        let mut files = Vec::new();
        for (p, n) in &current {
            match n {
                Node::Dir => dirs.push(p.clone()),
                Node::File(_) => files.push(p.clone()),
            }
        }
        let all: Vec<String> = dirs.iter().chain(files.iter()).cloned().collect();
        let name = NAMES[rng.below(NAMES.len())];
        let op = rng.below(10);
        let desc;
        let (got, want) = match op {
            0 => {
                let path = join(rng.pick(&dirs).unwrap(), name);
                desc = format!("create {path}");
                let p = parent_of(&m, &path);
                (m.create(p, os(name), 0o644, 0, 0).is_ok(), r.create(&path))
            }
            1 => {
                let path = join(rng.pick(&dirs).unwrap(), name);
                desc = format!("mkdir {path}");
                let p = parent_of(&m, &path);
                (m.mkdir(p, os(name), 0o755, 0, 0).is_ok(), r.mkdir(&path))
            }
            2 | 3 => {
                let Some(path) = rng.pick(&files).cloned() else {
                    continue;
                };
                let off = rng.below(24);
                let len = 1 + rng.below(16);
                let data = vec![(step % 251) as u8 + 1; len];
                desc = format!("write {path} {off}+{len}");
                let ino = resolve(&m, &path).unwrap();
                (
                    m.write(ino, off as u64, &data).is_ok(),
                    r.write(&path, off, &data),
                )
            }
            4 => {
                let Some(path) = rng.pick(&files).cloned() else {
                    continue;
                };
                let len = rng.below(30);
                desc = format!("truncate {path} {len}");
                let ino = resolve(&m, &path).unwrap();
                (m.set_size(ino, len as u64).is_ok(), r.truncate(&path, len))
            }
            5 | 6 => {
                let path = rng.pick(&all).unwrap().clone();
                desc = format!("sync {path:?}");
                let ino = resolve(&m, &path).unwrap();
                let res = match m.attr(ino).unwrap().kind {
                    Kind::File => m.sync_file(ino),
                    Kind::Dir => m.sync_dir(ino),
                };
                (res.is_ok(), r.sync(&path))
            }
            7 => {
                let Some(path) = rng.pick(&files).cloned() else {
                    continue;
                };
                desc = format!("unlink {path}");
                let p = parent_of(&m, &path);
                (m.unlink(p, os(split(&path).1)).is_ok(), r.unlink(&path))
            }
            8 => {
                let path = rng.pick(&dirs).unwrap().clone();
                if path.is_empty() {
                    continue;
                }
                desc = format!("rmdir {path}");
                let p = parent_of(&m, &path);
                (m.rmdir(p, os(split(&path).1)).is_ok(), r.rmdir(&path))
            }
            _ => {
                let from = rng.pick(&all).unwrap().clone();
                if from.is_empty() {
                    continue;
                }
                let to = join(rng.pick(&dirs).unwrap(), name);
                desc = format!("rename {from} {to}");
                let (fp, tp) = (parent_of(&m, &from), parent_of(&m, &to));
                let got = m
                    .rename(fp, os(split(&from).1), tp, os(name), false)
                    .is_ok();
                (got, r.rename(&from, &to))
            }
        };
        let ctx = format!("seed {seed} step {step}: {desc}");
        assert_eq!(got, want, "{ctx}: model ok={got}, reference ok={want}");
        assert_eq!(
            m.current_tree().unwrap(),
            r.current_tree(),
            "{ctx}: current trees differ"
        );
        assert_eq!(
            m.durable_tree().unwrap(),
            r.durable_tree(),
            "{ctx}: durable trees differ"
        );
    }
}

#[test]
fn random_histories_agree_with_the_naive_reference() {
    for seed in 0..300 {
        random_history(seed, 120);
    }
}
