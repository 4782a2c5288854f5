//! Transitions of the classic group protocol. Every response the harness receives is also
//! encoded at the version it was asked for, so a field set in a version that lacks it fails.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;

use super::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;
const DELAY: u64 = 100;

fn enc<T: Encodable>(version: i16, r: &T) {
    let mut buf = BytesMut::new();
    r.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("response does not encode at v{version}: {e}"));
}

fn gid(g: &str) -> GroupId {
    GroupId(sb(g))
}

/// What a deferrable request gave.
#[derive(Debug)]
enum Out<T> {
    Now(T),
    Later(ReqId),
}

impl<T: std::fmt::Debug> Out<T> {
    fn now(self) -> T {
        match self {
            Out::Now(t) => t,
            Out::Later(r) => panic!("expected an immediate answer, got deferred {r}"),
        }
    }
    fn later(self) -> ReqId {
        match self {
            Out::Later(r) => r,
            Out::Now(t) => panic!("expected a deferred answer, got {t:?}"),
        }
    }
}

struct H {
    c: Coordinator,
    now: Millis,
    next_req: ReqId,
    replies: Vec<Reply>,
}

struct JoinArgs<'a> {
    group: &'a str,
    member: &'a str,
    instance: Option<&'a str>,
    protocols: Vec<(&'a str, &'a [u8])>,
    version: i16,
    session: i32,
}

fn args<'a>(group: &'a str, member: &'a str) -> JoinArgs<'a> {
    JoinArgs {
        group,
        member,
        instance: None,
        protocols: vec![("range", b"m")],
        version: 7,
        session: SESSION,
    }
}

fn exists(topic: &str, p: i32) -> bool {
    topic == "t" && (0..6).contains(&p)
}

impl H {
    fn new() -> H {
        H {
            c: Coordinator::new(
                GroupConfig {
                    initial_rebalance_delay_ms: DELAY,
                    min_session_timeout_ms: 1000,
                    ..GroupConfig::default()
                },
                7,
            ),
            now: 1_000,
            next_req: 0,
            replies: Vec::new(),
        }
    }

    fn collect(&mut self) {
        for r in self.c.take_replies() {
            match &r {
                Reply::Join(_, j) => enc(9, j),
                Reply::Sync(_, s) => enc(5, s),
            }
            self.replies.push(r);
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.c.tick(self.now);
        self.collect();
    }

    fn join_with(&mut self, a: JoinArgs) -> Out<JoinGroupResponse> {
        self.next_req += 1;
        let req = JoinGroupRequest::default()
            .with_group_id(gid(a.group))
            .with_session_timeout_ms(a.session)
            .with_rebalance_timeout_ms(REBALANCE)
            .with_member_id(sb(a.member))
            .with_group_instance_id(a.instance.map(sb))
            .with_protocol_type(sb("consumer"))
            .with_protocols(
                a.protocols
                    .iter()
                    .map(|(n, m)| {
                        JoinGroupRequestProtocol::default()
                            .with_name(sb(n))
                            .with_metadata(Bytes::copy_from_slice(m))
                    })
                    .collect(),
            );
        let client = ClientInfo {
            client_id: "cli".into(),
            client_host: "/127.0.0.1".into(),
        };
        let out = self
            .c
            .join_group(self.now, self.next_req, a.version, &client, &req);
        self.collect();
        match out {
            Some(r) => {
                enc(a.version, &r);
                Out::Now(r)
            }
            None => Out::Later(self.next_req),
        }
    }

    fn join(&mut self, group: &str, member: &str) -> Out<JoinGroupResponse> {
        self.join_with(args(group, member))
    }

    /// KIP-394 handshake: returns the member id and the deferred join.
    fn join_new(&mut self, group: &str) -> (String, ReqId) {
        let r = self.join(group, "").now();
        assert_eq!(r.error_code, E::MemberIdRequired.code());
        let id = r.member_id.to_string();
        assert!(id.starts_with("cli-"), "{id}");
        let req = self.join(group, &id).later();
        (id, req)
    }

    fn join_reply(&mut self, req: ReqId) -> JoinGroupResponse {
        let i = self
            .replies
            .iter()
            .position(|r| matches!(r, Reply::Join(q, _) if *q == req))
            .unwrap_or_else(|| panic!("no join reply for {req}: {:?}", self.replies));
        match self.replies.remove(i) {
            Reply::Join(_, j) => j,
            _ => unreachable!(),
        }
    }

    fn sync_reply(&mut self, req: ReqId) -> SyncGroupResponse {
        let i = self
            .replies
            .iter()
            .position(|r| matches!(r, Reply::Sync(q, _) if *q == req))
            .unwrap_or_else(|| panic!("no sync reply for {req}: {:?}", self.replies));
        match self.replies.remove(i) {
            Reply::Sync(_, s) => s,
            _ => unreachable!(),
        }
    }

    fn has_reply(&self, req: ReqId) -> bool {
        self.replies.iter().any(|r| match r {
            Reply::Join(q, _) | Reply::Sync(q, _) => *q == req,
        })
    }

    fn sync(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> Out<SyncGroupResponse> {
        self.next_req += 1;
        let req = SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(sb(member))
            .with_protocol_type(Some(sb("consumer")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb(m))
                            .with_assignment(Bytes::copy_from_slice(a))
                    })
                    .collect(),
            );
        let out = self.c.sync_group(self.now, self.next_req, 5, &req);
        self.collect();
        match out {
            Some(r) => {
                enc(5, &r);
                Out::Now(r)
            }
            None => Out::Later(self.next_req),
        }
    }

