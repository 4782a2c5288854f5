//! Model-based crash testing: random sequences of append / sync / ack / read / scan /
//! time lookup / injected I/O failures / crash+reopen run against the fault-injecting
//! backend and are checked against a `BTreeMap` model. Invariants after every recovery:
//! every synced record is present and intact, nothing corrupt is ever returned, unsynced
//! records are either wholly present or missing (a recovered log is a prefix of what was
//! appended), and an ack that was synced never comes back.
//!
//! `FERRYMQ_TEST_SEED` picks the first seed, `FERRYMQ_TEST_CASES` the number of cases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ferrymq_store::log::fault::{CrashMode, FaultBackend, SimRng, WriteFault};
use ferrymq_store::log::{Log, LogConfig, LogError};

use crate::{base_seed, payload, SeedGuard};

#[derive(Default)]
struct Model {
    records: BTreeMap<u64, (Vec<u8>, i64)>,
    next: u64,
    durable: u64,
    /// Acks known to be on disk (a successful sync ran after them).
    acked_durable: BTreeSet<u64>,
    /// Acks made since the last successful sync.
    acked_volatile: BTreeSet<u64>,
}

impl Model {
    fn is_acked(&self, o: u64) -> bool {
        self.acked_durable.contains(&o) || self.acked_volatile.contains(&o)
    }
}

fn random_config(rng: &mut SimRng) -> LogConfig {
    LogConfig {
        max_segment_bytes: 256 + rng.up_to(8192),
        index_interval_bytes: 16 + rng.up_to(512) as u32,
        max_record_bytes: 4096,
        write_buffer_bytes: rng.up_to(2048) as usize,
    }
}

fn open(disk: &FaultBackend, config: &LogConfig) -> Log<FaultBackend> {
    Log::open(disk.clone(), Path::new("q"), config.clone()).expect("recovery must succeed")
}

/// Checks the recovered log against the model, then makes the model follow the log.
fn check_recovered(log: &Log<FaultBackend>, m: &mut Model) {
    let n = log.next_offset();
    assert!(
        n >= m.durable && n <= m.next,
        "recovered end {n} outside durable {}..={}",
        m.durable,
        m.next
    );
    let unacked: BTreeSet<u64> = log.unacked().collect();
    for &o in &unacked {
        assert!(o < n, "unacked offset {o} beyond end {n}");
        assert!(!m.acked_durable.contains(&o), "durably acked {o} came back");
    }
    for (&o, (body, ts)) in m.records.range(..n) {
        match log.read(o) {
            Ok(r) => {
                assert_eq!((&r.payload, r.timestamp), (body, *ts), "record {o} differs");
            }
            Err(e) => assert!(m.is_acked(o), "unacked record {o} unreadable: {e}"),
        }
        if !m.is_acked(o) {
            assert!(
                unacked.contains(&o),
                "unacked record {o} not reported as unacked"
            );
        }
    }
    // A full scan returns only intact records, in order, covering every unacked one.
    let mut seen = BTreeSet::new();
    let mut last = None;
    for r in log.reader(0) {
        let r = r.expect("scan after recovery must not fail");
        assert!(increasing(last, r.offset));
        last = Some(r.offset);
        let (body, ts) = &m.records[&r.offset];
        assert_eq!((&r.payload, r.timestamp), (body, *ts));
        seen.insert(r.offset);
    }
    assert!(unacked.is_subset(&seen), "scan skipped unacked records");

    m.records.split_off(&n);
    m.next = n;
    m.durable = n;
    m.acked_durable = (0..n).filter(|o| !unacked.contains(o)).collect();
    m.acked_volatile.clear();
}

fn increasing(prev: Option<u64>, next: u64) -> bool {
    match prev {
        None => true,
        Some(p) => next > p,
    }
}

fn after_error(e: &LogError, injected: bool) {
    assert!(
        injected || matches!(e, LogError::Poisoned),
        "unexpected error without an injected fault: {e}"
    );
}

