//! The Kafka transaction coordinator service: one tokio task owns the sans-IO
//! [`TxnCoordinator`] and the transaction log ([`TxnLog`], `<vhost dir>/kafka/transactions/`);
//! connections talk to it through the cloneable [`TxnService`].
//!
//! The task works in rounds: it applies every request waiting in its inbox, appends the
//! round's metadata writes to the log, fsyncs once, and only then answers (an acknowledged
//! EndTxn is a durable decision). Marker jobs (a decided transaction's control batches on
//! each of its partitions, then, on commit, its offsets applied to their groups) run in
//! their own tasks, retried until they succeed; when one completes the owner logs
//! CompleteCommit/CompleteAbort. Between requests the task sleeps until the coordinator's
//! next transaction timeout. On start, transactions the log shows in PrepareCommit or
//! PrepareAbort get their marker jobs again (markers are idempotent for a transaction
//! whose partitions no longer have it open).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrymq_kafka::group::{Committed, OffsetWrite};
use ferrymq_kafka::kafka_protocol::ResponseError;
use ferrymq_kafka::txn::{
    codec, Effects, MarkerJob, PendingOffset, ProducerIdAndEpoch, TxnCoordinator, TxnMeta, TxnState,
};
use ferrymq_store::txn_log::TxnLog;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::kafka::partition_task::{Command, PartitionHandle};
use crate::kafka_groups::GroupService;

/// Finds a partition's handle (None: the topic or partition is gone).
pub type PartitionLookup = Arc<dyn Fn(&str, i32) -> Option<PartitionHandle> + Send + Sync>;
/// Hands out a new producer id.
pub type AllocatePid = Arc<dyn Fn() -> Option<i64> + Send + Sync>;

type Reply<T> = oneshot::Sender<Result<T, ResponseError>>;

const INBOX: usize = 4096;
const ROUND_MAX: usize = 512;
/// Pause before a failed marker or offsets write is retried.
const RETRY: Duration = Duration::from_millis(200);

enum Cmd {
    Init {
        id: String,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
        reply: Reply<ProducerIdAndEpoch>,
    },
    AddPartitions {
        id: String,
        pid: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        reply: Reply<()>,
    },
    AddOffsets {
        id: String,
        pid: i64,
        epoch: i16,
        group: String,
        reply: Reply<()>,
    },
    OffsetCommit {
        id: String,
        pid: i64,
        epoch: i16,
        offsets: Vec<PendingOffset>,
        reply: Reply<()>,
    },
    End {
        id: String,
        pid: i64,
        epoch: i16,
        commit: bool,
        reply: Reply<()>,
    },
    Describe(Vec<String>, oneshot::Sender<Vec<(String, Option<TxnMeta>)>>),
    List(oneshot::Sender<Vec<(String, TxnMeta)>>),
    Pending(String, oneshot::Sender<BTreeSet<(String, i32)>>),
    /// A job's markers are appended to every partition's log (not yet durable).
    Queued(MarkerJob),
    Done(MarkerJob),
    Shutdown,
}