    fn heartbeat_i(&mut self, group: &str, member: &str, gen: i32, instance: Option<&str>) -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(gen)
            .with_member_id(sb(member))
            .with_group_instance_id(instance.map(sb));
        let r = self.c.heartbeat(self.now, 4, &req);
        self.collect();
        enc(4, &r);
        r.error_code
    }

    fn heartbeat(&mut self, group: &str, member: &str, gen: i32) -> i16 {
        self.heartbeat_i(group, member, gen, None)
    }

    fn leave(&mut self, version: i16, group: &str, members: &[&str]) -> LeaveGroupResponse {
        let mut req = LeaveGroupRequest::default().with_group_id(gid(group));
        if version >= 3 {
            req.members = members
                .iter()
                .map(|m| MemberIdentity::default().with_member_id(sb(m)))
                .collect();
        } else {
            req.member_id = sb(members[0]);
        }
        let r = self.c.leave_group(self.now, version, &req);
        self.collect();
        enc(version, &r);
        r
    }

    fn commit(
        &mut self,
        group: &str,
        member: &str,
        gen: i32,
        offsets: &[(i32, i64)],
    ) -> (Vec<i16>, Vec<OffsetWrite>) {
        let req = OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(gen)
            .with_member_id(sb(member))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb("t")))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_metadata(Some(sb("meta")))
                        })
                        .collect(),
                )]);
        let (resp, writes) = self.c.offset_commit(self.now, 42, 8, &req, &exists);
        self.collect();
        enc(8, &resp);
        let codes = resp.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        (codes, writes)
    }

    fn fetch(&self, version: i16, group: &str, partitions: Option<&[i32]>) -> Vec<(i32, i64)> {
        let req = OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(partitions.map(|ps| {
                vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(sb("t")))
                    .with_partition_indexes(ps.to_vec())]
            }));
        let r = self.c.offset_fetch(version, &req);
        enc(version, &r);
        assert_eq!(r.error_code, 0);
        r.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.committed_offset))
            })
            .collect()
    }

    fn state(&self, group: &str) -> Option<GroupState> {
        self.c.group_state(group)
    }

    /// Brings up a stable group of `n` members; returns their ids (leader first) and the
    /// generation.
    fn stable_group(&mut self, group: &str, n: usize) -> (Vec<String>, i32) {
        let joins: Vec<(String, ReqId)> = (0..n).map(|_| self.join_new(group)).collect();
        // Members after the first extend the initial delay once.
        self.advance(DELAY);
        if n > 1 {
            self.advance(DELAY);
        }
        let mut leader = None;
        let mut gen = 0;
        for (id, req) in &joins {
            let r = self.join_reply(*req);
            assert_eq!(r.error_code, 0);
            gen = r.generation_id;
            if r.leader.as_str() == id {
                assert_eq!(r.members.len(), n);
                leader = Some(id.clone());
            } else {
                assert!(r.members.is_empty());
            }
        }
        let leader = leader.expect("a leader");
        let mut ids: Vec<String> = vec![leader.clone()];
        ids.extend(
            joins
                .iter()
                .map(|(i, _)| i.clone())
                .filter(|i| *i != leader),
        );
        let assignment: Vec<(String, Vec<u8>)> = ids
            .iter()
            .enumerate()
            .map(|(k, m)| (m.clone(), vec![k as u8]))
            .collect();
        let a: Vec<(&str, &[u8])> = assignment
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_slice()))
            .collect();
        let follower_syncs: Vec<ReqId> = ids[1..]
            .iter()
            .map(|m| self.sync(group, m, gen, &[]).later())
            .collect();
        let lreq = self.sync(group, &leader, gen, &a).later();
        assert_eq!(self.sync_reply(lreq).assignment.as_ref(), &[0u8]);
        for (k, req) in follower_syncs.into_iter().enumerate() {
            let s = self.sync_reply(req);
            assert_eq!(s.error_code, 0);
            assert_eq!(s.assignment.as_ref(), &[k as u8 + 1]);
            assert_eq!(s.protocol_name.as_deref(), Some("range"));
        }
        assert_eq!(self.state(group), Some(GroupState::Stable));
        (ids, gen)
    }
}

#[test]
fn first_join_needs_member_id_then_completes_after_initial_delay() {
    let mut h = H::new();
    let (id, req) = h.join_new("g");
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    h.advance(DELAY - 1);
    assert!(!h.has_reply(req), "initial delay not over");
    h.advance(1);
    let r = h.join_reply(req);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), id);
    assert_eq!(r.member_id.as_str(), id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata.as_ref(), b"m");
    assert_eq!(h.state("g"), Some(GroupState::CompletingRebalance));
    let s = h.sync("g", &id, 1, &[(&id, b"A")]).later();
    assert_eq!(h.sync_reply(s).assignment.as_ref(), b"A");
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    // A SyncGroup in Stable answers at once with the member's assignment.
    assert_eq!(h.sync("g", &id, 1, &[]).now().assignment.as_ref(), b"A");
}

