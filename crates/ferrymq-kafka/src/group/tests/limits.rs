//! `group.max.size`, offset retention (KIP-211) and commits held behind a member's
//! SyncGroup.

use kafka_protocol::messages::ConsumerProtocolSubscription;

use super::*;

const RETENTION: u64 = 60_000;

fn harness(max_size: usize) -> H {
    H {
        c: Coordinator::new(
            GroupConfig {
                initial_rebalance_delay_ms: DELAY,
                min_session_timeout_ms: 1000,
                max_size,
                offsets_retention_ms: RETENTION,
                ..GroupConfig::default()
            },
            7,
        ),
        now: 1_000,
        next_req: 0,
        replies: Vec::new(),
    }
}

/// A ConsumerProtocol subscription as clients put it in JoinGroup metadata.
fn subscription(topics: &[&str]) -> Vec<u8> {
    let s =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| sb(t)).collect());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    s.encode(&mut buf, 1).unwrap();
    buf.to_vec()
}

#[test]
fn join_beyond_group_max_size_is_refused() {
    let mut h = harness(2);
    let (ids, gen) = h.stable_group("g", 2);
    // A third member, in Stable: refused before any member id is handed out.
    let r = h.join("g", "").now();
    assert_eq!(r.error_code, E::GroupMaxSizeReached.code());
    assert_eq!(r.member_id.as_str(), "");
    // Current members carry on.
    assert_eq!(h.heartbeat("g", &ids[1], gen), 0);
    assert_eq!(h.state("g"), Some(GroupState::Stable));

    // The limit is lowered to 1 (a broker restarted with a smaller group.max.size): at the
    // next rebalance the last member to rejoin is refused and removed.
    h.c.config.max_size = 1;
    let leader_join = h.join("g", &ids[0]).later();
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    let r = h.join("g", &ids[1]).now();
    assert_eq!(r.error_code, E::GroupMaxSizeReached.code());
    let j = h.join_reply(leader_join);
    assert_eq!(j.error_code, 0);
    assert_eq!(j.generation_id, gen + 1);
    assert_eq!(j.members.len(), 1, "only the leader is left");
    assert_eq!(h.c.groups["g"].members.len(), 1);
}

#[test]
fn group_max_size_counts_members_waiting_in_a_rebalance() {
    let mut h = harness(2);
    // KIP-394 ids are handed out while the group is Empty.
    let a = h.join("g", "").now().member_id.to_string();
    let b = h.join("g", "").now().member_id.to_string();
    let c = h.join("g", "").now().member_id.to_string();
    let ra = h.join("g", &a).later();
    let rb = h.join("g", &b).later();
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    let r = h.join("g", &c).now();
    assert_eq!(r.error_code, E::GroupMaxSizeReached.code());
    assert!(
        h.c.groups["g"].pending.is_empty(),
        "the refused id is forgotten"
    );
    h.advance(DELAY);
    h.advance(DELAY);
    assert_eq!(h.join_reply(ra).error_code, 0);
    assert_eq!(h.join_reply(rb).error_code, 0);
    assert_eq!(h.state("g"), Some(GroupState::CompletingRebalance));
}

#[test]
fn offsets_of_a_group_without_members_expire_from_when_it_emptied() {
    let mut h = harness(usize::MAX);
    let (ids, gen) = h.stable_group("g", 1);
    assert_eq!(h.commit("g", &ids[0], gen, &[(0, 5)]).0, vec![0]);
    // Active group: its subscription is unreadable (`m`), so nothing ever expires.
    assert!(h.c.expire_offsets(h.now, i64::MAX / 2).is_empty());
    let emptied = h.now;
    h.leave(3, "g", &[&ids[0]]);
    assert_eq!(h.state("g"), Some(GroupState::Empty));
    // The commit is ancient, but retention counts from when the group became Empty.
    assert!(h
        .c
        .expire_offsets(emptied + RETENTION - 1, i64::MAX / 2)
        .is_empty());
    let gone = h.c.expire_offsets(emptied + RETENTION, 0);
    assert_eq!(
        gone,
        vec![ExpiredOffset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0
        }]
    );
    assert_eq!(
        h.state("g"),
        None,
        "an Empty group without offsets is removed"
    );
}

