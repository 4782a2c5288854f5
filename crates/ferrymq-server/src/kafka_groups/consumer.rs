//! The KIP-848 side of the group coordinator task: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe on the sans-IO [`ConsumerGroups`], and the rules where the two
//! protocols meet on one group id (Kafka 4's): a classic JoinGroup on a consumer group with
//! members gets INCONSISTENT_GROUP_PROTOCOL (an empty one is dropped and the id goes
//! classic, its offsets kept); a heartbeat on a classic group with members gets
//! GROUP_ID_NOT_FOUND (an empty classic group with only offsets converts); OffsetCommit and
//! OffsetFetch on a consumer group are checked against member epochs (STALE_MEMBER_EPOCH)
//! and the offsets themselves stay in the classic coordinator and its journal; ListGroups
//! and DescribeGroups show consumer groups as Kafka 4 does.

use ferrymq_kafka::group::consumer::{ClassicSide, ConsumerConfig, TopicImage, ASSIGNORS};
use ferrymq_kafka::group::{join_error, ClientInfo, GroupState};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::{Cmd, Owner};

/// The KIP-848 requests the coordinator task serves.
pub(super) enum ConsumerCmd {
    Heartbeat(
        Box<(i16, ClientInfo, ConsumerGroupHeartbeatRequest, TopicImage)>,
        oneshot::Sender<ConsumerGroupHeartbeatResponse>,
    ),
    Describe(
        ConsumerGroupDescribeRequest,
        TopicImage,
        oneshot::Sender<ConsumerGroupDescribeResponse>,
    ),
}

