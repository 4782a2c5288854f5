//! Directory entries under a power cut that follows POSIX: a new file's or directory's
//! entry survives only once its parent directory was fsynced. The fault backend models
//! that; these cases show that what the store confirms survives, and that the model would
//! catch a store that forgot the directory fsyncs (`ignore_dir_syncs`).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ferrymq_core::Message;
use ferrymq_store::delay_log;
use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::{Backend, Log, LogConfig};
use ferrymq_store::queue_log::{queue_dir, LogStore};
use ferrymq_store::QueueStore;

fn message(body: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        exchange: Bytes::new(),
        routing_key: Bytes::from_static(b"q"),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(body),
        persistent: true,
        priority: None,
        headers: None,
        ttl_ms: None,
    })
}

/// Declares queue `q` under `/data` (a fresh `queues/` root), stores and syncs three
/// messages (what a confirm waits for), cuts the power and returns what the queue recovers.
fn confirmed_then_power_cut(disk: &FaultBackend) -> Vec<Vec<u8>> {
    let config = LogConfig::default();
    let mut store =
        LogStore::open_with(disk.clone(), Path::new("/data"), "q", config.clone()).expect("open");
    store.recover().expect("recover");
    for (i, body) in [&b"a"[..], b"b", b"c"].into_iter().enumerate() {
        let m = Arc::new(Message {
            body: Bytes::from_static(body),
            ..(*message(b"")).clone()
        });
        store.append(i as u64, &m).expect("append");
    }
    store.sync().expect("sync");
    drop(store);
    disk.crash(CrashMode::all());
    let mut store =
        LogStore::open_with(disk.clone(), Path::new("/data"), "q", config).expect("reopen");
    let r = store.recover().expect("recover");
    r.messages.iter().map(|(_, m)| m.body.to_vec()).collect()
}

#[test]
fn a_new_queue_and_its_confirmed_messages_survive_a_power_cut() {
    let disk = FaultBackend::new(11);
    let got = confirmed_then_power_cut(&disk);
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let dir = queue_dir(Path::new("/data"), "q");
    assert!(disk.dir_exists(Path::new("/data/queues")));
    assert_eq!(disk.contents(&dir.join("name")).as_deref(), Some(&b"q"[..]));
}

#[test]
fn without_directory_fsyncs_the_model_loses_the_confirmed_messages() {
    let disk = FaultBackend::new(12);
    disk.ignore_dir_syncs();
    assert!(
        confirmed_then_power_cut(&disk).is_empty(),
        "the segment's entry was never made durable: the model must lose it"
    );
}

#[test]
fn segments_created_by_rolling_survive_once_synced() {
    let disk = FaultBackend::new(13);
    let config = LogConfig {
        max_segment_bytes: 128,
        ..LogConfig::default()
    };
    let dir = Path::new("/data/queues/x");
    let mut log = Log::open(disk.clone(), dir, config.clone()).expect("open");
    for i in 0..50u8 {
        log.append(&[i; 40], 0).expect("append");
    }
    log.sync().expect("sync");
    assert!(log.segment_count() > 5);
    drop(log);
    disk.crash(CrashMode::all());
    let log = Log::open(disk.clone(), dir, config).expect("reopen");
    assert_eq!(log.next_offset(), 50);
    for i in 0..50u8 {
        assert_eq!(log.read(u64::from(i)).expect("read").payload, vec![i; 40]);
    }
}

#[test]
fn a_sync_begun_and_not_finished_makes_nothing_durable_yet() {
    let disk = FaultBackend::new(14);
    let dir = Path::new("/data/queues/y");
    let mut log = Log::open(disk.clone(), dir, LogConfig::default()).expect("open");
    log.append(b"one", 0).expect("append");
    log.sync().expect("sync");
    log.append(b"two", 0).expect("append");
    let job = log.begin_sync().expect("begin").expect("a job");
    assert_eq!(job.target(), 2);
    // Appends while the fsync is in flight are not covered by it.
    log.append(b"three", 0).expect("append");
    assert_eq!(log.durable_offset(), 1, "nothing moves before the job ran");
    let result = job.run();
    assert_eq!(log.finish_sync(job, result).expect("finish"), 2);
    drop(log);
    disk.crash(CrashMode::default());
    let log = Log::open(disk.clone(), dir, LogConfig::default()).expect("reopen");
    assert!((2..=3).contains(&log.next_offset()));
    assert_eq!(log.read(1).expect("read").payload, b"two");
}

#[test]
fn a_failed_fsync_while_the_next_round_appends_loses_nothing_confirmed() {
    let disk = FaultBackend::new(15);
    let dir = Path::new("/data/queues/z");
    let mut log = Log::open(disk.clone(), dir, LogConfig::default()).expect("open");
    log.append(b"confirmed", 0).expect("append");
    log.sync().expect("sync");
    log.append(b"round-1", 0).expect("append");
    let job = log.begin_sync().expect("begin").expect("a job");
    log.append(b"round-2", 0)
        .expect("append while the fsync runs");
    disk.fail_next_sync();
    let result = job.run();
    assert!(log.finish_sync(job, result).is_err());
    assert_eq!(log.durable_offset(), 1);
    assert!(log.begin_sync().is_err(), "a failed fsync poisons the log");
    drop(log);
    disk.crash(CrashMode::all());
    let log = Log::open(disk.clone(), dir, LogConfig::default()).expect("reopen");
    assert_eq!(log.read(0).expect("read").payload, b"confirmed");
}

#[test]
fn a_delayed_exchange_directory_survives_a_power_cut() {
    let disk = FaultBackend::new(16);
    let dir = delay_log::create_dir_with(&disk, Path::new("/data"), "dx").expect("create");
    disk.crash(CrashMode::default());
    assert!(disk.dir_exists(&dir));
    assert_eq!(
        disk.contents(&dir.join("name")).as_deref(),
        Some(&b"dx"[..])
    );

    // Without directory fsyncs the entry of the new directory is lost.
    let disk = FaultBackend::new(17);
    disk.create_dir_all(Path::new("/data/delayed"))
        .expect("root");
    disk.ignore_dir_syncs();
    let dir = delay_log::create_dir_with(&disk, Path::new("/data"), "dx").expect("create");
    disk.crash(CrashMode::default());
    assert!(!disk.dir_exists(&dir));
}
