//! A Kafka partition's fsync off its owner's loop, as the partition task runs it: each
//! round appends batches, starts a sync ([`Partition::begin_sync`]) if none is running,
//! and the sync runs on another thread with a slow fsync while the next rounds append.
//! A produce is acknowledged only when `finish_sync` accepted a sync whose Kafka offset
//! covers its batch. Power cuts land between an append and the completion of the fsync
//! covering it; a failed fsync lands while the next round is appending.

use std::path::Path;
use std::time::Duration;

use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::{LogConfig, LogError};
use ferrymq_store::partition::{read_meta, Partition, PartitionSync};

use crate::{base_seed, SeedGuard};

fn config() -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        index_interval_bytes: 256,
        max_record_bytes: 1 << 20,
        write_buffer_bytes: 300,
    }
}

/// A stand-in v2 batch of `n` offsets tagged `tag`, with a right CRC (bytes 17..21,
/// CRC32C of bytes 21..), as validation would have checked.
fn batch(n: i32, tag: u32) -> Vec<u8> {
    let mut b = vec![0u8; 61];
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[35..43].copy_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&tag.to_be_bytes());
    b.extend_from_slice(&[tag as u8; 30]);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn open(disk: &FaultBackend, seen: &mut Vec<(i64, u32)>) -> Partition<FaultBackend> {
    Partition::open(disk.clone(), Path::new("/p"), config(), |b| {
        let tag = u32::from_be_bytes(b[61..65].try_into().unwrap());
        seen.push((read_meta(b).unwrap().base_offset, tag));
    })
    .expect("open")
}

type Running = std::thread::JoinHandle<(PartitionSync<FaultBackend>, Result<(), LogError>)>;

fn spawn(job: PartitionSync<FaultBackend>) -> Running {
    std::thread::spawn(move || {
        let r = job.run();
        (job, r)
    })
}

#[test]
fn a_power_cut_between_append_and_fsync_completion_keeps_every_acked_batch() {
    for case in 0..12u64 {
        let seed = base_seed(900) + case;
        let _guard = SeedGuard(seed);
        let disk = FaultBackend::new(seed);
        disk.set_sync_delay(Some(Duration::from_millis(1 + seed % 3)));
        let mut p = open(&disk, &mut Vec::new());
        // (base offset, tag, last offset + 1) of every batch appended, and which were acked.
        let mut appended: Vec<(i64, u32, i64)> = Vec::new();
        let mut acked: Vec<(i64, u32)> = Vec::new();
        let mut running: Option<Running> = None;
        let mut tag = 0u32;
        let rounds = 30 + seed % 30;
        for round in 0..rounds {
            for _ in 0..(1 + (seed + round) % 4) {
                let n = 1 + (tag % 3) as i32;
                let base = p.append(&batch(n, tag)).expect("append");
                appended.push((base, tag, base + i64::from(n)));
                tag += 1;
            }
            if running.as_ref().is_some_and(|h| h.is_finished()) {
                let (job, result) = running.take().unwrap().join().unwrap();
                let covers = job.covers();
                let hw = p.finish_sync(job, result).expect("fsync ok");
                assert_eq!(hw, covers);
                // Readers never see past the durable end.
                assert!(p.read(hw, |_, _| true).unwrap().is_empty());
                let newly: Vec<(i64, u32)> = appended
                    .iter()
                    .filter(|&&(b, t, end)| end <= hw && !acked.contains(&(b, t)))
                    .map(|&(b, t, _)| (b, t))
                    .collect();
                acked.extend(newly);
            }
            if running.is_none() {
                if let Some(job) = p.begin_sync().expect("begin") {
                    running = Some(spawn(job));
                }
            }
            assert!(p.high_watermark() <= p.next_offset());
        }
        // The cut: an fsync is (most likely) still running, batches after it are only
        // appended. What was acked must survive, with its offset; offsets stay dense.
        let end = p.next_offset();
        drop(p);
        disk.crash(CrashMode::all());
        if let Some(h) = running {
            let _ = h.join();
        }
        let mut seen = Vec::new();
        let p = open(&disk, &mut seen);
        for a in &acked {
            assert!(seen.contains(a), "seed {seed}: acked batch {a:?} lost");
        }
        assert!(p.next_offset() <= end);
        let expected: Vec<(i64, u32)> = appended
            .iter()
            .take(seen.len())
            .map(|&(b, t, _)| (b, t))
            .collect();
        assert_eq!(seen, expected, "seed {seed}: a prefix survives, in order");
        assert!(!acked.is_empty(), "seed {seed}: some rounds were acked");
    }
}

#[test]
fn a_failed_fsync_while_the_next_round_appends_acks_nothing_after_it() {
    for case in 0..6u64 {
        let seed = base_seed(950) + case;
        let _guard = SeedGuard(seed);
        let disk = FaultBackend::new(seed);
        let mut p = open(&disk, &mut Vec::new());
        p.append(&batch(2, 0)).unwrap();
        p.sync().unwrap();
        assert_eq!(p.high_watermark(), 2);
        // Round N: begin its sync; the fsync will fail.
        p.append(&batch(1, 1)).unwrap();
        let job = p.begin_sync().unwrap().expect("something to sync");
        assert_eq!(job.covers(), 3);
        disk.set_sync_delay(Some(Duration::from_millis(5)));
        disk.fail_next_sync();
        let running = spawn(job);
        // Round N+1 appends while it runs (may already fail if the fsync was quick).
        let during = p.append(&batch(3, 2));
        let (job, result) = running.join().unwrap();
        assert!(result.is_err());
        assert!(p.finish_sync(job, result).is_err(), "round N is not acked");
        // The high watermark stays at the last good sync: neither round N nor N+1 is
        // visible or acknowledgeable, and the partition takes nothing more.
        assert_eq!(p.high_watermark(), 2);
        assert!(p.is_poisoned());
        assert!(p.append(&batch(1, 3)).is_err());
        assert!(p.begin_sync().is_err());
        assert!(p.read(2, |_, _| true).unwrap().is_empty());
        let _ = during;
        drop(p);
        disk.crash(CrashMode::all());
        let mut seen = Vec::new();
        open(&disk, &mut seen);
        assert_eq!(
            seen.first(),
            Some(&(0, 0)),
            "seed {seed}: the acked batch survives"
        );
    }
}
