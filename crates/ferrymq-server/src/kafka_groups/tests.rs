//! The group service end to end inside one process: three members on a six-partition topic
//! joining, syncing, heartbeating, committing, one leaving, a rebalance, a restart that keeps
//! the offsets, session expiry. Time is tokio's paused clock, so timeouts cost nothing.

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;

const SESSION: i32 = 10_000;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn topics() -> TopicExists {
    Arc::new(|t: &str, p: i32| t == "events" && (0..6).contains(&p))
}

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 200,
        ..GroupConfig::default()
    }
}

fn start(dir: &Path) -> GroupService {
    GroupService::start_with(dir, topics(), config()).unwrap()
}

/// A member as a consumer client drives it.
#[derive(Clone, Debug)]
struct Member {
    id: String,
    generation: i32,
    leader: bool,
    peers: Vec<String>,
}

async fn join(svc: &GroupService, member_id: &str) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(SESSION)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"events"))]);
    svc.join_group(7, req).await
}

/// JoinGroup with the KIP-394 round trip, as librdkafka does it.
async fn join_new(svc: &GroupService) -> Member {
    let first = join(svc, "").await;
    assert_eq!(first.error_code, E::MemberIdRequired.code());
    rejoin(svc, first.member_id.as_str()).await
}

async fn rejoin(svc: &GroupService, id: &str) -> Member {
    let r = join(svc, id).await;
    assert_eq!(r.error_code, 0, "join of {id}");
    Member {
        id: r.member_id.to_string(),
        generation: r.generation_id,
        leader: r.leader == r.member_id,
        peers: r.members.iter().map(|m| m.member_id.to_string()).collect(),
    }
}

/// SyncGroup; the leader hands out the six partitions range-style. Returns the member's
/// partitions.
async fn sync(svc: &GroupService, m: &Member) -> Vec<i32> {
    let mut assignments = Vec::new();
    if m.leader {
        let mut peers = m.peers.clone();
        peers.sort();
        let per = 6 / peers.len();
        let extra = 6 % peers.len();
        let mut next = 0u8;
        for (k, p) in peers.iter().enumerate() {
            let n = per + usize::from(k < extra);
            let parts: Vec<u8> = (next..next + n as u8).collect();
            next += n as u8;
            assignments.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(p))
                    .with_assignment(Bytes::from(parts)),
            );
        }
    }
    let r = svc
        .sync_group(
            5,
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(m.generation)
                .with_member_id(s(&m.id))
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")))
                .with_assignments(assignments),
        )
        .await;
    assert_eq!(r.error_code, 0, "sync of {}", m.id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    r.assignment.iter().map(|b| i32::from(*b)).collect()
}

async fn heartbeat(svc: &GroupService, m: &Member) -> i16 {
    svc.heartbeat(
        4,
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(m.generation)
            .with_member_id(s(&m.id)),
    )
    .await
    .error_code
}

async fn commit(svc: &GroupService, m: &Member, offsets: &[(i32, i64)]) -> Vec<i16> {
    let r = svc
        .offset_commit(
            8,
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(m.generation)
                .with_member_id(s(&m.id))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("events")))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    )]),
        )
        .await;
    r.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

async fn fetch_all(svc: &GroupService, group: &str) -> Vec<(i32, i64)> {
    let r = svc
        .offset_fetch(
            7,
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("events")))
                    .with_partition_indexes((0..6).collect())])),
        )
        .await;
    assert_eq!(r.error_code, 0);
    r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect()
}

async fn describe(svc: &GroupService) -> (String, usize) {
    let r = svc
        .describe_groups(
            5,
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
        )
        .await;
    let g = &r.groups[0];
    (g.group_state.to_string(), g.members.len())
}

