//! Kafka's classic consumer-group protocol as a sans-IO state machine: the [`Coordinator`]
//! owns every group (members, generations, the rebalance state machine, committed offsets in
//! memory) and is driven by requests and by `now` (milliseconds from any fixed origin),
//! never reading a clock or touching a file. Requests that Kafka answers later (a JoinGroup
//! waits for the rebalance to complete, a follower's SyncGroup waits for the leader's
//! assignment) return `None` and their answer appears in [`Coordinator::take_replies`] after
//! a later request or [`Coordinator::tick`]. Offset commits are returned as
//! [`OffsetWrite`]s for the owner to make durable before it sends the response.
//!
//! It follows Kafka's `GroupCoordinator` / `GroupMetadata` (the pre-KIP-848 classic
//! protocol): states Empty → PreparingRebalance → CompletingRebalance → Stable (and Dead once
//! deleted), KIP-394 member-id handshake, KIP-345 static membership, the initial rebalance
//! delay, protocol selection by vote, and the error codes Kafka sends.

mod admin;
pub mod consumer;
mod liveness;
mod offset_delete;
mod offsets;
mod responses;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

pub use offsets::{Committed, ExpiredOffset, OffsetWrite};
pub use responses::{join_error, sync_error};
use responses::{join_success, sync_success};

/// Milliseconds on the owner's monotonic clock.
pub type Millis = u64;
/// The owner's handle for a request whose answer may come later.
pub type ReqId = u64;

/// Settings of the coordinator (Kafka's broker configs of the same meaning).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `offset.metadata.max.bytes`.
    pub max_metadata_bytes: usize,
    /// `group.max.size`: most members a group takes (JoinGroup beyond it gets
    /// GROUP_MAX_SIZE_REACHED).
    pub max_size: usize,
    /// `offsets.retention.minutes` in milliseconds (KIP-211, see [`Coordinator::expire_offsets`]).
    pub offsets_retention_ms: u64,
    /// `offsets.retention.check.interval.ms`: how often the owner calls
    /// [`Coordinator::expire_offsets`].
    pub offsets_retention_check_interval_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_metadata_bytes: 4096,
            max_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
        }
    }
}

/// Who sent a request (from the request header and the socket), shown by DescribeGroups.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// The state of one group, named as Kafka names it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name ListGroups and DescribeGroups report.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// An answer to a request that was deferred.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Join(ReqId, JoinGroupResponse),
    Sync(ReqId, SyncGroupResponse),
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client: ClientInfo,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete: (request, api version).
    awaiting_join: Option<(ReqId, i16)>,
    /// A SyncGroup waiting for the leader's assignment.
    awaiting_sync: Option<(ReqId, i16)>,
    last_heartbeat: Millis,
    /// Order of arrival, for choosing a leader like Kafka (first member joined).
    seq: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Kafka's `MemberMetadata.vote`: the member's most preferred protocol among candidates.
    fn vote<'a>(&'a self, candidates: &BTreeSet<&str>) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| candidates.contains(n))
    }
}

#[derive(Debug, Clone)]
struct InitialDelay {
    remaining_ms: u64,
    new_member_added: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, not yet joined → their deadline.
    pending: BTreeMap<String, Millis>,
    /// KIP-345: group.instance.id → member id.
    static_members: HashMap<String, String>,
    /// Members that still have to SyncGroup in this generation.
    pending_sync: BTreeSet<String>,
    /// When the current PreparingRebalance completes even if members are missing.
    join_deadline: Option<Millis>,
    initial_delay: Option<InitialDelay>,
    /// When members that have not synced yet are removed.
    sync_deadline: Option<Millis>,
    pub(crate) offsets: BTreeMap<(String, i32), Committed>,
    /// Since when the group has been Empty with no offsets (it is dropped after
    /// `EMPTY_GROUP_RETENTION_MS`, as Kafka's periodic cleanup does).
    idle_since: Option<Millis>,
    /// When the group last became Empty (Kafka's `currentStateTimestamp` as KIP-211 uses
    /// it); `None` for a group that never had members here (restored, or simple commits).
    empty_since: Option<Millis>,
}

