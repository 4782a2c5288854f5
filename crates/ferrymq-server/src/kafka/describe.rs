//! One node's answers to the replica- and log-level APIs: DescribeLogDirs (the vhost's
//! Kafka directory is the one log dir; sizes from the partition tasks, offset lag 0),
//! DescribeProducers (the partition tasks' producer-state tables), OffsetForLeaderEpoch
//! (every partition's leader epoch is 0: its end offset is the high watermark) and
//! ElectLeaders (the preferred leader, this node, always leads: ELECTION_NOT_NEEDED).

use std::sync::Arc;

use ferrymq_auth::Perm;
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::authz::View;
use super::handlers::{s, CLUSTER_DENIED, DENIED_MESSAGE, TOPIC_DENIED};
use super::partition_task::{Command, Description, PartitionHandle};
use super::KafkaBroker;

/// The leader epoch of every partition (one node, never re-elected).
pub const LEADER_EPOCH: i32 = 0;

async fn describe(h: &PartitionHandle) -> Option<Description> {
    let (reply, rx) = oneshot::channel();
    h.tx.send(Command::Describe { reply }).await.ok()?;
    rx.await.ok()
}

pub(super) async fn log_dirs(
    broker: Arc<KafkaBroker>,
    view: View,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // Kafka: DESCRIBE on the cluster.
    if !view.cluster() {
        return DescribeLogDirsResponse::default().with_error_code(CLUSTER_DENIED.code());
    }
    // (topic, partitions) asked for; all of them when the list is null.
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        None => broker
            .all_topics()
            .iter()
            .map(|t| (t.name.clone(), (0..t.partition_count() as i32).collect()))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    };
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        let Some(topic) = broker.topic(&name) else {
            continue;
        };
        let mut out = Vec::new();
        for p in partitions {
            // Unknown partitions are left out, as Kafka does.
            let Some(h) = topic.partition(p) else {
                continue;
            };
            let Some(d) = describe(&h).await else {
                continue;
            };
            out.push(
                describe_log_dirs_response::DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(d.size_bytes as i64)
                    .with_offset_lag(0),
            );
        }
        if !out.is_empty() {
            topics.push(
                describe_log_dirs_response::DescribeLogDirsTopic::default()
                    .with_name(TopicName(s(&name)))
                    .with_partitions(out),
            );
        }
    }
    let dir = broker.config.dir.join("kafka");
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let (total, usable) = match nix::sys::statvfs::statvfs(&dir) {
        Ok(st) => (
            st.blocks().saturating_mul(st.fragment_size()) as i64,
            st.blocks_available().saturating_mul(st.fragment_size()) as i64,
        ),
        Err(_) => (-1, -1),
    };
    DescribeLogDirsResponse::default().with_results(vec![
        describe_log_dirs_response::DescribeLogDirsResult::default()
            .with_log_dir(s(&dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(total)
            .with_usable_bytes(usable),
    ])
}

pub(super) async fn producers(
    broker: Arc<KafkaBroker>,
    view: View,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let allowed = view.topic(Perm::Read, &name);
        let topic = broker.topic(&name);
        let mut partitions = Vec::new();
        for p in t.partition_indexes {
            let r =
                describe_producers_response::PartitionResponse::default().with_partition_index(p);
            let handle = match &topic {
                _ if !allowed => Err(TOPIC_DENIED),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(t) => t.partition(p).ok_or(ResponseError::UnknownTopicOrPartition),
            };
            let d = match handle {
                Ok(h) => describe(&h)
                    .await
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                Err(e) => Err(e),
            };
            partitions.push(match d {
                Err(e) => r.with_error_code(e.code()),
                Ok(d) => r.with_active_producers(
                    d.producers
                        .into_iter()
                        .map(|p| {
                            describe_producers_response::ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(p.txn_start_offset)
                        })
                        .collect(),
                ),
            });
        }
        topics.push(
            describe_producers_response::TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}

/// Kafka's answer for one partition of a leader at epoch [`LEADER_EPOCH`]: the current
/// leader epoch check (UNKNOWN_LEADER_EPOCH for a newer one), then the end offset of the asked
/// epoch: the log end for the current one, undefined (-1, -1) for a later one.
pub fn epoch_end(current_leader_epoch: i32, leader_epoch: i32, end: i64) -> (i16, i32, i64) {
    // No epoch is older than 0, so none is FENCED_LEADER_EPOCH here.
    if current_leader_epoch > LEADER_EPOCH {
        return (ResponseError::UnknownLeaderEpoch.code(), -1, -1);
    }
    if leader_epoch > LEADER_EPOCH || leader_epoch < 0 {
        (0, -1, -1)
    } else {
        (0, LEADER_EPOCH, end)
    }
}

pub(super) fn offset_for_leader_epoch(
    broker: &KafkaBroker,
    view: &View,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let visible = view.topic_visible(&name);
            let topic = broker.topic(&name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = offset_for_leader_epoch_response::EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let handle = match &topic {
                        _ if !visible => Err(TOPIC_DENIED),
                        None => Err(ResponseError::UnknownTopicOrPartition),
                        Some(t) => t
                            .partition(p.partition)
                            .ok_or(ResponseError::UnknownTopicOrPartition),
                    };
                    match handle {
                        Err(e) => r.with_error_code(e.code()),
                        Ok(h) => {
                            let (code, epoch, end) = epoch_end(
                                p.current_leader_epoch,
                                p.leader_epoch,
                                h.offsets().high_watermark,
                            );
                            r.with_error_code(code)
                                .with_leader_epoch(epoch)
                                .with_end_offset(end)
                        }
                    }
                })
                .collect();
            offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub(super) fn elect_leaders(
    broker: &KafkaBroker,
    view: &View,
    v: i16,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let r = ElectLeadersResponse::default();
    // Kafka: ALTER on the cluster; every partition then gets the same error.
    let top = if !view.cluster() {
        Some((CLUSTER_DENIED, DENIED_MESSAGE))
    } else if !(0..=1).contains(&req.election_type) {
        Some((ResponseError::InvalidRequest, "Unknown election type."))
    } else {
        None
    };
    let Some(list) = req.topic_partitions else {
        // All partitions: Kafka reports only those it elected for; none need it here.
        return match top {
            Some((e, _)) if v >= 1 => r.with_error_code(e.code()),
            _ => r,
        };
    };
    let results = list
        .into_iter()
        .map(|t| {
            let topic = broker.topic(&t.topic.0);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let (e, msg) = match (&top, &topic) {
                        (Some((e, m)), _) => (*e, *m),
                        (None, Some(t)) if t.partition(p).is_some() => (
                            ResponseError::ElectionNotNeeded,
                            "Leader election not needed for topic partition.",
                        ),
                        _ => (
                            ResponseError::UnknownTopicOrPartition,
                            "The partition does not exist.",
                        ),
                    };
                    elect_leaders_response::PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(e.code())
                        .with_error_message(Some(s(msg)))
                })
                .collect();
            elect_leaders_response::ReplicaElectionResult::default()
                .with_topic(t.topic)
                .with_partition_result(partitions)
        })
        .collect();
    let r = r.with_replica_election_results(results);
    match top {
        Some((e, _)) if v >= 1 => r.with_error_code(e.code()),
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_as_a_single_leader_answers() {
        assert_eq!(epoch_end(-1, 0, 42), (0, 0, 42));
        assert_eq!(epoch_end(0, 0, 42), (0, 0, 42));
        // A later epoch than the leader's: undefined.
        assert_eq!(epoch_end(-1, 3, 42), (0, -1, -1));
        assert_eq!(
            epoch_end(5, 0, 42).0,
            ResponseError::UnknownLeaderEpoch.code()
        );
    }
}