#[test]
fn old_versions_join_without_member_id_round_trip() {
    let mut h = H::new();
    let req = h
        .join_with(JoinArgs {
            version: 3,
            ..args("g", "")
        })
        .later();
    h.advance(DELAY);
    let r = h.join_reply(req);
    assert_eq!(r.error_code, 0);
    assert!(!r.member_id.is_empty());
    // v0-6: protocol name is not nullable, errors carry an empty string.
    let e = h
        .join_with(JoinArgs {
            version: 0,
            ..args("g", "nobody")
        })
        .now();
    assert_eq!(e.error_code, E::UnknownMemberId.code());
    assert_eq!(e.protocol_name.as_deref(), Some(""));
    assert_eq!(e.generation_id, -1);
}

#[test]
fn join_validation_errors() {
    let mut h = H::new();
    let r = h.join("", "").now();
    assert_eq!(r.error_code, E::InvalidGroupId.code());
    let r = h
        .join_with(JoinArgs {
            session: 10,
            ..args("g", "")
        })
        .now();
    assert_eq!(r.error_code, E::InvalidSessionTimeout.code());
    let r = h.join("nogroup", "someone").now();
    assert_eq!(r.error_code, E::UnknownMemberId.code());
    let r = h
        .join_with(JoinArgs {
            protocols: vec![],
            ..args("g", "")
        })
        .now();
    assert_eq!(r.error_code, E::InconsistentGroupProtocol.code());
    // A member whose protocols share nothing with the group is refused.
    h.stable_group("g", 1);
    let r = h
        .join_with(JoinArgs {
            protocols: vec![("other", b"")],
            ..args("g", "")
        })
        .now();
    assert_eq!(r.error_code, E::InconsistentGroupProtocol.code());
}

#[test]
fn three_members_share_one_generation_and_followers_wait_for_the_leader() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 3);
    assert_eq!(gen, 1);
    for id in &ids {
        assert_eq!(h.heartbeat("g", id, gen), 0);
    }
    let d = h.c.describe_groups(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![gid("g")]),
    );
    enc(5, &d);
    let g = &d.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.protocol_type.as_str(), "consumer");
    assert_eq!(g.protocol_data.as_str(), "range");
    assert_eq!(g.members.len(), 3);
    assert_eq!(g.members[0].client_id.as_str(), "cli");
    assert!(g.members.iter().all(|m| m.member_metadata.as_ref() == b"m"));
}

#[test]
fn initial_delay_extends_while_members_keep_arriving() {
    let mut h = H::new();
    let (_, a) = h.join_new("g");
    h.advance(DELAY - 10);
    let (_, b) = h.join_new("g");
    h.advance(10);
    assert!(
        !h.has_reply(a),
        "a member arrived during the delay: wait another delay"
    );
    h.advance(DELAY);
    let (ra, rb) = (h.join_reply(a), h.join_reply(b));
    assert_eq!(ra.generation_id, 1);
    assert_eq!(rb.generation_id, 1);
}

#[test]
fn new_member_triggers_rebalance_that_completes_when_all_rejoin() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 2);
    let (new, new_req) = h.join_new("g");
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.heartbeat("g", &ids[0], gen),
        E::RebalanceInProgress.code()
    );
    // A sync for the old generation during the rebalance.
    assert_eq!(
        h.sync("g", &ids[1], gen, &[]).now().error_code,
        E::RebalanceInProgress.code()
    );
    let r0 = h.join("g", &ids[0]).later();
    assert!(!h.has_reply(new_req));
    let r1 = h.join("g", &ids[1]).later();
    // Everyone is back: no waiting for the rebalance timeout (the group was not empty).
    let (a, b, c) = (h.join_reply(r0), h.join_reply(r1), h.join_reply(new_req));
    assert_eq!(a.generation_id, gen + 1);
    assert_eq!(b.generation_id, gen + 1);
    assert_eq!(c.generation_id, gen + 1);
    assert_eq!(a.leader.as_str(), ids[0], "the leader stays the leader");
    assert_eq!(a.members.len(), 3);
    assert_eq!(h.state("g"), Some(GroupState::CompletingRebalance));
    assert_eq!(h.heartbeat("g", &new, gen + 1), 0);
    assert_eq!(h.heartbeat("g", &new, gen), E::IllegalGeneration.code());
    assert_eq!(
        h.heartbeat("g", "stranger", gen + 1),
        E::UnknownMemberId.code()
    );
    assert_eq!(h.heartbeat("nope", "x", 1), E::UnknownMemberId.code());
    assert_eq!(h.heartbeat("", "x", 1), E::InvalidGroupId.code());
    // A commit between join and sync: the member must finish the rebalance first.
    assert_eq!(
        h.commit("g", &new, gen + 1, &[(0, 1)]).0,
        vec![E::RebalanceInProgress.code()]
    );
}

#[test]
fn member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 2);
    let r0 = h.join_with(JoinArgs {
        protocols: vec![("range", b"changed")],
        ..args("g", &ids[1])
    });
    let r0 = r0.later();
    // ids[0] keeps heartbeating but never rejoins.
    for _ in 0..(REBALANCE as u64 / 3000 - 1) {
        h.advance(3000);
        assert_eq!(
            h.heartbeat("g", &ids[0], gen),
            E::RebalanceInProgress.code()
        );
    }
    h.advance(REBALANCE as u64);
    let r = h.join_reply(r0);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, gen + 1);
    assert_eq!(
        r.leader.as_str(),
        ids[1],
        "a rejoined member becomes leader"
    );
    assert_eq!(r.members.len(), 1);
    assert_eq!(
        h.heartbeat("g", &ids[0], gen + 1),
        E::UnknownMemberId.code()
    );
}