/// A handle on the transaction coordinator task. Cheap to clone.
#[derive(Clone)]
pub struct TxnService {
    tx: mpsc::Sender<Cmd>,
    /// The durable state of every transactional id (pending offsets left out), for the
    /// KIP-890 part 1 check on the produce path without a round trip to the task. The
    /// owner updates it after each round's fsync, before answering the round.
    view: Arc<parking_lot::RwLock<HashMap<String, TxnMeta>>>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl TxnService {
    /// Opens the log in `<vhost_dir>/kafka/transactions`, recovers the coordinator and
    /// starts its task (and the marker jobs recovery asks for). Inside a tokio runtime.
    pub fn start(
        vhost_dir: &Path,
        partitions: PartitionLookup,
        groups: GroupService,
        allocate: AllocatePid,
    ) -> std::io::Result<TxnService> {
        let dir = vhost_dir.join("kafka").join("transactions");
        let (log, values) = TxnLog::open(&dir).map_err(std::io::Error::other)?;
        let mut coord = TxnCoordinator::new();
        let mut bad = 0;
        let entries: Vec<(String, TxnMeta)> = values
            .into_iter()
            .filter_map(|(k, v)| match codec::decode_id(&k, &v) {
                Some(m) => Some((k, m)),
                None => {
                    bad += 1;
                    None
                }
            })
            .collect();
        if bad > 0 {
            tracing::warn!(bad, "transaction log: undecodable values skipped");
        }
        let count = entries.len();
        let recovered = coord.recover(entries);
        // After recovery: ids with completions to append again are blocked.
        let view: HashMap<String, TxnMeta> =
            coord.iter().map(|(k, m)| (k.clone(), light(m))).collect();
        let view = Arc::new(parking_lot::RwLock::new(view));
        if count > 0 {
            tracing::info!(
                transactional_ids = count,
                completing = recovered.markers.len(),
                "kafka transaction coordinator recovered"
            );
        }
        let (tx, rx) = mpsc::channel(INBOX);
        let owner = Owner {
            coord,
            log,
            partitions,
            groups,
            allocate,
            done: tx.clone(),
            writes_since_compact: 0,
            deferred: HashMap::new(),
            view: view.clone(),
        };
        for job in recovered.markers {
            owner.spawn_job(job);
        }
        let task = tokio::spawn(owner.run(rx));
        Ok(TxnService {
            tx,
            view,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, ResponseError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        rx.await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
    }

    pub async fn init_producer_id(
        &self,
        id: String,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
    ) -> Result<ProducerIdAndEpoch, ResponseError> {
        self.ask(|reply| Cmd::Init {
            id,
            timeout_ms,
            expected,
            reply,
        })
        .await
    }

    pub async fn add_partitions(
        &self,
        id: String,
        pid: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), ResponseError> {
        self.ask(|reply| Cmd::AddPartitions {
            id,
            pid,
            epoch,
            partitions,
            reply,
        })
        .await
    }

    pub async fn add_offsets(
        &self,
        id: String,
        pid: i64,
        epoch: i16,
        group: String,
    ) -> Result<(), ResponseError> {
        self.ask(|reply| Cmd::AddOffsets {
            id,
            pid,
            epoch,
            group,
            reply,
        })
        .await
    }

    pub async fn txn_offset_commit(
        &self,
        id: String,
        pid: i64,
        epoch: i16,
        offsets: Vec<PendingOffset>,
    ) -> Result<(), ResponseError> {
        self.ask(|reply| Cmd::OffsetCommit {
            id,
            pid,
            epoch,
            offsets,
            reply,
        })
        .await
    }

    pub async fn end_txn(
        &self,
        id: String,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ResponseError> {
        self.ask(|reply| Cmd::End {
            id,
            pid,
            epoch,
            commit,
            reply,
        })
        .await
    }

    /// KIP-890 part 1: may producer `pid`/`epoch` of transactional id `id` append
    /// transactional records to `topic`/`partition` (added to its ongoing transaction)?
    pub fn verify_partition(
        &self,
        id: &str,
        pid: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ResponseError> {
        let view = self.view.read();
        ferrymq_kafka::txn::verify_partition(
            view.get(id),
            pid,
            epoch,
            &(topic.to_owned(), partition),
        )
    }

    /// The metadata of each id (None: unknown).
    pub async fn describe(&self, ids: Vec<String>) -> Option<Vec<(String, Option<TxnMeta>)>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Describe(ids, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Every transactional id and its metadata.
    pub async fn list(&self) -> Option<Vec<(String, TxnMeta)>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::List(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Partitions of `group` with offsets waiting in a transaction.
    pub async fn pending_offsets(&self, group: String) -> BTreeSet<(String, i32)> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Pending(group, tx)).await.is_err() {
            return BTreeSet::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the task and waits for it (marker jobs in flight are completed by recovery
    /// at the next start).
    pub async fn shutdown(self) {
        let _ = self.tx.send(Cmd::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// An answer held until the round's fsync.
enum Outgoing {
    Pid(
        Reply<ProducerIdAndEpoch>,
        Result<ProducerIdAndEpoch, ResponseError>,
    ),
    Unit(Reply<()>, Result<(), ResponseError>),
}

impl Outgoing {
    fn send(self, stored: bool) {
        let lost = ResponseError::CoordinatorNotAvailable;
        match self {
            Outgoing::Pid(tx, r) => drop(tx.send(if stored { r } else { Err(lost) })),
            Outgoing::Unit(tx, r) => drop(tx.send(if stored { r } else { Err(lost) })),
        }
    }
}

struct Owner {
    coord: TxnCoordinator,
    log: TxnLog,
    partitions: PartitionLookup,
    groups: GroupService,
    allocate: AllocatePid,
    done: mpsc::Sender<Cmd>,
    writes_since_compact: usize,
    /// Requests that arrived while their id's markers were being written: applied when
    /// the transaction completes, instead of answering CONCURRENT_TRANSACTIONS and
    /// making the client retry after a backoff.
    deferred: HashMap<String, Vec<Cmd>>,
    /// The service's view of the durable state (see [`TxnService`]).
    view: Arc<parking_lot::RwLock<HashMap<String, TxnMeta>>>,
}

/// A transaction's metadata without its pending offsets (what the produce check needs).
fn light(m: &TxnMeta) -> TxnMeta {
    TxnMeta {
        offsets: Vec::new(),
        groups: BTreeSet::new(),
        ..m.clone()
    }
}

impl Cmd {
    /// The transactional id of a request that waits out a commit or abort in flight.
    fn waits_for_markers(&self) -> Option<&str> {
        match self {
            Cmd::Init { id, .. }
            | Cmd::AddPartitions { id, .. }
            | Cmd::AddOffsets { id, .. }
            | Cmd::End { id, .. } => Some(id),
            _ => None,
        }
    }
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut stopping = false;
        while !stopping {
            let sleep = match self.coord.next_deadline() {
                Some(d) => Duration::from_millis((d - wall_ms()).clamp(0, 60_000) as u64),
                None => Duration::from_secs(60),
            };
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => None,
            };
            let mut fx = Effects::default();
            let mut out = Vec::new();
            let alloc = self.allocate.clone();
            let tick = self.coord.tick(wall_ms(), &mut || alloc());
            merge(&mut fx, tick);
            if let Some(cmd) = first {
                stopping |= self.apply(cmd, &mut fx, &mut out);
                while out.len() < ROUND_MAX && !stopping {
                    match rx.try_recv() {
                        Ok(cmd) => stopping |= self.apply(cmd, &mut fx, &mut out),
                        Err(_) => break,
                    }
                }
            }
            let stored = self.persist(&fx);
            if stored && !fx.writes.is_empty() {
                let mut view = self.view.write();
                for (id, meta) in &fx.writes {
                    view.insert(id.clone(), light(meta));
                }
            }
            for o in out {
                o.send(stored);
            }
            if stored {
                for job in fx.markers {
                    self.spawn_job(job);
                }
            }
        }
        rx.close();
        tracing::debug!("kafka transaction coordinator stopped");
    }

    /// Appends the round's writes and fsyncs them.
    fn persist(&mut self, fx: &Effects) -> bool {
        if fx.writes.is_empty() {
            return true;
        }
        for (id, meta) in &fx.writes {
            self.log.append(id, &codec::encode(meta));
        }
        self.writes_since_compact += fx.writes.len();
        let r = tokio::task::block_in_place(|| {
            self.log.sync()?;
            if self.writes_since_compact > 4096 {
                self.writes_since_compact = 0;
                let latest: BTreeMap<String, Vec<u8>> = self
                    .coord
                    .iter()
                    .map(|(k, m)| (k.clone(), codec::encode(m)))
                    .collect();
                self.log.maybe_compact(&latest)?;
            }
            Ok::<_, ferrymq_store::StoreError>(())
        });
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("transaction log: {e}");
                false
            }
        }
    }

    fn apply(&mut self, cmd: Cmd, fx: &mut Effects, out: &mut Vec<Outgoing>) -> bool {
        let now = wall_ms();
        if let Some(id) = cmd.waits_for_markers() {
            if self.coord.get(id).is_some_and(|m| m.busy()) {
                self.deferred.entry(id.to_owned()).or_default().push(cmd);
                return false;
            }
        }
        match cmd {
            Cmd::Init {
                id,
                timeout_ms,
                expected,
                reply,
            } => {
                let alloc = self.allocate.clone();
                let (r, f) =
                    self.coord
                        .init_producer_id(now, &id, timeout_ms, expected, &mut || alloc());
                merge(fx, f);
                out.push(Outgoing::Pid(reply, r));
            }
            Cmd::AddPartitions {
                id,
                pid,
                epoch,
                partitions,
                reply,
            } => {
                let (r, f) = self.coord.add_partitions(now, &id, pid, epoch, &partitions);
                merge(fx, f);
                out.push(Outgoing::Unit(reply, r));
            }
            Cmd::AddOffsets {
                id,
                pid,
                epoch,
                group,
                reply,
            } => {
                let (r, f) = self.coord.add_offsets(now, &id, pid, epoch, &group);
                merge(fx, f);
                out.push(Outgoing::Unit(reply, r));
            }
            Cmd::OffsetCommit {
                id,
                pid,
                epoch,
                offsets,
                reply,
            } => {
                let (r, f) = self.coord.txn_offset_commit(now, &id, pid, epoch, offsets);
                merge(fx, f);
                out.push(Outgoing::Unit(reply, r));
            }
            Cmd::End {
                id,
                pid,
                epoch,
                commit,
                reply,
            } => {
                let (r, f) = self.coord.end_txn(now, &id, pid, epoch, commit);
                merge(fx, f);
                out.push(Outgoing::Unit(reply, r));
            }
            Cmd::Describe(ids, tx) => {
                let r = ids
                    .into_iter()
                    .map(|id| {
                        let m = self.coord.get(&id).cloned();
                        (id, m)
                    })
                    .collect();
                let _ = tx.send(r);
            }
            Cmd::List(tx) => {
                let _ = tx.send(
                    self.coord
                        .iter()
                        .map(|(k, m)| (k.clone(), m.clone()))
                        .collect(),
                );
            }
            Cmd::Pending(group, tx) => {
                let _ = tx.send(self.coord.pending_offsets(&group));
            }
            Cmd::Queued(job) => {
                merge(fx, self.coord.markers_queued(now, &job));
                self.refresh_view(&job.transactional_id);
                self.release_deferred(&job.transactional_id, fx, out);
            }
            Cmd::Done(job) => {
                merge(fx, self.coord.markers_written(now, &job));
                self.refresh_view(&job.transactional_id);
                self.release_deferred(&job.transactional_id, fx, out);
            }
            Cmd::Shutdown => return true,
        }
        false
    }

    /// After a marker event: unblocks the produce check's view of a recovered id whose
    /// completions are appended again, and moves a Prepare state there to its Complete
    /// state (a refusal either way: CONCURRENT_TRANSACTIONS becomes INVALID_TXN_STATE).
    /// Nothing that would admit produce: that changes only after the fsync of a round's
    /// writes (this round may hold changes not yet durable).
    fn refresh_view(&self, id: &str) {
        if let Some(m) = self.coord.get(id) {
            if let Some(v) = self.view.write().get_mut(id) {
                v.requeue.clone_from(&m.requeue);
                if v.state.is_prepare()
                    && m.state != TxnState::Ongoing
                    && !m.state.is_prepare()
                    && (v.producer_id, v.epoch) == (m.producer_id, m.epoch)
                {
                    v.state = m.state;
                    v.partitions.clear();
                }
            }
        }
    }

    /// Applies the requests that waited for `id`'s markers, once it is out of Prepare.
    fn release_deferred(&mut self, id: &str, fx: &mut Effects, out: &mut Vec<Outgoing>) {
        let still_deciding = self.coord.get(id).is_some_and(|m| m.busy());
        if !still_deciding {
            for cmd in self.deferred.remove(id).unwrap_or_default() {
                self.apply(cmd, fx, out);
            }
        }
    }

    /// Runs a marker job in its own task; it reports back with `Cmd::Queued` once every
    /// marker is appended, then `Cmd::Done` once they are durable (and offsets applied).
    fn spawn_job(&self, job: MarkerJob) {
        let partitions = self.partitions.clone();
        let groups = self.groups.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            write_markers(&job, &partitions, &done).await;
            if job.commit && !job.offsets.is_empty() {
                let writes: Vec<OffsetWrite> = job
                    .offsets
                    .iter()
                    .map(|o| OffsetWrite {
                        group: o.group.clone(),
                        topic: o.topic.clone(),
                        partition: o.partition,
                        committed: Committed {
                            offset: o.offset,
                            leader_epoch: o.leader_epoch,
                            metadata: o.metadata.clone(),
                            commit_timestamp_ms: wall_ms(),
                        },
                    })
                    .collect();
                while !groups.apply_txn_offsets(writes.clone()).await {
                    if done.is_closed() {
                        return;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
            let _ = done.send(Cmd::Done(job)).await;
        });
    }
}

/// Writes the job's marker on every partition (all sent at once, each retried until it
/// is durable; a partition that no longer exists is skipped). Once every marker is
/// appended (in each partition's log order, ahead of anything the id's next
/// transaction writes there) it tells the owner with `Cmd::Queued`.
async fn write_markers(job: &MarkerJob, partitions: &PartitionLookup, owner: &mpsc::Sender<Cmd>) {
    let mut todo: Vec<(String, i32)> = job.partitions.clone();
    let mut queued = false;
    while !todo.is_empty() {
        let mut waiting = Vec::new();
        for (topic, p) in todo.drain(..) {
            let Some(h) = partitions(&topic, p) else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            let (appended, arx) = oneshot::channel();
            let cmd = Command::Marker {
                producer_id: job.producer_id,
                epoch: job.epoch,
                commit: job.commit,
                seq: job.seq,
                appended: Some(appended),
                reply,
            };
            if h.tx.send(cmd).await.is_err() {
                continue; // the partition was deleted
            }
            waiting.push((topic, p, arx, rx));
        }
        let mut all_appended = true;
        let mut durable = Vec::with_capacity(waiting.len());
        for (topic, p, arx, rx) in waiting {
            // A dropped sender: the append failed (the reply says so) or the partition
            // is gone.
            all_appended &= arx.await.is_ok();
            durable.push((topic, p, rx));
        }
        if all_appended && !queued {
            queued = true;
            let _ = owner.send(Cmd::Queued(job.clone())).await;
        }
        let mut failed = Vec::new();
        for (topic, p, rx) in durable {
            match rx.await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(topic, partition = p, error = ?e, "transaction marker failed; retrying");
                    failed.push((topic, p));
                }
            }
        }
        if !failed.is_empty() {
            tokio::time::sleep(RETRY).await;
        }
        todo = failed;
    }
}

fn merge(into: &mut Effects, from: Effects) {
    into.writes.extend(from.writes);
    into.markers.extend(from.markers);
}
