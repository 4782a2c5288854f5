//! The delay log's fsync off the delayed exchange's loop, as `ferrymq-server::delayed`
//! runs it: each round appends holds, releases due ones (batch reads, acks), and starts an
//! fsync (`DelayLog::begin_sync`) on another thread if none is running; holds are confirmed
//! only when `finish_sync` accepted the fsync that began after them. With a slow fsync:
//! nothing counts as durable before the fsync returns, a power cut while it runs keeps
//! every confirmed hold, and a failed fsync while the next round appends nacks what it
//! covered and lets nothing later be confirmed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_core::Message;
use ferrymq_store::delay_log::DelayLog;
use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::{LogConfig, LogError, SyncJob};

use crate::{base_seed, SeedGuard};

fn message(id: u64) -> Message {
    Message {
        exchange: Bytes::from_static(b"dx"),
        routing_key: Bytes::from_static(b"rk"),
        raw_properties: Bytes::from_static(&[0x10, 0x00, 2]),
        body: Bytes::from(id.to_be_bytes().to_vec()),
        persistent: true,
        priority: None,
        headers: None,
        ttl_ms: None,
    }
}

fn dir() -> &'static Path {
    Path::new("/data/delayed/0000000000000001")
}

type Running = JoinHandle<(SyncJob<FaultBackend>, Result<(), LogError>)>;

fn spawn(job: SyncJob<FaultBackend>) -> Running {
    std::thread::spawn(move || {
        let r = job.run();
        (job, r)
    })
}

#[test]
fn nothing_is_durable_before_the_slow_fsync_returns() {
    let disk = FaultBackend::new(3);
    disk.set_sync_delay(Some(Duration::from_millis(150)));
    let (mut log, _) = DelayLog::open_with(disk.clone(), dir(), LogConfig::default()).unwrap();
    let before = log.durable_offset();
    let a = log.append(10, &message(1), 0).unwrap();
    let job = log.begin_sync().unwrap().expect("a job");
    assert_eq!(job.target(), a + 1);
    let running = spawn(job);
    // The loop goes on: appends and reads while the fsync runs, and nothing is durable.
    let b = log.append(20, &message(2), 0).unwrap();
    let got = log.read_batch(&mut [b, a]);
    assert_eq!(got.len(), 2);
    assert!(!running.is_finished(), "the fsync is still running");
    assert_eq!(
        log.durable_offset(),
        before,
        "no completion before the fsync returns"
    );
    let (job, r) = running.join().unwrap();
    assert!(r.is_ok());
    assert_eq!(log.finish_sync(job, Ok(())).unwrap(), a + 1);
    assert!(
        log.needs_sync(),
        "the hold appended meanwhile waits for the next fsync"
    );
}

