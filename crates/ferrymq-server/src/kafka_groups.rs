//! The Kafka group coordinator service: one tokio task owns the sans-IO
//! [`Coordinator`](ferrymq_kafka::group::Coordinator), a second one owns the committed-offsets
//! journal ([`OffsetJournal`], in `<data_dir>/kafka/groups/`); connections talk to the
//! coordinator through the cloneable [`GroupService`] handle, one request and one `oneshot`
//! answer at a time.
//!
//! The coordinator task works in rounds: it takes every request waiting in its inbox (up to
//! `ROUND_MAX`) and applies them in order. Answers that need nothing durable (heartbeats,
//! joins, fetches, …) go out at once; the round's accepted offset commits and group
//! deletions go to the journal task together with their answers. The journal task takes
//! every batch waiting for it, appends them, fsyncs once and only then sends those answers —
//! so an acknowledged OffsetCommit is on disk, many commits share one fsync, and a slow
//! fsync never delays a heartbeat (a late heartbeat would cost the member its session).
//! Deferred answers (JoinGroup waiting for a rebalance, SyncGroup waiting for the leader)
//! are kept by request id until the coordinator produces them; between requests the task
//! sleeps until the coordinator's next deadline (session, rebalance or sync timeout) or the
//! next offsets cleanup (`offsets.retention.check.interval.ms`), whose expired offsets are
//! journaled like commits.
//!
//! An OffsetCommit from a member of the current generation while the group waits for the
//! leader's assignment is parked until the group moves on (`Coordinator::commit_waits_for_sync`):
//! answered at once it would get REBALANCE_IN_PROGRESS, which librdkafka's
//! cooperative-sticky members (still consuming and committing while they rebalance) hit
//! under churn.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrymq_kafka::group::consumer::{ConsumerGroups, GroupOverrides, TopicImage};
use ferrymq_kafka::group::{
    join_error, sync_error, ClientInfo, Committed, Coordinator, GroupConfig, Millis, OffsetWrite,
    Reply, ReqId,
};
use ferrymq_store::log::{Backend, FileBackend};
use ferrymq_store::offsets::{CommittedOffset, OffsetJournal, OffsetOp};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Tells whether topic `name` has partition `p`.
pub type TopicExists = Arc<dyn Fn(&str, i32) -> bool + Send + Sync>;

/// Most requests applied in one round.
const ROUND_MAX: usize = 512;
const INBOX: usize = 4096;
/// Rounds waiting for the journal before the coordinator waits for it.
const JOURNAL_INBOX: usize = 64;

enum Cmd {
    Join(
        i16,
        ClientInfo,
        JoinGroupRequest,
        oneshot::Sender<JoinGroupResponse>,
    ),
    Sync(i16, SyncGroupRequest, oneshot::Sender<SyncGroupResponse>),
    Heartbeat(i16, HeartbeatRequest, oneshot::Sender<HeartbeatResponse>),
    Leave(i16, LeaveGroupRequest, oneshot::Sender<LeaveGroupResponse>),
    Commit(
        i16,
        OffsetCommitRequest,
        oneshot::Sender<OffsetCommitResponse>,
    ),
    Fetch(
        i16,
        OffsetFetchRequest,
        oneshot::Sender<OffsetFetchResponse>,
    ),
    List(i16, ListGroupsRequest, oneshot::Sender<ListGroupsResponse>),
    Describe(
        i16,
        DescribeGroupsRequest,
        oneshot::Sender<DescribeGroupsResponse>,
    ),
    Delete(
        i16,
        DeleteGroupsRequest,
        oneshot::Sender<DeleteGroupsResponse>,
    ),
    OffsetDelete(OffsetDeleteRequest, oneshot::Sender<OffsetDeleteResponse>),
    /// Per-group configs (GROUP config resources) for KIP-848 groups.
    GroupConfigs(HashMap<String, GroupOverrides>),
    /// Offsets of a committed transaction (the transaction coordinator's marker job):
    /// applied and journaled; answered `true` once durable.
    ApplyTxn(Vec<OffsetWrite>, oneshot::Sender<bool>),
    /// KIP-447: may this (group, member id, instance id, generation) make a
    /// TxnOffsetCommit? None: yes.
    ValidateTxn(
        String,
        String,
        Option<String>,
        i32,
        oneshot::Sender<Option<ResponseError>>,
    ),
    /// KIP-848 requests (`kafka_groups/consumer.rs`).
    Consumer(consumer::ConsumerCmd),
    Shutdown,
}

