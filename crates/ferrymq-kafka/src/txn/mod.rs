//! The transaction coordinator (Kafka's `TransactionCoordinator` / `TransactionMetadata`),
//! sans-IO. It keeps one [`TxnMeta`] per transactional id and decides every transactional
//! request (InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit, EndTxn) plus the timeout sweep ([`TxnCoordinator::tick`]). Each decision
//! returns [`Effects`]: the metadata to write to the transaction log (the owner makes it
//! durable before answering) and the marker jobs to run (control batches on every partition
//! of the transaction, pending offsets applied on commit), after which the owner calls
//! [`TxnCoordinator::markers_written`] to move PrepareCommit/PrepareAbort to
//! CompleteCommit/CompleteAbort. [`TxnCoordinator::recover`] rebuilds the state from the
//! log and returns the marker jobs of transactions caught in a Prepare state.
//!
//! Time is wall-clock milliseconds given by the caller (so a transaction's deadline
//! survives restarts); no clock is read here. [`codec`] is the log's value encoding,
//! [`index`] the per-partition state (open transactions, LSO, aborted index).

pub mod codec;
pub mod index;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

/// Wall-clock milliseconds since the Unix epoch.
pub type Millis = i64;

/// Kafka's `transaction.max.timeout.ms` default.
pub const MAX_TIMEOUT_MS: i32 = 900_000;

/// A transaction's state (Kafka's ids, written to the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnState {
    /// The name DescribeTransactions and ListTransactions report.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_id(id: u8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// PrepareCommit or PrepareAbort: markers are being written.
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// An offset committed inside a transaction, applied to its group only on commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One transactional id's state, as written to the transaction log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions written in the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the current transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// TxnOffsetCommit offsets waiting for the transaction's end (latest per partition).
    pub offsets: Vec<PendingOffset>,
    /// When the current transaction started (first AddPartitions/AddOffsets), -1 if none.
    pub start_ms: Millis,
    pub last_update_ms: Millis,
    /// The transaction's sequence number for this id (1, 2, ... bumped when a transaction
    /// begins; 0 in logs written before it existed). Markers carry it (as their
    /// coordinator epoch), so a partition recognises a marker it already holds.
    pub seq: i32,
    /// Decided transactions whose markers are in every partition's log but not yet known
    /// durable (see [`TxnCoordinator::markers_queued`]): recovery writes them again (a
    /// partition that already holds a marker with that sequence skips it).
    pub completing: Vec<MarkerJob>,
    /// In memory only: after recovery, the sequences of `completing` jobs whose markers
    /// are not appended again yet. Until they are, the id is blocked (requests wait,
    /// produce gets CONCURRENT_TRANSACTIONS, no timeout fires, a Prepare state's own
    /// job waits): nothing of a later transaction may reach a partition ahead of them.
    pub requeue: Vec<i32>,
}

impl TxnMeta {
    /// Waiting for markers: a Prepare state, or recovered completions not re-appended.
    pub fn busy(&self) -> bool {
        self.state.is_prepare() || !self.requeue.is_empty()
    }
}

/// Control batches and offsets to write for a decided transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    /// When the transaction started (identifies it with the id and producer id).
    pub start_ms: Millis,
    pub partitions: Vec<(String, i32)>,
    /// Applied to their groups only when `commit`.
    pub offsets: Vec<PendingOffset>,
    /// The transaction's sequence number ([`TxnMeta::seq`]; 0: unknown, markers are
    /// written unconditionally).
    pub seq: i32,
}

/// What a decision asks the owner to do: first make `writes` durable (in order), then
/// answer, then run `markers`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub writes: Vec<(String, TxnMeta)>,
    pub markers: Vec<MarkerJob>,
}

impl Effects {
    fn write(&mut self, id: &str, meta: &TxnMeta) {
        self.writes.push((id.to_owned(), meta.clone()));
    }
}

/// The producer id and epoch InitProducerId answers.
pub type ProducerIdAndEpoch = (i64, i16);