/// Kafka's defaults, overridden by `FERRYMQ_KAFKA_CONSUMER_SESSION_TIMEOUT_MS`
/// (`group.consumer.session.timeout.ms`), `FERRYMQ_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS`
/// (`group.consumer.heartbeat.interval.ms`), `FERRYMQ_KAFKA_CONSUMER_ASSIGNORS`
/// (`group.consumer.assignors`, comma-separated), `FERRYMQ_KAFKA_CONSUMER_MAX_SIZE` and
/// `FERRYMQ_KAFKA_CONSUMER_REGEX_REFRESH_MIN_INTERVAL_MS` (Kafka's constant 10 s between
/// two resolutions of a group's regex subscriptions; tests shorten it).
pub(super) fn config_from_env() -> ConsumerConfig {
    let mut c = ConsumerConfig::default();
    let num = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(v) = num("FERRYMQ_KAFKA_CONSUMER_SESSION_TIMEOUT_MS") {
        c.session_timeout_ms = v.max(1);
    }
    if let Some(v) = num("FERRYMQ_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS") {
        c.heartbeat_interval_ms = v.clamp(1, i32::MAX as u64) as i32;
    }
    if let Some(v) = num("FERRYMQ_KAFKA_CONSUMER_REGEX_REFRESH_MIN_INTERVAL_MS") {
        c.regex_refresh_min_interval_ms = v;
    }
    if let Some(v) = num("FERRYMQ_KAFKA_CONSUMER_MAX_SIZE") {
        c.max_size = v as usize;
    }
    if let Ok(v) = std::env::var("FERRYMQ_KAFKA_CONSUMER_ASSIGNORS") {
        let names: Vec<String> = v
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| ASSIGNORS.contains(&s.as_str()))
            .collect();
        if !names.is_empty() {
            c.assignors = names;
        }
    }
    c
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn commit_failed(r: &OffsetCommitRequest, e: ResponseError) -> OffsetCommitResponse {
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
                                    .with_error_code(e.code())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

impl Owner {
    fn classic_side(&self, group: &str) -> ClassicSide {
        match self.coord.group_state(group) {
            None | Some(GroupState::Empty) | Some(GroupState::Dead) => ClassicSide::None,
            Some(_) => ClassicSide::Active,
        }
    }

    /// Serves a KIP-848 request (answered at once: nothing in it is durable).
    pub(super) fn apply_consumer(&mut self, cmd: ConsumerCmd) {
        let now = self.now();
        match cmd {
            ConsumerCmd::Heartbeat(args, tx) => {
                let (v, client, req, topics) = *args;
                let side = self.classic_side(req.group_id.0.as_str());
                let resp = self
                    .consumer
                    .heartbeat(now, v, &client, &req, &topics, side);
                tracing::debug!(
                    group = %req.group_id.0,
                    member = %req.member_id,
                    instance = ?req.instance_id,
                    epoch = req.member_epoch,
                    topics = ?req.subscribed_topic_names,
                    owned = ?req.topic_partitions.as_ref().map(|t| t.iter().map(|x| x.partitions.len()).sum::<usize>()),
                    err = resp.error_code,
                    resp_member = ?resp.member_id,
                    resp_epoch = resp.member_epoch,
                    assigned = ?resp.assignment.as_ref().map(|a| a.topic_partitions.iter().map(|x| x.partitions.len()).sum::<usize>()),
                    "ConsumerGroupHeartbeat"
                );
                let _ = tx.send(resp);
                // Kafka resolves regex subscriptions in a task of its own and applies the
                // result after the heartbeat that asked for it: here, once it is answered.
                // The result reaches members on their next heartbeats.
                if self.consumer.regex_refresh_pending() {
                    let bumped = self.consumer.resolve_regexes(self.now(), &topics);
                    tracing::debug!(?bumped, "regex subscriptions resolved");
                }
            }
            ConsumerCmd::Describe(req, topics, tx) => {
                let coord = &self.coord;
                let classic = |g: &str| coord.group_state(g).is_some();
                let _ = tx.send(self.consumer.describe(&req, &topics, &classic));
            }
        }
    }

    /// Applies the cross-protocol rules to a classic request: `None` when it was answered
    /// here, else the (possibly rewritten) command for the classic coordinator.
    pub(super) fn consumer_rules(&mut self, cmd: Cmd) -> Option<Cmd> {
        let now = self.now();
        match cmd {
            Cmd::Join(v, client, req, tx) => {
                let id = req.group_id.0.as_str();
                if self.consumer.has_members(id) {
                    let mut r = join_error(
                        v,
                        req.member_id.as_str(),
                        ResponseError::InconsistentGroupProtocol,
                    );
                    r.member_id = req.member_id.clone();
                    let _ = tx.send(r);
                    return None;
                }
                // An empty consumer group turns classic (its offsets stay).
                self.consumer.delete_if_empty(id);
                Some(Cmd::Join(v, client, req, tx))
            }
            Cmd::Commit(v, mut req, tx) if self.consumer.contains(req.group_id.0.as_str()) => {
                let id = req.group_id.0.to_string();
                let epoch = req.generation_id_or_member_epoch;
                match self
                    .consumer
                    .validate_commit(now, &id, req.member_id.as_str(), epoch, v)
                {
                    Some(e) => {
                        let _ = tx.send(commit_failed(&req, e));
                        None
                    }
                    None => {
                        // Accepted: the classic side stores it as a simple commit.
                        req.generation_id_or_member_epoch = -1;
                        req.member_id = sb("");
                        req.group_instance_id = None;
                        Some(Cmd::Commit(v, req, tx))
                    }
                }
            }
            Cmd::Fetch(v, req, tx) if v >= 9 => {
                let mut resp = self.coord.offset_fetch(v, &req);
                for (g, rg) in resp.groups.iter_mut().zip(&req.groups) {
                    if let Some(e) = self.consumer.validate_fetch(
                        rg.group_id.0.as_str(),
                        rg.member_id.as_deref(),
                        rg.member_epoch,
                    ) {
                        g.error_code = e.code();
                        g.topics.clear();
                    }
                }
                let _ = tx.send(resp);
                None
            }
            Cmd::List(v, req, tx) => {
                let mut resp = self.coord.list_groups(v, &req);
                resp.groups
                    .retain(|g| !self.consumer.contains(g.group_id.0.as_str()));
                for (id, state) in self.consumer.list() {
                    if v >= 4
                        && !req.states_filter.is_empty()
                        && !req
                            .states_filter
                            .iter()
                            .any(|s| s.as_str().eq_ignore_ascii_case(state.name()))
                    {
                        continue;
                    }
                    if v >= 5
                        && !req.types_filter.is_empty()
                        && !req
                            .types_filter
                            .iter()
                            .any(|t| t.as_str().eq_ignore_ascii_case("consumer"))
                    {
                        continue;
                    }
                    let mut g = ListedGroup::default()
                        .with_group_id(GroupId(sb(&id)))
                        .with_protocol_type(sb("consumer"));
                    if v >= 4 {
                        g.group_state = sb(state.name());
                    }
                    if v >= 5 {
                        g.group_type = sb("consumer");
                    }
                    resp.groups.push(g);
                }
                let _ = tx.send(resp);
                None
            }
            Cmd::Describe(v, req, tx) => {
                let mut resp = self.coord.describe_groups(v, &req);
                for g in resp.groups.iter_mut() {
                    let id = g.group_id.0.to_string();
                    if self.consumer.contains(&id) {
                        // Kafka 4: DescribeGroups serves classic groups only.
                        *g = DescribedGroup::default()
                            .with_group_id(GroupId(sb(&id)))
                            .with_group_state(sb("Dead"))
                            .with_error_code(if v >= 6 {
                                ResponseError::GroupIdNotFound.code()
                            } else {
                                0
                            })
                            .with_authorized_operations(g.authorized_operations);
                        if v >= 6 {
                            g.error_message =
                                Some(sb(&format!("Group {id} is not a classic group.")));
                        }
                    }
                }
                let _ = tx.send(resp);
                None
            }
            Cmd::Delete(v, mut req, tx) => {
                let mut busy = Vec::new();
                req.groups_names.retain(|g| {
                    let busy_now = self.consumer.has_members(g.0.as_str());
                    if busy_now {
                        busy.push(g.clone());
                    }
                    !busy_now
                });
                let mut emptied = Vec::new();
                for g in &req.groups_names {
                    if self.consumer.delete_if_empty(g.0.as_str()) {
                        emptied.push(g.clone());
                    }
                }
                if busy.is_empty() && emptied.is_empty() {
                    return Some(Cmd::Delete(v, req, tx));
                }
                // Answer through a relay so the classic part still waits for its fsync.
                let (inner_tx, inner_rx) = oneshot::channel();
                tokio::spawn(async move {
                    let Ok(mut resp) = inner_rx.await else { return };
                    let resp: &mut kafka_protocol::messages::DeleteGroupsResponse = &mut resp;
                    for r in resp.results.iter_mut() {
                        // A consumer group with no offsets had no classic side: deleted.
                        if emptied.contains(&r.group_id)
                            && r.error_code == ResponseError::GroupIdNotFound.code()
                        {
                            r.error_code = 0;
                        }
                    }
                    for g in busy {
                        resp.results.push(
                            kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                                .with_group_id(g)
                                .with_error_code(ResponseError::NonEmptyGroup.code()),
                        );
                    }
                    let _ = tx.send(std::mem::take(resp));
                });
                Some(Cmd::Delete(v, req, inner_tx))
            }
            other => Some(other),
        }
    }
}
