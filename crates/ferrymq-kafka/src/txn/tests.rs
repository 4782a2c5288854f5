//! The coordinator's rules one by one, then a deterministic model test: random clients,
//! marker jobs run partially, timeouts, and crashes at any point (the coordinator is
//! rebuilt from its durable log and re-runs the jobs recovery returns).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::ResponseError;

use super::*;

fn alloc_from(next: &mut i64) -> impl FnMut() -> Option<i64> + '_ {
    move || {
        *next += 1;
        Some(*next)
    }
}

fn p(t: &str, i: i32) -> (String, i32) {
    (t.to_owned(), i)
}

#[test]
fn init_add_commit_and_idempotent_end() {
    let mut c = TxnCoordinator::new();
    let mut next = 100;
    let (r, fx) = c.init_producer_id(1, "tx", 60_000, None, &mut alloc_from(&mut next));
    assert_eq!(r, Ok((101, 0)));
    assert_eq!(fx.writes.len(), 1);
    // Bad timeouts and an empty id.
    let (r, _) = c.init_producer_id(1, "tx", 900_001, None, &mut alloc_from(&mut next));
    assert_eq!(r, Err(ResponseError::InvalidTransactionTimeout));
    let (r, _) = c.init_producer_id(1, "", 1000, None, &mut alloc_from(&mut next));
    assert_eq!(r, Err(ResponseError::InvalidRequest));
    // EndTxn with nothing open.
    assert_eq!(
        c.end_txn(2, "tx", 101, 0, true).0,
        Err(ResponseError::InvalidTxnState)
    );
    let (r, fx) = c.add_partitions(3, "tx", 101, 0, &[p("a", 0), p("a", 1)]);
    assert_eq!((r, fx.writes.len()), (Ok(()), 1));
    let (r, fx) = c.add_partitions(4, "tx", 101, 0, &[p("a", 0)]);
    assert_eq!((r, fx.writes.len()), (Ok(()), 0), "already added: no write");
    assert_eq!(
        c.add_partitions(4, "tx", 101, 1, &[p("b", 0)]).0,
        Err(ResponseError::ProducerFenced)
    );
    assert_eq!(
        c.add_partitions(4, "tx", 999, 0, &[p("b", 0)]).0,
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(c.add_offsets(5, "tx", 101, 0, "g").0, Ok(()));
    let off = PendingOffset {
        group: "g".into(),
        topic: "in".into(),
        partition: 0,
        offset: 42,
        leader_epoch: -1,
        metadata: None,
    };
    assert_eq!(
        c.txn_offset_commit(
            6,
            "tx",
            101,
            0,
            vec![PendingOffset {
                group: "other".into(),
                ..off.clone()
            }]
        )
        .0,
        Err(ResponseError::InvalidTxnState),
        "group not added"
    );
    assert_eq!(
        c.txn_offset_commit(6, "tx", 101, 0, vec![off.clone()]).0,
        Ok(())
    );
    assert_eq!(c.pending_offsets("g"), BTreeSet::from([p("in", 0)]));
    let (r, fx) = c.end_txn(7, "tx", 101, 0, true);
    assert_eq!(r, Ok(()));
    assert_eq!(fx.markers.len(), 1);
    let job = fx.markers[0].clone();
    assert!(job.commit);
    assert_eq!(job.partitions, vec![p("a", 0), p("a", 1)]);
    assert_eq!(job.offsets, vec![off]);
    // While markers are in flight: retries wait, the opposite decision is refused.
    assert_eq!(
        c.end_txn(8, "tx", 101, 0, true).0,
        Err(ResponseError::ConcurrentTransactions)
    );
    assert_eq!(
        c.end_txn(8, "tx", 101, 0, false).0,
        Err(ResponseError::InvalidTxnState)
    );
    assert_eq!(
        c.add_partitions(8, "tx", 101, 0, &[p("a", 0)]).0,
        Err(ResponseError::ConcurrentTransactions)
    );
    assert_eq!(
        c.init_producer_id(8, "tx", 1000, None, &mut alloc_from(&mut next))
            .0,
        Err(ResponseError::ConcurrentTransactions)
    );
    let fx = c.markers_written(9, &job);
    assert_eq!(fx.writes[0].1.state, TxnState::CompleteCommit);
    assert!(c.pending_offsets("g").is_empty());
    assert_eq!(
        c.end_txn(10, "tx", 101, 0, true).0,
        Ok(()),
        "idempotent retry"
    );
    assert_eq!(
        c.end_txn(10, "tx", 101, 0, false).0,
        Err(ResponseError::InvalidTxnState)
    );
    // A restarted producer bumps the epoch.
    let (r, _) = c.init_producer_id(11, "tx", 1000, None, &mut alloc_from(&mut next));
    assert_eq!(r, Ok((101, 1)));
}

#[test]
fn a_new_instance_fences_the_zombie_and_aborts_its_transaction() {
    let mut c = TxnCoordinator::new();
    let mut next = 0;
    let (r, _) = c.init_producer_id(0, "tx", 60_000, None, &mut alloc_from(&mut next));
    let (pid, e) = r.unwrap();
    c.add_partitions(1, "tx", pid, e, &[p("a", 0)]).0.unwrap();
    let (r, fx) = c.init_producer_id(2, "tx", 60_000, None, &mut alloc_from(&mut next));
    assert_eq!(r, Err(ResponseError::ConcurrentTransactions));
    let job = fx.markers[0].clone();
    assert!(!job.commit);
    assert_eq!((job.producer_id, job.epoch), (pid, e + 1));
    // The zombie is fenced.
    assert_eq!(
        c.end_txn(3, "tx", pid, e, true).0,
        Err(ResponseError::ProducerFenced)
    );
    c.markers_written(4, &job);
    let (r, _) = c.init_producer_id(5, "tx", 60_000, None, &mut alloc_from(&mut next));
    assert_eq!(r, Ok((pid, e + 2)));
    // KIP-360: a stale (pid, epoch) is fenced; the current one bumps.
    assert_eq!(
        c.init_producer_id(6, "tx", 60_000, Some((pid, e)), &mut alloc_from(&mut next))
            .0,
        Err(ResponseError::ProducerFenced)
    );
    assert_eq!(
        c.init_producer_id(
            6,
            "tx",
            60_000,
            Some((pid, e + 2)),
            &mut alloc_from(&mut next)
        )
        .0,
        Ok((pid, e + 3))
    );
}

#[test]
fn timeout_aborts_and_fences() {
    let mut c = TxnCoordinator::new();
    let mut next = 0;
    let (pid, e) = c
        .init_producer_id(0, "tx", 1000, None, &mut alloc_from(&mut next))
        .0
        .unwrap();
    c.add_partitions(10, "tx", pid, e, &[p("a", 0)]).0.unwrap();
    assert_eq!(c.next_deadline(), Some(1011));
    assert!(c.tick(1010, &mut alloc_from(&mut next)).markers.is_empty());
    let fx = c.tick(1011, &mut alloc_from(&mut next));
    assert_eq!(fx.markers.len(), 1);
    assert!(!fx.markers[0].commit);
    assert_eq!(
        c.end_txn(1012, "tx", pid, e, true).0,
        Err(ResponseError::ProducerFenced)
    );
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn log_values_round_trip_and_garbage_is_refused() {
    let meta = TxnMeta {
        producer_id: 7,
        epoch: 3,
        timeout_ms: 60_000,
        state: TxnState::PrepareCommit,
        partitions: BTreeSet::from([p("a", 0), p("b", 2)]),
        groups: BTreeSet::from(["g".to_owned()]),
        offsets: vec![PendingOffset {
            group: "g".into(),
            topic: "a".into(),
            partition: 1,
            offset: 9,
            leader_epoch: 2,
            metadata: Some("m".into()),
        }],
        start_ms: 5,
        last_update_ms: 6,
        seq: 4,
        completing: vec![MarkerJob {
            transactional_id: "tx".into(),
            producer_id: 7,
            epoch: 3,
            commit: false,
            start_ms: 2,
            partitions: vec![p("a", 0), p("c", 9)],
            offsets: Vec::new(),
            seq: 3,
        }],
        requeue: Vec::new(),
    };
    let b = codec::encode(&meta);
    assert_eq!(codec::decode_id("tx", &b), Some(meta.clone()));
    // A version 1 value (before sequences): the same fields, sequence 0, none completing.
    let ids_len = b.len() - (4 + 4 + 8 + 2 + 1 + 4 + 8 + 4 + (2 + 1 + 4) * 2);
    let mut v1 = b[..ids_len].to_vec();
    v1[0] = 1;
    let old = codec::decode(&v1).unwrap();
    assert_eq!((old.seq, old.completing.len()), (0, 0));
    assert_eq!(old.offsets, meta.offsets);
    for cut in 0..b.len() {
        assert_eq!(codec::decode(&b[..cut]), None);
    }
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let mut d = b.clone();
        let i = rng.below(d.len());
        d[i] = rng.next() as u8;
        let _ = codec::decode(&d);
    }
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A transaction: (id, producer id, start).
type Key = (String, i64, Millis);

/// What a partition's log holds past its durable prefix (lost in a crash).
#[derive(Debug, Clone)]
enum Entry {
    /// A transaction's records.
    Records(i64, Key),
    /// A marker: producer id, sequence, commit, the job's transaction.
    Marker(i64, i32, bool, Key),
}

/// The world around the coordinator: its durable log, the partitions' logs (open
/// transactions and last marker sequence, durable; a volatile tail), the marker jobs
/// not yet completed, what the clients were told.
struct World {
    coord: TxnCoordinator,
    log: Vec<(String, TxnMeta)>,
    /// Jobs and whether their markers are appended (queued) yet.
    jobs: Vec<(MarkerJob, bool)>,
    /// Open transactions on partitions (durable): (partition, producer id) → whose.
    open: BTreeMap<((String, i32), i64), Key>,
    /// The last marker sequence per (partition, producer id) (durable).
    last_seq: BTreeMap<((String, i32), i64), i32>,
    /// Appended, not yet durable, per partition, in log order.
    tail: BTreeMap<(String, i32), Vec<Entry>>,
    /// (id, pid, start) → commit, for every EndTxn the client saw succeed.
    acked: HashMap<Key, bool>,
    /// Decisions markers carried: (id, pid, start) → commit.
    decided: HashMap<Key, bool>,
    /// Per client: (pid, epoch) from its last InitProducerId.
    clients: BTreeMap<String, (i64, i16)>,
    next_pid: i64,
    now: Millis,
}

fn job_key(job: &MarkerJob) -> Key {
    (job.transactional_id.clone(), job.producer_id, job.start_ms)
}

impl World {
    fn apply(&mut self, fx: Effects) {
        self.log.extend(fx.writes);
        self.jobs.extend(fx.markers.into_iter().map(|j| (j, false)));
    }

    fn decide(&mut self, key: Key, commit: bool) {
        if let Some(prev) = self.decided.insert(key.clone(), commit) {
            assert_eq!(prev, commit, "{key:?} decided both ways");
        }
    }

    /// Makes `part`'s log durable up to `upto` tail entries (all if larger).
    fn flush(&mut self, part: &(String, i32), upto: usize) {
        let tail = self.tail.entry(part.clone()).or_default();
        let n = upto.min(tail.len());
        let entries: Vec<Entry> = tail.drain(..n).collect();
        for e in entries {
            match e {
                Entry::Records(pid, key) => {
                    let cur = self
                        .open
                        .entry((part.clone(), pid))
                        .or_insert_with(|| key.clone());
                    assert_eq!(
                        *cur, key,
                        "two transactions' records in one open transaction"
                    );
                }
                Entry::Marker(pid, seq, commit, key) => {
                    let k = (part.clone(), pid);
                    if seq > 0 && self.last_seq.get(&k).is_some_and(|&s| s >= seq) {
                        continue; // the partition already holds it
                    }
                    if seq > 0 {
                        self.last_seq.insert(k.clone(), seq);
                    }
                    if let Some(whose) = self.open.remove(&k) {
                        assert_eq!(whose, key, "a marker closed another transaction");
                    }
                    self.decide(key, commit);
                }
            }
        }
    }

    fn append(&mut self, part: &(String, i32), e: Entry) {
        self.tail.entry(part.clone()).or_default().push(e);
    }

    /// Job `i`: appends its markers if not yet (telling the coordinator), then makes
    /// `upto` of its partitions durable through the marker (all: completes it).
    fn run_job(&mut self, i: usize, upto: usize) {
        let job = self.jobs[i].0.clone();
        let key = job_key(&job);
        if !self.jobs[i].1 {
            self.jobs[i].1 = true;
            for part in &job.partitions {
                self.append(
                    part,
                    Entry::Marker(job.producer_id, job.seq, job.commit, key.clone()),
                );
            }
            let fx = self.coord.markers_queued(self.now, &job);
            self.apply(fx);
        }
        for part in job.partitions.iter().take(upto) {
            let tail = self.tail.get(part).map_or(&[][..], |t| &t[..]);
            let pos = tail.iter().position(
                |e| matches!(e, Entry::Marker(pid, seq, _, k) if *pid == job.producer_id && *seq == job.seq && *k == key),
            );
            if let Some(pos) = pos {
                self.flush(part, pos + 1);
            }
        }
        if upto >= job.partitions.len() {
            self.jobs.remove(i);
            self.decide(key, job.commit);
            let fx = self.coord.markers_written(self.now, &job);
            self.apply(fx);
        }
    }

    fn crash(&mut self) {
        let mut latest: BTreeMap<String, TxnMeta> = BTreeMap::new();
        for (id, m) in &self.log {
            latest.insert(id.clone(), m.clone());
        }
        self.coord = TxnCoordinator::new();
        self.jobs.clear();
        self.tail.clear();
        let fx = self.coord.recover(latest);
        self.apply(fx);
    }
}

#[test]
fn model_over_crash_points() {
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let ids = ["t0", "t1", "t2"];
        let parts = [p("a", 0), p("a", 1), p("b", 0)];
        let mut w = World {
            coord: TxnCoordinator::new(),
            log: Vec::new(),
            jobs: Vec::new(),
            open: BTreeMap::new(),
            last_seq: BTreeMap::new(),
            tail: BTreeMap::new(),
            acked: HashMap::new(),
            decided: HashMap::new(),
            clients: BTreeMap::new(),
            next_pid: 0,
            now: 1_000,
        };
        for _ in 0..250 {
            w.now += 1 + rng.below(300) as i64;
            let id = ids[rng.below(ids.len())].to_owned();
            match rng.below(11) {
                0 => {
                    let mut next = w.next_pid;
                    let (r, fx) = w.coord.init_producer_id(
                        w.now,
                        &id,
                        2_000,
                        None,
                        &mut alloc_from(&mut next),
                    );
                    w.next_pid = next;
                    w.apply(fx);
                    if let Ok(pe) = r {
                        if let Some(old) = w.clients.insert(id, pe) {
                            assert!(pe > old, "epochs only grow");
                        }
                    }
                }
                1 | 2 => {
                    // Produce: add a partition, then the data is appended there (and
                    // made durable when acknowledged, sometimes at once).
                    if let Some(&(pid, e)) = w.clients.get(&id) {
                        let part = parts[rng.below(parts.len())].clone();
                        let (r, fx) =
                            w.coord
                                .add_partitions(w.now, &id, pid, e, std::slice::from_ref(&part));
                        w.apply(fx);
                        if r.is_ok() {
                            let start = w.coord.get(&id).map_or(-1, |m| m.start_ms);
                            w.append(&part, Entry::Records(pid, (id.clone(), pid, start)));
                            if rng.below(2) == 0 {
                                w.flush(&part, usize::MAX);
                            }
                        }
                    }
                }
                3 | 4 => {
                    if let Some(&(pid, e)) = w.clients.get(&id) {
                        let commit = rng.below(3) != 0;
                        let before = w
                            .coord
                            .get(&id)
                            .map(|m| (m.state, m.start_ms, m.partitions.clone()));
                        // The client flushes (every record acknowledged) before EndTxn.
                        if let Some((TxnState::Ongoing, _, ps)) = &before {
                            for part in ps.clone() {
                                w.flush(&part, usize::MAX);
                            }
                        }
                        let (r, fx) = w.coord.end_txn(w.now, &id, pid, e, commit);
                        w.apply(fx);
                        if let (Ok(()), Some((TxnState::Ongoing, start, _))) = (r, before) {
                            w.acked.insert((id, pid, start), commit);
                        }
                    }
                }
                5 | 6 if !w.jobs.is_empty() => {
                    let i = rng.below(w.jobs.len());
                    let n = w.jobs[i].0.partitions.len();
                    let upto = if rng.below(3) == 0 {
                        rng.below(n + 1)
                    } else {
                        n
                    };
                    w.run_job(i, upto);
                }
                7 => {
                    let mut next = w.next_pid;
                    let fx = w.coord.tick(w.now, &mut alloc_from(&mut next));
                    w.next_pid = next;
                    w.apply(fx);
                }
                8 if rng.below(4) == 0 => w.crash(),
                9 => {
                    // A partition's fsync: some of its tail becomes durable.
                    let part = parts[rng.below(parts.len())].clone();
                    let n = rng.below(3);
                    w.flush(&part, n);
                }
                _ => {}
            }
        }
        // Quiesce: one last crash, every job run, every open transaction timed out.
        w.crash();
        for _ in 0..3 {
            while !w.jobs.is_empty() {
                let n = w.jobs[0].0.partitions.len();
                w.run_job(0, n);
            }
            w.now += 1_000_000;
            let mut next = w.next_pid;
            let fx = w.coord.tick(w.now, &mut alloc_from(&mut next));
            w.apply(fx);
        }
        for (key, commit) in &w.acked {
            assert_eq!(
                w.decided.get(key),
                Some(commit),
                "seed {seed}: acked {key:?} not carried out"
            );
        }
        assert!(
            w.open.is_empty(),
            "seed {seed}: hanging transactions {:?}",
            w.open
        );
        for (id, m) in w.coord.iter() {
            assert!(
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ),
                "seed {seed}: {id} left in {:?}",
                m.state
            );
        }
    }
}