#[test]
fn session_expiry_removes_member_and_rebalances_or_empties() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 2);
    // ids[0] heartbeats, ids[1] goes silent.
    for _ in 0..3 {
        h.advance(SESSION as u64 / 3);
        if h.state("g") == Some(GroupState::Stable) {
            assert_eq!(h.heartbeat("g", &ids[0], gen), 0);
        }
    }
    h.advance(1);
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(h.heartbeat("g", &ids[1], gen), E::UnknownMemberId.code());
    let r = h.join("g", &ids[0]).later();
    let r = h.join_reply(r);
    assert_eq!(r.generation_id, gen + 1);
    // Now the last member goes silent too: the group is empty, a new generation.
    let s = h.sync("g", &ids[0], gen + 1, &[]).later();
    h.sync_reply(s);
    h.advance(SESSION as u64 + 1);
    h.advance(REBALANCE as u64);
    assert_eq!(h.state("g"), Some(GroupState::Empty));
    assert_eq!(h.c.generation("g"), Some(gen + 2));
}

#[test]
fn pending_member_that_never_returns_expires() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 1);
    let r = h.join("g", "").now();
    assert_eq!(r.error_code, E::MemberIdRequired.code());
    // A pending member alone does not start a rebalance.
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    assert_eq!(h.heartbeat("g", &ids[0], gen), 0);
    h.advance(SESSION as u64 / 2);
    assert_eq!(h.heartbeat("g", &ids[0], gen), 0);
    h.advance(SESSION as u64 / 2);
    let back = h.join("g", r.member_id.as_str()).now();
    assert_eq!(back.error_code, E::UnknownMemberId.code());
}

#[test]
fn follower_that_never_syncs_is_removed() {
    let mut h = H::new();
    let (a, ra) = h.join_new("g");
    let (b, rb) = h.join_new("g");
    h.advance(DELAY);
    h.advance(DELAY);
    let ja = h.join_reply(ra);
    h.join_reply(rb);
    let leader = ja.leader.to_string();
    let follower = if leader == a { b } else { a };
    let s = h.sync("g", &leader, 1, &[]).later();
    h.sync_reply(s);
    for _ in 0..(REBALANCE as u64 / 3000) {
        h.advance(3000);
        if h.state("g") == Some(GroupState::Stable) {
            // Both stay alive; the follower just never sends SyncGroup.
            assert_eq!(h.heartbeat("g", &leader, 1), 0);
            assert_eq!(h.heartbeat("g", &follower, 1), 0);
        }
    }
    assert_eq!(h.heartbeat("g", &follower, 1), E::UnknownMemberId.code());
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
}

#[test]
fn waiting_syncs_learn_of_a_new_rebalance() {
    let mut h = H::new();
    let (a, ra) = h.join_new("g");
    let (b, rb) = h.join_new("g");
    h.advance(DELAY);
    h.advance(DELAY);
    let leader = h.join_reply(ra).leader.to_string();
    h.join_reply(rb);
    let follower = if leader == a { b } else { a };
    let s = h.sync("g", &follower, 1, &[]).later();
    // The leader rejoins with new metadata instead of syncing.
    h.join_with(JoinArgs {
        protocols: vec![("range", b"new")],
        ..args("g", &leader)
    })
    .later();
    assert_eq!(h.sync_reply(s).error_code, E::RebalanceInProgress.code());
    assert_eq!(
        h.sync("g", &follower, 0, &[]).now().error_code,
        E::IllegalGeneration.code()
    );
    assert_eq!(
        h.sync("g", "ghost", 1, &[]).now().error_code,
        E::UnknownMemberId.code()
    );
    assert_eq!(
        h.sync("none", "ghost", 1, &[]).now().error_code,
        E::UnknownMemberId.code()
    );
}

#[test]
fn follower_rejoin_with_same_metadata_keeps_generation() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 2);
    let r = h.join("g", &ids[1]).now();
    assert_eq!(r.generation_id, gen);
    assert!(r.members.is_empty());
    assert_eq!(h.state("g"), Some(GroupState::Stable));
}

#[test]
fn protocol_selection_by_vote() {
    let mut h = H::new();
    let reqs: Vec<ReqId> = [
        vec![("range", &b"1"[..]), ("roundrobin", &b"1"[..])],
        vec![("roundrobin", &b"2"[..]), ("range", &b"2"[..])],
        vec![
            ("roundrobin", &b"3"[..]),
            ("range", &b"3"[..]),
            ("sticky", &b""[..]),
        ],
    ]
    .into_iter()
    .map(|protocols| {
        h.join_with(JoinArgs {
            version: 3,
            protocols,
            ..args("g", "")
        })
        .later()
    })
    .collect();
    h.advance(DELAY);
    h.advance(DELAY);
    for r in reqs {
        let j = h.join_reply(r);
        assert_eq!(j.protocol_name.as_deref(), Some("roundrobin"));
        for m in &j.members {
            assert_eq!(m.metadata.len(), 1, "metadata of the chosen protocol");
        }
    }
}