/// Joins and syncs a whole generation concurrently; returns members with partitions.
async fn generation(svc: &GroupService, members: Vec<Member>) -> Vec<(Member, Vec<i32>)> {
    let mut tasks = Vec::new();
    for m in members {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let m = if m.id.is_empty() {
                join_new(&svc).await
            } else {
                rejoin(&svc, &m.id).await
            };
            let parts = sync(&svc, &m).await;
            (m, parts)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    let gens: Vec<i32> = out.iter().map(|(m, _)| m.generation).collect();
    assert!(
        gens.windows(2).all(|w| w[0] == w[1]),
        "one generation: {gens:?}"
    );
    assert_eq!(
        out.iter().filter(|(m, _)| m.leader).count(),
        1,
        "one leader"
    );
    let mut all: Vec<i32> = out.iter().flat_map(|(_, p)| p.clone()).collect();
    all.sort();
    assert_eq!(
        all,
        (0..6).collect::<Vec<_>>(),
        "every partition exactly once"
    );
    out
}

fn fresh() -> Member {
    Member {
        id: String::new(),
        generation: -1,
        leader: false,
        peers: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn three_members_six_partitions_rebalance_commit_restart() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path());
    let gen1 = generation(&svc, vec![fresh(), fresh(), fresh()]).await;
    assert_eq!(describe(&svc).await, ("Stable".to_string(), 3));
    for (m, parts) in &gen1 {
        assert_eq!(parts.len(), 2);
        assert_eq!(heartbeat(&svc, m).await, 0);
        let offsets: Vec<(i32, i64)> = parts.iter().map(|p| (*p, 100 + i64::from(*p))).collect();
        assert_eq!(commit(&svc, m, &offsets).await, vec![0, 0]);
    }
    assert_eq!(
        fetch_all(&svc, "g").await,
        (0..6).map(|p| (p, 100 + i64::from(p))).collect::<Vec<_>>()
    );

    // One member leaves: the others learn of the rebalance from their heartbeats.
    let (gone, _) = gen1[2].clone();
    let left = svc
        .leave_group(
            4,
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&gone.id))]),
        )
        .await;
    assert_eq!(left.members[0].error_code, 0);
    for (m, _) in &gen1[..2] {
        assert_eq!(heartbeat(&svc, m).await, E::RebalanceInProgress.code());
    }
    // A stale commit from the departed member is refused.
    assert_eq!(
        commit(&svc, &gone, &[(0, 1)]).await,
        vec![E::UnknownMemberId.code()]
    );
    let gen2 = generation(&svc, gen1[..2].iter().map(|(m, _)| m.clone()).collect()).await;
    assert_eq!(gen2[0].0.generation, gen1[0].0.generation + 1);
    for (m, parts) in &gen2 {
        assert_eq!(parts.len(), 3);
        // The old generation can no longer commit.
        let stale = Member {
            generation: m.generation - 1,
            ..m.clone()
        };
        assert_eq!(
            commit(&svc, &stale, &[(parts[0], 1)]).await,
            vec![E::IllegalGeneration.code()]
        );
        let offsets: Vec<(i32, i64)> = parts.iter().map(|p| (*p, 200 + i64::from(*p))).collect();
        assert_eq!(commit(&svc, m, &offsets).await, vec![0, 0, 0]);
    }
    // Unknown partitions are refused per partition.
    assert_eq!(
        commit(&svc, &gen2[0].0, &[(6, 1), (0, 200)]).await,
        vec![E::UnknownTopicOrPartition.code(), 0]
    );
    svc.shutdown().await;

    // Restart: the committed offsets are back, the members are not.
    let svc = start(dir.path());
    assert_eq!(
        fetch_all(&svc, "g").await,
        (0..6).map(|p| (p, 200 + i64::from(p))).collect::<Vec<_>>()
    );
    assert_eq!(heartbeat(&svc, &gen2[0].0).await, E::UnknownMemberId.code());
    assert_eq!(describe(&svc).await, ("Empty".to_string(), 0));
    // Members come back with a fresh handshake and resume.
    let gen3 = generation(&svc, vec![fresh(), fresh(), fresh()]).await;
    assert_eq!(describe(&svc).await.0, "Stable");
    assert_eq!(gen3.len(), 3);
    svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn silent_member_expires_and_the_group_empties() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path());
    let gen1 = generation(&svc, vec![fresh(), fresh()]).await;
    let (alive, silent) = (gen1[0].0.clone(), gen1[1].0.clone());
    // `alive` heartbeats every 3 s; `silent` never does.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let e = heartbeat(&svc, &alive).await;
        assert!(e == 0 || e == E::RebalanceInProgress.code(), "{e}");
    }
    assert_eq!(heartbeat(&svc, &silent).await, E::UnknownMemberId.code());
    assert_eq!(heartbeat(&svc, &alive).await, E::RebalanceInProgress.code());
    let gen2 = generation(&svc, vec![alive]).await;
    assert_eq!(gen2[0].1.len(), 6, "the survivor gets every partition");
    // Now it goes silent too: after its session timeout the group is empty.
    tokio::time::sleep(Duration::from_millis(SESSION as u64 + 100)).await;
    assert_eq!(describe(&svc).await, ("Empty".to_string(), 0));
    svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn simple_commits_and_group_deletion_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path());
    let simple = Member {
        id: String::new(),
        generation: -1,
        leader: false,
        peers: Vec::new(),
    };
    assert_eq!(commit(&svc, &simple, &[(0, 5), (1, 6)]).await, vec![0, 0]);
    let del = |name: &str| DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(name))]);
    let r = svc.delete_groups(2, del("nope")).await;
    assert_eq!(r.results[0].error_code, E::GroupIdNotFound.code());
    svc.shutdown().await;
    let svc = start(dir.path());
    assert_eq!(fetch_all(&svc, "g").await[..2], [(0, 5), (1, 6)]);
    let r = svc.delete_groups(2, del("g")).await;
    assert_eq!(r.results[0].error_code, 0);
    svc.shutdown().await;
    let svc = start(dir.path());
    assert_eq!(fetch_all(&svc, "g").await[..2], [(0, -1), (1, -1)]);
    let l = svc.list_groups(4, ListGroupsRequest::default()).await;
    assert!(l.groups.is_empty());
    svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_join_is_answered_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path());
    let first = join(&svc, "").await;
    let waiting = {
        let svc = svc.clone();
        let id = first.member_id.to_string();
        tokio::spawn(async move { join(&svc, &id).await })
    };
    tokio::task::yield_now().await;
    let other = svc.clone();
    svc.shutdown().await;
    let r = waiting.await.unwrap();
    // Either it completed before the shutdown or it learns the coordinator is gone.
    assert!(
        r.error_code == 0 || r.error_code == E::CoordinatorNotAvailable.code(),
        "{r:?}"
    );
    assert_eq!(
        heartbeat(&other, &fresh()).await,
        E::CoordinatorNotAvailable.code()
    );
}

