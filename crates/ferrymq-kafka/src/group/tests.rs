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

mod limits;
mod membership;
mod model;
mod offsets;
