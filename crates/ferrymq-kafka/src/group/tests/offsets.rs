//! Offset commits and fetches, listing, describing and deleting groups, KIP-447 checks.

use super::*;

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
