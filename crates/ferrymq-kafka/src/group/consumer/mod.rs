//! KIP-848, the "consumer" group protocol, as a sans-IO state machine: [`ConsumerGroups`]
//! owns every consumer-protocol group (group epoch, target assignment, members with their
//! epochs and reconciliation state) and is driven by ConsumerGroupHeartbeat requests, the
//! topic metadata ([`TopicImage`], an input) and `now` (milliseconds on the owner's
//! monotonic clock) through [`ConsumerGroups::tick`]. It never reads a clock or a file.
//!
//! It follows Kafka 4's `GroupMetadataManager.consumerGroupHeartbeat`:
//! - a member joins with epoch 0, a member id (client-made from v1, broker-made in v0) and
//!   its subscription; a join, a leave, a subscription or assignor change and a change in
//!   the metadata of subscribed topics bump the **group epoch**;
//! - when the group epoch is ahead of the **assignment epoch**, the group's assignor
//!   (`uniform` or `range`, the one most members ask for, else the first configured)
//!   computes the **target assignment** for all members at that epoch;
//! - each member reconciles towards its target on its own heartbeats
//!   ([`reconcile`](reconcile)): it first revokes what it must give up (it stays at its
//!   epoch, state UNREVOKED_PARTITIONS, until its heartbeat no longer lists them), then moves
//!   to the target epoch and gets the target partitions that nobody else still holds (state
//!   UNRELEASED_PARTITIONS until the previous owners released them). So a partition is never
//!   held by two members at once;
//! - leaving: epoch -1 (the member is removed) or -2 (a static member steps out and keeps
//!   its partitions until its session expires or it rejoins with the same instance id);
//! - timers: the session (`group.consumer.session.timeout.ms`, 45 s) and, while revoking,
//!   the member's rebalance timeout; a member past either is removed (fenced).
//!
//! Member state is kept in memory only (Kafka writes it to `__consumer_offsets`): after a
//! restart members get UNKNOWN_MEMBER_ID and rejoin; committed offsets are durable in the
//! classic coordinator's journal.

mod assignor;
mod describe;
mod reconcile;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as WireAssignment, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use regex::Regex;
use uuid::Uuid;

pub use assignor::{assign, Assignment, MemberSpec, ASSIGNORS};

use super::{ClientInfo, Millis};

/// Member epoch of a member leaving the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving temporarily.
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// Settings (Kafka's broker configs of the same meaning).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.assignors` (names from [`ASSIGNORS`]; the first is the default).
    pub assignors: Vec<String>,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// Kafka's `REGEX_BATCH_REFRESH_INTERVAL_MS` (10 s): the least time between two
    /// resolutions of a group's regex subscriptions.
    pub regex_refresh_min_interval_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            assignors: ASSIGNORS.iter().map(|s| s.to_string()).collect(),
            max_size: i32::MAX as usize,
            regex_refresh_min_interval_ms: 10_000,
        }
    }
}

/// The topics that exist, by name and by id, with their partition counts.
#[derive(Debug, Clone, Default)]
pub struct TopicImage {
    by_name: BTreeMap<String, (Uuid, i32)>,
    by_id: HashMap<Uuid, (String, i32)>,
}

impl TopicImage {
    /// An image of `(name, id, partitions)` triples.
    pub fn new(topics: impl IntoIterator<Item = (String, Uuid, i32)>) -> TopicImage {
        let mut img = TopicImage::default();
        for (name, id, n) in topics {
            img.by_id.insert(id, (name.clone(), n));
            img.by_name.insert(name, (id, n));
        }
        img
    }

    /// A topic's id and partition count.
    pub fn get(&self, name: &str) -> Option<(Uuid, i32)> {
        self.by_name.get(name).copied()
    }

    /// A topic's name, by id.
    pub fn name(&self, id: Uuid) -> Option<&str> {
        self.by_id.get(&id).map(|(n, _)| n.as_str())
    }
}