/// How long an Empty group without offsets stays listed (Kafka removes such groups in its
/// offsets cleanup, every `offsets.retention.check.interval.ms` = 10 minutes).
pub const EMPTY_GROUP_RETENTION_MS: u64 = 600_000;

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_sync: BTreeSet::new(),
            join_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            offsets: BTreeMap::new(),
            idle_since: None,
            empty_since: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
    }

    fn has_member(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    /// `isStaticMemberFenced`: the instance id belongs to another member id.
    fn is_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|m| m != member_id)
    }

    /// Protocols every member supports (`None` without members).
    fn candidate_protocols(&self) -> Option<BTreeSet<&str>> {
        let mut set: Option<BTreeSet<&str>> = None;
        for m in self.members.values() {
            let mine: BTreeSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            set = Some(match set {
                None => mine,
                Some(s) => s.intersection(&mine).copied().collect(),
            });
        }
        set
    }

    /// `supportsProtocols`: whether a member with these protocols can be in the group: one
    /// of them must be supported by every current member (the joining member itself counted
    /// with the protocols it had, as Kafka does).
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        match self.candidate_protocols() {
            None => true,
            Some(candidates) => {
                self.protocol_type.as_deref() == Some(protocol_type)
                    && protocols
                        .iter()
                        .any(|(n, _)| candidates.contains(n.as_str()))
            }
        }
    }

    /// Kafka's `selectProtocol`: among the protocols all members support, the one most
    /// members prefer (ties go to the name first in order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols()?;
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(v) = m.vote(&candidates) {
                *votes.entry(v).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(p, _)| p.to_owned())
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn max_rebalance_timeout(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn members_in_join_order(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by_key(|m| m.seq);
        v
    }
}

/// The owner of all consumer groups.
pub struct Coordinator {
    config: GroupConfig,
    pub(crate) groups: HashMap<String, Group>,
    replies: Vec<Reply>,
    rng: u64,
    seq: u64,
}