#[test]
fn leave_group_single_and_batch() {
    let mut h = H::new();
    let (ids, gen) = h.stable_group("g", 3);
    // v0: one member, the error is top level.
    assert_eq!(
        h.leave(0, "g", &["ghost"]).error_code,
        E::UnknownMemberId.code()
    );
    assert_eq!(h.leave(1, "g", &[&ids[2]]).error_code, 0);
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(h.heartbeat("g", &ids[2], gen), E::UnknownMemberId.code());
    // v3: a batch with per-member errors.
    let r = h.leave(3, "g", &[&ids[0], "ghost", &ids[1]]);
    assert_eq!(r.error_code, 0);
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, E::UnknownMemberId.code(), 0]);
    assert_eq!(h.state("g"), Some(GroupState::Empty));
    assert_eq!(h.c.generation("g"), Some(gen + 1));
    let r = h.leave(4, "nogroup", &["x"]);
    assert_eq!(r.error_code, E::UnknownMemberId.code());
    assert!(r.members.is_empty());
}

#[test]
fn static_member_rejoin_replaces_id_without_rebalance() {
    let mut h = H::new();
    let st = |h: &mut H, member: &str| {
        h.join_with(JoinArgs {
            instance: Some("inst-1"),
            ..args("g", member)
        })
    };
    // Static members skip the member-id round trip.
    let first = st(&mut h, "").later();
    h.advance(DELAY);
    let j = h.join_reply(first);
    let old = j.member_id.to_string();
    assert!(old.starts_with("inst-1-"), "{old}");
    let s = h.sync("g", &old, 1, &[(&old, b"A")]).later();
    h.sync_reply(s);
    // Restarted process: same instance id, no member id, same metadata.
    let j = st(&mut h, "").now();
    assert_eq!(j.error_code, 0);
    let new = j.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(j.generation_id, 1, "no rebalance");
    // Before v9 the former leader is not told it leads (it would reassign): the leader
    // field keeps the replaced id.
    assert_eq!(j.leader.as_str(), old);
    assert!(j.members.is_empty());
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    assert_eq!(
        h.heartbeat_i("g", &old, 1, Some("inst-1")),
        E::FencedInstanceId.code()
    );
    assert_eq!(h.heartbeat_i("g", &new, 1, Some("inst-1")), 0);
    assert_eq!(
        st(&mut h, &old).now().error_code,
        E::FencedInstanceId.code()
    );
    assert_eq!(h.sync("g", &new, 1, &[]).now().assignment.as_ref(), b"A");
    // v9 (KIP-814): the leader is told it leads, with the members, but to skip assigning.
    let j = h
        .join_with(JoinArgs {
            instance: Some("inst-1"),
            version: 9,
            ..args("g", "")
        })
        .now();
    let newer = j.member_id.to_string();
    assert_eq!(j.leader.as_str(), newer);
    assert!(j.skip_assignment);
    assert_eq!(j.members.len(), 1);
    assert_eq!(h.state("g"), Some(GroupState::Stable));
    // New metadata that keeps the selected protocol: still no rebalance (Kafka's rule).
    let j = h
        .join_with(JoinArgs {
            instance: Some("inst-1"),
            protocols: vec![("range", b"different")],
            ..args("g", "")
        })
        .now();
    assert_eq!(j.generation_id, 1);
    // A protocol list that shares nothing with the group is refused.
    let e = h
        .join_with(JoinArgs {
            instance: Some("inst-1"),
            protocols: vec![("roundrobin", b"")],
            ..args("g", "")
        })
        .now();
    assert_eq!(e.error_code, E::InconsistentGroupProtocol.code());
    // A protocol change that changes the group's selection rebalances.
    let r = h
        .join_with(JoinArgs {
            instance: Some("inst-1"),
            protocols: vec![("roundrobin", b""), ("range", b"")],
            ..args("g", "")
        })
        .later();
    // The only member rejoined, so the rebalance completes at once.
    let j = h.join_reply(r);
    assert_eq!(j.generation_id, 2);
    assert_eq!(j.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(h.state("g"), Some(GroupState::CompletingRebalance));
    // A known member id with an instance id the group does not know.
    let e = h
        .join_with(JoinArgs {
            instance: Some("inst-2"),
            ..args("g", j.member_id.as_str())
        })
        .now();
    assert_eq!(e.error_code, E::UnknownMemberId.code());
}

#[test]
fn empty_group_without_offsets_is_dropped_after_ten_minutes() {
    let mut h = H::new();
    let (ids, _) = h.stable_group("g", 1);
    h.stable_group("kept", 1);
    h.commit("kept", "", -1, &[]);
    assert_eq!(h.leave(3, "g", &[&ids[0]]).error_code, 0);
    h.advance(1);
    assert_eq!(
        h.state("g"),
        Some(GroupState::Empty),
        "still listed at first"
    );
    let kept_ids: Vec<String> = h.c.groups["kept"].members.keys().cloned().collect();
    h.leave(3, "kept", &[&kept_ids[0]]);
    let (_, w) = h.commit("kept", "", -1, &[(0, 1)]);
    assert_eq!(w.len(), 1);
    h.advance(EMPTY_GROUP_RETENTION_MS);
    assert_eq!(h.state("g"), None, "an idle group without offsets is gone");
    assert_eq!(
        h.state("kept"),
        Some(GroupState::Empty),
        "a group with offsets stays"
    );
    assert!(h.c.next_deadline().is_none());
}

#[test]
fn offset_commit_rules() {
    let mut h = H::new();
    // Simple commit (generation -1) to an unknown group creates it, Empty.
    let (codes, writes) = h.commit("simple", "", -1, &[(0, 10), (1, 20), (9, 1)]);
    assert_eq!(codes, vec![0, 0, E::UnknownTopicOrPartition.code()]);
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].committed.commit_timestamp_ms, 42);
    assert_eq!(h.state("simple"), Some(GroupState::Empty));
    assert_eq!(
        h.fetch(7, "simple", Some(&[0, 1, 2])),
        vec![(0, 10), (1, 20), (2, -1)]
    );
    // A generation for a group that does not exist.
    assert_eq!(
        h.commit("ghost", "m", 3, &[(0, 1)]).0,
        vec![E::IllegalGeneration.code()]
    );
    let (ids, gen) = h.stable_group("g", 2);
    assert_eq!(h.commit("g", &ids[0], gen, &[(0, 5)]).0, vec![0]);
    assert_eq!(
        h.commit("g", &ids[0], gen + 1, &[(0, 6)]).0,
        vec![E::IllegalGeneration.code()]
    );
    assert_eq!(
        h.commit("g", "stranger", gen, &[(0, 6)]).0,
        vec![E::UnknownMemberId.code()]
    );
    // Simple commits to a group with members are refused.
    assert_eq!(
        h.commit("g", "", -1, &[(0, 6)]).0,
        vec![E::UnknownMemberId.code()]
    );
    assert_eq!(h.fetch(5, "g", Some(&[0])), vec![(0, 5)]);
    // During PreparingRebalance members may still commit (Kafka allows it).
    h.join_new("g");
    assert_eq!(h.commit("g", &ids[1], gen, &[(1, 7)]).0, vec![0]);
    // Metadata over offset.metadata.max.bytes.
    let req = OffsetCommitRequest::default()
        .with_group_id(gid("simple"))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(sb("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)
                .with_committed_metadata(Some(sb(&"x".repeat(5000))))])]);
    let (r, w) = h.c.offset_commit(h.now, 0, 2, &req, &exists);
    enc(2, &r);
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        E::OffsetMetadataTooLarge.code()
    );
    assert!(w.is_empty());
}