/// A handle on the group coordinator task. Cheap to clone.
#[derive(Clone)]
pub struct GroupService {
    tx: mpsc::Sender<Cmd>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl GroupService {
    /// Starts the coordinator with Kafka's default settings, its journal in
    /// `<data_dir>/kafka/groups/`. Must be called inside a tokio runtime.
    pub fn start(data_dir: &Path, topics: TopicExists) -> std::io::Result<GroupService> {
        GroupService::start_with(data_dir, topics, GroupConfig::default())
    }

    /// Starts the coordinator with explicit settings (e.g. a short initial rebalance delay).
    pub fn start_with(
        data_dir: &Path,
        topics: TopicExists,
        config: GroupConfig,
    ) -> std::io::Result<GroupService> {
        GroupService::start_on(FileBackend, data_dir, topics, config)
    }

    /// Starts the coordinator with its journal on `backend` (tests use the fault-injecting
    /// disk).
    pub fn start_on<B: Backend>(
        backend: B,
        data_dir: &Path,
        topics: TopicExists,
        config: GroupConfig,
    ) -> std::io::Result<GroupService> {
        let dir = data_dir.join("kafka").join("groups");
        let (journal, live) = OffsetJournal::open(backend, &dir).map_err(std::io::Error::other)?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32;
        let mut coord = Coordinator::new(config, seed);
        let mut restored = 0usize;
        for (group, parts) in live {
            for ((topic, partition), c) in parts {
                coord.restore_offset(
                    &group,
                    &topic,
                    partition,
                    Committed {
                        offset: c.offset,
                        leader_epoch: c.leader_epoch,
                        metadata: c.metadata,
                        commit_timestamp_ms: c.commit_timestamp_ms,
                    },
                );
                restored += 1;
            }
        }
        tracing::info!(
            offsets = restored,
            "kafka group coordinator: offsets recovered"
        );
        let (tx, rx) = mpsc::channel(INBOX);
        let (jtx, jrx) = mpsc::channel(JOURNAL_INBOX);
        let writer = tokio::spawn(journal_task(journal, jrx));
        let owner = Owner {
            consumer: ConsumerGroups::new(consumer::config_from_env(), seed.rotate_left(17)),
            coord,
            journal: jtx,
            topics,
            start: Instant::now(),
            next_req: 0,
            joins: HashMap::new(),
            syncs: HashMap::new(),
            next_expiry: 0,
            parked: Vec::new(),
        };
        let task = tokio::spawn(async move {
            owner.run(rx).await;
            // The owner dropped its journal sender: the writer drains and stops.
            let _ = writer.await;
        });
        Ok(GroupService {
            tx,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// JoinGroup; answers when the rebalance completes (or at once on an error).
    pub async fn join_group(
        &self,
        api_version: i16,
        request: JoinGroupRequest,
    ) -> JoinGroupResponse {
        self.join_group_from(api_version, ClientInfo::default(), request)
            .await
    }

    /// JoinGroup with the client id and host DescribeGroups reports.
    pub async fn join_group_from(
        &self,
        api_version: i16,
        client: ClientInfo,
        request: JoinGroupRequest,
    ) -> JoinGroupResponse {
        let member = request.member_id.to_string();
        self.ask(|tx| Cmd::Join(api_version, client, request, tx))
            .await
            .unwrap_or_else(|| {
                join_error(api_version, &member, ResponseError::CoordinatorNotAvailable)
            })
    }

    /// SyncGroup; a follower's answer waits for the leader's assignment.
    pub async fn sync_group(
        &self,
        api_version: i16,
        request: SyncGroupRequest,
    ) -> SyncGroupResponse {
        self.ask(|tx| Cmd::Sync(api_version, request, tx))
            .await
            .unwrap_or_else(|| sync_error(api_version, ResponseError::CoordinatorNotAvailable))
    }

    /// Heartbeat.
    pub async fn heartbeat(
        &self,
        api_version: i16,
        request: HeartbeatRequest,
    ) -> HeartbeatResponse {
        self.ask(|tx| Cmd::Heartbeat(api_version, request, tx))
            .await
            .unwrap_or_else(|| {
                HeartbeatResponse::default()
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            })
    }

    /// LeaveGroup.
    pub async fn leave_group(
        &self,
        api_version: i16,
        request: LeaveGroupRequest,
    ) -> LeaveGroupResponse {
        self.ask(|tx| Cmd::Leave(api_version, request, tx))
            .await
            .unwrap_or_else(|| {
                LeaveGroupResponse::default()
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            })
    }

    /// OffsetCommit; answered once the accepted offsets are fsynced.
    pub async fn offset_commit(
        &self,
        api_version: i16,
        request: OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        let fallback = commit_all_failed(&request);
        self.ask(|tx| Cmd::Commit(api_version, request, tx))
            .await
            .unwrap_or(fallback)
    }

    /// OffsetFetch.
    pub async fn offset_fetch(
        &self,
        api_version: i16,
        request: OffsetFetchRequest,
    ) -> OffsetFetchResponse {
        let mut fallback = OffsetFetchResponse::default();
        if api_version >= 8 {
            fallback.groups = request
                .groups
                .iter()
                .map(|g| {
                    kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                })
                .collect();
        } else if api_version >= 2 {
            fallback.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
        self.ask(|tx| Cmd::Fetch(api_version, request, tx))
            .await
            .unwrap_or(fallback)
    }

    /// ListGroups.
    pub async fn list_groups(
        &self,
        api_version: i16,
        request: ListGroupsRequest,
    ) -> ListGroupsResponse {
        self.ask(|tx| Cmd::List(api_version, request, tx))
            .await
            .unwrap_or_else(|| {
                ListGroupsResponse::default()
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            })
    }

    /// DescribeGroups.
    pub async fn describe_groups(
        &self,
        api_version: i16,
        request: DescribeGroupsRequest,
    ) -> DescribeGroupsResponse {
        let fallback = DescribeGroupsResponse::default().with_groups(
            request
                .groups
                .iter()
                .map(|g| {
                    DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                })
                .collect(),
        );
        self.ask(|tx| Cmd::Describe(api_version, request, tx))
            .await
            .unwrap_or(fallback)
    }

    /// DeleteGroups; answered once the deletions are fsynced.
    pub async fn delete_groups(
        &self,
        api_version: i16,
        request: DeleteGroupsRequest,
    ) -> DeleteGroupsResponse {
        let fallback = DeleteGroupsResponse::default().with_results(
            request
                .groups_names
                .iter()
                .map(|g| {
                    DeletableGroupResult::default()
                        .with_group_id(g.clone())
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                })
                .collect(),
        );
        self.ask(|tx| Cmd::Delete(api_version, request, tx))
            .await
            .unwrap_or(fallback)
    }

    /// Replaces the per-group configs KIP-848 groups use (from each member's next
    /// heartbeat). Queued without waiting; false if the coordinator is gone or its inbox
    /// is full.
    pub fn set_group_configs(&self, configs: HashMap<String, GroupOverrides>) -> bool {
        self.tx.try_send(Cmd::GroupConfigs(configs)).is_ok()
    }

    /// OffsetDelete; answered once the deletions are fsynced.
    pub async fn offset_delete(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        self.ask(|tx| Cmd::OffsetDelete(request, tx))
            .await
            .unwrap_or_else(|| {
                OffsetDeleteResponse::default()
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            })
    }

    /// ConsumerGroupHeartbeat (KIP-848); `topics` is the current topic metadata.
    pub async fn consumer_heartbeat(
        &self,
        api_version: i16,
        client: ClientInfo,
        request: ConsumerGroupHeartbeatRequest,
        topics: TopicImage,
    ) -> ConsumerGroupHeartbeatResponse {
        self.ask(|tx| {
            Cmd::Consumer(consumer::ConsumerCmd::Heartbeat(
                Box::new((api_version, client, request, topics)),
                tx,
            ))
        })
        .await
        .unwrap_or_else(|| {
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
        })
    }

    /// ConsumerGroupDescribe (KIP-848).
    pub async fn consumer_describe(
        &self,
        request: ConsumerGroupDescribeRequest,
        topics: TopicImage,
    ) -> ConsumerGroupDescribeResponse {
        let fallback = ConsumerGroupDescribeResponse::default().with_groups(
            request
                .group_ids
                .iter()
                .map(|g| {
                    kafka_protocol::messages::consumer_group_describe_response::DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                })
                .collect(),
        );
        self.ask(|tx| Cmd::Consumer(consumer::ConsumerCmd::Describe(request, topics, tx)))
            .await
            .unwrap_or(fallback)
    }

    /// Applies the offsets of a committed transaction; true once they are durable.
    pub async fn apply_txn_offsets(&self, writes: Vec<OffsetWrite>) -> bool {
        self.ask(|tx| Cmd::ApplyTxn(writes, tx))
            .await
            .unwrap_or(false)
    }

    /// KIP-447: the group check of a TxnOffsetCommit (generation, member and instance id
    /// of the consumer whose offsets the transaction commits).
    pub async fn validate_txn_offset_commit(
        &self,
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        match self
            .ask(|tx| Cmd::ValidateTxn(group, member_id, instance_id, generation, tx))
            .await
        {
            Some(None) => Ok(()),
            Some(Some(e)) => Err(e),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Stops the task (pending requests are answered first) and waits for it. Other clones
    /// of the handle get COORDINATOR_NOT_AVAILABLE afterwards.
    pub async fn shutdown(self) {
        let _ = self.tx.send(Cmd::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn commit_all_failed(r: &OffsetCommitRequest) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// An answer held until the round's fsync.
enum Outgoing {
    Join(oneshot::Sender<JoinGroupResponse>, JoinGroupResponse),
    Sync(oneshot::Sender<SyncGroupResponse>, SyncGroupResponse),
    Heartbeat(oneshot::Sender<HeartbeatResponse>, HeartbeatResponse),
    Leave(oneshot::Sender<LeaveGroupResponse>, LeaveGroupResponse),
    Commit(oneshot::Sender<OffsetCommitResponse>, OffsetCommitResponse),
    Fetch(oneshot::Sender<OffsetFetchResponse>, OffsetFetchResponse),
    List(oneshot::Sender<ListGroupsResponse>, ListGroupsResponse),
    Describe(
        oneshot::Sender<DescribeGroupsResponse>,
        DescribeGroupsResponse,
    ),
    Delete(oneshot::Sender<DeleteGroupsResponse>, DeleteGroupsResponse),
    OffsetDelete(oneshot::Sender<OffsetDeleteResponse>, OffsetDeleteResponse),
    Applied(oneshot::Sender<bool>),
}

impl Outgoing {
    /// Sends the answer; `stored` says whether the round's journal writes are durable.
    /// A receiver that went away (connection closed) is ignored.
    fn send(self, stored: bool) {
        let unavailable = ResponseError::CoordinatorNotAvailable.code();
        match self {
            Outgoing::Join(tx, r) => drop(tx.send(r)),
            Outgoing::Sync(tx, r) => drop(tx.send(r)),
            Outgoing::Heartbeat(tx, r) => drop(tx.send(r)),
            Outgoing::Leave(tx, r) => drop(tx.send(r)),
            Outgoing::Commit(tx, mut r) => {
                if !stored {
                    for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                        if p.error_code == 0 {
                            p.error_code = unavailable;
                        }
                    }
                }
                drop(tx.send(r))
            }
            Outgoing::Fetch(tx, r) => drop(tx.send(r)),
            Outgoing::List(tx, r) => drop(tx.send(r)),
            Outgoing::Describe(tx, r) => drop(tx.send(r)),
            Outgoing::Applied(tx) => drop(tx.send(stored)),
            Outgoing::OffsetDelete(tx, mut r) => {
                if !stored {
                    r.error_code = unavailable;
                    r.topics.clear();
                }
                drop(tx.send(r))
            }
            Outgoing::Delete(tx, mut r) => {
                if !stored {
                    for g in r.results.iter_mut().filter(|g| g.error_code == 0) {
                        g.error_code = unavailable;
                    }
                }
                drop(tx.send(r))
            }
        }
    }
}

/// A round's journal writes and the answers that wait for them.
#[derive(Default)]
struct Durable {
    ops: Vec<OffsetOp>,
    replies: Vec<Outgoing>,
}

struct Owner {
    coord: Coordinator,
    consumer: ConsumerGroups,
    journal: mpsc::Sender<Durable>,
    topics: TopicExists,
    start: Instant,
    next_req: ReqId,
    joins: HashMap<ReqId, oneshot::Sender<JoinGroupResponse>>,
    syncs: HashMap<ReqId, oneshot::Sender<SyncGroupResponse>>,
    /// OffsetCommits of members whose SyncGroup is still waiting for the leader (see
    /// `Coordinator::commit_waits_for_sync`).
    parked: Vec<(
        i16,
        OffsetCommitRequest,
        oneshot::Sender<OffsetCommitResponse>,
    )>,
    /// When the next offsets cleanup runs (coordinator clock).
    next_expiry: Millis,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Owner {
    fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut stopping = false;
        while !stopping {
            let deadline = [
                self.coord.next_deadline(),
                self.consumer.next_deadline(),
                Some(self.next_expiry),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|ms| self.start + Duration::from_millis(ms));
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => break, // every handle is gone
                },
                _ = sleep_until(deadline) => None,
            };
            let mut out = Vec::new();
            let mut durable = Durable::default();
            self.coord.tick(self.now());
            self.consumer.tick(self.now());
            if let Some(cmd) = first {
                stopping |= self.apply(cmd, &mut out, &mut durable);
                while out.len() + durable.replies.len() < ROUND_MAX && !stopping {
                    match rx.try_recv() {
                        Ok(cmd) => stopping |= self.apply(cmd, &mut out, &mut durable),
                        Err(_) => break,
                    }
                }
            }
            self.collect_replies(&mut out);
            self.apply_parked(&mut out, &mut durable);
            for o in out {
                o.send(true);
            }
            if self.now() >= self.next_expiry {
                self.expire_offsets(&mut durable);
            }
            if !durable.replies.is_empty() || !durable.ops.is_empty() {
                if let Err(mpsc::error::SendError(lost)) = self.journal.send(durable).await {
                    // The journal task is gone (it panicked): nothing can be made durable.
                    for o in lost.replies {
                        o.send(false);
                    }
                }
            }
        }
        // Requests still queued behind the shutdown get COORDINATOR_NOT_AVAILABLE (their
        // senders are dropped; the handle maps that to the error).
        rx.close();
        tracing::debug!("kafka group coordinator stopped");
    }

    /// The periodic offsets cleanup (`offsets.retention.check.interval.ms`): expired offsets
    /// leave the coordinator now and the journal with the round's writes.
    fn expire_offsets(&mut self, durable: &mut Durable) {
        let now = self.now();
        self.next_expiry = now + self.coord.config().offsets_retention_check_interval_ms;
        let expired = self.coord.expire_offsets(now, wall_ms());
        if !expired.is_empty() {
            tracing::info!(
                offsets = expired.len(),
                "kafka groups: expired offsets removed"
            );
        }
        durable
            .ops
            .extend(expired.into_iter().map(|e| OffsetOp::DeleteOffset {
                group: e.group,
                topic: e.topic,
                partition: e.partition,
            }));
    }

    /// OffsetCommit applied now.
    fn commit(
        &mut self,
        v: i16,
        req: OffsetCommitRequest,
        tx: oneshot::Sender<OffsetCommitResponse>,
        out: &mut Vec<Outgoing>,
        durable: &mut Durable,
    ) {
        let now = self.now();
        let topics = self.topics.clone();
        let (resp, writes) =
            self.coord
                .offset_commit(now, wall_ms(), v, &req, &|t: &str, p: i32| topics(t, p));
        tracing::debug!(
            group = %req.group_id.0,
            member = %req.member_id,
            gen = req.generation_id_or_member_epoch,
            state = ?self.coord.group_state(req.group_id.0.as_str()),
            group_gen = ?self.coord.generation(req.group_id.0.as_str()),
            errs = ?resp.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect::<Vec<_>>(),
            "OffsetCommit"
        );
        if writes.is_empty() {
            out.push(Outgoing::Commit(tx, resp));
        } else {
            durable
                .ops
                .extend(writes.into_iter().map(|w| OffsetOp::Commit {
                    group: w.group,
                    topic: w.topic,
                    partition: w.partition,
                    committed: CommittedOffset {
                        offset: w.committed.offset,
                        leader_epoch: w.committed.leader_epoch,
                        metadata: w.committed.metadata,
                        commit_timestamp_ms: w.committed.commit_timestamp_ms,
                    },
                }));
            durable.replies.push(Outgoing::Commit(tx, resp));
        }
    }

    /// Parked commits whose member's SyncGroup has been answered are applied, in arrival
    /// order (a later commit of the same member stays behind an earlier one).
    fn apply_parked(&mut self, out: &mut Vec<Outgoing>, durable: &mut Durable) {
        if self.parked.is_empty() {
            return;
        }
        for (v, req, tx) in std::mem::take(&mut self.parked) {
            if self.coord.commit_waits_for_sync(&req) {
                self.parked.push((v, req, tx));
            } else {
                self.commit(v, req, tx, out, durable);
            }
        }
    }

    fn collect_replies(&mut self, out: &mut Vec<Outgoing>) {
        for r in self.coord.take_replies() {
            match r {
                Reply::Join(id, resp) => {
                    tracing::debug!(req = id, member = %resp.member_id, gen = resp.generation_id, leader = %resp.leader, err = resp.error_code, "JoinGroup deferred answer");
                    if let Some(tx) = self.joins.remove(&id) {
                        out.push(Outgoing::Join(tx, resp));
                    }
                }
                Reply::Sync(id, resp) => {
                    tracing::debug!(req = id, err = resp.error_code, "SyncGroup deferred answer");
                    if let Some(tx) = self.syncs.remove(&id) {
                        out.push(Outgoing::Sync(tx, resp));
                    }
                }
            }
        }
    }

    /// Applies one request; returns true for shutdown. Answers go to `out`, or to
    /// `durable` when they must wait for the journal.
    fn apply(&mut self, cmd: Cmd, out: &mut Vec<Outgoing>, durable: &mut Durable) -> bool {
        let now = self.now();
        let cmd = match cmd {
            Cmd::Consumer(c) => {
                self.apply_consumer(c);
                return false;
            }
            other => match self.consumer_rules(other) {
                Some(cmd) => cmd,
                None => return false,
            },
        };
        match cmd {
            Cmd::Join(v, client, req, tx) => {
                self.next_req += 1;
                tracing::debug!(group = %req.group_id.0, member = %req.member_id, req = self.next_req, "JoinGroup");
                match self.coord.join_group(now, self.next_req, v, &client, &req) {
                    Some(r) => {
                        tracing::debug!(member = %r.member_id, gen = r.generation_id, err = r.error_code, "JoinGroup answered");
                        out.push(Outgoing::Join(tx, r))
                    }
                    None => {
                        self.joins.insert(self.next_req, tx);
                    }
                }
            }
            Cmd::Sync(v, req, tx) => {
                self.next_req += 1;
                tracing::debug!(group = %req.group_id.0, member = %req.member_id, gen = req.generation_id, req = self.next_req, "SyncGroup");
                match self.coord.sync_group(now, self.next_req, v, &req) {
                    Some(r) => {
                        tracing::debug!(member = %req.member_id, err = r.error_code, "SyncGroup answered");
                        out.push(Outgoing::Sync(tx, r))
                    }
                    None => {
                        self.syncs.insert(self.next_req, tx);
                    }
                }
            }
            Cmd::Heartbeat(v, req, tx) => {
                let r = self.coord.heartbeat(now, v, &req);
                if r.error_code != 0 {
                    tracing::debug!(group = %req.group_id.0, member = %req.member_id, gen = req.generation_id, err = r.error_code, "Heartbeat refused");
                }
                out.push(Outgoing::Heartbeat(tx, r))
            }
            Cmd::Leave(v, req, tx) => {
                tracing::debug!(group = %req.group_id.0, member = %req.member_id, members = ?req.members.iter().map(|m| m.member_id.to_string()).collect::<Vec<_>>(), "LeaveGroup");
                out.push(Outgoing::Leave(tx, self.coord.leave_group(now, v, &req)))
            }
            Cmd::Commit(v, req, tx) if self.coord.commit_waits_for_sync(&req) => {
                tracing::debug!(group = %req.group_id.0, member = %req.member_id, gen = req.generation_id_or_member_epoch, "OffsetCommit parked");
                self.parked.push((v, req, tx));
            }
            Cmd::Commit(v, req, tx) => self.commit(v, req, tx, out, durable),
            Cmd::Fetch(v, req, tx) => {
                out.push(Outgoing::Fetch(tx, self.coord.offset_fetch(v, &req)))
            }
            Cmd::List(v, req, tx) => out.push(Outgoing::List(tx, self.coord.list_groups(v, &req))),
            Cmd::Describe(v, req, tx) => {
                out.push(Outgoing::Describe(tx, self.coord.describe_groups(v, &req)))
            }
            Cmd::Delete(v, req, tx) => {
                let (resp, deleted) = self.coord.delete_groups(v, &req);
                if deleted.is_empty() {
                    out.push(Outgoing::Delete(tx, resp));
                } else {
                    durable.ops.extend(
                        deleted
                            .into_iter()
                            .map(|group| OffsetOp::DeleteGroup { group }),
                    );
                    durable.replies.push(Outgoing::Delete(tx, resp));
                }
            }
            Cmd::GroupConfigs(configs) => self.consumer.set_group_configs(configs),
            Cmd::OffsetDelete(req, tx) => {
                let id = req.group_id.0.to_string();
                let consumer = &self.consumer;
                let subscribes = |t: &str| consumer.subscribes(&id, t);
                let kip848: Option<&dyn Fn(&str) -> bool> =
                    consumer.contains(&id).then_some(&subscribes);
                let (resp, removed) = self.coord.offset_delete(&req, kip848);
                if removed.is_empty() {
                    out.push(Outgoing::OffsetDelete(tx, resp));
                } else {
                    durable
                        .ops
                        .extend(removed.into_iter().map(|e| OffsetOp::DeleteOffset {
                            group: e.group,
                            topic: e.topic,
                            partition: e.partition,
                        }));
                    durable.replies.push(Outgoing::OffsetDelete(tx, resp));
                }
            }
            Cmd::ApplyTxn(writes, tx) => {
                for w in writes {
                    self.coord
                        .restore_offset(&w.group, &w.topic, w.partition, w.committed.clone());
                    durable.ops.push(OffsetOp::Commit {
                        group: w.group,
                        topic: w.topic,
                        partition: w.partition,
                        committed: CommittedOffset {
                            offset: w.committed.offset,
                            leader_epoch: w.committed.leader_epoch,
                            metadata: w.committed.metadata,
                            commit_timestamp_ms: w.committed.commit_timestamp_ms,
                        },
                    });
                }
                durable.replies.push(Outgoing::Applied(tx));
            }
            Cmd::ValidateTxn(group, member, instance, generation, tx) => {
                let _ = tx.send(self.coord.validate_txn_offset_commit(
                    &group,
                    &member,
                    instance.as_deref(),
                    generation,
                ));
            }
            Cmd::Consumer(_) => {}
            Cmd::Shutdown => return true,
        }
        false
    }
}

/// The journal task: takes every batch waiting, appends it, fsyncs once (on the blocking
/// pool), then sends the answers that waited for it.
async fn journal_task<B: Backend>(mut journal: OffsetJournal<B>, mut rx: mpsc::Receiver<Durable>) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        for b in &mut batches {
            for op in b.ops.drain(..) {
                journal.append(op);
            }
        }
        let result = tokio::task::spawn_blocking(move || {
            let r = journal.sync();
            (journal, r)
        })
        .await;
        let stored = match result {
            Ok((j, r)) => {
                journal = j;
                match r {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!("offsets journal: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                // The journal went with the panicked task; answer and stop.
                tracing::error!("offsets journal fsync task failed: {e}");
                for o in batches.into_iter().flat_map(|b| b.replies) {
                    o.send(false);
                }
                return;
            }
        };
        for o in batches.into_iter().flat_map(|b| b.replies) {
            o.send(stored);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

mod consumer;
#[cfg(test)]
mod tests;
