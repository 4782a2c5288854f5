//! The per-disk sync worker (`ferrymq_store::sync_worker`) on the fault-injecting disk:
//! many durable queue logs hand it their fsync jobs, it runs every job waiting as one
//! batch. Each job keeps its own outcome: a log's publishes are confirmed only once the
//! job covering them came back successful; a failed fsync in a batch fails that log's
//! job only (that log nacks and refuses writes, the others confirm); a power cut while a
//! batch runs keeps every confirmed message of every log.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ferrymq_store::log::fault::{CrashMode, FaultBackend, SimRng};
use ferrymq_store::log::LogConfig;
use ferrymq_store::queue_log::LogStore;
use ferrymq_store::sync_worker::SyncWorker;
use ferrymq_store::{QueueStore, SyncWork};

use crate::{base_seed, message, SeedGuard};

fn open(disk: &FaultBackend, i: usize) -> LogStore<FaultBackend> {
    let config = LogConfig {
        max_segment_bytes: 1024,
        ..LogConfig::default()
    };
    let mut s = LogStore::open_with(disk.clone(), Path::new("/data"), &format!("q{i}"), config)
        .expect("open");
    s.recover().expect("recover");
    s
}

/// A job that keeps the worker busy until `release` is sent: jobs submitted meanwhile
/// all wait, and form the next batch together.
struct Gate(mpsc::Sender<()>, mpsc::Receiver<()>);
impl SyncWork for Gate {
    fn run(&mut self) {
        let _ = self.0.send(());
        let _ = self.1.recv();
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// Submits a [`Gate`] and returns once the worker is inside it.
fn hold(worker: &SyncWorker) -> mpsc::Sender<()> {
    let (release, gate) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    worker.submit(Box::new(Gate(entered_tx, gate)), Box::new(|_| {}));
    entered.recv().expect("the worker runs the gate");
    release
}

type Done = mpsc::Sender<(usize, Box<dyn SyncWork>)>;

fn submit(worker: &SyncWorker, i: usize, work: Box<dyn SyncWork>, done: &Done) {
    let done = done.clone();
    worker.submit(
        work,
        Box::new(move |w| {
            let _ = done.send((i, w));
        }),
    );
}

#[test]
fn many_logs_confirm_only_after_their_own_fsync_and_survive_a_cut_during_a_batch() {
    const LOGS: usize = 30;
    for case in 0..4u64 {
        let seed = base_seed(900) + case;
        let _guard = SeedGuard(seed);
        let mut rng = SimRng::new(seed);
        let disk = FaultBackend::new(seed);
        disk.set_sync_delay(Some(Duration::from_millis(1)));
        let worker = SyncWorker::start("test-sync", 8);
        let mut logs: Vec<LogStore<FaultBackend>> = (0..LOGS).map(|i| open(&disk, i)).collect();
        let mut next = vec![0u64; LOGS];
        let mut waiting: Vec<Vec<u64>> = vec![Vec::new(); LOGS];
        let mut in_flight: Vec<Option<Vec<u64>>> = vec![None; LOGS];
        let mut confirmed: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); LOGS];
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..20 {
            // A fanout round: the same messages to every log, then each log without a
            // sync in flight hands its job to the worker.
            let n = 1 + rng.up_to(3);
            for (i, log) in logs.iter_mut().enumerate() {
                for _ in 0..n {
                    log.append(next[i], &message(next[i], true))
                        .expect("append");
                    waiting[i].push(next[i]);
                    next[i] += 1;
                }
            }
            for (i, log) in logs.iter_mut().enumerate() {
                if in_flight[i].is_none() {
                    if let Some(work) = log.begin_sync().expect("begin") {
                        in_flight[i] = Some(std::mem::take(&mut waiting[i]));
                        submit(&worker, i, work, &done_tx);
                    }
                }
            }
            // Some completions are taken now (always at least one, seed-chosen how many
            // more); a publish is confirmed only once its own log's job came back.
            let take = 1 + rng.up_to(LOGS as u64 / 2);
            for _ in 0..take {
                let (i, work) = done_rx.recv().expect("a job comes back");
                logs[i].finish_sync(work).expect("fsync ok");
                confirmed[i].extend(in_flight[i].take().expect("in flight"));
            }
        }
        assert!(confirmed.iter().any(|c| !c.is_empty()));
        // Power cut with a batch in flight.
        drop(logs);
        disk.crash(CrashMode::all());
        for (i, c) in confirmed.iter().enumerate() {
            let mut log = open(&disk, i);
            let r = log.recover().expect("recover");
            let mut got: BTreeSet<u64> = r.messages.iter().map(|(o, _)| *o).collect();
            got.extend(r.paged);
            for id in c {
                assert!(got.contains(id), "log {i}: confirmed message {id} lost");
            }
        }
    }
}