#[test]
fn offset_fetch_versions() {
    let mut h = H::new();
    h.commit("a", "", -1, &[(2, 22), (0, 11)]);
    h.commit("b", "", -1, &[(3, 33)]);
    assert_eq!(h.fetch(1, "a", Some(&[0, 5])), vec![(0, 11), (5, -1)]);
    // Null topics: every partition with an offset.
    assert_eq!(h.fetch(2, "a", None), vec![(0, 11), (2, 22)]);
    assert_eq!(h.fetch(7, "missing", None), vec![]);
    assert_eq!(h.fetch(6, "missing", Some(&[1])), vec![(1, -1)]);
    // v8: several groups at once.
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("a"))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(sb("t")))
                .with_partition_indexes(vec![2, 4])])),
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("b"))
            .with_topics(None),
    ]);
    let r = h.c.offset_fetch(8, &req);
    enc(8, &r);
    assert_eq!(r.groups.len(), 2);
    let a: Vec<(i32, i64)> = r.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(a, vec![(2, 22), (4, -1)]);
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, 33);
    assert_eq!(
        r.groups[1].topics[0].partitions[0].metadata.as_deref(),
        Some("meta")
    );
}

#[test]
fn list_describe_delete() {
    let mut h = H::new();
    h.commit("offsets-only", "", -1, &[(0, 1)]);
    h.stable_group("busy", 1);
    let list = |h: &H, v: i16, states: &[&str]| {
        let r = h.c.list_groups(
            v,
            &ListGroupsRequest::default()
                .with_states_filter(states.iter().map(|s| sb(s)).collect()),
        );
        enc(v, &r);
        r.groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(&h, 4, &[]),
        vec![
            ("busy".to_string(), "Stable".to_string()),
            ("offsets-only".to_string(), "Empty".to_string())
        ]
    );
    assert_eq!(
        list(&h, 4, &["stable"]),
        vec![("busy".into(), "Stable".into())]
    );
    assert_eq!(list(&h, 0, &[]).len(), 2);
    let d = h.c.describe_groups(
        6,
        &DescribeGroupsRequest::default().with_groups(vec![gid("nope"), gid("offsets-only")]),
    );
    enc(6, &d);
    assert_eq!(d.groups[0].error_code, E::GroupIdNotFound.code());
    assert_eq!(d.groups[1].error_code, 0);
    assert_eq!(d.groups[1].group_state.as_str(), "Empty");
    let d = h.c.describe_groups(
        1,
        &DescribeGroupsRequest::default().with_groups(vec![gid("nope")]),
    );
    enc(1, &d);
    assert_eq!(d.groups[0].error_code, 0);
    assert_eq!(d.groups[0].group_state.as_str(), "Dead");
    let (r, deleted) = h.c.delete_groups(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![
            gid("busy"),
            gid("offsets-only"),
            gid("nope"),
        ]),
    );
    enc(2, &r);
    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
    assert_eq!(
        codes,
        vec![E::NonEmptyGroup.code(), 0, E::GroupIdNotFound.code()]
    );
    assert_eq!(deleted, vec!["offsets-only".to_string()]);
    assert_eq!(h.fetch(7, "offsets-only", Some(&[0])), vec![(0, -1)]);
}

