//! The same log on the real file system, in a temp dir: files and names on disk, reopen,
//! a torn tail written by hand, and a measurement of append + fsync throughput with group
//! commit (printed, never asserted).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use ferrymq_store::log::{FileBackend, FsyncPolicy, GroupCommit, Log, LogConfig};

fn config() -> LogConfig {
    LogConfig {
        max_segment_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

#[test]
fn real_files_round_trip_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue-a");
    let mut log = Log::open(FileBackend, &path, config()).unwrap();
    for i in 0..5000u64 {
        log.append(format!("body {i}").as_bytes(), i as i64)
            .unwrap();
    }
    assert_eq!(log.sync().unwrap(), 5000);
    for o in [0, 1, 2500, 4999] {
        assert_eq!(log.read(o).unwrap().payload, format!("body {o}").as_bytes());
    }
    for o in 0..1000 {
        log.ack(o).unwrap();
    }
    log.sync().unwrap();
    let bases: Vec<u64> = log.segment_bases().collect();
    assert!(bases.len() > 2);
    drop(log);

    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let active = format!("{:020}.seg", bases.last().unwrap());
    assert!(names.contains(&active), "{names:?}");
    assert!(names.iter().all(|n| n.len() == 24), "{names:?}");

    // Garbage at the end of the active segment, as a torn write would leave.
    let mut f = OpenOptions::new()
        .append(true)
        .open(path.join(&active))
        .unwrap();
    f.write_all(&[0xAB; 37]).unwrap();
    drop(f);

    let log = Log::open(FileBackend, &path, config()).unwrap();
    assert_eq!(log.next_offset(), 5000);
    let unacked: Vec<u64> = log.unacked().collect();
    assert_eq!(unacked, (1000..5000).collect::<Vec<_>>());
    let scanned: Vec<u64> = log
        .reader(990)
        .map(|r| r.unwrap().offset)
        .filter(|&o| !log.is_acked(o))
        .collect();
    assert_eq!(scanned.first(), Some(&1000));
    assert_eq!(scanned.len(), 4000);
    assert_eq!(log.offset_for_timestamp(4321).unwrap(), Some(4321));
}

/// Appends with `writers` threads through a group committer and prints the rate and
/// how many records each fsync covered.
fn measure(writers: usize, per_writer: usize, size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(FileBackend, dir.path(), LogConfig::default()).unwrap();
    let gc = Arc::new(GroupCommit::start(log, FsyncPolicy::Always).unwrap());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..writers {
            let gc = gc.clone();
            s.spawn(move || {
                for _ in 0..per_writer {
                    gc.append(vec![0x5A; size], 0).wait().unwrap();
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let total = writers * per_writer;
    let gc = Arc::into_inner(gc).unwrap();
    let log = gc.shutdown().unwrap();
    assert_eq!(log.next_offset(), total as u64);
    eprintln!(
        "group commit, real files: {writers} writers x {per_writer} x {size} B, each waiting for \
         its fsync: {:.0} records/s, {:.1} MB/s",
        total as f64 / elapsed.as_secs_f64(),
        (total * size) as f64 / elapsed.as_secs_f64() / 1e6,
    );
}

#[test]
fn group_commit_throughput_on_real_files() {
    // Small, so the suite stays quick; the numbers are printed, not asserted.
    measure(1, 200, 16);
    measure(64, 100, 16);
    measure(16, 20, 64 * 1024);
}