#[test]
fn standalone_commits_expire_from_the_commit() {
    let mut h = harness(usize::MAX);
    // The harness commits at wall-clock 42.
    h.commit("simple", "", -1, &[(0, 1), (1, 2)]);
    h.c.restore_offset(
        "simple",
        "t",
        2,
        Committed {
            offset: 3,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 1_000,
        },
    );
    assert!(h
        .c
        .expire_offsets(h.now, 42 + RETENTION as i64 - 1)
        .is_empty());
    let gone = h.c.expire_offsets(h.now, 42 + RETENTION as i64);
    assert_eq!(gone.len(), 2);
    assert_eq!(
        h.fetch(7, "simple", Some(&[0, 1, 2])),
        vec![(0, -1), (1, -1), (2, 3)]
    );
    assert_eq!(h.c.expire_offsets(h.now, 1_000 + RETENTION as i64).len(), 1);
    assert_eq!(h.state("simple"), None);
}

#[test]
fn stable_consumer_groups_keep_offsets_of_subscribed_topics() {
    let mut h = harness(usize::MAX);
    let (ids, gen) = h.stable_group("g", 2);
    let meta = Bytes::from(subscription(&["t"]));
    for m in h.c.groups.get_mut("g").unwrap().members.values_mut() {
        m.protocols = vec![("range".into(), meta.clone())];
    }
    assert_eq!(h.commit("g", &ids[0], gen, &[(0, 5)]).0, vec![0]);
    h.c.restore_offset(
        "g",
        "old",
        0,
        Committed {
            offset: 9,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        },
    );
    let far = i64::MAX / 2;
    let gone = h.c.expire_offsets(h.now, far);
    assert_eq!(
        gone,
        vec![ExpiredOffset {
            group: "g".into(),
            topic: "old".into(),
            partition: 0
        }],
        "only the topic nobody subscribes to"
    );
    assert_eq!(h.fetch(7, "g", Some(&[0])), vec![(0, 5)]);
    // While the group rebalances nothing expires.
    h.c.restore_offset(
        "g",
        "old",
        1,
        Committed {
            offset: 9,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        },
    );
    h.join_new("g");
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    assert!(h.c.expire_offsets(h.now, far).is_empty());
}

#[test]
fn commit_of_a_member_waiting_for_its_sync_waits() {
    let mut h = harness(usize::MAX);
    let (ids, gen) = h.stable_group("g", 2);
    let commit_req = |member: &str, gen: i32| {
        OffsetCommitRequest::default()
            .with_group_id(gid("g"))
            .with_generation_id_or_member_epoch(gen)
            .with_member_id(sb(member))
    };
    assert!(!h.c.commit_waits_for_sync(&commit_req(&ids[1], gen)));
    // The follower rejoins (cooperative members keep consuming meanwhile).
    let lj = h.join("g", &ids[0]).later();
    let fj = h.join("g", &ids[1]).later();
    let lj = h.join_reply(lj);
    let fj = h.join_reply(fj);
    let next = fj.generation_id;
    assert_eq!(next, gen + 1);
    // Before its SyncGroup the follower's commit is answered at once, as Kafka does.
    assert!(!h.c.commit_waits_for_sync(&commit_req(&ids[1], next)));
    assert_eq!(
        h.commit("g", &ids[1], next, &[(1, 2)]).0,
        vec![E::RebalanceInProgress.code()]
    );
    let fs = h.sync("g", &ids[1], next, &[]).later();
    assert!(h.c.commit_waits_for_sync(&commit_req(&ids[1], next)));
    // The leader has no SyncGroup in flight: its commit does not wait (it could wait on a
    // SyncGroup that never comes); another generation or a stranger does not wait either.
    assert!(!h.c.commit_waits_for_sync(&commit_req(&ids[0], next)));
    assert_eq!(
        h.commit("g", &ids[0], next, &[(0, 2)]).0,
        vec![E::RebalanceInProgress.code()]
    );
    assert!(!h.c.commit_waits_for_sync(&commit_req(&ids[1], gen)));
    assert!(!h.c.commit_waits_for_sync(&commit_req("stranger", next)));
    // Answered once the leader's assignment arrives: the group is Stable, the commit is taken.
    let ls = h
        .sync(
            "g",
            &lj.leader.to_string(),
            next,
            &[(&ids[0], b"a"), (&ids[1], b"b")],
        )
        .later();
    assert_eq!(h.sync_reply(ls).error_code, 0);
    assert_eq!(h.sync_reply(fs).error_code, 0);
    assert!(!h.c.commit_waits_for_sync(&commit_req(&ids[1], next)));
    assert_eq!(h.commit("g", &ids[1], next, &[(1, 3)]).0, vec![0]);
}