/// Randomized clients against the coordinator: any interleaving of joins, syncs,
/// heartbeats, leaves, commits, fetches, admin calls, bogus ids and generations and the
/// passing of time must never panic, every response must encode at its version, the group
/// invariants must hold after every step, and once the clients stop and time passes every
/// deferred request must have been answered exactly once.
#[test]
fn random_clients_keep_invariants_and_get_every_answer() {
    #[derive(Clone, Default)]
    struct Client {
        member: String,
        instance: Option<String>,
        generation: i32,
        leader_of: Vec<String>,
        waiting: Option<ReqId>,
    }
    // How often interesting states were reached, so the test cannot pass by doing nothing.
    let mut stable_steps = 0usize;
    let mut deferred_answers = 0usize;
    for seed in 0..300u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n.max(1)
        };
        let mut h = H::new();
        let groups = ["g", "h"];
        let mut clients: Vec<(usize, Client)> = (0..5)
            .map(|k| {
                let c = Client {
                    instance: (k % 3 == 0).then(|| format!("i{k}")),
                    ..Client::default()
                };
                (k % 2, c)
            })
            .collect();
        let mut answered: BTreeSet<ReqId> = BTreeSet::new();
        let mut last_gen: HashMap<String, i32> = HashMap::new();
        for _step in 0..400 {
            // Deliver replies.
            for r in std::mem::take(&mut h.replies) {
                let (id, join) = match &r {
                    Reply::Join(id, j) => (*id, Some(j.clone())),
                    Reply::Sync(id, _) => (*id, None),
                };
                assert!(
                    answered.insert(id),
                    "seed {seed}: request {id} answered twice"
                );
                deferred_answers += 1;
                for (_, c) in clients.iter_mut() {
                    if c.waiting == Some(id) {
                        c.waiting = None;
                        if let Some(j) = &join {
                            if j.error_code == 0 {
                                c.member = j.member_id.to_string();
                                c.generation = j.generation_id;
                                c.leader_of =
                                    j.members.iter().map(|m| m.member_id.to_string()).collect();
                            } else if j.error_code == E::UnknownMemberId.code() {
                                c.member.clear();
                            }
                        }
                    }
                }
            }
            let k = next(clients.len() as u64 + 2) as usize;
            if k >= clients.len() {
                h.advance(next(4000));
            } else {
                let (g, c) = &mut clients[k];
                let group = groups[*g];
                if c.waiting.is_some() && next(4) != 0 {
                    continue;
                }
                match next(9) {
                    0 | 1 => {
                        let version = next(10) as i16;
                        let member = if next(10) == 0 {
                            "bogus".to_string()
                        } else {
                            c.member.clone()
                        };
                        let out = h.join_with(JoinArgs {
                            group,
                            member: &member,
                            instance: if version >= 5 {
                                c.instance.as_deref()
                            } else {
                                None
                            },
                            protocols: if next(5) == 0 {
                                vec![("roundrobin", b"x"), ("range", b"y")]
                            } else {
                                vec![("range", b"m")]
                            },
                            version,
                            session: SESSION,
                        });
                        match out {
                            Out::Now(j) => {
                                if j.error_code == E::MemberIdRequired.code() || j.error_code == 0 {
                                    c.member = j.member_id.to_string();
                                    c.generation = j.generation_id;
                                } else if j.error_code == E::UnknownMemberId.code() {
                                    c.member.clear();
                                }
                            }
                            Out::Later(id) => c.waiting = Some(id),
                        }
                    }
                    2 => {
                        let assignments: Vec<(String, Vec<u8>)> =
                            c.leader_of.iter().map(|m| (m.clone(), vec![1])).collect();
                        let a: Vec<(&str, &[u8])> = assignments
                            .iter()
                            .map(|(m, b)| (m.as_str(), b.as_slice()))
                            .collect();
                        let gen = if next(8) == 0 {
                            c.generation + 1
                        } else {
                            c.generation
                        };
                        let member = c.member.clone();
                        if let Out::Later(id) = h.sync(group, &member, gen, &a) {
                            c.waiting = Some(id);
                        }
                    }
                    3 | 4 => {
                        let (member, gen, inst) =
                            (c.member.clone(), c.generation, c.instance.clone());
                        h.heartbeat_i(group, &member, gen, inst.as_deref());
                    }
                    5 => {
                        let member = c.member.clone();
                        h.leave(next(6) as i16, group, &[&member]);
                    }
                    6 => {
                        let (member, gen) = (c.member.clone(), c.generation);
                        let gen = if next(4) == 0 { -1 } else { gen };
                        h.commit(group, &member, gen, &[(next(7) as i32, next(100) as i64)]);
                    }
                    7 => {
                        let v = 1 + next(8) as i16;
                        h.fetch(v, group, if next(2) == 0 { None } else { Some(&[0, 1]) });
                    }
                    _ => {
                        let v = next(6) as i16;
                        let r = h.c.list_groups(v, &ListGroupsRequest::default());
                        enc(v, &r);
                        let v = next(7) as i16;
                        let r = h.c.describe_groups(
                            v,
                            &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
                        );
                        enc(v, &r);
                        if next(10) == 0 {
                            let (r, _) = h.c.delete_groups(
                                2,
                                &DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]),
                            );
                            enc(2, &r);
                            if r.results[0].error_code == 0 {
                                last_gen.remove(group);
                            }
                        }
                    }
                }
            }
            // Invariants of every group.
            for (id, g) in &h.c.groups {
                let prev = last_gen.insert(id.clone(), g.generation).unwrap_or(0);
                assert!(
                    g.generation >= prev,
                    "seed {seed}: generation of {id} went back from {prev} to {}",
                    g.generation
                );
                if g.state == GroupState::Stable {
                    stable_steps += 1;
                }
                match g.state {
                    GroupState::Stable | GroupState::CompletingRebalance => {
                        let leader = g.leader.as_ref().expect("a leader");
                        assert!(
                            g.members.contains_key(leader),
                            "seed {seed}: leader not a member"
                        );
                        assert!(g.protocol.is_some(), "seed {seed}: no protocol");
                    }
                    GroupState::Empty => {
                        assert!(
                            g.members.is_empty(),
                            "seed {seed}: Empty group {id} has members"
                        )
                    }
                    GroupState::PreparingRebalance => {
                        assert!(
                            g.join_deadline.is_some(),
                            "seed {seed}: rebalance without deadline"
                        )
                    }
                    GroupState::Dead => {}
                }
                for (inst, m) in &g.static_members {
                    assert_eq!(
                        g.members.get(m).and_then(|m| m.instance_id.as_deref()),
                        Some(inst.as_str()),
                        "seed {seed}: static mapping of {inst} is stale"
                    );
                }
                if g.state != GroupState::CompletingRebalance {
                    assert!(
                        g.members.values().all(|m| m.awaiting_sync.is_none()),
                        "seed {seed}: a sync waits outside CompletingRebalance"
                    );
                }
                if g.state != GroupState::PreparingRebalance {
                    assert!(
                        g.members.values().all(|m| m.awaiting_join.is_none()),
                        "seed {seed}: a join waits outside PreparingRebalance"
                    );
                }
            }
        }
        // Quiet: time passes, nobody talks; every deferred request gets its answer.
        for _ in 0..20 {
            h.advance(10_000);
        }
        for r in std::mem::take(&mut h.replies) {
            let id = match r {
                Reply::Join(id, _) | Reply::Sync(id, _) => id,
            };
            assert!(
                answered.insert(id),
                "seed {seed}: request {id} answered twice"
            );
        }
        for (_, c) in &clients {
            if let Some(id) = c.waiting {
                assert!(
                    answered.contains(&id),
                    "seed {seed}: request {id} never answered"
                );
            }
        }
        for g in h.c.groups.values() {
            assert!(
                g.members.is_empty(),
                "seed {seed}: silent members never expired"
            );
        }
    }
    assert!(
        stable_steps > 1000,
        "groups rarely became Stable: {stable_steps}"
    );
    assert!(
        deferred_answers > 1000,
        "few deferred answers: {deferred_answers}"
    );
}

