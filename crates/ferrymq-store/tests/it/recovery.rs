//! Targeted recovery and failure cases on the fault-injecting backend: torn and corrupt
//! tails, damaged index and ack files, orphans of interrupted deletes, segment deletion
//! when fully acked, retention, time lookups across segments, and I/O failures.

use std::path::{Path, PathBuf};

use ferrymq_store::log::fault::{CrashMode, FaultBackend, WriteFault};
use ferrymq_store::log::{Backend, Log, LogConfig, LogError};

fn small() -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        index_interval_bytes: 128,
        max_record_bytes: 4096,
        write_buffer_bytes: 512,
    }
}

fn open(disk: &FaultBackend) -> Log<FaultBackend> {
    Log::open(disk.clone(), "q", small()).unwrap()
}

fn body(i: u64) -> Vec<u8> {
    format!("message number {i:05}").into_bytes()
}

/// Appends `n` records with timestamps `1000 + 10 * offset` and syncs.
fn fill(log: &mut Log<FaultBackend>, n: u64) {
    for _ in 0..n {
        let o = log.next_offset();
        log.append(&body(o), 1000 + 10 * o as i64).unwrap();
    }
    log.sync().unwrap();
}

fn files(disk: &FaultBackend) -> Vec<String> {
    let mut v = disk.list(Path::new("q")).unwrap();
    v.sort();
    v
}

fn seg_path(base: u64, ext: &str) -> PathBuf {
    Path::new("q").join(format!("{base:020}.{ext}"))
}

#[test]
fn segments_roll_and_are_named_by_base_offset() {
    let disk = FaultBackend::new(1);
    let mut log = open(&disk);
    fill(&mut log, 100);
    assert!(log.segment_count() > 3);
    let names = files(&disk);
    assert_eq!(names[0], "00000000000000000000.idx");
    assert_eq!(names[1], "00000000000000000000.seg");
    // Every sealed segment has an index; the active one does not (yet).
    let segs = names.iter().filter(|n| n.ends_with(".seg")).count();
    let idxs = names.iter().filter(|n| n.ends_with(".idx")).count();
    assert_eq!(idxs + 1, segs);
    for o in 0..100 {
        assert_eq!(log.read(o).unwrap().payload, body(o));
    }
    let all: Vec<u64> = log.reader(0).map(|r| r.unwrap().offset).collect();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
}

#[test]
fn torn_tail_is_cut_and_never_served() {
    let disk = FaultBackend::new(2);
    let mut log = open(&disk);
    fill(&mut log, 5);
    let active = seg_path(log.segment_bases().last().unwrap(), "seg");
    let mut data = disk.contents(&active).unwrap();
    let good = data.len();
    // Half a record of garbage after the last good one.
    data.extend_from_slice(&[30, 0, 0, 0, 1, 2, 3, 4, 5]);
    disk.set_contents(&active, data);
    drop(log);
    let log = open(&disk);
    assert_eq!(log.next_offset(), 5);
    assert_eq!(disk.contents(&active).unwrap().len(), good);
    assert!(matches!(log.read(5), Err(LogError::NoSuchOffset { .. })));
}

#[test]
fn corrupt_record_in_the_tail_cuts_it_and_everything_after() {
    let disk = FaultBackend::new(3);
    let mut log = open(&disk);
    fill(&mut log, 6);
    let active = seg_path(0, "seg");
    let mut data = disk.contents(&active).unwrap();
    // Flip a payload byte of record 3 (each record is 24 + 20 bytes).
    data[3 * 44 + 30] ^= 0xFF;
    disk.set_contents(&active, data);
    drop(log);
    let mut log = open(&disk);
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.unacked().collect::<Vec<_>>(), vec![0, 1, 2]);
    // The log goes on from there.
    assert_eq!(log.append(b"new", 5).unwrap(), 3);
    log.sync().unwrap();
    assert_eq!(log.read(3).unwrap().payload, b"new");
}

#[test]
fn damaged_index_is_rebuilt() {
    let disk = FaultBackend::new(4);
    let mut log = open(&disk);
    fill(&mut log, 100);
    drop(log);
    let idx = seg_path(0, "idx");
    let mut data = disk.contents(&idx).unwrap();
    let n = data.len();
    data[n / 2] ^= 1;
    disk.set_contents(&idx, data.clone());
    let log = open(&disk);
    assert_ne!(disk.contents(&idx).unwrap(), data, "index rewritten");
    for o in 0..100 {
        assert_eq!(log.read(o).unwrap().payload, body(o));
    }
    // A missing index is rebuilt too.
    drop(log);
    disk.remove(&idx).unwrap();
    let log = open(&disk);
    assert!(disk.contents(&idx).is_some());
    assert_eq!(log.read(1).unwrap().payload, body(1));
}

