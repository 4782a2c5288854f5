//! Group commit on the fault-injecting disk: concurrent writers share fsyncs, every
//! completed commit is durable across a crash, failures reach every waiter of the batch,
//! and the interval / never policies complete without waiting for an fsync.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::{FsyncPolicy, GroupCommit, Log, LogConfig, LogError};

fn start(disk: &FaultBackend, policy: FsyncPolicy) -> GroupCommit<FaultBackend> {
    let log = Log::open(disk.clone(), "q", LogConfig::default()).unwrap();
    GroupCommit::start(log, policy).unwrap()
}

#[test]
fn concurrent_writers_share_fsyncs_and_every_commit_is_durable() {
    let disk = FaultBackend::new(21);
    let gc = Arc::new(start(&disk, FsyncPolicy::Always));
    let syncs_before = disk.sync_count();
    let writers = 16;
    let per = 100;
    let offsets: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let gc = gc.clone();
                s.spawn(move || {
                    (0..per)
                        .map(|i| {
                            let body = format!("w{w} m{i}").into_bytes();
                            let range = gc.append(body.clone(), i).wait().unwrap();
                            assert_eq!(range.end - range.start, 1);
                            assert!(gc.durable_offset() >= range.end);
                            (range.start, body)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let syncs = disk.sync_count() - syncs_before;
    let commits = (writers * per) as u64;
    eprintln!("{commits} commits from {writers} threads took {syncs} fsyncs");
    assert!(syncs <= commits);
    // Each writer's records are in its own order.
    for w in &offsets {
        assert!(w.windows(2).all(|p| p[0].0 < p[1].0));
    }
    drop(Arc::into_inner(gc).unwrap());
    disk.crash(CrashMode::all());
    let log = Log::open(disk.clone(), "q", LogConfig::default()).unwrap();
    assert_eq!(log.next_offset(), commits);
    for (o, body) in offsets.iter().flatten() {
        assert_eq!(&log.read(*o).unwrap().payload, body);
    }
}

#[tokio::test]
async fn async_writers_and_acks() {
    let disk = FaultBackend::new(22);
    let gc = start(&disk, FsyncPolicy::Always);
    let commits: Vec<_> = (0..50)
        .map(|i| gc.append_batch(vec![(vec![i as u8; 10], i), (vec![1], i)]))
        .collect();
    let mut ends = Vec::new();
    for c in commits {
        ends.push(c.done().await.unwrap().end);
    }
    assert_eq!(ends.iter().max(), Some(&100));
    gc.ack((0..40).collect()).done().await.unwrap();
    let unacked = gc.call(|log| log.unacked().count()).await.unwrap();
    assert_eq!(unacked, 60);
    let read = gc
        .call(|log| log.read(41).map(|r| r.payload))
        .await
        .unwrap();
    assert_eq!(read.unwrap(), vec![1]);
    drop(gc);
    disk.crash(CrashMode::all());
    let log = Log::open(disk.clone(), "q", LogConfig::default()).unwrap();
    assert_eq!(log.unacked().count(), 60);
}

#[test]
fn a_failed_fsync_fails_every_waiter_of_its_batch() {
    let disk = FaultBackend::new(23);
    let gc = start(&disk, FsyncPolicy::Always);
    gc.append(b"ok".to_vec(), 0).wait().unwrap();
    disk.fail_next_sync();
    let err = gc.append(b"lost?".to_vec(), 0).wait().unwrap_err();
    assert!(matches!(err, LogError::Batch(_)), "{err}");
    // The log is poisoned: later writes fail fast until it is reopened.
    let err = gc.append(b"later".to_vec(), 0).wait().unwrap_err();
    assert!(matches!(err, LogError::Poisoned), "{err}");
    let log = gc.shutdown().unwrap();
    assert!(log.is_poisoned());
    drop(log);
    disk.crash(CrashMode::all());
    let log = Log::open(disk.clone(), "q", LogConfig::default()).unwrap();
    assert_eq!(log.read(0).unwrap().payload, b"ok");
}

#[test]
fn interval_and_never_complete_before_fsync() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ] {
        let disk = FaultBackend::new(24);
        let gc = start(&disk, policy);
        let before = disk.sync_count();
        for i in 0..20 {
            gc.append(vec![i], 0).wait().unwrap();
        }
        assert_eq!(disk.sync_count(), before, "{policy}: no fsync per commit");
        assert_eq!(gc.durable_offset(), 0);
        // Shutting down syncs what is left.
        let log = gc.shutdown().unwrap();
        assert_eq!(log.durable_offset(), 20, "{policy}");
    }
}

#[test]
fn interval_policy_syncs_on_its_own() {
    let disk = FaultBackend::new(25);
    let gc = start(&disk, FsyncPolicy::Interval(Duration::from_millis(5)));
    gc.append(b"x".to_vec(), 0).wait().unwrap();
    // Wait for the committer's own fsync, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gc.durable_offset() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "interval fsync never ran"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