fn run_case(seed: u64, ops: usize) {
    let _guard = SeedGuard(seed);
    let mut rng = SimRng::new(seed);
    let disk = FaultBackend::new(seed ^ 0x5eed);
    let config = random_config(&mut rng);
    let mut log = open(&disk, &config);
    let mut m = Model::default();
    let mut clock = 1_000_000i64;
    // Set when a fault was injected and may not have fired yet.
    let mut armed = false;

    for _ in 0..ops {
        let roll = rng.up_to(99);
        if log.is_poisoned() && roll < 90 {
            // A poisoned log only serves reads: recover it.
            drop(log);
            disk.crash(CrashMode::all());
            armed = false;
            log = open(&disk, &config);
            check_recovered(&log, &mut m);
            continue;
        }
        match roll {
            0..=34 => {
                let n = 1 + rng.up_to(4) as usize;
                let batch: Vec<(Vec<u8>, i64)> = (0..n)
                    .map(|_| {
                        let len = if rng.chance(1, 20) {
                            rng.up_to(3000)
                        } else {
                            rng.up_to(120)
                        } as usize;
                        clock += rng.up_to(20) as i64 - 3;
                        (payload(&mut rng, len), clock)
                    })
                    .collect();
                let before = log.next_offset();
                let result = log.append_batch(batch.iter().map(|(p, t)| (p.as_slice(), *t)));
                let after = log.next_offset();
                if let Err(e) = &result {
                    after_error(e, armed);
                }
                assert_eq!(before, m.next);
                for (i, (p, t)) in batch
                    .into_iter()
                    .take((after - before) as usize)
                    .enumerate()
                {
                    m.records.insert(before + i as u64, (p, t));
                }
                m.next = after;
            }
            35..=49 => match log.sync() {
                Ok(d) => {
                    assert_eq!(d, m.next);
                    m.acked_durable.append(&mut m.acked_volatile);
                }
                Err(e) => after_error(&e, armed),
            },
            50..=64 => {
                let candidates: Vec<u64> = m
                    .records
                    .keys()
                    .copied()
                    .filter(|o| !m.is_acked(*o))
                    .collect();
                if !candidates.is_empty() {
                    let o = candidates[rng.up_to(candidates.len() as u64 - 1) as usize];
                    match log.ack(o) {
                        Ok(fresh) => {
                            assert!(fresh, "ack of {o} not fresh");
                            m.acked_volatile.insert(o);
                        }
                        Err(e) => {
                            after_error(&e, armed);
                            // The in-memory ack may or may not have happened.
                            if log.is_acked(o) {
                                m.acked_volatile.insert(o);
                            }
                        }
                    }
                }
            }
            65..=72 => {
                if m.next > 0 {
                    let o = rng.up_to(m.next - 1);
                    let (body, ts) = &m.records[&o];
                    match log.read(o) {
                        Ok(r) => assert_eq!((&r.payload, r.timestamp), (body, *ts)),
                        Err(e) => assert!(m.is_acked(o), "read of unacked {o}: {e}"),
                    }
                }
            }
            73..=77 => {
                let from = rng.up_to(m.next);
                let mut expect = m.records.range(from..).filter(|(o, _)| !m.is_acked(**o));
                let mut prev = None;
                for r in log.reader(from).take(40) {
                    let r = r.expect("reader must not fail");
                    assert!(r.offset >= from && increasing(prev, r.offset));
                    prev = Some(r.offset);
                    let (body, ts) = &m.records[&r.offset];
                    assert_eq!((&r.payload, r.timestamp), (body, *ts));
                    if !m.is_acked(r.offset) {
                        let (&want, _) = expect.next().expect("model has it");
                        assert_eq!(r.offset, want, "reader skipped an unacked record");
                    }
                }
            }
            78..=80 => {
                let target = clock - rng.up_to(200) as i64;
                let found = log.offset_for_timestamp(target).expect("time lookup");
                let live = |o: &u64| log.read(*o).is_ok();
                match found {
                    Some(o) => {
                        assert!(m.records[&o].1 >= target);
                        for (p, (_, ts)) in m.records.range(..o).filter(|(p, _)| live(p)) {
                            assert!(*ts < target, "earlier {p} has ts {ts} >= {target}");
                        }
                    }
                    None => {
                        for (p, (_, ts)) in m.records.iter().filter(|(p, _)| live(p)) {
                            assert!(*ts < target, "{p} has ts {ts} >= {target}");
                        }
                    }
                }
            }
            81..=83 => {
                disk.fail_next_sync();
                armed = true;
            }
            84..=86 => {
                let fault = if rng.chance(1, 2) {
                    WriteFault::Io
                } else {
                    WriteFault::NoSpace
                };
                disk.fail_next_write(fault);
                armed = true;
            }
            87..=95 => {
                drop(log);
                let mode = CrashMode {
                    torn: rng.chance(3, 4),
                    flip: rng.chance(1, 2),
                    zero: rng.chance(1, 4),
                };
                disk.crash(mode);
                armed = false;
                log = open(&disk, &config);
                check_recovered(&log, &mut m);
            }
            _ => {
                // Clean restart: the process stops, the OS keeps every write.
                drop(log);
                disk.clear_faults();
                armed = false;
                log = open(&disk, &config);
                let n = log.next_offset();
                assert!(n <= m.next && n >= m.durable);
                check_recovered(&log, &mut m);
            }
        }
        assert_eq!(log.next_offset(), m.next, "next offset diverged");
        assert!(log.durable_offset() >= m.durable || log.is_poisoned());
        m.durable = m.durable.max(log.durable_offset());
    }
    // Finish with a sync and a crash: everything must survive.
    if !log.is_poisoned() && log.sync().is_ok() {
        m.acked_durable.append(&mut m.acked_volatile);
        m.durable = m.next;
        drop(log);
        disk.crash(CrashMode::all());
        let log = open(&disk, &config);
        assert_eq!(log.next_offset(), m.next, "synced records lost");
        check_recovered(&log, &mut m);
    }
}

#[test]
fn random_operations_against_a_model_survive_crashes() {
    let first = base_seed(0xF0E1_D2C3);
    let cases: u64 = std::env::var("FERRYMQ_TEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    for i in 0..cases {
        run_case(first.wrapping_add(i), 300);
    }
}
