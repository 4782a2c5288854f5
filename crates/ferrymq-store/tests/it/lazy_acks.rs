//! A durable queue's acks leave the confirm path: `LogStore::begin_sync` fsyncs the
//! records every time (publisher confirms wait on those) but the ack files only once their
//! oldest unsynced entry is `ack_sync_interval` old. What a power cut may then cost is a
//! redelivery of acked messages, never a confirmed message; a process crash costs nothing
//! (the acks are written to the OS in every round).

use std::path::Path;
use std::time::Duration;

use crate::message;
use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::LogConfig;
use ferrymq_store::queue_log::{queue_dir, LogStore};
use ferrymq_store::QueueStore;

fn open(disk: &FaultBackend, interval: Duration) -> (LogStore<FaultBackend>, Vec<u64>) {
    let mut s = LogStore::open_with(disk.clone(), Path::new("/data"), "q", LogConfig::default())
        .expect("open");
    s.set_ack_sync_interval(interval);
    let r = s.recover().expect("recover");
    assert!(r.paged.is_empty());
    let ids = r
        .messages
        .iter()
        .map(|(_, m)| u64::from_be_bytes(m.body[..8].try_into().expect("id")))
        .collect();
    (s, ids)
}

/// One round as the queue task runs it: begin, run (on "another thread"), finish.
fn round(s: &mut LogStore<FaultBackend>) {
    if let Some(mut work) = s.begin_sync().expect("begin") {
        work.run();
        s.finish_sync(work).expect("finish");
    }
}

/// Appends 0..10, syncs, acks 0..5, appends 10..12, then one round: returns the file
/// fsyncs that round made and what a power cut right after it leaves.
fn ack_then_round(interval: Duration) -> (u64, Vec<u64>, Option<std::time::Instant>) {
    let disk = FaultBackend::new(7);
    let (mut s, ids) = open(&disk, interval);
    assert!(ids.is_empty());
    for i in 0..10 {
        s.append(i, &message(i, true)).expect("append");
    }
    round(&mut s);
    round(&mut s);
    s.remove(&[0, 1, 2, 3, 4]).expect("remove");
    for i in 10..12 {
        s.append(i, &message(i, true)).expect("append");
    }
    let before = disk.sync_count();
    round(&mut s);
    let syncs = disk.sync_count() - before;
    let deadline = s.sync_deadline();
    // The acks were handed to the OS in this round either way (a process crash keeps them).
    let dir = queue_dir(Path::new("/data"), "q");
    let ack_bytes: usize = ferrymq_store::log::Backend::list(&disk, &dir)
        .expect("list")
        .iter()
        .filter(|n| n.ends_with(".ack"))
        .filter_map(|n| disk.contents(&dir.join(n)))
        .map(|c| c.len())
        .sum();
    assert!(ack_bytes > 0, "acks written to the OS");
    disk.crash(CrashMode::default());
    drop(s);
    let (_, back) = open(&disk, interval);
    (syncs, back, deadline)
}

#[test]
fn a_round_fsyncs_the_records_and_leaves_fresh_acks_for_later() {
    let (syncs, back, deadline) = ack_then_round(Duration::from_secs(3600));
    assert_eq!(syncs, 1, "one fsync: the segment, not the ack file");
    assert!(
        deadline.is_some(),
        "the queue is told when the acks are due"
    );
    // Every confirmed (synced) message is there; the acked ones come back (redelivery).
    assert_eq!(back, (0..12).collect::<Vec<_>>());
}

#[test]
fn due_acks_are_fsynced_with_the_round() {
    let (syncs, back, _) = ack_then_round(Duration::ZERO);
    assert_eq!(syncs, 2, "segment and ack file");
    assert_eq!(back, (5..12).collect::<Vec<_>>());
}

#[test]
fn sync_makes_lazy_acks_durable_and_clears_the_deadline() {
    let disk = FaultBackend::new(9);
    let (mut s, _) = open(&disk, Duration::from_secs(3600));
    for i in 0..4 {
        s.append(i, &message(i, true)).expect("append");
    }
    round(&mut s);
    s.remove(&[0, 1]).expect("remove");
    round(&mut s);
    assert!(s.sync_deadline().is_some());
    s.sync().expect("sync");
    assert_eq!(s.sync_deadline(), None);
    disk.crash(CrashMode::all());
    drop(s);
    let (_, back) = open(&disk, Duration::from_secs(3600));
    assert_eq!(back, vec![2, 3]);
}