/// The sequence of the cooperative-sticky churn run (tests/kafka/test_groups_cooperative.py,
/// broker debug log of 2026-12-07): the only member (the leader) keeps consuming and
/// committing while a second member joins; a commit it stamped with the old generation
/// reaches the broker after its own JoinGroup completed the next one (Kafka answers
/// ILLEGAL_GENERATION: the client keeps the offsets for a later commit); it then closes
/// before assigning, and the commit from its revoke callback must be answered at once
/// (it used to wait for the leader's SyncGroup, i.e. for itself, until its session
/// expired and the commit got UNKNOWN_MEMBER_ID).
#[test]
fn leader_closing_in_a_rebalance_is_not_kept_waiting_for_its_own_sync() {
    let mut h = harness(usize::MAX);
    let (ids, gen) = h.stable_group("g", 1);
    let m1 = ids[0].clone();
    assert_eq!(h.commit("g", &m1, gen, &[(0, 10)]).0, vec![0]);
    let (m2, j2) = h.join_new("g");
    assert_eq!(h.state("g"), Some(GroupState::PreparingRebalance));
    // While the group prepares the rebalance the current generation still commits.
    assert_eq!(h.commit("g", &m1, gen, &[(0, 20)]).0, vec![0]);
    assert_eq!(h.heartbeat("g", &m1, gen), E::RebalanceInProgress.code());
    let j1 = h.join("g", &m1).later();
    let r1 = h.join_reply(j1);
    let r2 = h.join_reply(j2);
    let next = r1.generation_id;
    assert_eq!((next, r2.generation_id), (gen + 1, gen + 1));
    assert_eq!(r1.leader.as_str(), m1);
    // The commit sent behind the JoinGroup with the old generation.
    assert_eq!(
        h.commit("g", &m1, gen, &[(0, 30)]).0,
        vec![E::IllegalGeneration.code()]
    );
    let s2 = h.sync("g", &m2, next, &[]).later();
    // m1 closes instead of assigning: its revoke callback commits with the new generation.
    let req = OffsetCommitRequest::default()
        .with_group_id(gid("g"))
        .with_generation_id_or_member_epoch(next)
        .with_member_id(sb(&m1));
    assert!(!h.c.commit_waits_for_sync(&req));
    assert_eq!(
        h.commit("g", &m1, next, &[(0, 30)]).0,
        vec![E::RebalanceInProgress.code()]
    );
    // Its LeaveGroup follows at once: the follower's SyncGroup learns of the new rebalance
    // and m2 rejoins alone, now leading.
    assert_eq!(h.leave(3, "g", &[&m1]).error_code, 0);
    assert_eq!(h.sync_reply(s2).error_code, E::RebalanceInProgress.code());
    let j2 = h.join("g", &m2).later();
    let r2 = h.join_reply(j2);
    assert_eq!(r2.generation_id, next + 1);
    assert_eq!(r2.leader.as_str(), m2);
    assert_eq!(h.fetch(7, "g", Some(&[0])), vec![(0, 20)]);
}