/// The state of a consumer group, named as Kafka names it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// A member's reconciliation state (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client: ClientInfo,
    epoch: i32,
    previous_epoch: i32,
    state: MemberState,
    topics: Vec<String>,
    regex: Option<(String, Regex)>,
    assignor: Option<String>,
    rebalance_timeout_ms: u64,
    /// Partitions the member holds and keeps.
    assigned: Assignment,
    /// Partitions the member holds but must give up.
    revoking: Assignment,
    session_deadline: Millis,
    revoke_deadline: Option<Millis>,
    /// The assignment changed since it was last sent.
    send_assignment: bool,
}

#[derive(Debug, Clone, Default)]
struct Group {
    epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    /// Which member holds each partition (assigned or still revoking).
    owners: HashMap<(Uuid, i32), String>,
    /// Signature of the subscribed topics' metadata the target was computed from.
    meta_sig: u64,
    /// The group's resolutions of its members' patterns, by pattern.
    regexes: BTreeMap<String, resolve::Resolved>,
    /// A regex refresh is scheduled ([`ConsumerGroups::resolve_regexes`] runs it).
    regex_refresh: bool,
}

impl Group {
    fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.assignment_epoch < self.epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.epoch != self.assignment_epoch && m.epoch != LEAVE_STATIC_EPOCH
                || m.state != MemberState::Stable
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Removes a member, releasing what it holds; bumps the group epoch.
    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.owners.retain(|_, o| o != id);
            self.target.remove(id);
            self.epoch += 1;
            self.forget_unused_regexes();
        }
    }

    /// The subscribed topics (id → partitions) and a signature of them.
    fn subscribed(&self, topics: &TopicImage) -> (BTreeMap<Uuid, i32>, u64) {
        let mut out = BTreeMap::new();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (name, &(id, n)) in &topics.by_name {
            if self
                .members
                .values()
                .any(|m| resolve::member_subscribes(&self.regexes, m, name))
            {
                out.insert(id, n);
                (name, id, n).hash(&mut h);
            }
        }
        (out, h.finish())
    }

    /// The assignor most members ask for (ties: configuration order), else the default.
    fn pick_assignor(&self, config: &ConsumerConfig) -> String {
        let mut best: Option<(usize, usize)> = None;
        for (i, name) in config.assignors.iter().enumerate() {
            let n = self
                .members
                .values()
                .filter(|m| m.assignor.as_deref() == Some(name))
                .count();
            if n > 0 && best.map_or(true, |(bn, _)| n > bn) {
                best = Some((n, i));
            }
        }
        let i = best.map_or(0, |(_, i)| i);
        config
            .assignors
            .get(i)
            .cloned()
            .unwrap_or_else(|| "uniform".into())
    }

    /// Recomputes the target assignment if the group epoch moved on.
    /// `changed`: the request changed membership or subscriptions (one bump for all).
    fn refresh_target(&mut self, config: &ConsumerConfig, topics: &TopicImage, changed: bool) {
        let (parts, sig) = self.subscribed(topics);
        let meta_changed = sig != self.meta_sig;
        self.meta_sig = sig;
        if changed || (meta_changed && !self.members.is_empty()) {
            self.epoch += 1;
        }
        if self.epoch <= self.assignment_epoch {
            return;
        }
        self.assignor = self.pick_assignor(config);
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .iter()
            .map(|(id, m)| {
                let topics: BTreeSet<Uuid> = topics
                    .by_name
                    .iter()
                    .filter(|(name, _)| resolve::member_subscribes(&self.regexes, m, name))
                    .map(|(_, &(id, _))| id)
                    .collect();
                let previous = self.target.get(id).cloned().unwrap_or_default();
                (id.clone(), MemberSpec { topics, previous })
            })
            .collect();
        self.target = assign(&self.assignor, &specs, &parts);
        self.assignment_epoch = self.epoch;
    }
}

/// The owner of all consumer-protocol groups.
pub struct ConsumerGroups {
    config: ConsumerConfig,
    /// Per-group configs (DescribeConfigs / IncrementalAlterConfigs on GROUP resources):
    /// `consumer.session.timeout.ms` and `consumer.heartbeat.interval.ms` by group id.
    group_configs: HashMap<String, GroupOverrides>,
    groups: HashMap<String, Group>,
    rng: u64,
}

/// A group's own `consumer.session.timeout.ms` / `consumer.heartbeat.interval.ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupOverrides {
    pub session_timeout_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<i32>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn hb_error(e: ResponseError, msg: &str) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(e.code())
        .with_error_message(Some(sb(msg)))
}