#[test]
fn a_power_cut_while_the_fsync_runs_keeps_every_confirmed_hold() {
    for case in 0..8u64 {
        // Odd cases: segment rolls leave the sealed segment's fsync to the next job.
        let deferred = case % 2 == 1;
        let seed = base_seed(900) + case;
        let _guard = SeedGuard(seed);
        let disk = FaultBackend::new(seed);
        disk.set_sync_delay(Some(Duration::from_millis(2)));
        let config = LogConfig {
            max_segment_bytes: 600,
            ..LogConfig::default()
        };
        let (mut log, _) = DelayLog::open_with(disk.clone(), dir(), config.clone()).unwrap();
        log.set_deferred_seal(deferred);
        let mut now = 0u64;
        let mut schedule: BTreeMap<(u64, u64), u64> = BTreeMap::new(); // (due, offset) -> id
        let mut waiting = Vec::new();
        let mut running: Option<(Running, Vec<u64>)> = None;
        let mut confirmed = BTreeSet::new();
        let mut released = BTreeSet::new();
        let mut id = 0u64;
        let rounds = 60 + seed % 30;
        let mut round = 0;
        // At least the given rounds, and on until some fsync has confirmed holds (on a
        // loaded machine the first fsync thread may not even have run by then).
        while round < rounds || confirmed.is_empty() {
            if round >= rounds {
                std::thread::sleep(Duration::from_millis(1));
            }
            round += 1;
            now += 1;
            for _ in 0..(1 + (seed + round) % 4) {
                let due = now + (id * 7 + seed) % 15;
                let o = log.append(due, &message(id), now as i64).unwrap();
                schedule.insert((due, o), id);
                waiting.push(id);
                id += 1;
            }
            // Release what is due, in one batch read; acks wait for their fsync.
            let due: Vec<(u64, u64)> = schedule.range(..(now + 1, 0)).map(|(k, _)| *k).collect();
            let mut offsets: Vec<u64> = due.iter().map(|d| d.1).collect();
            for (o, m) in log.read_batch(&mut offsets) {
                let m = m.expect("read back");
                let (k, want) = due
                    .iter()
                    .find(|d| d.1 == o)
                    .map(|k| (*k, schedule[k]))
                    .unwrap();
                assert_eq!(&m.body[..], &want.to_be_bytes());
                schedule.remove(&k);
                log.ack(o).unwrap();
                released.insert(want);
            }
            if running.as_ref().is_some_and(|(h, _)| h.is_finished()) {
                let (h, covered) = running.take().unwrap();
                let (job, r) = h.join().unwrap();
                log.finish_sync(job, r).expect("fsync ok");
                confirmed.extend(covered);
            }
            if running.is_none() {
                // As the delay task does: mostly the holds only, the acks now and then.
                let job = if round % 4 == 0 {
                    log.begin_sync().unwrap()
                } else {
                    log.begin_sync_holds().unwrap()
                };
                if let Some(job) = job {
                    running = Some((spawn(job), std::mem::take(&mut waiting)));
                }
            }
        }
        drop(log);
        disk.crash(CrashMode::all());
        if let Some((h, _)) = running {
            let _ = h.join();
        }
        let (mut log, held) = DelayLog::open_with(disk.clone(), dir(), config).unwrap();
        let mut offsets: Vec<u64> = held.iter().map(|h| h.1).collect();
        let back: BTreeSet<u64> = log
            .read_batch(&mut offsets)
            .into_iter()
            .map(|(_, m)| u64::from_be_bytes(m.unwrap().body[..].try_into().unwrap()))
            .collect();
        for id in &confirmed {
            assert!(
                back.contains(id) || released.contains(id),
                "confirmed hold {id} lost"
            );
        }
        assert!(!confirmed.is_empty(), "some rounds were confirmed");
    }
}

#[test]
fn a_failed_fsync_while_the_next_round_appends_confirms_nothing_after_it() {
    let disk = FaultBackend::new(41);
    let (mut log, _) = DelayLog::open_with(disk.clone(), dir(), LogConfig::default()).unwrap();
    log.append(5, &message(0), 0).unwrap();
    let job = log.begin_sync().unwrap().expect("a job");
    disk.fail_next_sync();
    let running = spawn(job);
    // The next round appends while the failing fsync runs.
    let late = log.append(6, &message(1), 0);
    let (job, r) = running.join().unwrap();
    assert!(
        log.finish_sync(job, r).is_err(),
        "the holds it covered are nacked"
    );
    assert!(late.is_ok(), "appended before the failure was known");
    assert!(
        log.begin_sync().is_err() || log.append(7, &message(2), 0).is_err(),
        "the log is poisoned: the hold appended meanwhile is never confirmed"
    );
}