#[test]
fn produce_verification_kip_890_part_1() {
    let mut c = TxnCoordinator::new();
    let mut next = 100;
    let (r, _) = c.init_producer_id(1, "tx", 60_000, None, &mut alloc_from(&mut next));
    assert_eq!(r, Ok((101, 0)));
    let check = |c: &TxnCoordinator, pid, epoch, part: (String, i32)| {
        verify_partition(c.get("tx"), pid, epoch, &part)
    };
    // No transaction open yet.
    assert_eq!(
        check(&c, 101, 0, p("a", 0)),
        Err(ResponseError::InvalidTxnState)
    );
    assert_eq!(
        verify_partition(c.get("other"), 101, 0, &p("a", 0)),
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(c.add_partitions(2, "tx", 101, 0, &[p("a", 0)]).0, Ok(()));
    assert_eq!(check(&c, 101, 0, p("a", 0)), Ok(()));
    // Not added to the transaction.
    assert_eq!(
        check(&c, 101, 0, p("a", 1)),
        Err(ResponseError::InvalidTxnState)
    );
    assert_eq!(
        check(&c, 999, 0, p("a", 0)),
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(
        check(&c, 101, 1, p("a", 0)),
        Err(ResponseError::InvalidProducerEpoch)
    );
    // Decided: markers in flight, then complete (a late write is refused).
    let (r, fx) = c.end_txn(3, "tx", 101, 0, true);
    assert_eq!(r, Ok(()));
    assert_eq!(
        check(&c, 101, 0, p("a", 0)),
        Err(ResponseError::ConcurrentTransactions)
    );
    c.markers_written(4, &fx.markers[0]);
    assert_eq!(
        check(&c, 101, 0, p("a", 0)),
        Err(ResponseError::InvalidTxnState)
    );
}

/// Markers appended (not yet durable) let the id's next transaction begin at once; the
/// completion travels in the log with the next write, and after a crash the id is held
/// (no request, no produce, no timeout) until its markers are appended again.
#[test]
fn next_transaction_begins_once_markers_are_appended() {
    let mut c = TxnCoordinator::new();
    let mut next = 0;
    let (r, _) = c.init_producer_id(1, "tx", 60_000, None, &mut alloc_from(&mut next));
    let (pid, e) = r.unwrap();
    c.add_partitions(2, "tx", pid, e, &[p("a", 0)]).0.unwrap();
    assert_eq!(c.get("tx").unwrap().seq, 1);
    let (r, fx) = c.end_txn(3, "tx", pid, e, true);
    r.unwrap();
    let job = fx.markers[0].clone();
    assert_eq!(job.seq, 1);
    assert_eq!(
        c.add_partitions(4, "tx", pid, e, &[p("a", 0)]).0,
        Err(ResponseError::ConcurrentTransactions)
    );
    assert!(c.markers_queued(4, &job).markers.is_empty());
    assert_eq!(c.get("tx").unwrap().state, TxnState::CompleteCommit);
    let (r, fx) = c.add_partitions(5, "tx", pid, e, &[p("a", 0)]);
    r.unwrap();
    let logged = fx.writes[0].1.clone();
    assert_eq!((logged.state, logged.seq), (TxnState::Ongoing, 2));
    assert_eq!(logged.completing, vec![job.clone()]);
    // A crash now: recovery writes transaction 1's markers again first and holds the id.
    let mut r2 = TxnCoordinator::new();
    let fx = r2.recover([("tx".to_owned(), logged)]);
    assert_eq!(fx.markers, vec![job.clone()]);
    let held = r2.get("tx").unwrap();
    assert!(held.busy());
    assert_eq!(
        verify_partition(Some(held), pid, e, &p("a", 0)),
        Err(ResponseError::ConcurrentTransactions)
    );
    assert_eq!(
        r2.end_txn(6, "tx", pid, e, true).0,
        Err(ResponseError::ConcurrentTransactions)
    );
    assert!(
        r2.tick(10_000_000, &mut || None).markers.is_empty(),
        "no timeout while held"
    );
    r2.markers_queued(7, &job);
    assert!(!r2.get("tx").unwrap().busy());
    assert_eq!(verify_partition(r2.get("tx"), pid, e, &p("a", 0)), Ok(()));
    // Back in the live coordinator: durable markers drop the completion from memory.
    assert!(c.markers_written(8, &job).writes.is_empty());
    assert!(c.get("tx").unwrap().completing.is_empty());
}