/// The coordinator of one vhost's transactions.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    txns: BTreeMap<String, TxnMeta>,
}

/// Kafka's check of a request's producer id and epoch against the metadata.
fn check_producer(meta: &TxnMeta, pid: i64, epoch: i16) -> Result<(), ResponseError> {
    if meta.producer_id != pid {
        Err(ResponseError::InvalidProducerIdMapping)
    } else if meta.epoch != epoch {
        Err(ResponseError::ProducerFenced)
    } else {
        Ok(())
    }
}

/// KIP-890 part 1: may producer `pid`/`epoch` of transactional id `meta` append
/// transactional records to `partition`? Only if its transaction is Ongoing with the
/// partition added (what Kafka's AddPartitionsToTxn `VerifyOnly` checks): an unknown id or
/// another producer id is INVALID_PRODUCER_ID_MAPPING, an old epoch INVALID_PRODUCER_EPOCH
/// (Produce's code for it), markers in flight CONCURRENT_TRANSACTIONS, anything else
/// (partition never added, no transaction open) INVALID_TXN_STATE.
pub fn verify_partition(
    meta: Option<&TxnMeta>,
    pid: i64,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    let meta = meta.ok_or(ResponseError::InvalidProducerIdMapping)?;
    if meta.producer_id != pid {
        Err(ResponseError::InvalidProducerIdMapping)
    } else if meta.epoch != epoch {
        Err(ResponseError::InvalidProducerEpoch)
    } else if meta.busy() {
        Err(ResponseError::ConcurrentTransactions)
    } else if meta.state == TxnState::Ongoing && meta.partitions.contains(partition) {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState)
    }
}

impl TxnCoordinator {
    pub fn new() -> TxnCoordinator {
        TxnCoordinator::default()
    }

    /// Rebuilds the state from the log's latest value per id. Returns the marker jobs of
    /// transactions the crash caught in PrepareCommit/PrepareAbort (they must complete).
    pub fn recover(&mut self, entries: impl IntoIterator<Item = (String, TxnMeta)>) -> Effects {
        let mut fx = Effects::default();
        for (id, mut meta) in entries {
            // Older decisions first: a partition takes markers in order, so the
            // Prepare state's own job waits until these are appended again.
            if !meta.completing.is_empty() {
                meta.requeue = meta.completing.iter().map(|c| c.seq).collect();
                fx.markers.extend(meta.completing.iter().cloned());
            } else if meta.state.is_prepare() {
                fx.markers.push(job(&id, &meta));
            }
            self.txns.insert(id, meta);
        }
        fx
    }

    pub fn get(&self, id: &str) -> Option<&TxnMeta> {
        self.txns.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &TxnMeta)> {
        self.txns.iter()
    }

