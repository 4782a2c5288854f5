use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    GroupId, TopicName,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::*;

fn topic_id(n: u64) -> Uuid {
    Uuid::from_u64_pair(0, n)
}

fn image(parts: &[(&str, u64, i32)]) -> TopicImage {
    TopicImage::new(
        parts
            .iter()
            .map(|&(n, id, p)| (n.to_owned(), topic_id(id), p)),
    )
}

fn client() -> ClientInfo {
    ClientInfo {
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn join(member: &str, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(sb("g")))
        .with_member_id(sb(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(topics.iter().map(|t| TopicName(sb(t))).collect()))
        .with_topic_partitions(Some(vec![]))
}

fn hb(member: &str, epoch: i32, owned: &Assignment) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(sb("g")))
        .with_member_id(sb(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(Some(
            owned
                .iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(*t)
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        ))
}

fn got(r: &ConsumerGroupHeartbeatResponse) -> Option<Assignment> {
    r.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
            .collect()
    })
}

fn count(a: &Assignment) -> usize {
    a.values().map(|p| p.len()).sum()
}

fn groups() -> ConsumerGroups {
    ConsumerGroups::new(ConsumerConfig::default(), 7)
}

#[test]
fn first_member_gets_everything() {
    let mut cg = groups();
    let img = image(&[("t", 1, 4)]);
    let r = cg.heartbeat(
        0,
        1,
        &client(),
        &join("m1", &["t"]),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 5000);
    assert_eq!(count(&got(&r).unwrap()), 4);
    assert_eq!(cg.state("g"), Some(ConsumerGroupState::Stable));
    // A plain heartbeat with nothing new carries no assignment.
    let r = cg.heartbeat(
        10,
        1,
        &client(),
        &hb("m1", 1, &got(&r).unwrap()),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r.error_code, 0);
    assert!(r.assignment.is_none());
}

#[test]
fn v0_generates_member_ids_and_v1_requires_them() {
    let mut cg = groups();
    let img = image(&[("t", 1, 1)]);
    let r = cg.heartbeat(0, 0, &client(), &join("", &["t"]), &img, ClassicSide::None);
    assert_eq!(r.error_code, 0);
    assert!(!r.member_id.unwrap().is_empty());
    let r = cg.heartbeat(0, 1, &client(), &join("", &["t"]), &img, ClassicSide::None);
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
}

