//! Joining, syncing, rebalancing, expiry, leaving and static members.

use super::*;

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
