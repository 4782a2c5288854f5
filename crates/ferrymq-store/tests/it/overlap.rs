//! The fsync off the owner's loop, as a durable queue task runs it: each round appends,
//! starts a sync (`QueueStore::begin_sync`) if none is running, and the sync's work runs
//! on another thread with a slow fsync while the next rounds keep appending. Publishes are
//! confirmed only when `finish_sync` accepted the sync that began after them. A power cut
//! while a sync is in flight must keep every confirmed message.
//!
//! Deterministic: the seed, not the scheduler, decides in which round a sync's thread is
//! let go and in which round the loop waits for it and accepts it (a queue task sees the
//! completion whenever it comes; any round is one it could see it in). Which bytes are
//! durable at the cut may depend on timing; what was confirmed, and so what is checked,
//! does not.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ferrymq_store::log::fault::{CrashMode, FaultBackend, SimRng};
use ferrymq_store::log::LogConfig;
use ferrymq_store::queue_log::LogStore;
use ferrymq_store::{QueueStore, SyncWork};

use crate::{base_seed, message, SeedGuard};

/// A sync in flight: its job waits on its own thread for `go`, then runs (slow fsync).
struct InFlight {
    go: Option<mpsc::Sender<()>>,
    thread: std::thread::JoinHandle<Box<dyn SyncWork>>,
    covered: Vec<u64>,
}

impl InFlight {
    fn spawn(mut work: Box<dyn SyncWork>, covered: Vec<u64>) -> Self {
        let (go, wait) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Runs when let go, or when the test drops the sender (power cut: the thread
            // then finds its handles dead).
            let _ = wait.recv();
            work.run();
            work
        });
        InFlight {
            go: Some(go),
            thread,
            covered,
        }
    }

    fn let_go(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }
}

#[test]
fn a_confirm_never_precedes_the_fsync_covering_it() {
    for case in 0..8u64 {
        let seed = base_seed(500) + case;
        let _guard = SeedGuard(seed);
        let mut rng = SimRng::new(seed);
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
        let mut running: Option<InFlight> = None;
        let mut confirmed = BTreeSet::new();
        let mut completed = 0;
        let rounds = 40 + seed % 40;
        for _ in 0..rounds {
            // A round: a few publishes stored (while the previous round's fsync may run).
            for _ in 0..1 + rng.up_to(4) {
                store.append(next, &message(next, true)).expect("append");
                waiting.push(next);
                next += 1;
            }
            // The running fsync: let go now, or seen completed in this round.
            if let Some(r) = running.as_mut() {
                if r.go.is_some() {
                    if rng.chance(2, 3) {
                        r.let_go();
                    }
                } else if rng.chance(1, 2) {
                    let r = running.take().expect("checked");
                    let work = r.thread.join().expect("fsync thread");
                    store.finish_sync(work).expect("fsync ok");
                    confirmed.extend(r.covered);
                    completed += 1;
                }
            }
            if running.is_none() {
                if let Some(work) = store.begin_sync().expect("begin") {
                    running = Some(InFlight::spawn(work, std::mem::take(&mut waiting)));
                }
            }
        }
        assert!(completed > 0, "some rounds were confirmed");
        // Power cut with an fsync in flight (not yet started, or running or returned
        // but not accepted): its publishes were never confirmed, losing them is allowed.
        let mut last = running.take().expect("a sync in flight at the cut");
        if rng.chance(1, 2) {
            last.let_go();
        }
        drop(store);
        disk.crash(CrashMode::all());
        last.let_go();
        let _ = last.thread.join();
        let mut store =
            LogStore::open_with(disk.clone(), Path::new("/data"), "q", config).expect("reopen");
        let r = store.recover().expect("recover");
        let mut got: BTreeSet<u64> = r.messages.iter().map(|(o, _)| *o).collect();
        got.extend(r.paged);
        for id in &confirmed {
            assert!(got.contains(id), "confirmed message {id} lost");
        }
    }
}

#[test]
fn a_failed_fsync_nacks_what_it_covered_and_later_syncs_fail_too() {
    let disk = FaultBackend::new(77);
    let mut store =
        LogStore::open_with(disk.clone(), Path::new("/data"), "q", LogConfig::default())
            .expect("open");
    store.recover().expect("recover");
    store.append(0, &message(0, true)).expect("append");
    let mut work = store.begin_sync().expect("begin").expect("work");
    // The next round appends while the fsync runs, and the fsync fails.
    store.append(1, &message(1, true)).expect("append");
    disk.fail_next_sync();
    work.run();
    assert!(
        store.finish_sync(work).is_err(),
        "the covered publish is nacked"
    );
    assert!(
        store.begin_sync().is_err() || store.append(2, &message(2, true)).is_err(),
        "a failed fsync poisons the log: nothing after it is confirmed"
    );
}
