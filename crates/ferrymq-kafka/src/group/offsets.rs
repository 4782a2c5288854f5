//! OffsetCommit and OffsetFetch: Kafka's `handleCommitOffsets` / `handleFetchOffsets` on the
//! coordinator's in-memory offsets. Accepted commits are applied at once and returned as
//! [`OffsetWrite`]s; the owner must make them durable before sending the response.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};

use std::collections::BTreeSet;

use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

use super::{sb, validate_member, Coordinator, Group, GroupState, Millis};

/// Topics the members of a consumer group subscribe to, from their ConsumerProtocol
/// subscriptions for the selected protocol; `None` if one cannot be read (Kafka then keeps
/// every offset).
pub(super) fn subscribed_topics(g: &Group) -> Option<BTreeSet<String>> {
    let protocol = g.protocol.as_deref()?;
    let mut topics = BTreeSet::new();
    for m in g.members.values() {
        let mut buf = m.metadata(protocol);
        if buf.len() < 2 {
            return None;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]).clamp(0, 3);
        let _ = bytes::Buf::get_i16(&mut buf);
        let s = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
        topics.extend(s.topics.iter().map(|t| t.as_str().to_owned()));
    }
    Some(topics)
}

/// A committed offset as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Wall-clock time of the commit, milliseconds since the Unix epoch.
    pub commit_timestamp_ms: i64,
}

/// One accepted commit, to be journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetWrite {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Committed,
}

/// An offset removed by [`Coordinator::expire_offsets`], to be journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// One partition's answer in an OffsetFetch, before it is shaped for the version.
struct Fetched {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

impl Coordinator {
    /// Puts back an offset found in the journal on start.
    pub fn restore_offset(&mut self, group: &str, topic: &str, partition: i32, c: Committed) {
        self.groups
            .entry(group.to_owned())
            .or_insert_with(Group::new)
            .offsets
            .insert((topic.to_owned(), partition), c);
    }

    /// Whether an OffsetCommit must wait: its member is in the group's current generation,
    /// the group waits for the leader's assignment (CompletingRebalance) and the member's
    /// own SyncGroup is waiting for it. Kafka reads a connection's requests one at a time
    /// (the connection is muted while a request is in the works), so a commit a client
    /// pipelines behind its SyncGroup is only read once the SyncGroup is answered and meets
    /// a Stable group; answered at once here it would get REBALANCE_IN_PROGRESS (librdkafka's
    /// cooperative-sticky members commit from their revoke callback while their SyncGroup
    /// is in flight, e.g. when they close). The owner holds such a commit until this turns
    /// false (the leader synced, a new rebalance began or the member was removed) and then
    /// calls [`Coordinator::offset_commit`], which judges it then. A commit of a member
    /// with no SyncGroup in flight (the leader before it assigns, a follower between its
    /// JoinGroup answer and its SyncGroup) is answered at once, REBALANCE_IN_PROGRESS as
    /// Kafka answers it: holding it could wait on a SyncGroup that never comes (a leader
    /// that closes in the middle of a rebalance drops its assignment duty, and its close
    /// waits for that commit).
    pub fn commit_waits_for_sync(&self, r: &OffsetCommitRequest) -> bool {
        self.groups.get(r.group_id.0.as_str()).is_some_and(|g| {
            g.state == GroupState::CompletingRebalance
                && g.generation == r.generation_id_or_member_epoch
                && g.members
                    .get(r.member_id.as_str())
                    .is_some_and(|m| m.awaiting_sync.is_some())
        })
    }