    /// InitProducerId with a transactional id. `expected` is the (producer id, epoch) a
    /// v3+ client sends when it bumps its own epoch (KIP-360), `None` when -1.
    /// `allocate` hands out a fresh producer id.
    pub fn init_producer_id(
        &mut self,
        now: Millis,
        id: &str,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
        allocate: &mut dyn FnMut() -> Option<i64>,
    ) -> (Result<ProducerIdAndEpoch, ResponseError>, Effects) {
        let mut fx = Effects::default();
        if id.is_empty() {
            return (Err(ResponseError::InvalidRequest), fx);
        }
        if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
            return (Err(ResponseError::InvalidTransactionTimeout), fx);
        }
        let Some(meta) = self.txns.get_mut(id) else {
            let Some(pid) = allocate() else {
                return (Err(ResponseError::CoordinatorNotAvailable), fx);
            };
            let meta = TxnMeta {
                producer_id: pid,
                epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: Vec::new(),
                start_ms: -1,
                last_update_ms: now,
                seq: 0,
                completing: Vec::new(),
                requeue: Vec::new(),
            };
            fx.write(id, &meta);
            self.txns.insert(id.to_owned(), meta);
            return (Ok((pid, 0)), fx);
        };
        if let Some((pid, epoch)) = expected {
            // KIP-360: the client names the producer it believes it is. A retry of a bump
            // that already happened gets the current values again.
            let retried = meta.producer_id == pid && meta.epoch == epoch.saturating_add(1);
            if !retried && (meta.producer_id != pid || meta.epoch != epoch) {
                return (Err(ResponseError::ProducerFenced), fx);
            }
            if retried && !meta.state.is_prepare() && meta.state != TxnState::Ongoing {
                return (Ok((meta.producer_id, meta.epoch)), fx);
            }
        }
        if !meta.requeue.is_empty() {
            return (Err(ResponseError::ConcurrentTransactions), fx);
        }
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                (Err(ResponseError::ConcurrentTransactions), fx)
            }
            TxnState::Ongoing => {
                // A new producer instance with this id: fence the old one (bump the epoch)
                // and abort its transaction; the client retries until the abort completes.
                bump(meta, allocate);
                meta.state = TxnState::PrepareAbort;
                meta.last_update_ms = now;
                fx.write(id, meta);
                fx.markers.push(job(id, meta));
                (Err(ResponseError::ConcurrentTransactions), fx)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if !bump(meta, allocate) {
                    return (Err(ResponseError::CoordinatorNotAvailable), fx);
                }
                meta.timeout_ms = timeout_ms;
                meta.state = TxnState::Empty;
                meta.partitions.clear();
                meta.groups.clear();
                meta.offsets.clear();
                meta.start_ms = -1;
                meta.last_update_ms = now;
                fx.write(id, meta);
                (Ok((meta.producer_id, meta.epoch)), fx)
            }
        }
    }

    /// Looks up the transaction for a request of the running producer, checking its id and
    /// epoch, and refusing while a commit or abort is in flight.
    fn ongoing(&mut self, id: &str, pid: i64, epoch: i16) -> Result<&mut TxnMeta, ResponseError> {
        let meta = self
            .txns
            .get_mut(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(meta, pid, epoch)?;
        if meta.busy() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(meta)
    }

    /// Starts the transaction if none is open.
    fn begin(meta: &mut TxnMeta, now: Millis) {
        if meta.state != TxnState::Ongoing {
            meta.state = TxnState::Ongoing;
            meta.partitions.clear();
            meta.groups.clear();
            meta.offsets.clear();
            meta.start_ms = now;
            meta.seq = if meta.seq >= i32::MAX - 1 {
                1
            } else {
                meta.seq.max(0) + 1
            };
        }
    }

    /// AddPartitionsToTxn (v0–v3).
    pub fn add_partitions(
        &mut self,
        now: Millis,
        id: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> (Result<(), ResponseError>, Effects) {
        let mut fx = Effects::default();
        let meta = match self.ongoing(id, pid, epoch) {
            Ok(m) => m,
            Err(e) => return (Err(e), fx),
        };
        if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p))
        {
            return (Ok(()), fx);
        }
        Self::begin(meta, now);
        meta.partitions.extend(partitions.iter().cloned());
        meta.last_update_ms = now;
        fx.write(id, meta);
        (Ok(()), fx)
    }

    /// AddOffsetsToTxn.
    pub fn add_offsets(
        &mut self,
        now: Millis,
        id: &str,
        pid: i64,
        epoch: i16,
        group: &str,
    ) -> (Result<(), ResponseError>, Effects) {
        let mut fx = Effects::default();
        let meta = match self.ongoing(id, pid, epoch) {
            Ok(m) => m,
            Err(e) => return (Err(e), fx),
        };
        if meta.state == TxnState::Ongoing && meta.groups.contains(group) {
            return (Ok(()), fx);
        }
        Self::begin(meta, now);
        meta.groups.insert(group.to_owned());
        meta.last_update_ms = now;
        fx.write(id, meta);
        (Ok(()), fx)
    }

    /// TxnOffsetCommit: the offsets wait in the transaction until its end. The group must
    /// have been added with AddOffsetsToTxn (else INVALID_TXN_STATE).
    pub fn txn_offset_commit(
        &mut self,
        now: Millis,
        id: &str,
        pid: i64,
        epoch: i16,
        offsets: Vec<PendingOffset>,
    ) -> (Result<(), ResponseError>, Effects) {
        let mut fx = Effects::default();
        let meta = match self.ongoing(id, pid, epoch) {
            Ok(m) => m,
            Err(e) => return (Err(e), fx),
        };
        if meta.state != TxnState::Ongoing
            || offsets.iter().any(|o| !meta.groups.contains(&o.group))
        {
            return (Err(ResponseError::InvalidTxnState), fx);
        }
        for o in offsets {
            meta.offsets.retain(|p| {
                !(p.group == o.group && p.topic == o.topic && p.partition == o.partition)
            });
            meta.offsets.push(o);
        }
        meta.last_update_ms = now;
        fx.write(id, meta);
        (Ok(()), fx)
    }

    /// EndTxn: Ongoing → PrepareCommit/PrepareAbort (markers follow); a retry of a
    /// decided transaction gets NONE (complete) or CONCURRENT_TRANSACTIONS (in flight); the
    /// opposite decision, or no transaction, INVALID_TXN_STATE.
    pub fn end_txn(
        &mut self,
        now: Millis,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> (Result<(), ResponseError>, Effects) {
        let mut fx = Effects::default();
        let Some(meta) = self.txns.get_mut(id) else {
            return (Err(ResponseError::InvalidProducerIdMapping), fx);
        };
        if let Err(e) = check_producer(meta, pid, epoch) {
            return (Err(e), fx);
        }
        if !meta.requeue.is_empty() {
            return (Err(ResponseError::ConcurrentTransactions), fx);
        }
        let r = match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                meta.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                meta.last_update_ms = now;
                fx.write(id, meta);
                fx.markers.push(job(id, meta));
                Ok(())
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            _ => Err(ResponseError::InvalidTxnState),
        };
        (r, fx)
    }

    /// The markers of a Prepare state (a job without offsets) are appended to every
    /// partition's log, not yet known durable: the transaction is complete for the id,
    /// whose next transaction may begin at once (a partition's log keeps the order, so
    /// the next transaction's records there follow the marker, and an fsync covering
    /// them covers it). The job stays in [`TxnMeta::completing`], written with the id's
    /// next change, until [`markers_written`](Self::markers_written): a crash before
    /// then writes the markers again at recovery (skipped where already durable, by
    /// sequence). Nothing is written now: until the id's next change, the log's
    /// Prepare state says the same. A job with offsets waits for `markers_written`
    /// (its offsets must reach the groups before a later transaction's).
    ///
    /// After recovery, a `completing` job appended again unblocks the id once none is
    /// left (returning the Prepare state's job, if it was waiting for them).
    pub fn markers_queued(&mut self, now: Millis, job: &MarkerJob) -> Effects {
        let Some(meta) = self.txns.get_mut(&job.transactional_id) else {
            return Effects::default();
        };
        if meta.completing.contains(job) {
            return requeued(&job.transactional_id, meta, job.seq);
        }
        if meta.producer_id != job.producer_id
            || meta.epoch != job.epoch
            || meta.seq != job.seq
            || job.seq <= 0
            || !job.offsets.is_empty()
            || !meta.offsets.is_empty()
            || !meta.requeue.is_empty()
        {
            return Effects::default();
        }
        meta.state = match meta.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Effects::default(),
        };
        meta.completing.push(job.clone());
        meta.partitions.clear();
        meta.groups.clear();
        meta.last_update_ms = now;
        Effects::default()
    }

    /// The markers of a Prepare state were written (and the offsets applied): complete.
    /// A job for an older epoch or another producer (superseded) changes nothing. A job
    /// already completed by [`markers_queued`](Self::markers_queued) leaves
    /// `completing` (in memory; the id's next write drops it from the log, and until
    /// then recovery's extra markers are skipped by sequence).
    pub fn markers_written(&mut self, now: Millis, job: &MarkerJob) -> Effects {
        let mut fx = Effects::default();
        let Some(meta) = self.txns.get_mut(&job.transactional_id) else {
            return fx;
        };
        let before = meta.completing.len();
        meta.completing.retain(|c| c != job);
        if meta.completing.len() != before {
            return requeued(&job.transactional_id, meta, job.seq);
        }
        if meta.producer_id != job.producer_id || meta.epoch != job.epoch {
            return fx;
        }
        meta.state = match meta.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return fx,
        };
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        meta.last_update_ms = now;
        fx.write(&job.transactional_id, meta);
        fx
    }

    /// The timeout sweep: an Ongoing transaction past its start + timeout is aborted, its
    /// producer fenced (epoch bumped) as Kafka does.
    pub fn tick(&mut self, now: Millis, allocate: &mut dyn FnMut() -> Option<i64>) -> Effects {
        let mut fx = Effects::default();
        for (id, meta) in self.txns.iter_mut() {
            if meta.state == TxnState::Ongoing
                && meta.requeue.is_empty()
                && now > meta.start_ms.saturating_add(i64::from(meta.timeout_ms))
            {
                bump(meta, allocate);
                meta.state = TxnState::PrepareAbort;
                meta.last_update_ms = now;
                fx.write(id, meta);
                fx.markers.push(job(id, meta));
            }
        }
        fx
    }

    /// The earliest time [`tick`](Self::tick) has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.txns
            .values()
            .filter(|m| m.state == TxnState::Ongoing)
            .map(|m| m.start_ms.saturating_add(i64::from(m.timeout_ms)) + 1)
            .min()
    }

    /// Offsets of `group` waiting in an open or deciding transaction (OffsetFetch with
    /// require_stable answers UNSTABLE_OFFSET_COMMIT for them).
    pub fn pending_offsets(&self, group: &str) -> BTreeSet<(String, i32)> {
        self.txns
            .values()
            .flat_map(|m| {
                m.offsets
                    .iter()
                    .chain(m.completing.iter().flat_map(|c| &c.offsets))
            })
            .filter(|o| o.group == group)
            .map(|o| (o.topic.clone(), o.partition))
            .collect()
    }
}