#[test]
fn acks_survive_restart_and_fully_acked_segments_are_deleted() {
    let disk = FaultBackend::new(5);
    let mut log = open(&disk);
    fill(&mut log, 60);
    let bases = log.segment_bases().collect::<Vec<_>>();
    let first_end = bases[1];
    for o in 0..first_end {
        log.ack(o).unwrap();
    }
    log.ack(first_end + 1).unwrap();
    log.sync().unwrap();
    assert!(!files(&disk).contains(&"00000000000000000000.seg".to_string()));
    assert!(!files(&disk)
        .iter()
        .any(|n| n.starts_with("00000000000000000000")));
    assert_eq!(log.start_offset(), first_end);
    assert!(log.is_acked(0));
    drop(log);
    disk.crash(CrashMode::all());
    let log = open(&disk);
    let unacked: Vec<u64> = log.unacked().collect();
    let mut want: Vec<u64> = (first_end..60).collect();
    want.retain(|&o| o != first_end + 1);
    assert_eq!(unacked, want);
}

#[test]
fn acks_interleaved_across_segments_all_survive_restart() {
    let disk = FaultBackend::new(7);
    let mut log = open(&disk);
    fill(&mut log, 60);
    let bases = log.segment_bases().collect::<Vec<_>>();
    assert!(bases.len() >= 3, "needs three segments: {bases:?}");
    // Runs in one segment, then back and forth between two (each switch starts a run).
    let (a, b) = (bases[1], bases[2]);
    let acked = [a, a + 1, a + 2, b, a + 3, b + 1, b + 2, a + 4, 0, b + 3];
    for &o in &acked {
        log.ack(o).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::all());
    let log = open(&disk);
    let unacked: Vec<u64> = log.unacked().collect();
    let want: Vec<u64> = (0..60).filter(|o| !acked.contains(o)).collect();
    assert_eq!(unacked, want);
}

#[test]
fn unsynced_acks_may_be_lost_but_synced_ones_are_not() {
    let disk = FaultBackend::new(6);
    let mut log = open(&disk);
    fill(&mut log, 10);
    log.ack(2).unwrap();
    log.sync().unwrap();
    log.ack(3).unwrap();
    drop(log);
    disk.crash(CrashMode::all());
    let log = open(&disk);
    let unacked: Vec<u64> = log.unacked().collect();
    assert!(!unacked.contains(&2));
    assert!(
        unacked.contains(&3),
        "ack never written to disk came back as acked"
    );
}

#[test]
fn torn_ack_file_keeps_its_valid_prefix() {
    let disk = FaultBackend::new(7);
    let mut log = open(&disk);
    fill(&mut log, 10);
    for o in [1, 4, 7] {
        log.ack(o).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let ack = seg_path(0, "ack");
    let mut data = disk.contents(&ack).unwrap();
    assert_eq!(data.len(), 24);
    data.truncate(20);
    disk.set_contents(&ack, data);
    let log = open(&disk);
    assert_eq!(disk.contents(&ack).unwrap().len(), 16);
    assert_eq!(
        log.unacked().collect::<Vec<_>>(),
        vec![0, 2, 3, 5, 6, 7, 8, 9]
    );
}

#[test]
fn orphans_of_an_interrupted_delete_are_removed() {
    let disk = FaultBackend::new(8);
    let mut log = open(&disk);
    fill(&mut log, 3);
    drop(log);
    disk.set_contents(&seg_path(12345, "ack"), vec![1, 2, 3]);
    disk.set_contents(&seg_path(12345, "idx"), vec![]);
    disk.set_contents(&Path::new("q").join("README"), b"not ours".to_vec());
    let log = open(&disk);
    assert_eq!(log.next_offset(), 3);
    let names = files(&disk);
    assert!(!names.iter().any(|n| n.starts_with("00000000000000012345")));
    assert!(names.contains(&"README".to_string()));
}

#[test]
fn retention_deletes_whole_old_segments() {
    let disk = FaultBackend::new(9);
    let mut log = open(&disk);
    fill(&mut log, 100);
    let bases = log.segment_bases().collect::<Vec<_>>();
    let start = log.truncate_before(bases[2] + 1).unwrap();
    assert_eq!(start, bases[2]);
    assert!(matches!(log.read(0), Err(LogError::NoSuchOffset { .. })));
    assert_eq!(log.reader(0).next().unwrap().unwrap().offset, bases[2]);
    // The active segment is never deleted, so the next offset survives a restart.
    log.truncate_before(u64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    drop(log);
    let log = open(&disk);
    assert_eq!(log.next_offset(), 100);
}

#[test]
fn offset_by_timestamp_across_segments() {
    let disk = FaultBackend::new(10);
    let mut log = open(&disk);
    fill(&mut log, 100);
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1001).unwrap(), Some(1));
    assert_eq!(log.offset_for_timestamp(1555).unwrap(), Some(56));
    assert_eq!(log.offset_for_timestamp(1990).unwrap(), Some(99));
    assert_eq!(log.offset_for_timestamp(1991).unwrap(), None);
    // Same answers from indexes loaded from .idx files.
    drop(log);
    let log = open(&disk);
    assert_eq!(log.offset_for_timestamp(1555).unwrap(), Some(56));
}