    /// OffsetCommit. `topic_exists(name, partition)` tells which partitions exist;
    /// `wall_ms` is the commit timestamp to record.
    pub fn offset_commit(
        &mut self,
        now: Millis,
        wall_ms: i64,
        version: i16,
        r: &OffsetCommitRequest,
        topic_exists: &dyn Fn(&str, i32) -> bool,
    ) -> (OffsetCommitResponse, Vec<OffsetWrite>) {
        let group_id = r.group_id.0.as_str();
        let member_id = r.member_id.as_str();
        let generation = r.generation_id_or_member_epoch;
        let instance = r.group_instance_id.as_deref();
        // The group-level verdict (Kafka's doCommitOffsets), applied to every partition that
        // exists.
        let group_error = match self.groups.get_mut(group_id) {
            None if generation < 0 => {
                self.groups.insert(group_id.to_owned(), Group::new());
                None
            }
            // v9+ names the problem; older versions keep Kafka's old answer.
            None if version >= 9 => Some(ResponseError::GroupIdNotFound),
            None => Some(ResponseError::IllegalGeneration),
            Some(g) if g.state == GroupState::Dead => Some(ResponseError::CoordinatorNotAvailable),
            // "Simple consumer" commits (kcat, kafka-python without group management).
            Some(g) if generation < 0 && g.state == GroupState::Empty => None,
            Some(g) => match validate_member(g, member_id, instance, Some(generation)) {
                Some(e) => Some(e),
                None if g.state == GroupState::CompletingRebalance => {
                    Some(ResponseError::RebalanceInProgress)
                }
                None => {
                    if let Some(m) = g.members.get_mut(member_id) {
                        m.last_heartbeat = now;
                    }
                    None
                }
            },
        };
        let max_meta = self.config.max_metadata_bytes;
        let mut writes = Vec::new();
        let mut topics = Vec::with_capacity(r.topics.len());
        for t in &r.topics {
            let name = t.name.0.as_str();
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let e = if !topic_exists(name, p.partition_index) {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if let Some(e) = group_error {
                    Some(e)
                } else if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > max_meta)
                {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    let committed = Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_owned()),
                        commit_timestamp_ms: wall_ms,
                    };
                    if let Some(g) = self.groups.get_mut(group_id) {
                        g.offsets
                            .insert((name.to_owned(), p.partition_index), committed.clone());
                    }
                    writes.push(OffsetWrite {
                        group: group_id.to_owned(),
                        topic: name.to_owned(),
                        partition: p.partition_index,
                        committed,
                    });
                    None
                };
                parts.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e.map_or(0, |e| e.code())),
                );
            }
            topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(parts),
            );
        }
        (OffsetCommitResponse::default().with_topics(topics), writes)
    }

    fn fetch_group(
        &self,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<Fetched>)> {
        let g = self.groups.get(group);
        let get = |t: &str, p: i32| {
            let c = g.and_then(|g| g.offsets.get(&(t.to_owned(), p)));
            Fetched {
                partition: p,
                offset: c.map_or(-1, |c| c.offset),
                leader_epoch: c.map_or(-1, |c| c.leader_epoch),
                metadata: c.and_then(|c| c.metadata.clone()).unwrap_or_default(),
            }
        };
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, ps)| {
                    let f = ps.into_iter().map(|p| get(&t, p)).collect();
                    (t, f)
                })
                .collect(),
            None => {
                // Every partition the group has an offset for, grouped by topic.
                let mut out: Vec<(String, Vec<Fetched>)> = Vec::new();
                if let Some(g) = g {
                    for (t, p) in g.offsets.keys() {
                        if out.last().map(|(n, _)| n) != Some(t) {
                            out.push((t.clone(), Vec::new()));
                        }
                        out.last_mut().expect("pushed").1.push(get(t, *p));
                    }
                }
                out
            }
        }
    }

    /// KIP-447: the group check of a TxnOffsetCommit (v3+ carries the consumer's
    /// generation, member id and instance id; older versions send -1, "" and none, which
    /// always pass). Kafka's `validateOffsetCommit` for a transactional commit: an unknown
    /// group accepts only generation -1 (else ILLEGAL_GENERATION); an Empty group accepts
    /// generation -1; otherwise a named member must be current (FENCED_INSTANCE_ID,
    /// UNKNOWN_MEMBER_ID) and of the current generation (ILLEGAL_GENERATION). Unlike
    /// OffsetCommit, a rebalance in progress does not refuse it.
    pub fn validate_txn_offset_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        match self.groups.get(group_id) {
            None if generation < 0 => None,
            None => Some(ResponseError::IllegalGeneration),
            Some(g) if g.state == GroupState::Dead => Some(ResponseError::CoordinatorNotAvailable),
            Some(g) if generation < 0 && g.state == GroupState::Empty => None,
            Some(g) if generation >= 0 || !member_id.is_empty() || instance.is_some() => {
                validate_member(g, member_id, instance, Some(generation))
            }
            Some(_) => None,
        }
    }

    /// OffsetFetch (v1–v7 one group, v8+ several). No stored offset → -1; topics null →
    /// every partition with a stored offset.
    pub fn offset_fetch(&self, version: i16, r: &OffsetFetchRequest) -> OffsetFetchResponse {
        let mut resp = OffsetFetchResponse::default();
        if version >= 8 {
            for g in &r.groups {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                        .collect()
                });
                let fetched = self.fetch_group(g.group_id.0.as_str(), topics);
                resp.groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_topics(
                            fetched
                                .into_iter()
                                .map(|(t, ps)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(TopicName(sb(&t)))
                                        .with_partitions(
                                            ps.into_iter()
                                                .map(|f| {
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(f.partition)
                                                        .with_committed_offset(f.offset)
                                                        .with_committed_leader_epoch(f.leader_epoch)
                                                        .with_metadata(Some(sb(&f.metadata)))
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        ),
                );
            }
            return resp;
        }
        let topics = r.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                .collect()
        });
        let fetched = self.fetch_group(r.group_id.0.as_str(), topics);
        resp.topics = fetched
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(sb(&t)))
                    .with_partitions(
                        ps.into_iter()
                            .map(|f| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(f.partition)
                                    .with_committed_offset(f.offset)
                                    .with_committed_leader_epoch(if version >= 5 {
                                        f.leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(Some(sb(&f.metadata)))
                            })
                            .collect(),
                    )
            })
            .collect();
        resp
    }

    /// Kafka's offsets cleanup (`GroupMetadata.removeExpiredOffsets`, KIP-211), run every
    /// `offsets.retention.check.interval.ms`: offsets older than `offsets.retention.minutes`
    /// go, counted
    /// - for a group without members (Empty) from when it became Empty (from the commit
    ///   when that is unknown: a group restored from disk);
    /// - for a Stable consumer group from the commit, only for topics no member subscribes
    ///   to (offsets of subscribed topics never expire);
    /// - for a group that never had members (standalone "simple consumer" commits) from the
    ///   commit;
    /// - never while a group rebalances.
    ///
    /// Empty groups left without offsets are removed. `now` is the coordinator's clock,
    /// `wall_ms` the wall clock commit timestamps are in.
    pub fn expire_offsets(&mut self, now: Millis, wall_ms: i64) -> Vec<ExpiredOffset> {
        let retention = self.config.offsets_retention_ms;
        let mut expired = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            let commit_age = |c: &Committed| wall_ms.saturating_sub(c.commit_timestamp_ms);
            let old = |age: i64| age >= 0 && age as u64 >= retention;
            let gone: Vec<(String, i32)> = match (g.state, g.protocol_type.as_deref()) {
                (GroupState::Empty, Some(_)) => {
                    let empty_age = g.empty_since.map(|t| now.saturating_sub(t) as i64);
                    g.offsets
                        .iter()
                        .filter(|(_, c)| old(empty_age.unwrap_or_else(|| commit_age(c))))
                        .map(|(k, _)| k.clone())
                        .collect()
                }
                (GroupState::Empty, None) => g
                    .offsets
                    .iter()
                    .filter(|(_, c)| old(commit_age(c)))
                    .map(|(k, _)| k.clone())
                    .collect(),
                (GroupState::Stable, Some("consumer")) => match subscribed_topics(g) {
                    Some(subscribed) => g
                        .offsets
                        .iter()
                        .filter(|((t, _), c)| !subscribed.contains(t) && old(commit_age(c)))
                        .map(|(k, _)| k.clone())
                        .collect(),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            };
            for (topic, partition) in gone {
                g.offsets.remove(&(topic.clone(), partition));
                expired.push(ExpiredOffset {
                    group: id.clone(),
                    topic,
                    partition,
                });
            }
        }
        // Kafka's cleanupGroupMetadata: an Empty group without offsets becomes Dead.
        self.groups.retain(|_, g| !g.is_idle());
        expired
    }

    /// Ids of every group (for admin listings).
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().map(|g| GroupId(sb(g))).collect()
    }
}