/// Concurrent commits share fsyncs, every acknowledged commit survives a power loss, and a
/// failed fsync turns into COORDINATOR_NOT_AVAILABLE for its commits, never into a false
/// success; the next commit succeeds and is durable.
#[tokio::test(start_paused = true)]
async fn commits_are_acknowledged_only_when_durable_and_share_fsyncs() {
    use ferrymq_store::log::fault::{CrashMode, FaultBackend};
    let disk = FaultBackend::new(11);
    let dir = Path::new("/data");
    let svc = GroupService::start_on(disk.clone(), dir, topics(), config()).unwrap();
    let simple = fresh();
    let before = disk.sync_count();
    let mut tasks = Vec::new();
    for k in 0..60i64 {
        let svc = svc.clone();
        let m = simple.clone();
        tasks.push(tokio::spawn(async move {
            commit(&svc, &m, &[((k % 6) as i32, 1000 + k)]).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), vec![0]);
    }
    let syncs = disk.sync_count() - before;
    assert!(
        (1..60).contains(&syncs),
        "60 concurrent commits took {syncs} fsyncs"
    );
    // A failed fsync: the commit is refused, not acknowledged.
    disk.fail_next_sync();
    assert_eq!(
        commit(&svc, &simple, &[(0, 7)]).await,
        vec![E::CoordinatorNotAvailable.code()]
    );
    // The next one succeeds (the journal is rewritten from memory).
    assert_eq!(commit(&svc, &simple, &[(1, 8)]).await, vec![0]);
    svc.shutdown().await;
    disk.crash(CrashMode::all());
    let svc = GroupService::start_on(disk.clone(), dir, topics(), config()).unwrap();
    let got = fetch_all(&svc, "g").await;
    assert_eq!(got[1], (1, 8), "the acknowledged commit survived the crash");
    for (p, off) in &got[2..] {
        assert_eq!(*off, 1054 + i64::from(*p), "partition {p}");
    }
    svc.shutdown().await;
}

/// A slow fsync (real time, fault disk): the OffsetCommit response is released only after
/// the fsync covering it returned, while the coordinator keeps answering heartbeats; a
/// power cut while that fsync runs never turns the commit into a success, and the commit
/// acknowledged before it survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waits_for_its_slow_fsync_and_heartbeats_do_not() {
    use ferrymq_store::log::fault::{CrashMode, FaultBackend};
    let slow = std::time::Duration::from_millis(400);
    let disk = FaultBackend::new(23);
    let dir = Path::new("/data");
    let svc = GroupService::start_on(disk.clone(), dir, topics(), config()).unwrap();
    let simple = fresh();
    disk.set_sync_delay(Some(slow));
    let t0 = std::time::Instant::now();
    let pending = {
        let (svc, m) = (svc.clone(), simple.clone());
        tokio::spawn(async move { commit(&svc, &m, &[(0, 5)]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // The coordinator answers while the journal's fsync runs.
    assert_eq!(
        heartbeat(&svc, &fresh()).await,
        E::UnknownMemberId.code(),
        "a heartbeat is answered at once"
    );
    assert!(
        !pending.is_finished(),
        "the commit still waits for its fsync"
    );
    assert_eq!(pending.await.unwrap(), vec![0]);
    assert!(
        t0.elapsed() >= slow,
        "no commit response before its fsync returned"
    );

    // A power cut while the next commit's fsync runs: that commit is not acknowledged.
    let pending = {
        let (svc, m) = (svc.clone(), simple.clone());
        tokio::spawn(async move { commit(&svc, &m, &[(1, 9)]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    disk.crash(CrashMode::all());
    assert_ne!(
        pending.await.unwrap(),
        vec![0],
        "a commit whose fsync was cut is never acknowledged"
    );
    disk.set_sync_delay(None);
    svc.shutdown().await;
    let svc = GroupService::start_on(disk.clone(), dir, topics(), config()).unwrap();
    let got = fetch_all(&svc, "g").await;
    assert!(
        got.contains(&(0, 5)),
        "the acknowledged commit survived: {got:?}"
    );
    svc.shutdown().await;
}