#[test]
fn second_member_waits_for_revocation() {
    let mut cg = groups();
    let img = image(&[("t", 1, 4)]);
    let r1 = cg.heartbeat(0, 1, &client(), &join("a", &["t"]), &img, ClassicSide::None);
    let owned_a = got(&r1).unwrap();
    let r2 = cg.heartbeat(1, 1, &client(), &join("b", &["t"]), &img, ClassicSide::None);
    assert_eq!(r2.member_epoch, 2);
    // b's share is still held by a: nothing yet.
    assert_eq!(count(&got(&r2).unwrap()), 0);
    // a is told to keep 2 (revoke 2), stays at epoch 1.
    let r1 = cg.heartbeat(
        2,
        1,
        &client(),
        &hb("a", 1, &owned_a),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r1.member_epoch, 1);
    let kept = got(&r1).unwrap();
    assert_eq!(count(&kept), 2);
    assert_eq!(cg.state("g"), Some(ConsumerGroupState::Reconciling));
    // b still gets nothing while a has not revoked.
    let r2 = cg.heartbeat(
        3,
        1,
        &client(),
        &hb("b", 2, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    assert!(got(&r2).map_or(true, |a| count(&a) == 0));
    // a revokes: moves to epoch 2; b then gets the two partitions.
    let r1 = cg.heartbeat(4, 1, &client(), &hb("a", 1, &kept), &img, ClassicSide::None);
    assert_eq!(r1.member_epoch, 2);
    let r2 = cg.heartbeat(
        5,
        1,
        &client(),
        &hb("b", 2, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    let b = got(&r2).unwrap();
    assert_eq!(count(&b), 2);
    assert!(b[&topic_id(1)].is_disjoint(&kept[&topic_id(1)]));
    assert_eq!(cg.state("g"), Some(ConsumerGroupState::Stable));
}

#[test]
fn errors_kafka_sends() {
    let mut cg = groups();
    let img = image(&[("t", 1, 2)]);
    let e = |r: ConsumerGroupHeartbeatResponse| r.error_code;
    // Unknown group with epoch > 0.
    assert_eq!(
        e(cg.heartbeat(
            0,
            1,
            &client(),
            &hb("x", 3, &Assignment::new()),
            &img,
            ClassicSide::None
        )),
        ResponseError::GroupIdNotFound.code()
    );
    // A classic group with members owns the id.
    assert_eq!(
        e(cg.heartbeat(
            0,
            1,
            &client(),
            &join("x", &["t"]),
            &img,
            ClassicSide::Active
        )),
        ResponseError::GroupIdNotFound.code()
    );
    cg.heartbeat(0, 1, &client(), &join("a", &["t"]), &img, ClassicSide::None);
    assert_eq!(
        e(cg.heartbeat(
            0,
            1,
            &client(),
            &hb("zz", 1, &Assignment::new()),
            &img,
            ClassicSide::None
        )),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        e(cg.heartbeat(
            0,
            1,
            &client(),
            &hb("a", 9, &Assignment::new()),
            &img,
            ClassicSide::None
        )),
        ResponseError::FencedMemberEpoch.code()
    );
    let bad_assignor = join("b", &["t"]).with_server_assignor(Some(sb("sticky")));
    assert_eq!(
        e(cg.heartbeat(0, 1, &client(), &bad_assignor, &img, ClassicSide::None)),
        ResponseError::UnsupportedAssignor.code()
    );
    let bad_regex = join("b", &[])
        .with_subscribed_topic_names(None)
        .with_subscribed_topic_regex(Some(sb("(")));
    assert_eq!(
        e(cg.heartbeat(0, 1, &client(), &bad_regex, &img, ClassicSide::None)),
        ResponseError::InvalidRegularExpression.code()
    );
    let no_timeout = join("b", &["t"]).with_rebalance_timeout_ms(-1);
    assert_eq!(
        e(cg.heartbeat(0, 1, &client(), &no_timeout, &img, ClassicSide::None)),
        ResponseError::InvalidRequest.code()
    );
    let owned_on_join = hb(
        "b",
        0,
        &BTreeMap::from([(topic_id(1), BTreeSet::from([0]))]),
    )
    .with_rebalance_timeout_ms(1000)
    .with_subscribed_topic_names(Some(vec![]));
    assert_eq!(
        e(cg.heartbeat(0, 1, &client(), &owned_on_join, &img, ClassicSide::None)),
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(
        e(cg.heartbeat(
            0,
            1,
            &client(),
            &hb("a", -3, &Assignment::new()),
            &img,
            ClassicSide::None
        )),
        ResponseError::InvalidRequest.code()
    );
    let mut small = ConsumerGroups::new(
        ConsumerConfig {
            max_size: 1,
            ..ConsumerConfig::default()
        },
        1,
    );
    small.heartbeat(0, 1, &client(), &join("a", &["t"]), &img, ClassicSide::None);
    assert_eq!(
        e(small.heartbeat(0, 1, &client(), &join("b", &["t"]), &img, ClassicSide::None)),
        ResponseError::GroupMaxSizeReached.code()
    );
}

#[test]
fn leave_and_session_timeout() {
    let mut cg = groups();
    let img = image(&[("t", 1, 2)]);
    cg.heartbeat(0, 1, &client(), &join("a", &["t"]), &img, ClassicSide::None);
    cg.heartbeat(0, 1, &client(), &join("b", &["t"]), &img, ClassicSide::None);
    let r = cg.heartbeat(
        1,
        1,
        &client(),
        &hb("a", LEAVE_EPOCH, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    assert_eq!((r.error_code, r.member_epoch), (0, LEAVE_EPOCH));
    // b now gets both partitions.
    let r = cg.heartbeat(
        2,
        1,
        &client(),
        &hb("b", 2, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    assert_eq!(count(&got(&r).unwrap()), 2);
    let epoch = r.member_epoch;
    assert_eq!(cg.next_deadline(), Some(2 + 45_000));
    assert!(cg.tick(45_001).is_empty());
    assert_eq!(cg.tick(45_002), vec![("g".to_owned(), "b".to_owned())]);
    assert_eq!(cg.state("g"), Some(ConsumerGroupState::Empty));
    let r = cg.heartbeat(
        45_003,
        1,
        &client(),
        &hb("b", epoch, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
}

#[test]
fn rebalance_timeout_fences_a_member_that_does_not_revoke() {
    let mut cg = groups();
    let img = image(&[("t", 1, 2)]);
    let r = cg.heartbeat(0, 1, &client(), &join("a", &["t"]), &img, ClassicSide::None);
    let owned = got(&r).unwrap();
    cg.heartbeat(0, 1, &client(), &join("b", &["t"]), &img, ClassicSide::None);
    cg.heartbeat(
        10,
        1,
        &client(),
        &hb("a", 1, &owned),
        &img,
        ClassicSide::None,
    );
    // a keeps heartbeating with both partitions: past 30 s it is removed.
    for t in (20..30_000).step_by(5_000) {
        cg.heartbeat(
            t,
            1,
            &client(),
            &hb("a", 1, &owned),
            &img,
            ClassicSide::None,
        );
        cg.heartbeat(
            t,
            1,
            &client(),
            &hb("b", 2, &Assignment::new()),
            &img,
            ClassicSide::None,
        );
    }
    assert_eq!(cg.tick(30_011), vec![("g".to_owned(), "a".to_owned())]);
    let r = cg.heartbeat(
        30_012,
        1,
        &client(),
        &hb("b", 2, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    assert_eq!(count(&got(&r).unwrap()), 2);
}

#[test]
fn static_member_leaves_and_comes_back() {
    let mut cg = groups();
    let img = image(&[("t", 1, 3)]);
    let j = join("a", &["t"]).with_instance_id(Some(sb("i1")));
    let r = cg.heartbeat(0, 1, &client(), &j, &img, ClassicSide::None);
    let epoch = r.member_epoch;
    let owned = got(&r).unwrap();
    // librdkafka's incremental heartbeats leave the instance id out: still the member.
    let r = cg.heartbeat(
        1,
        1,
        &client(),
        &hb("a", epoch, &owned),
        &img,
        ClassicSide::None,
    );
    assert_eq!((r.error_code, r.member_epoch), (0, epoch));
    let other = hb("a", epoch, &owned).with_instance_id(Some(sb("i9")));
    assert_eq!(
        cg.heartbeat(1, 1, &client(), &other, &img, ClassicSide::None)
            .error_code,
        ResponseError::FencedInstanceId.code()
    );
    // Same instance id while a is active.
    let j2 = join("a2", &["t"]).with_instance_id(Some(sb("i1")));
    assert_eq!(
        cg.heartbeat(1, 1, &client(), &j2, &img, ClassicSide::None)
            .error_code,
        ResponseError::UnreleasedInstanceId.code()
    );
    let leave = hb("a", LEAVE_STATIC_EPOCH, &owned).with_instance_id(Some(sb("i1")));
    let r = cg.heartbeat(2, 1, &client(), &leave, &img, ClassicSide::None);
    assert_eq!((r.error_code, r.member_epoch), (0, LEAVE_STATIC_EPOCH));
    // Comes back under a new member id: same epoch, same partitions, no rebalance.
    let r = cg.heartbeat(3, 1, &client(), &j2, &img, ClassicSide::None);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, epoch);
    assert_eq!(got(&r).unwrap(), owned);
    assert_eq!(cg.group_epoch("g"), Some(1));
}

fn ids(a: &Assignment) -> Vec<Uuid> {
    a.keys().copied().collect()
}

fn regex_join(member: &str, topics: &[&str], re: &str) -> ConsumerGroupHeartbeatRequest {
    join(member, topics).with_subscribed_topic_regex(Some(sb(re)))
}

#[test]
fn regex_is_resolved_after_the_heartbeat_and_reaches_a_later_one() {
    let mut cg = groups();
    let img = image(&[("orders-1", 1, 1), ("other", 2, 2), ("orders-2", 3, 1)]);
    // The literal topic is assigned at once; the pattern only once it is resolved.
    let j = regex_join("a", &["other"], "orders-.*");
    let r = cg.heartbeat(0, 1, &client(), &j, &img, ClassicSide::None);
    assert_eq!(r.error_code, 0);
    assert_eq!(ids(&got(&r).unwrap()), vec![topic_id(2)]);
    assert!(cg.regex_refresh_pending());
    assert_eq!(cg.resolved("g", "orders-.*"), None);
    let epoch = cg.group_epoch("g").unwrap();
    assert_eq!(cg.resolve_regexes(5, &img), vec!["g".to_string()]);
    assert!(!cg.regex_refresh_pending());
    assert_eq!(
        cg.resolved("g", "orders-.*").unwrap(),
        BTreeSet::from(["orders-1".to_string(), "orders-2".to_string()])
    );
    assert_eq!(cg.group_epoch("g"), Some(epoch + 1));
    let r = cg.heartbeat(
        10,
        1,
        &client(),
        &hb("a", r.member_epoch, &got(&r).unwrap()),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r.member_epoch, epoch + 1);
    assert_eq!(count(&got(&r).unwrap()), 4);
    // Nothing changed: the next refresh is not even scheduled.
    let r2 = cg.heartbeat(
        20_000,
        1,
        &client(),
        &hb("a", r.member_epoch, &got(&r).unwrap()),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r2.error_code, 0);
    assert!(!cg.regex_refresh_pending());
}

#[test]
fn regex_subscription_follows_new_topics_after_the_refresh_interval() {
    let mut cg = groups();
    let j = regex_join("a", &[], "orders-.*").with_subscribed_topic_names(None);
    let img = image(&[("orders-1", 1, 1), ("other", 2, 1)]);
    let r = cg.heartbeat(0, 1, &client(), &j, &img, ClassicSide::None);
    assert_eq!(count(&got(&r).unwrap()), 0);
    cg.resolve_regexes(0, &img);
    let r = cg.heartbeat(
        1,
        1,
        &client(),
        &hb("a", r.member_epoch, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    let held = got(&r).unwrap();
    assert_eq!(ids(&held), vec![topic_id(1)]);
    // A matching topic is created: not resolved again within 10 s of the last time.
    let img = image(&[("orders-1", 1, 1), ("other", 2, 1), ("orders-2", 3, 2)]);
    let r = cg.heartbeat(
        5_000,
        1,
        &client(),
        &hb("a", r.member_epoch, &held),
        &img,
        ClassicSide::None,
    );
    assert!(!cg.regex_refresh_pending());
    assert_eq!(r.assignment, None);
    let r = cg.heartbeat(
        10_001,
        1,
        &client(),
        &hb("a", r.member_epoch, &held),
        &img,
        ClassicSide::None,
    );
    assert!(cg.regex_refresh_pending());
    assert_eq!(
        r.assignment, None,
        "the heartbeat that schedules it does not wait for it"
    );
    assert_eq!(cg.resolve_regexes(10_002, &img), vec!["g".to_string()]);
    let r = cg.heartbeat(
        10_003,
        1,
        &client(),
        &hb("a", r.member_epoch, &held),
        &img,
        ClassicSide::None,
    );
    assert_eq!(count(&got(&r).unwrap()), 3);
}

#[test]
fn a_pattern_resolved_for_one_member_serves_another_at_once_and_goes_with_the_last() {
    let mut cg = groups();
    let img = image(&[("x1", 1, 2), ("x2", 2, 2)]);
    let a = cg.heartbeat(
        0,
        1,
        &client(),
        &regex_join("a", &[], "x.*"),
        &img,
        ClassicSide::None,
    );
    cg.resolve_regexes(1, &img);
    let e = cg.group_epoch("g").unwrap();
    // b brings the same pattern: no new resolution, the group epoch moves at once.
    let b = cg.heartbeat(
        2,
        1,
        &client(),
        &regex_join("b", &[], "x.*"),
        &img,
        ClassicSide::None,
    );
    assert!(!cg.regex_refresh_pending());
    assert_eq!(cg.group_epoch("g"), Some(e + 1));
    assert_eq!(b.member_epoch, e + 1);
    // a leaves; b still uses the pattern; then b leaves and the resolution goes.
    let leave = |m: &str| hb(m, LEAVE_EPOCH, &Assignment::new());
    assert_eq!(
        cg.heartbeat(3, 1, &client(), &leave("a"), &img, ClassicSide::None)
            .error_code,
        0
    );
    assert!(cg.resolved("g", "x.*").is_some());
    let _ = a;
    assert_eq!(
        cg.heartbeat(4, 1, &client(), &leave("b"), &img, ClassicSide::None)
            .error_code,
        0
    );
    assert_eq!(cg.resolved("g", "x.*"), None);
    // A new subscriber right after is resolved again without waiting 10 s.
    cg.heartbeat(
        5,
        1,
        &client(),
        &regex_join("c", &["x1"], "x.*"),
        &img,
        ClassicSide::None,
    );
    assert!(cg.regex_refresh_pending());
}

#[test]
fn changing_the_pattern_drops_the_old_resolution_and_schedules_the_new_one() {
    let mut cg = groups();
    let img = image(&[("x1", 1, 2), ("y1", 2, 2)]);
    let r = cg.heartbeat(
        0,
        1,
        &client(),
        &regex_join("a", &[], "x.*"),
        &img,
        ClassicSide::None,
    );
    cg.resolve_regexes(1, &img);
    let r = cg.heartbeat(
        2,
        1,
        &client(),
        &hb("a", r.member_epoch, &Assignment::new()),
        &img,
        ClassicSide::None,
    );
    let held = got(&r).unwrap();
    assert_eq!(ids(&held), vec![topic_id(1)]);
    let change = hb("a", r.member_epoch, &held).with_subscribed_topic_regex(Some(sb("y.*")));
    cg.heartbeat(3, 1, &client(), &change, &img, ClassicSide::None);
    assert_eq!(cg.resolved("g", "x.*"), None);
    assert!(cg.regex_refresh_pending());
    cg.resolve_regexes(4, &img);
    assert_eq!(
        cg.resolved("g", "y.*").unwrap(),
        BTreeSet::from(["y1".to_string()])
    );
}

#[test]
fn range_and_uniform_assignors() {
    let t1 = topic_id(1);
    let t2 = topic_id(2);
    let parts = BTreeMap::from([(t1, 3), (t2, 3)]);
    let both = BTreeSet::from([t1, t2]);
    let members: BTreeMap<String, MemberSpec> = ["a", "b"]
        .iter()
        .map(|m| {
            (
                m.to_string(),
                MemberSpec {
                    topics: both.clone(),
                    previous: Assignment::new(),
                },
            )
        })
        .collect();
    let r = assign("range", &members, &parts);
    // Range: a gets 0,1 of each topic, b gets 2 of each (4 vs 2).
    assert_eq!(r["a"][&t1], BTreeSet::from([0, 1]));
    assert_eq!(r["a"][&t2], BTreeSet::from([0, 1]));
    assert_eq!(r["b"][&t1], BTreeSet::from([2]));
    let u = assign("uniform", &members, &parts);
    assert_eq!(count(&u["a"]), 3);
    assert_eq!(count(&u["b"]), 3);
    // Uniform is sticky: a third member takes from both without reshuffling the rest.
    let mut three = members.clone();
    for (id, a) in &u {
        three.get_mut(id).unwrap().previous = a.clone();
    }
    three.insert(
        "c".into(),
        MemberSpec {
            topics: both.clone(),
            previous: Assignment::new(),
        },
    );
    let u3 = assign("uniform", &three, &parts);
    for id in ["a", "b", "c"] {
        assert_eq!(count(&u3[id]), 2, "{id}");
    }
    for id in ["a", "b"] {
        for (t, ps) in &u3[id] {
            assert!(ps.is_subset(&u[id][t]), "{id} moved partitions");
        }
    }
}

#[test]
fn group_picks_the_assignor_most_members_ask_for() {
    let mut cg = groups();
    let img = image(&[("t", 1, 4)]);
    let j = join("a", &["t"]).with_server_assignor(Some(sb("range")));
    cg.heartbeat(0, 1, &client(), &j, &img, ClassicSide::None);
    let d = cg.describe(
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(sb("g")), GroupId(sb("nope"))]),
        &img,
        &|_| false,
    );
    assert_eq!(d.groups[0].assignor_name.as_str(), "range");
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(
        d.groups[0].members[0].assignment.topic_partitions[0]
            .topic_name
            .0
            .as_str(),
        "t"
    );
    assert_eq!(
        d.groups[1].error_code,
        ResponseError::GroupIdNotFound.code()
    );
}

#[test]
fn commit_validation_uses_member_epochs() {
    let mut cg = groups();
    let img = image(&[("t", 1, 1)]);
    let r = cg.heartbeat(0, 1, &client(), &join("a", &["t"]), &img, ClassicSide::None);
    let e = r.member_epoch;
    assert_eq!(cg.validate_commit(1, "g", "a", e, 9), None);
    assert_eq!(
        cg.validate_commit(1, "g", "a", e + 1, 9),
        Some(ResponseError::StaleMemberEpoch)
    );
    assert_eq!(
        cg.validate_commit(1, "g", "zz", e, 9),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        cg.validate_commit(1, "g", "", -1, 9),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(cg.validate_commit(1, "other", "", -1, 9), None);
    assert_eq!(cg.validate_fetch("g", Some("a"), e), None);
    assert_eq!(
        cg.validate_fetch("g", Some("a"), e - 1),
        Some(ResponseError::StaleMemberEpoch)
    );
}

/// Deterministic model test: members join, heartbeat (revoking what they are told to drop
/// after a random delay), leave and crash in a seeded random order. After every step no
/// partition is held by two members; once everyone keeps heartbeating the group converges
/// to a stable, complete, balanced assignment.
#[test]
fn model_never_two_owners_and_converges() {
    for seed in 1..=40u64 {
        run_model(seed);
    }
}

struct Client {
    epoch: i32,
    owned: Assignment,
    alive: bool,
}

fn run_model(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut cg = ConsumerGroups::new(ConsumerConfig::default(), seed);
    let img = image(&[("t", 1, 12), ("u", 2, 5)]);
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut next = 0;
    let mut now: Millis = 0;
    let check = |cg: &ConsumerGroups, clients: &HashMap<String, Client>| {
        let mut seen: HashMap<(Uuid, i32), &str> = HashMap::new();
        for id in clients.keys() {
            if let Some(h) = cg.held("g", id) {
                for (t, ps) in h {
                    for p in ps {
                        if let Some(o) = seen.insert((t, p), id) {
                            panic!("seed {seed}: {t}/{p} held by {o} and {id}");
                        }
                    }
                }
            }
        }
        // What clients think they own is a subset of what the coordinator says they hold.
        for (id, c) in clients {
            if !c.alive || c.epoch <= 0 {
                continue;
            }
            let held = cg.held("g", id).unwrap_or_default();
            for (t, ps) in &c.owned {
                assert!(
                    held.get(t).is_some_and(|h| ps.is_subset(h)),
                    "seed {seed}: {id} consumes {t}/{ps:?} it does not hold (held {held:?}, epoch {})", c.epoch
                );
            }
        }
    };
    let step =
        |cg: &mut ConsumerGroups, clients: &mut HashMap<String, Client>, id: &str, now: Millis| {
            let c = clients.get_mut(id).unwrap();
            let req = if c.epoch == 0 {
                join(id, &["t", "u"])
            } else {
                hb(id, c.epoch, &c.owned)
            };
            let r = cg.heartbeat(now, 1, &client(), &req, &img, ClassicSide::None);
            if r.error_code != 0 {
                assert!(
                    [
                        ResponseError::UnknownMemberId.code(),
                        ResponseError::FencedMemberEpoch.code()
                    ]
                    .contains(&r.error_code),
                    "seed {seed}: {:?}",
                    r.error_message
                );
                c.epoch = 0;
                c.owned.clear();
                return;
            }
            c.epoch = r.member_epoch;
            if let Some(a) = got(&r) {
                // The client revokes at once what is not listed and takes the rest.
                c.owned = a;
            }
        };
    for _ in 0..400 {
        now += 1 + rand(2_000);
        let gone = cg.tick(now);
        for (_, id) in gone {
            if let Some(c) = clients.get_mut(&id) {
                c.epoch = 0;
                c.owned.clear();
            }
        }
        match rand(10) {
            0 if clients.values().filter(|c| c.alive).count() < 6 => {
                next += 1;
                let id = format!("m{next}");
                clients.insert(
                    id.clone(),
                    Client {
                        epoch: 0,
                        owned: Assignment::new(),
                        alive: true,
                    },
                );
                step(&mut cg, &mut clients, &id, now);
            }
            1 => {
                // A graceful leave.
                let ids: Vec<String> = clients
                    .iter()
                    .filter(|(_, c)| c.alive && c.epoch > 0)
                    .map(|(i, _)| i.clone())
                    .collect();
                if !ids.is_empty() {
                    let id = &ids[rand(ids.len() as u64) as usize];
                    let r = cg.heartbeat(
                        now,
                        1,
                        &client(),
                        &hb(id, LEAVE_EPOCH, &Assignment::new()),
                        &img,
                        ClassicSide::None,
                    );
                    assert_eq!(r.error_code, 0);
                    clients.remove(id);
                }
            }
            2 => {
                // A crash: it stops heartbeating and its session runs out.
                let ids: Vec<String> = clients
                    .iter()
                    .filter(|(_, c)| c.alive)
                    .map(|(i, _)| i.clone())
                    .collect();
                if !ids.is_empty() {
                    let id = ids[rand(ids.len() as u64) as usize].clone();
                    clients.get_mut(&id).unwrap().alive = false;
                }
            }
            _ => {
                let mut ids: Vec<String> = clients
                    .iter()
                    .filter(|(_, c)| c.alive)
                    .map(|(i, _)| i.clone())
                    .collect();
                ids.sort();
                if !ids.is_empty() {
                    let id = ids[rand(ids.len() as u64) as usize].clone();
                    step(&mut cg, &mut clients, &id, now);
                }
            }
        }
        check(&cg, &clients);
    }
    // Converge: let crashed members expire, everyone alive heartbeats.
    clients.retain(|_, c| c.alive);
    now += 50_000;
    for (_, id) in cg.tick(now) {
        if let Some(c) = clients.get_mut(&id) {
            c.epoch = 0;
            c.owned.clear();
        }
    }
    for _ in 0..10 {
        let mut ids: Vec<String> = clients.keys().cloned().collect();
        ids.sort();
        for id in ids {
            now += 10;
            step(&mut cg, &mut clients, &id, now);
            check(&cg, &clients);
        }
    }
    if clients.is_empty() {
        return;
    }
    assert_eq!(
        cg.state("g"),
        Some(ConsumerGroupState::Stable),
        "seed {seed}"
    );
    let total: usize = clients.values().map(|c| count(&c.owned)).sum();
    assert_eq!(total, 17, "seed {seed}: every partition is consumed");
    let counts: Vec<usize> = clients.values().map(|c| count(&c.owned)).collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "seed {seed}: unbalanced {counts:?}");
}

#[test]
fn group_configs_set_heartbeat_interval_and_session() {
    let mut cg = groups();
    let img = image(&[("t", 1, 2)]);
    let o = GroupOverrides {
        session_timeout_ms: Some(50_000),
        heartbeat_interval_ms: Some(7_000),
    };
    cg.set_group_configs([("g".to_string(), o)].into_iter().collect());
    let r = cg.heartbeat(
        0,
        1,
        &client(),
        &join("m1", &["t"]),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.heartbeat_interval_ms, 7000);
    // The session is the group's 50 s: alive at 49 s, gone after 50 s.
    assert!(cg.tick(49_000).is_empty());
    assert_eq!(cg.tick(50_001).len(), 1);
    // Without the group's configs: the global 5 s interval.
    cg.set_group_configs(Default::default());
    let r = cg.heartbeat(
        60_000,
        1,
        &client(),
        &join("m2", &["t"]),
        &img,
        ClassicSide::None,
    );
    assert_eq!(r.heartbeat_interval_ms, 5000);
}