#[test]
fn txn_offset_commit_group_check_kip_447() {
    let mut h = H::new();
    let v = |h: &H, g: &str, m: &str, i: Option<&str>, gen: i32| {
        h.c.validate_txn_offset_commit(g, m, i, gen)
    };
    // Unknown group: only a commit without generation (producer outside any group).
    assert_eq!(v(&h, "none", "", None, -1), None);
    assert_eq!(v(&h, "none", "m", None, 1), Some(E::IllegalGeneration));
    let (ids, gen) = h.stable_group("g", 2);
    assert_eq!(v(&h, "g", &ids[0], None, gen), None);
    assert_eq!(
        v(&h, "g", &ids[0], None, gen - 1),
        Some(E::IllegalGeneration)
    );
    assert_eq!(v(&h, "g", "gone", None, gen), Some(E::UnknownMemberId));
    // TxnOffsetCommit v0-v2 carry no group metadata: not checked (as in Kafka).
    assert_eq!(v(&h, "g", "", None, -1), None);
    // A rebalance does not refuse the current generation (unlike OffsetCommit).
    h.join_new("g");
    assert_eq!(v(&h, "g", &ids[1], None, gen), None);

    // A static member replaced by a restarted instance is fenced.
    let st = |h: &mut H, member: &str| {
        h.join_with(JoinArgs {
            instance: Some("inst-1"),
            ..args("s", member)
        })
    };
    let first = st(&mut h, "").later();
    h.advance(DELAY);
    let old = h.join_reply(first).member_id.to_string();
    let s = h.sync("s", &old, 1, &[(&old, b"A")]).later();
    h.sync_reply(s);
    let new = st(&mut h, "").now().member_id.to_string();
    assert_eq!(v(&h, "s", &new, Some("inst-1"), 1), None);
    assert_eq!(
        v(&h, "s", &old, Some("inst-1"), 1),
        Some(E::FencedInstanceId)
    );
}

mod limits;