impl Coordinator {
    /// An empty coordinator; `seed` makes generated member ids unique to this run.
    pub fn new(config: GroupConfig, seed: u64) -> Coordinator {
        Coordinator {
            config,
            groups: HashMap::new(),
            replies: Vec::new(),
            rng: seed,
            seq: 0,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Answers to deferred requests produced since the last call.
    pub fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }

    /// The state of a group, if it exists.
    pub fn group_state(&self, group: &str) -> Option<GroupState> {
        self.groups.get(group).map(|g| g.state)
    }

    /// The current generation of a group, if it exists.
    pub fn generation(&self, group: &str) -> Option<i32> {
        self.groups.get(group).map(|g| g.generation)
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A member id as Kafka makes them: `<client.id or group.instance.id>-<uuid>`.
    fn new_member_id(&mut self, prefix: &str) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            if prefix.is_empty() { "member" } else { prefix },
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    // ---------------------------------------------------------------- JoinGroup

    /// JoinGroup. `None`: the answer comes later as [`Reply::Join`] with `req`.
    pub fn join_group(
        &mut self,
        now: Millis,
        req: ReqId,
        version: i16,
        client: &ClientInfo,
        r: &JoinGroupRequest,
    ) -> Option<JoinGroupResponse> {
        let group_id = r.group_id.0.as_str();
        let member_id = r.member_id.as_str();
        let instance_id = r.group_instance_id.as_deref();
        let err = |e: ResponseError| Some(join_error(version, member_id, e));
        if group_id.is_empty() {
            return err(ResponseError::InvalidGroupId);
        }
        if r.session_timeout_ms < self.config.min_session_timeout_ms
            || r.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return err(ResponseError::InvalidSessionTimeout);
        }
        let protocols: Vec<(String, Bytes)> = r
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect();
        let protocol_type = r.protocol_type.as_str();
        let session = r.session_timeout_ms as u64;
        let rebalance = if r.rebalance_timeout_ms < 0 {
            session
        } else {
            r.rebalance_timeout_ms as u64
        };
        if !self.groups.contains_key(group_id) {
            if !member_id.is_empty() {
                return err(ResponseError::UnknownMemberId);
            }
            self.groups.insert(group_id.to_owned(), Group::new());
        }
        let group = &self.groups[group_id];
        if group.state == GroupState::Dead {
            return err(ResponseError::CoordinatorNotAvailable);
        }
        if !self.accept_joining_member(group_id, member_id) {
            // Kafka removes the refused member (a rejoining one is kicked out of the group).
            let group = self.groups.get_mut(group_id).expect("group exists");
            group.pending.remove(member_id);
            let replies = remove_member_answering(group, member_id);
            self.replies.extend(replies);
            self.try_complete_join(now, group_id);
            return Some(join_error(version, "", ResponseError::GroupMaxSizeReached));
        }
        let group = &self.groups[group_id];
        if !group.supports(protocol_type, &protocols) {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        let join = Join {
            req,
            version,
            client: client.clone(),
            instance_id: instance_id.map(str::to_owned),
            protocol_type: protocol_type.to_owned(),
            protocols,
            session,
            rebalance,
        };
        if member_id.is_empty() {
            self.join_unknown_member(now, group_id, join)
        } else {
            self.join_known_member(now, group_id, member_id, join)
        }
    }

    /// Kafka's `acceptJoiningMember` (`group.max.size`): an Empty group takes anyone; while
    /// preparing a rebalance a member already waiting is taken and others only while fewer
    /// than the maximum wait (so the last ones to rejoin an oversized group are refused);
    /// otherwise current members are taken and new ones while the group is not full.
    fn accept_joining_member(&self, group_id: &str, member_id: &str) -> bool {
        let group = &self.groups[group_id];
        let max = self.config.max_size;
        match group.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                group
                    .members
                    .get(member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || group
                        .members
                        .values()
                        .filter(|m| m.awaiting_join.is_some())
                        .count()
                        < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                group.has_member(member_id) || group.members.len() < max
            }
        }
    }

    fn join_unknown_member(
        &mut self,
        now: Millis,
        group_id: &str,
        j: Join,
    ) -> Option<JoinGroupResponse> {
        let prefix = j
            .instance_id
            .clone()
            .unwrap_or_else(|| j.client.client_id.clone());
        let new_id = self.new_member_id(&prefix);
        let group = self.groups.get_mut(group_id).expect("group exists");
        if let Some(instance) = &j.instance_id {
            if let Some(old_id) = group.static_members.get(instance).cloned() {
                return self.replace_static_member(now, group_id, &old_id, new_id, j);
            }
            // A new static member joins at once (no member-id round trip).
            self.add_member_and_rebalance(now, group_id, new_id, j);
            return None;
        }
        if j.version >= 4 {
            // KIP-394: hand out an id and make the client come back with it.
            group.pending.insert(new_id.clone(), now + j.session);
            return Some(join_error(
                j.version,
                &new_id,
                ResponseError::MemberIdRequired,
            ));
        }
        self.add_member_and_rebalance(now, group_id, new_id, j);
        None
    }

    fn join_known_member(
        &mut self,
        now: Millis,
        group_id: &str,
        member_id: &str,
        j: Join,
    ) -> Option<JoinGroupResponse> {
        let group = self.groups.get_mut(group_id).expect("group exists");
        if group.pending.remove(member_id).is_some() {
            self.add_member_and_rebalance(now, group_id, member_id.to_owned(), j);
            return None;
        }
        if group.is_fenced(j.instance_id.as_deref(), member_id) {
            return Some(join_error(
                j.version,
                member_id,
                ResponseError::FencedInstanceId,
            ));
        }
        let instance_unknown = j
            .instance_id
            .as_ref()
            .is_some_and(|i| !group.static_members.contains_key(i));
        if !group.has_member(member_id) || instance_unknown {
            return Some(join_error(
                j.version,
                member_id,
                ResponseError::UnknownMemberId,
            ));
        }
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(now, group_id, member_id, j);
                None
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let m = &group.members[member_id];
                let unchanged = m.protocols == j.protocols;
                let is_leader = group.leader.as_deref() == Some(member_id);
                if unchanged && (group.state == GroupState::CompletingRebalance || !is_leader) {
                    // A retried join (lost response) or a follower rejoining with the same
                    // metadata: answer with the current generation, no rebalance.
                    let m = group.members.get_mut(member_id).expect("member");
                    m.last_heartbeat = now;
                    let group = &self.groups[group_id];
                    Some(join_success(group, member_id, j.version, is_leader, false))
                } else {
                    self.update_member_and_rebalance(now, group_id, member_id, j);
                    None
                }
            }
            GroupState::Empty | GroupState::Dead => Some(join_error(
                j.version,
                member_id,
                ResponseError::UnknownMemberId,
            )),
        }
    }

    fn add_member_and_rebalance(&mut self, now: Millis, group_id: &str, id: String, j: Join) {
        self.seq += 1;
        let seq = self.seq;
        let group = self.groups.get_mut(group_id).expect("group exists");
        if let Some(instance) = &j.instance_id {
            group.static_members.insert(instance.clone(), id.clone());
        }
        if group.members.is_empty() {
            group.protocol_type = Some(j.protocol_type.clone());
        }
        if group.leader.is_none() {
            group.leader = Some(id.clone());
        }
        group.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: j.instance_id,
                client: j.client,
                session_timeout_ms: j.session,
                rebalance_timeout_ms: j.rebalance,
                protocols: j.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some((j.req, j.version)),
                awaiting_sync: None,
                last_heartbeat: now,
                seq,
            },
        );
        if let Some(d) = &mut group.initial_delay {
            d.new_member_added = true;
        }
        self.maybe_prepare_rebalance(now, group_id);
        self.try_complete_join(now, group_id);
    }

    fn update_member_and_rebalance(&mut self, now: Millis, group_id: &str, id: &str, j: Join) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let m = group.members.get_mut(id).expect("member exists");
        if let Some((old, v)) = m.awaiting_join.take() {
            // A second JoinGroup while the first still waits: the first is answered now.
            self.replies.push(Reply::Join(
                old,
                join_error(v, id, ResponseError::RebalanceInProgress),
            ));
        }
        m.protocols = j.protocols;
        m.session_timeout_ms = j.session;
        m.rebalance_timeout_ms = j.rebalance;
        m.client = j.client;
        m.awaiting_join = Some((j.req, j.version));
        m.last_heartbeat = now;
        self.maybe_prepare_rebalance(now, group_id);
        self.try_complete_join(now, group_id);
    }

    /// KIP-345: a static member came back with a new member id.
    fn replace_static_member(
        &mut self,
        now: Millis,
        group_id: &str,
        old_id: &str,
        new_id: String,
        j: Join,
    ) -> Option<JoinGroupResponse> {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let Some(mut m) = group.members.remove(old_id) else {
            group
                .static_members
                .remove(j.instance_id.as_deref().unwrap_or_default());
            self.add_member_and_rebalance(now, group_id, new_id, j);
            return None;
        };
        // The old incarnation's waiting requests are fenced.
        if let Some((r, v)) = m.awaiting_join.take() {
            self.replies.push(Reply::Join(
                r,
                join_error(v, old_id, ResponseError::FencedInstanceId),
            ));
        }
        if let Some((r, v)) = m.awaiting_sync.take() {
            self.replies.push(Reply::Sync(
                r,
                sync_error(v, ResponseError::FencedInstanceId),
            ));
        }
        let old_leader = group.leader.clone();
        m.id = new_id.clone();
        m.client = j.client.clone();
        m.session_timeout_ms = j.session;
        m.rebalance_timeout_ms = j.rebalance;
        m.protocols = j.protocols;
        m.last_heartbeat = now;
        group.members.insert(new_id.clone(), m);
        if let Some(i) = &j.instance_id {
            group.static_members.insert(i.clone(), new_id.clone());
        }
        if group.leader.as_deref() == Some(old_id) {
            group.leader = Some(new_id.clone());
        }
        if group.pending_sync.remove(old_id) {
            group.pending_sync.insert(new_id.clone());
        }
        match group.state {
            GroupState::Stable if group.select_protocol() == group.protocol => {
                // The selected protocol stays: no rebalance, the member keeps its assignment.
                let is_leader = group.leader.as_deref() == Some(new_id.as_str());
                if j.version >= 9 {
                    // KIP-814: the leader learns it leads but must not reassign.
                    Some(join_success(
                        group, &new_id, j.version, is_leader, is_leader,
                    ))
                } else {
                    // Older clients would reassign if told they lead: report the leader
                    // as it was before the replacement, so the new id never matches it.
                    let mut r = join_success(group, &new_id, j.version, false, false);
                    r.leader = sb(old_leader.as_deref().unwrap_or_default());
                    Some(r)
                }
            }
            GroupState::CompletingRebalance => {
                // The leader may already be assigning to the old member id: start over.
                group
                    .members
                    .get_mut(&new_id)
                    .expect("member")
                    .awaiting_join = Some((j.req, j.version));
                self.prepare_rebalance(now, group_id);
                self.try_complete_join(now, group_id);
                None
            }
            _ => {
                group
                    .members
                    .get_mut(&new_id)
                    .expect("member")
                    .awaiting_join = Some((j.req, j.version));
                self.maybe_prepare_rebalance(now, group_id);
                self.try_complete_join(now, group_id);
                None
            }
        }
    }

    fn maybe_prepare_rebalance(&mut self, now: Millis, group_id: &str) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        if matches!(
            group.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now, group_id);
        }
    }

    fn prepare_rebalance(&mut self, now: Millis, group_id: &str) {
        let delay = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("group exists");
        if group.state == GroupState::CompletingRebalance {
            // Assignments of the abandoned generation are void; waiting syncs learn it.
            for m in group.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some((r, v)) = m.awaiting_sync.take() {
                    self.replies.push(Reply::Sync(
                        r,
                        sync_error(v, ResponseError::RebalanceInProgress),
                    ));
                }
            }
        }
        group.pending_sync.clear();
        group.sync_deadline = None;
        let rebalance = group.max_rebalance_timeout();
        if group.state == GroupState::Empty {
            let first = delay.min(rebalance);
            group.initial_delay = Some(InitialDelay {
                remaining_ms: rebalance.saturating_sub(first),
                new_member_added: false,
            });
            group.join_deadline = Some(now + first);
        } else {
            group.initial_delay = None;
            group.join_deadline = Some(now + rebalance);
        }
        group.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase if every member has rejoined (not during the initial delay).
    fn try_complete_join(&mut self, now: Millis, group_id: &str) {
        let group = &self.groups[group_id];
        if group.state == GroupState::PreparingRebalance
            && group.initial_delay.is_none()
            && group.all_joined()
        {
            self.complete_join(now, group_id);
        }
    }

    /// Kafka's `onCompleteJoin`: members that did not rejoin are dropped, the next
    /// generation starts and every waiting JoinGroup is answered.
    fn complete_join(&mut self, now: Millis, group_id: &str) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        let gone: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            remove_member(group, &id);
        }
        group.join_deadline = None;
        group.initial_delay = None;
        group.generation += 1;
        if group.members.is_empty() {
            // Kafka keeps the protocol type of a group that empties (ListGroups shows it).
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            group.empty_since = Some(now);
            return;
        }
        let leader_ok = group
            .leader
            .as_ref()
            .and_then(|l| group.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_ok {
            group.leader = group
                .members_in_join_order()
                .into_iter()
                .find(|m| m.awaiting_join.is_some())
                .or_else(|| group.members_in_join_order().into_iter().next())
                .map(|m| m.id.clone());
        }
        group.protocol = group.select_protocol();
        group.state = GroupState::CompletingRebalance;
        let rebalance = group.max_rebalance_timeout();
        group.sync_deadline = Some(now + rebalance);
        group.pending_sync = group.members.keys().cloned().collect();
        let waiting: Vec<(String, ReqId, i16)> = group
            .members_in_join_order()
            .into_iter()
            .filter_map(|m| m.awaiting_join.map(|(r, v)| (m.id.clone(), r, v)))
            .collect();
        for (id, r, v) in waiting {
            let is_leader = group.leader.as_deref() == Some(id.as_str());
            let resp = join_success(group, &id, v, is_leader, false);
            let m = group.members.get_mut(&id).expect("member");
            m.awaiting_join = None;
            m.last_heartbeat = now;
            self.replies.push(Reply::Join(r, resp));
        }
    }

    // ---------------------------------------------------------------- SyncGroup

    /// SyncGroup. `None`: the answer comes later as [`Reply::Sync`] with `req`.
    pub fn sync_group(
        &mut self,
        now: Millis,
        req: ReqId,
        version: i16,
        r: &SyncGroupRequest,
    ) -> Option<SyncGroupResponse> {
        let member_id = r.member_id.as_str();
        let err = |e: ResponseError| Some(sync_error(version, e));
        if r.group_id.0.is_empty() {
            return err(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(r.group_id.0.as_str()) else {
            return err(ResponseError::UnknownMemberId);
        };
        if let Some(e) = validate_member(
            group,
            member_id,
            r.group_instance_id.as_deref(),
            Some(r.generation_id),
        ) {
            return err(e);
        }
        if r.protocol_type
            .as_ref()
            .is_some_and(|t| Some(t.as_str()) != group.protocol_type.as_deref())
            || r.protocol_name
                .as_ref()
                .is_some_and(|n| Some(n.as_str()) != group.protocol.as_deref())
        {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let m = group.members.get_mut(member_id).expect("validated");
                m.last_heartbeat = now;
                group.pending_sync.remove(member_id);
                let m = &group.members[member_id];
                Some(sync_success(group, version, m.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let m = group.members.get_mut(member_id).expect("validated");
                if let Some((old, v)) = m.awaiting_sync.replace((req, version)) {
                    self.replies.push(Reply::Sync(
                        old,
                        sync_error(v, ResponseError::RebalanceInProgress),
                    ));
                }
                m.last_heartbeat = now;
                group.pending_sync.remove(member_id);
                if group.leader.as_deref() == Some(member_id) {
                    let given: HashMap<&str, &Bytes> = r
                        .assignments
                        .iter()
                        .map(|a| (a.member_id.as_str(), &a.assignment))
                        .collect();
                    for m in group.members.values_mut() {
                        m.assignment = given
                            .get(m.id.as_str())
                            .map(|b| (*b).clone())
                            .unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    let waiting: Vec<(ReqId, i16, Bytes)> = group
                        .members
                        .values_mut()
                        .filter_map(|m| {
                            m.awaiting_sync
                                .take()
                                .map(|(r, v)| (r, v, m.assignment.clone()))
                        })
                        .collect();
                    for (r, v, a) in waiting {
                        let resp = sync_success(group, v, a);
                        self.replies.push(Reply::Sync(r, resp));
                    }
                    if group.pending_sync.is_empty() {
                        group.sync_deadline = None;
                    }
                }
                // The leader's own answer is among the replies just produced.
                None
            }
        }
    }
}

/// The parameters of a JoinGroup being applied.
struct Join {
    req: ReqId,
    version: i16,
    client: ClientInfo,
    instance_id: Option<String>,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session: u64,
    rebalance: u64,
}

/// Kafka's `validateCurrentMember`.
fn validate_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation: Option<i32>,
) -> Option<ResponseError> {
    if group.state == GroupState::Dead {
        Some(ResponseError::CoordinatorNotAvailable)
    } else if group.is_fenced(instance_id, member_id) {
        Some(ResponseError::FencedInstanceId)
    } else if !group.has_member(member_id)
        || instance_id.is_some_and(|i| !group.static_members.contains_key(i))
    {
        Some(ResponseError::UnknownMemberId)
    } else if generation.is_some_and(|g| g != group.generation) {
        Some(ResponseError::IllegalGeneration)
    } else {
        None
    }
}

/// Removes a member without answering anything.
fn remove_member(group: &mut Group, id: &str) {
    if let Some(m) = group.members.remove(id) {
        if let Some(i) = &m.instance_id {
            if group.static_members.get(i).map(String::as_str) == Some(id) {
                group.static_members.remove(i);
            }
        }
    }
    group.pending_sync.remove(id);
    if group.leader.as_deref() == Some(id) {
        group.leader = group.members_in_join_order().first().map(|m| m.id.clone());
    }
}

/// Removes a member; its waiting requests are answered with UNKNOWN_MEMBER_ID.
fn remove_member_answering(group: &mut Group, id: &str) -> Vec<Reply> {
    let mut replies = Vec::new();
    if let Some(m) = group.members.get_mut(id) {
        if let Some((r, v)) = m.awaiting_join.take() {
            replies.push(Reply::Join(
                r,
                join_error(v, id, ResponseError::UnknownMemberId),
            ));
        }
        if let Some((r, v)) = m.awaiting_sync.take() {
            replies.push(Reply::Sync(
                r,
                sync_error(v, ResponseError::UnknownMemberId),
            ));
        }
    }
    remove_member(group, id);
    replies
}