#[test]
fn jobs_waiting_together_run_as_one_batch() {
    let disk = FaultBackend::new(5);
    let worker = SyncWorker::start("test-sync", 8);
    let mut logs: Vec<LogStore<FaultBackend>> = (0..10).map(|i| open(&disk, i)).collect();
    let release = hold(&worker);
    let (done_tx, done_rx) = mpsc::channel();
    for (i, log) in logs.iter_mut().enumerate() {
        log.append(0, &message(0, true)).expect("append");
        submit(
            &worker,
            i,
            log.begin_sync().expect("begin").expect("job"),
            &done_tx,
        );
    }
    let syncs = disk.sync_count();
    release.send(()).expect("release");
    for _ in 0..10 {
        let (i, work) = done_rx.recv().expect("done");
        logs[i].finish_sync(work).expect("fsync ok");
    }
    assert_eq!(
        worker.batches(),
        2,
        "the gate's batch, then all ten logs in one"
    );
    // Each log still got its own fsync (coalescing is in the batch, not in skipping one).
    assert!(disk.sync_count() >= syncs + 10);
}

#[test]
fn a_failed_fsync_in_a_batch_fails_only_its_own_log() {
    for seed in 0..4u64 {
        let disk = FaultBackend::new(seed);
        let worker = SyncWorker::start("test-sync", 8);
        let mut logs: Vec<LogStore<FaultBackend>> = (0..10).map(|i| open(&disk, i)).collect();
        // Round 1 is durable everywhere.
        for log in logs.iter_mut() {
            log.append(0, &message(0, true)).expect("append");
            log.sync().expect("sync");
        }
        // Round 2: ten jobs in one batch, the first fsync the disk sees fails.
        let release = hold(&worker);
        let (done_tx, done_rx) = mpsc::channel();
        for (i, log) in logs.iter_mut().enumerate() {
            log.append(1, &message(1, true)).expect("append");
            submit(
                &worker,
                i,
                log.begin_sync().expect("begin").expect("job"),
                &done_tx,
            );
        }
        disk.fail_next_sync();
        release.send(()).expect("release");
        let mut failed = Vec::new();
        for _ in 0..10 {
            let (i, work) = done_rx.recv().expect("done");
            if logs[i].finish_sync(work).is_err() {
                failed.push(i);
            }
        }
        assert_eq!(
            failed.len(),
            1,
            "exactly the log whose fsync failed is nacked"
        );
        let bad = failed[0];
        // That log refuses writes until reopened (nothing after the failure is confirmed);
        // the others go on.
        for (i, log) in logs.iter_mut().enumerate() {
            let wrote = log.append(2, &message(2, true)).and_then(|()| log.sync());
            assert_eq!(wrote.is_ok(), i != bad, "log {i}");
        }
        // Power cut: every log but the failed one keeps all three; the failed one keeps
        // round 1 (confirmed), rounds 2 and 3 were never confirmed.
        drop(logs);
        disk.crash(CrashMode::all());
        for i in 0..10 {
            let mut log = open(&disk, i);
            let r = log.recover().expect("recover");
            let mut got: BTreeSet<u64> = r.messages.iter().map(|(o, _)| *o).collect();
            got.extend(r.paged);
            assert!(got.contains(&0), "log {i}: round 1 lost");
            if i != bad {
                assert!(got.contains(&1) && got.contains(&2), "log {i}: {got:?}");
            }
        }
    }
}