#[test]
fn a_holds_only_fsync_leaves_acks_for_later_and_they_are_never_lost_for_good() {
    let disk = FaultBackend::new(12);
    let (mut log, _) = DelayLog::open_with(disk.clone(), dir(), LogConfig::default()).unwrap();
    let a = log.append(1, &message(0), 0).unwrap();
    log.sync().unwrap();
    log.ack(a).unwrap();
    let b = log.append(2, &message(1), 0).unwrap();
    let syncs = disk.sync_count();
    let job = log.begin_sync_holds().unwrap().expect("a job");
    let r = job.run();
    log.finish_sync(job, r).unwrap();
    assert_eq!(
        disk.sync_count() - syncs,
        1,
        "one fsync: the segment, no ack file"
    );
    assert!(log.needs_sync(), "the ack still waits for a sync");
    drop(log);
    disk.crash(CrashMode::all());
    let (mut log, held) = DelayLog::open_with(disk.clone(), dir(), LogConfig::default()).unwrap();
    let offsets: Vec<u64> = held.iter().map(|h| h.1).collect();
    assert!(offsets.contains(&b), "the covered hold survives");
    // The unsynced ack may be lost: the message comes back (a redelivery, never a loss).
    if offsets.contains(&a) {
        log.ack(a).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::all());
    let (_, held) = DelayLog::open_with(disk, dir(), LogConfig::default()).unwrap();
    assert_eq!(held.iter().map(|h| h.1).collect::<Vec<_>>(), vec![b]);
}

#[test]
fn a_deferred_seal_fsyncs_nothing_on_the_loop_and_a_cut_before_its_job_keeps_what_was_confirmed() {
    for seed in 0..6u64 {
        let disk = FaultBackend::new(seed);
        let config = LogConfig {
            max_segment_bytes: 300,
            ..LogConfig::default()
        };
        let (mut log, _) = DelayLog::open_with(disk.clone(), dir(), config.clone()).unwrap();
        log.set_deferred_seal(true);
        // Round 1, confirmed: spans several segments.
        let mut confirmed = Vec::new();
        for id in 0..20 {
            confirmed.push(log.append(100 + id, &message(id), 0).unwrap());
        }
        let job = log.begin_sync().unwrap().expect("a job");
        let target = job.target();
        let r = job.run();
        assert_eq!(log.finish_sync(job, r).unwrap(), target);
        assert!(log.segment_count() > 2, "rolled");
        // Round 2 rolls more segments: not one fsync on the loop, nothing durable yet.
        let syncs = (disk.sync_count(), disk.dir_sync_count());
        let durable = log.durable_offset();
        for id in 20..40 {
            log.append(100 + id, &message(id), 0).unwrap();
        }
        assert_eq!((disk.sync_count(), disk.dir_sync_count()), syncs);
        assert_eq!(log.durable_offset(), durable);
        // Its job begins (not run) and the power goes: round 1 survives whole.
        let job = log.begin_sync().unwrap().expect("a job");
        drop(log);
        disk.crash(CrashMode::all());
        let _ = job.run();
        let (mut log, held) = DelayLog::open_with(disk.clone(), dir(), config.clone()).unwrap();
        let mut offsets: Vec<u64> = held.iter().map(|h| h.1).collect();
        let back: BTreeSet<u64> = log
            .read_batch(&mut offsets)
            .into_iter()
            .map(|(_, m)| u64::from_be_bytes(m.unwrap().body[..].try_into().unwrap()))
            .collect();
        for id in 0..20 {
            assert!(back.contains(&id), "seed {seed}: confirmed hold {id} lost");
        }
        // The same once the job completed: everything, and the log reopens from the
        // sealed segments' `.idx` (written by the job after their fsync).
        log.set_deferred_seal(true);
        for id in 40..60 {
            log.append(100 + id, &message(id), 0).unwrap();
        }
        let job = log.begin_sync().unwrap().expect("a job");
        let r = job.run();
        log.finish_sync(job, r).unwrap();
        let before: BTreeSet<u64> = back.iter().copied().chain(40..60).collect();
        drop(log);
        disk.crash(CrashMode::all());
        let (mut log, held) = DelayLog::open_with(disk.clone(), dir(), config).unwrap();
        let mut offsets: Vec<u64> = held.iter().map(|h| h.1).collect();
        let back: BTreeSet<u64> = log
            .read_batch(&mut offsets)
            .into_iter()
            .map(|(_, m)| u64::from_be_bytes(m.unwrap().body[..].try_into().unwrap()))
            .collect();
        assert_eq!(back, before, "seed {seed}");
    }
}