fn to_assignment(
    tps: &[kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions],
) -> Assignment {
    let mut a = Assignment::new();
    for tp in tps {
        a.entry(tp.topic_id)
            .or_default()
            .extend(tp.partitions.iter().copied());
    }
    a.retain(|_, ps| !ps.is_empty());
    a
}

fn to_wire(a: &Assignment) -> WireAssignment {
    WireAssignment::default().with_topic_partitions(
        a.iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic_id(*t)
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

/// How a group id stands on the classic side, for the cross-protocol rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicSide {
    /// No classic group of that id, or one with only committed offsets (converted).
    None,
    /// A classic group with members.
    Active,
}

impl ConsumerGroups {
    pub fn new(config: ConsumerConfig, seed: u64) -> ConsumerGroups {
        ConsumerGroups {
            config,
            group_configs: HashMap::new(),
            groups: HashMap::new(),
            rng: seed | 1,
        }
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Replaces the per-group configs (they apply from each member's next heartbeat).
    pub fn set_group_configs(&mut self, configs: HashMap<String, GroupOverrides>) {
        self.group_configs = configs;
    }

    /// The settings of `group`: the global ones under its own configs.
    fn config_for(&self, group: &str) -> ConsumerConfig {
        let mut c = self.config.clone();
        if let Some(o) = self.group_configs.get(group) {
            c.session_timeout_ms = o.session_timeout_ms.unwrap_or(c.session_timeout_ms);
            c.heartbeat_interval_ms = o.heartbeat_interval_ms.unwrap_or(c.heartbeat_interval_ms);
        }
        c
    }

    /// Whether `group` is a consumer-protocol group.
    pub fn contains(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Whether `group` is a consumer-protocol group with members.
    pub fn has_members(&self, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Whether a member of `group` subscribes to `topic` (by name or regex).
    pub fn subscribes(&self, group: &str, topic: &str) -> bool {
        self.groups.get(group).is_some_and(|g| {
            g.members
                .values()
                .any(|m| resolve::member_subscribes(&g.regexes, m, topic))
        })
    }

    /// Forgets an empty group (DeleteGroups); false if it has members or does not exist.
    pub fn delete_if_empty(&mut self, group: &str) -> bool {
        if self.groups.get(group).is_some_and(|g| g.members.is_empty()) {
            self.groups.remove(group);
            true
        } else {
            false
        }
    }

    /// The state of a group.
    pub fn state(&self, group: &str) -> Option<ConsumerGroupState> {
        self.groups.get(group).map(|g| g.state())
    }

    /// The group epoch.
    pub fn group_epoch(&self, group: &str) -> Option<i32> {
        self.groups.get(group).map(|g| g.epoch)
    }

    /// Ids of every consumer group (for ListGroups), with their states.
    pub fn list(&self) -> Vec<(String, ConsumerGroupState)> {
        let mut v: Vec<_> = self
            .groups
            .iter()
            .map(|(k, g)| (k.clone(), g.state()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The partitions a member holds (assigned and not yet revoked), for tests and tools.
    pub fn held(&self, group: &str, member: &str) -> Option<Assignment> {
        let m = self.groups.get(group)?.members.get(member)?;
        let mut a = m.assigned.clone();
        for (t, ps) in &m.revoking {
            a.entry(*t).or_default().extend(ps);
        }
        Some(a)
    }

    fn new_member_id(&mut self) -> String {
        let mut next = || {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        };
        let (a, b) = (next(), next());
        Uuid::from_u64_pair(a, b).simple().to_string()
    }

    /// Validates an OffsetCommit's member id and epoch against a consumer group (Kafka's
    /// `ConsumerGroup.validateOffsetCommit`); `None` means accepted.
    pub fn validate_commit(
        &mut self,
        now: Millis,
        group: &str,
        member_id: &str,
        epoch: i32,
        version: i16,
    ) -> Option<ResponseError> {
        let session = self.config_for(group).session_timeout_ms;
        let g = self.groups.get_mut(group)?;
        if epoch < 0 && g.members.is_empty() {
            return None;
        }
        let Some(m) = g.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if version < 9 {
            return Some(ResponseError::UnsupportedVersion);
        }
        if epoch != m.epoch {
            return Some(ResponseError::StaleMemberEpoch);
        }
        m.session_deadline = now + session;
        None
    }

    /// Validates an OffsetFetch's member id and epoch (v9+; epoch -1 or no member id
    /// skips the check).
    pub fn validate_fetch(
        &self,
        group: &str,
        member_id: Option<&str>,
        epoch: i32,
    ) -> Option<ResponseError> {
        let g = self.groups.get(group)?;
        let id = member_id.filter(|id| !id.is_empty())?;
        if epoch < 0 {
            return None;
        }
        match g.members.get(id) {
            None => Some(ResponseError::UnknownMemberId),
            Some(m) if m.epoch != epoch => Some(ResponseError::StaleMemberEpoch),
            Some(_) => None,
        }
    }

    /// ConsumerGroupHeartbeat (v0/v1).
    pub fn heartbeat(
        &mut self,
        now: Millis,
        version: i16,
        client: &ClientInfo,
        r: &ConsumerGroupHeartbeatRequest,
        topics: &TopicImage,
        classic: ClassicSide,
    ) -> ConsumerGroupHeartbeatResponse {
        if let Err((e, msg)) = self.validate(version, r) {
            return hb_error(e, &msg);
        }
        let group_id = r.group_id.0.as_str();
        let epoch = r.member_epoch;
        if classic == ClassicSide::Active && !self.groups.contains_key(group_id) {
            return hb_error(
                ResponseError::GroupIdNotFound,
                &format!("Group {group_id} is not a consumer group."),
            );
        }
        if epoch == LEAVE_EPOCH || epoch == LEAVE_STATIC_EPOCH {
            return self.leave(now, r);
        }
        if epoch != 0 && !self.groups.contains_key(group_id) {
            return hb_error(
                ResponseError::GroupIdNotFound,
                &format!("Group {group_id} not found."),
            );
        }
        let generated = if r.member_id.is_empty() {
            Some(self.new_member_id())
        } else {
            None
        };
        let config = self.config_for(group_id);
        let g = self.groups.entry(group_id.to_owned()).or_default();
        let member_id = generated.unwrap_or_else(|| r.member_id.to_string());
        let instance = r.instance_id.as_ref().map(|s| s.to_string());
        let owned = r.topic_partitions.as_ref().map(|t| to_assignment(t));
        let mut bump = false;

        if epoch == 0 {
            // A static member taking over its instance's slot.
            let previous = instance.as_ref().and_then(|inst| {
                g.members
                    .iter()
                    .find(|(id, m)| m.instance_id.as_ref() == Some(inst) && **id != member_id)
                    .map(|(id, m)| (id.clone(), m.epoch))
            });
            if let Some((old_id, old_epoch)) = previous {
                if old_epoch != LEAVE_STATIC_EPOCH {
                    return hb_error(
                        ResponseError::UnreleasedInstanceId,
                        &format!(
                            "Static member {old_id} with instance id {} is not released yet.",
                            instance.as_deref().unwrap_or_default()
                        ),
                    );
                }
                let mut m = g.members.remove(&old_id).expect("found");
                m.epoch = m.previous_epoch.max(0);
                m.send_assignment = true;
                for o in g.owners.values_mut() {
                    if *o == old_id {
                        o.clone_from(&member_id);
                    }
                }
                if let Some(t) = g.target.remove(&old_id) {
                    g.target.insert(member_id.clone(), t);
                }
                g.members.insert(member_id.clone(), m);
            } else if let Some(m) = g.members.get_mut(&member_id) {
                // An existing member rejoining from scratch gives up what it held.
                m.epoch = 0;
                m.assigned.clear();
                m.revoking.clear();
                m.state = MemberState::Stable;
                m.send_assignment = true;
                g.owners.retain(|_, o| *o != member_id);
                bump = true;
            } else {
                if g.members.len() >= config.max_size {
                    return hb_error(
                        ResponseError::GroupMaxSizeReached,
                        &format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            config.max_size
                        ),
                    );
                }
                g.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: instance.clone(),
                        rack_id: None,
                        client: client.clone(),
                        epoch: 0,
                        previous_epoch: 0,
                        state: MemberState::Stable,
                        topics: Vec::new(),
                        regex: None,
                        assignor: None,
                        rebalance_timeout_ms: 0,
                        assigned: Assignment::new(),
                        revoking: Assignment::new(),
                        session_deadline: now,
                        revoke_deadline: None,
                        send_assignment: true,
                    },
                );
                bump = true;
            }
        }
        let Some(m) = g.members.get_mut(&member_id) else {
            return hb_error(
                ResponseError::UnknownMemberId,
                &format!("Member {member_id} is not a member of group {group_id}."),
            );
        };
        if epoch > 0 {
            // Clients send the instance id in full requests only (librdkafka: the first
            // one); a heartbeat without it is the member's own (Kafka finds the member by
            // its id then). Only a different instance id is fenced.
            if instance.is_some() && m.instance_id != instance {
                return hb_error(ResponseError::FencedInstanceId, "instance id mismatch");
            }
            let lost_response = epoch == m.previous_epoch
                && owned.as_ref().map_or(true, |o| {
                    o.iter()
                        .all(|(t, ps)| m.assigned.get(t).is_some_and(|a| ps.is_subset(a)))
                });
            if epoch > m.epoch || (epoch < m.epoch && !lost_response) {
                return hb_error(
                    ResponseError::FencedMemberEpoch,
                    &format!(
                        "The member epoch {epoch} is fenced; the current epoch is {}.",
                        m.epoch
                    ),
                );
            }
            if epoch < m.epoch {
                // The member missed our last answer: send the assignment again.
                m.send_assignment = true;
            }
        }
        // Apply what the request (re)states.
        let old_regex = m.regex.as_ref().map(|(p, _)| p.clone());
        m.session_deadline = now + config.session_timeout_ms;
        m.client = client.clone();
        if r.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = r.rebalance_timeout_ms as u64;
        }
        if let Some(rack) = &r.rack_id {
            m.rack_id = Some(rack.to_string());
        }
        if let Some(names) = &r.subscribed_topic_names {
            let mut names: Vec<String> = names.iter().map(|n| n.0.to_string()).collect();
            names.sort();
            names.dedup();
            if names != m.topics {
                m.topics = names;
                bump = true;
            }
        }
        if let Some(re) = &r.subscribed_topic_regex {
            let re = re.as_str();
            if m.regex.as_ref().map(|(s, _)| s.as_str()) != Some(re) {
                m.regex = if re.is_empty() {
                    None
                } else {
                    Some((
                        re.to_owned(),
                        Regex::new(&format!("^(?:{re})$")).expect("validated"),
                    ))
                };
                bump = true;
            }
        }
        if let Some(a) = &r.server_assignor {
            let a = (!a.is_empty()).then(|| a.to_string());
            if a != m.assignor {
                m.assignor = a;
                bump = true;
            }
        }
        let new_regex = g.members[&member_id].regex.as_ref().map(|(p, _)| p.clone());
        bump |= g.maybe_update_regexes(
            old_regex.as_deref(),
            new_regex.as_deref(),
            now,
            topics.names_sig(),
            config.regex_refresh_min_interval_ms,
        );
        g.refresh_target(&config, topics, bump);
        let full = r.topic_partitions.is_some()
            && (r.subscribed_topic_names.is_some() || r.subscribed_topic_regex.is_some());
        reconcile::reconcile(g, &member_id, owned.as_ref(), now);
        let m = g.members.get_mut(&member_id).expect("member");
        let mut resp = ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(sb(&member_id)))
            .with_member_epoch(m.epoch)
            .with_heartbeat_interval_ms(config.heartbeat_interval_ms);
        if m.send_assignment || full || epoch == 0 {
            m.send_assignment = false;
            resp.assignment = Some(to_wire(&m.assigned));
        }
        resp
    }

    fn validate(
        &self,
        version: i16,
        r: &ConsumerGroupHeartbeatRequest,
    ) -> Result<(), (ResponseError, String)> {
        let bad = |m: &str| Err((ResponseError::InvalidRequest, m.to_owned()));
        if r.group_id.is_empty() {
            return bad("GroupId can't be empty.");
        }
        if r.instance_id.as_ref().is_some_and(|i| i.is_empty()) {
            return bad("InstanceId can't be empty.");
        }
        if r.rack_id.as_ref().is_some_and(|i| i.is_empty()) {
            return bad("RackId can't be empty.");
        }
        if version >= 1 && r.member_id.is_empty() {
            return bad("MemberId can't be empty.");
        }
        match r.member_epoch {
            0 => {
                if r.rebalance_timeout_ms == -1 {
                    return bad("RebalanceTimeoutMs must be provided in first request.");
                }
                if r.topic_partitions.as_ref().map_or(true, |t| !t.is_empty()) {
                    return bad("TopicPartitions must be empty when (re-)joining.");
                }
                if r.subscribed_topic_names.is_none() && r.subscribed_topic_regex.is_none() {
                    return bad("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
                }
            }
            e if e > 0 => {
                if r.member_id.is_empty() {
                    return bad("MemberId can't be empty.");
                }
            }
            LEAVE_EPOCH => {
                if r.member_id.is_empty() {
                    return bad("MemberId can't be empty.");
                }
            }
            LEAVE_STATIC_EPOCH => {
                if r.instance_id.is_none() {
                    return bad("InstanceId can't be null.");
                }
                if r.member_id.is_empty() {
                    return bad("MemberId can't be empty.");
                }
            }
            e => return bad(&format!("MemberEpoch is invalid: {e}.")),
        }
        if let Some(a) = &r.server_assignor {
            if !a.is_empty() && !self.config.assignors.iter().any(|n| n == a.as_str()) {
                return Err((
                    ResponseError::UnsupportedAssignor,
                    format!(
                        "ServerAssignor {} is not supported. Supported assignors: {}.",
                        a.as_str(),
                        self.config.assignors.join(", ")
                    ),
                ));
            }
        }
        if let Some(re) = &r.subscribed_topic_regex {
            if !re.is_empty() {
                if let Err(e) = Regex::new(re.as_str()) {
                    return Err((
                        ResponseError::InvalidRegularExpression,
                        format!(
                            "SubscribedTopicRegex `{}` is not a valid regular expression: {e}.",
                            re.as_str()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn leave(
        &mut self,
        now: Millis,
        r: &ConsumerGroupHeartbeatRequest,
    ) -> ConsumerGroupHeartbeatResponse {
        let group_id = r.group_id.0.as_str();
        let member_id = r.member_id.as_str();
        let session = self.config_for(group_id).session_timeout_ms;
        let unknown = || {
            hb_error(
                ResponseError::UnknownMemberId,
                &format!("Member {member_id} is not a member of group {group_id}."),
            )
        };
        let Some(g) = self.groups.get_mut(group_id) else {
            return hb_error(
                ResponseError::GroupIdNotFound,
                &format!("Group {group_id} not found."),
            );
        };
        let Some(m) = g.members.get_mut(member_id) else {
            return unknown();
        };
        let resp = ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(sb(member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(0);
        if r.member_epoch == LEAVE_STATIC_EPOCH {
            if m.instance_id.as_deref() != r.instance_id.as_deref() {
                return hb_error(ResponseError::FencedInstanceId, "instance id mismatch");
            }
            // Keeps its partitions until it comes back or its session expires.
            if m.epoch != LEAVE_STATIC_EPOCH {
                m.previous_epoch = m.epoch;
            }
            m.epoch = LEAVE_STATIC_EPOCH;
            m.session_deadline = now + session;
            m.revoke_deadline = None;
        } else {
            g.remove(member_id);
        }
        resp
    }

    /// The earliest session or rebalance deadline.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.groups
            .values()
            .flat_map(|g| g.members.values())
            .flat_map(|m| [Some(m.session_deadline), m.revoke_deadline])
            .flatten()
            .min()
    }

    /// Removes members whose session or rebalance timeout passed; returns `(group,
    /// member)` pairs removed.
    pub fn tick(&mut self, now: Millis) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (gid, g) in &mut self.groups {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    m.session_deadline <= now || m.revoke_deadline.is_some_and(|d| d <= now)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                g.remove(&id);
                gone.push((gid.clone(), id));
            }
        }
        gone
    }
}