#[test]
fn failed_fsync_poisons_until_reopen_and_loses_nothing_synced() {
    let disk = FaultBackend::new(11);
    let mut log = open(&disk);
    fill(&mut log, 5);
    log.append(b"unsure", 1).unwrap();
    disk.fail_next_sync();
    assert!(matches!(log.sync(), Err(LogError::Io { .. })));
    assert!(log.is_poisoned());
    assert!(matches!(log.append(b"x", 1), Err(LogError::Poisoned)));
    assert!(matches!(log.sync(), Err(LogError::Poisoned)));
    // Reads still work.
    assert_eq!(log.read(4).unwrap().payload, body(4));
    drop(log);
    disk.crash(CrashMode::all());
    let log = open(&disk);
    assert!(log.next_offset() >= 5);
    for o in 0..5 {
        assert_eq!(log.read(o).unwrap().payload, body(o));
    }
}

#[test]
fn disk_full_on_write_is_reported_and_recoverable() {
    let disk = FaultBackend::new(12);
    let mut log = open(&disk);
    fill(&mut log, 5);
    log.append(b"pending", 1).unwrap();
    disk.fail_next_write(WriteFault::NoSpace);
    let err = log.sync().unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(!log.is_poisoned());
    // The record stays buffered and readable; the next sync writes it.
    assert_eq!(log.read(5).unwrap().payload, b"pending");
    assert_eq!(log.sync().unwrap(), 6);
    drop(log);
    disk.crash(CrashMode::all());
    let log = open(&disk);
    assert_eq!(log.next_offset(), 6);
    assert_eq!(log.read(5).unwrap().payload, b"pending");
    let store_err: ferrymq_store::StoreError = err.into();
    assert!(matches!(store_err, ferrymq_store::StoreError::Full));
}

#[test]
fn oversized_records_are_refused() {
    let disk = FaultBackend::new(13);
    let mut log = open(&disk);
    let big = vec![0; 4097];
    assert!(matches!(
        log.append(&big, 0),
        Err(LogError::RecordTooLarge { size: 4097, .. })
    ));
    // A record larger than a segment gets a segment of its own.
    let large = vec![7; 3000];
    log.append(b"a", 0).unwrap();
    log.append(&large, 0).unwrap();
    log.append(b"b", 0).unwrap();
    log.sync().unwrap();
    assert_eq!(log.read(1).unwrap().payload, large);
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn many_acks_are_written_early_but_durable_only_after_sync() {
    let disk = FaultBackend::new(14);
    let mut log = Log::open(
        disk.clone(),
        "q",
        LogConfig {
            max_segment_bytes: 1 << 20,
            ..small()
        },
    )
    .unwrap();
    fill(&mut log, 6000);
    for o in 0..5000 {
        log.ack(o).unwrap();
    }
    // Past the pending threshold the entries are in the file already (not yet fsynced).
    let written = disk.contents(&seg_path(0, "ack")).unwrap().len();
    assert!(written >= 4096 * 8, "only {written} bytes of acks written");
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::all());
    let log = Log::open(disk.clone(), "q", small()).unwrap();
    assert_eq!(
        log.unacked().collect::<Vec<_>>(),
        (5000..6000).collect::<Vec<_>>()
    );
}
