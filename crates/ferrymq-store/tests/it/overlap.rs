//! The fsync off the owner's loop, as a durable queue task runs it: each round appends,
//! starts a sync (`QueueStore::begin_sync`) if none is running, and the sync's work runs
//! on another thread with a slow fsync while the next rounds keep appending. Publishes are
//! confirmed only when `finish_sync` accepted the sync that began after them. A power cut
//! while a sync is running must keep every confirmed message.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_core::Message;
use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::LogConfig;
use ferrymq_store::queue_log::LogStore;
use ferrymq_store::{QueueStore, SyncWork};

use crate::{base_seed, SeedGuard};

fn message(id: u64) -> Arc<Message> {
    Arc::new(Message {
        exchange: Bytes::new(),
        routing_key: Bytes::from_static(b"q"),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from(id.to_be_bytes().to_vec()),
        persistent: true,
        priority: None,
        headers: None,
        ttl_ms: None,
    })
}

type Running = std::thread::JoinHandle<Box<dyn SyncWork>>;

#[test]
fn a_confirm_never_precedes_the_fsync_covering_it() {
    for case in 0..8u64 {
        let seed = base_seed(500) + case;
        let _guard = SeedGuard(seed);
        let disk = FaultBackend::new(seed);
        disk.set_sync_delay(Some(Duration::from_millis(2)));
        let config = LogConfig {
            max_segment_bytes: 512,
            ..LogConfig::default()
        };
        let mut store = LogStore::open_with(disk.clone(), Path::new("/data"), "q", config.clone())
            .expect("open");
        store.recover().expect("recover");
        let mut next = 0u64;
        let mut waiting: Vec<u64> = Vec::new();
        let mut running: Option<(Running, Vec<u64>)> = None;
        let mut confirmed = BTreeSet::new();
        let rounds = 40 + seed % 40;
        for round in 0..rounds {
            // A round: a few publishes stored.
            for _ in 0..(1 + (seed + round) % 5) {
                store.append(next, &message(next)).expect("append");
                waiting.push(next);
                next += 1;
            }
            // The running fsync completed? Then its publishes are confirmed.
            if running.as_ref().is_some_and(|(h, _)| h.is_finished()) {
                let (h, covered) = running.take().expect("checked");
                let work = h.join().expect("fsync thread");
                store.finish_sync(work).expect("fsync ok");
                confirmed.extend(covered);
            }
            if running.is_none() {
                if let Some(mut work) = store.begin_sync().expect("begin") {
                    let covered = std::mem::take(&mut waiting);
                    let h = std::thread::spawn(move || {
                        work.run();
                        work
                    });
                    running = Some((h, covered));
                }
            }
        }
        // Power cut with (most likely) an fsync still running; its publishes were never
        // confirmed, so losing them is allowed.
        drop(store);
        disk.crash(CrashMode::all());
        if let Some((h, _)) = running {
            let _ = h.join();
        }
        let mut store =
            LogStore::open_with(disk.clone(), Path::new("/data"), "q", config).expect("reopen");
        let r = store.recover().expect("recover");
        let mut got: BTreeSet<u64> = r.messages.iter().map(|(o, _)| *o).collect();
        got.extend(r.paged);
        for id in &confirmed {
            assert!(got.contains(id), "confirmed message {id} lost");
        }
        assert!(!confirmed.is_empty(), "some rounds were confirmed");
    }
}

#[test]
fn a_failed_fsync_nacks_what_it_covered_and_later_syncs_fail_too() {
    let disk = FaultBackend::new(77);
    let mut store =
        LogStore::open_with(disk.clone(), Path::new("/data"), "q", LogConfig::default())
            .expect("open");
    store.recover().expect("recover");
    store.append(0, &message(0)).expect("append");
    let mut work = store.begin_sync().expect("begin").expect("work");
    // The next round appends while the fsync runs, and the fsync fails.
    store.append(1, &message(1)).expect("append");
    disk.fail_next_sync();
    work.run();
    assert!(
        store.finish_sync(work).is_err(),
        "the covered publish is nacked"
    );
    assert!(
        store.begin_sync().is_err() || store.append(2, &message(2)).is_err(),
        "a failed fsync poisons the log: nothing after it is confirmed"
    );
}