/// Bumps the epoch, or moves to a fresh producer id when the epoch is exhausted (Kafka
/// does at 32766). Returns false if no id could be allocated.
fn bump(meta: &mut TxnMeta, allocate: &mut dyn FnMut() -> Option<i64>) -> bool {
    if meta.epoch < i16::MAX - 1 {
        meta.epoch += 1;
        true
    } else if let Some(pid) = allocate() {
        meta.producer_id = pid;
        meta.epoch = 0;
        true
    } else {
        false
    }
}

/// A recovered completion's markers are appended again (or done): once none is left to
/// re-append, the id is unblocked and a Prepare state's own job may run.
fn requeued(id: &str, meta: &mut TxnMeta, seq: i32) -> Effects {
    let mut fx = Effects::default();
    let was = meta.requeue.len();
    meta.requeue.retain(|&s| s != seq);
    if was > 0 && meta.requeue.is_empty() && meta.state.is_prepare() {
        fx.markers.push(job(id, meta));
    }
    fx
}

fn job(id: &str, meta: &TxnMeta) -> MarkerJob {
    MarkerJob {
        transactional_id: id.to_owned(),
        producer_id: meta.producer_id,
        epoch: meta.epoch,
        commit: meta.state == TxnState::PrepareCommit,
        start_ms: meta.start_ms,
        partitions: meta.partitions.iter().cloned().collect(),
        offsets: if meta.state == TxnState::PrepareCommit {
            meta.offsets.clone()
        } else {
            Vec::new()
        },
        seq: meta.seq,
    }
}
