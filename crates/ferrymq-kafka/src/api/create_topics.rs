//! CreateTopics / CreatePartitions rules: the error Kafka sends for each bad request.
//! One node serves every partition, but a topic keeps the replication factor and manual
//! replica assignment it was created with (stored as asked, served as one replica): an
//! assignment is accepted when each replica list names this node, as Kafka accepts one
//! naming registered brokers.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::{configs, valid_topic_name};

/// Largest partition count accepted for one topic.
pub const MAX_PARTITIONS: i32 = 10_000;

type Refusal = (ResponseError, String);

/// What a valid CreateTopics entry creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub partitions: i32,
    pub replication_factor: i16,
    /// The manual replica assignment, one list per partition (empty: none given).
    pub assignment: Vec<Vec<i32>>,
}

fn bad_assignment(msg: String) -> Refusal {
    (ResponseError::InvalidReplicaAssignment, msg)
}

/// Checks one partition's replica list (Kafka's `validateManualPartitionAssignment`):
/// not empty, no broker twice, as many replicas as the other partitions, and this node
/// (`node`, the only registered broker) among them.
pub fn check_replicas(
    replicas: &[i32],
    replication_factor: Option<usize>,
    node: i32,
) -> Result<(), Refusal> {
    if replicas.is_empty() {
        return Err(bad_assignment(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    for (i, b) in replicas.iter().enumerate() {
        if replicas[..i].contains(b) {
            return Err(bad_assignment(format!(
                "The manual partition assignment includes the broker {b} more than once."
            )));
        }
    }
    if let Some(rf) = replication_factor {
        if rf != replicas.len() {
            return Err(bad_assignment(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
                replicas.len()
            )));
        }
    }
    if !replicas.contains(&node) {
        let b = replicas[0];
        return Err(bad_assignment(format!(
            "The manual partition assignment includes broker {b}, but no such broker is registered."
        )));
    }
    Ok(())
}

/// Checks a topic to create: its name, partition count (-1 takes `default_partitions`),
/// replication factor (-1 takes 1; any positive one is kept), manual assignment
/// (`(partition index, replicas)`, exclusive with the two counts) and configs.
pub fn check(
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    assignments: &[(i32, Vec<i32>)],
    configs: &BTreeMap<String, String>,
    default_partitions: i32,
    node: i32,
) -> Result<Created, Refusal> {
    if !valid_topic_name(name) {
        return Err((
            ResponseError::InvalidTopicException,
            format!("Topic name {name:?} is illegal: 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'"),
        ));
    }
    let created = if assignments.is_empty() {
        let partitions = if num_partitions == -1 {
            default_partitions
        } else {
            num_partitions
        };
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err((
                ResponseError::InvalidPartitions,
                format!(
                    "Number of partitions must be larger than 0 (and at most {MAX_PARTITIONS})."
                ),
            ));
        }
        if replication_factor == 0 || replication_factor < -1 {
            return Err((
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        Created {
            partitions,
            replication_factor: replication_factor.max(1),
            assignment: Vec::new(),
        }
    } else {
        if replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "A manual partition assignment was specified, but replication factor was not set to -1.".into(),
            ));
        }
        if num_partitions != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "A manual partition assignment was specified, but numPartitions was not set to -1."
                    .into(),
            ));
        }
        let mut sorted: Vec<&(i32, Vec<i32>)> = assignments.iter().collect();
        sorted.sort_by_key(|(p, _)| *p);
        if sorted.len() > MAX_PARTITIONS as usize
            || sorted.iter().enumerate().any(|(i, (p, _))| *p != i as i32)
        {
            return Err(bad_assignment(
                "Partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
        let rf = sorted[0].1.len();
        for (_, replicas) in &sorted {
            check_replicas(replicas, Some(rf), node)?;
        }
        Created {
            partitions: sorted.len() as i32,
            replication_factor: rf as i16,
            assignment: sorted.into_iter().map(|(_, r)| r.clone()).collect(),
        }
    };
    for (k, v) in configs {
        configs::validate(k, v).map_err(|e| (e, format!("Invalid config {k}={v}")))?;
    }
    Ok(created)
}

/// Checks a CreatePartitions request: the new total must exceed the current count, and
/// a manual assignment must give one replica list per new partition, each as long as the
/// topic's replication factor.
pub fn check_new_count(
    current: usize,
    requested: i32,
    assignments: Option<&[Vec<i32>]>,
    replication_factor: usize,
    node: i32,
) -> Result<(), Refusal> {
    if requested <= current as i32 || requested > MAX_PARTITIONS {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "Topic currently has {current} partitions, {requested} would not be an increase."
            ),
        ));
    }
    if let Some(a) = assignments {
        let added = requested as usize - current;
        if a.len() != added {
            return Err(bad_assignment(format!(
                "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                a.len()
            )));
        }
        for replicas in a {
            check_replicas(replicas, Some(replication_factor), node)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<Created, Refusal>) -> ResponseError {
        r.unwrap_err().0
    }

    #[test]
    fn rules() {
        let none = BTreeMap::new();
        let c = |p, rf| check("t", p, rf, &[], &none, 3, 0);
        assert_eq!(c(-1, -1).unwrap().partitions, 3);
        assert_eq!(c(6, 1).unwrap().partitions, 6);
        // Any positive replication factor is kept (served as one replica).
        assert_eq!(c(1, 3).unwrap().replication_factor, 3);
        assert_eq!(c(1, -1).unwrap().replication_factor, 1);
        assert_eq!(err(c(1, 0)), ResponseError::InvalidReplicationFactor);
        assert_eq!(err(c(0, 1)), ResponseError::InvalidPartitions);
        assert_eq!(
            err(check("a b", 1, 1, &[], &none, 1, 0)),
            ResponseError::InvalidTopicException
        );
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_owned(), "x".to_owned());
        assert_eq!(
            err(check("t", 1, 1, &[], &bad, 1, 0)),
            ResponseError::InvalidConfig
        );
    }

    #[test]
    fn assignments() {
        let none = BTreeMap::new();
        let a = |asg: &[(i32, Vec<i32>)], p, rf| check("t", p, rf, asg, &none, 3, 0);
        let ok = a(&[(1, vec![0, 5]), (0, vec![5, 0])], -1, -1).unwrap();
        assert_eq!(ok.partitions, 2);
        assert_eq!(ok.replication_factor, 2);
        assert_eq!(ok.assignment, vec![vec![5, 0], vec![0, 5]]);
        let bad = ResponseError::InvalidReplicaAssignment;
        assert_eq!(err(a(&[(0, vec![7])], -1, -1)), bad); // unknown broker only
        assert_eq!(err(a(&[(0, vec![])], -1, -1)), bad);
        assert_eq!(err(a(&[(0, vec![0, 0])], -1, -1)), bad);
        assert_eq!(err(a(&[(0, vec![0]), (2, vec![0])], -1, -1)), bad);
        assert_eq!(err(a(&[(0, vec![0]), (1, vec![0, 1])], -1, -1)), bad);
        assert_eq!(
            err(a(&[(0, vec![0])], 1, -1)),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            err(a(&[(0, vec![0])], -1, 1)),
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn new_partitions() {
        assert!(check_new_count(3, 3, None, 1, 0).is_err());
        assert!(check_new_count(3, 4, None, 1, 0).is_ok());
        assert!(check_new_count(1, 3, Some(&[vec![0], vec![0]]), 1, 0).is_ok());
        let bad = Some(ResponseError::InvalidReplicaAssignment);
        assert_eq!(
            check_new_count(1, 3, Some(&[vec![0]]), 1, 0)
                .err()
                .map(|e| e.0),
            bad
        );
        assert_eq!(
            check_new_count(1, 2, Some(&[vec![0, 1]]), 1, 0)
                .err()
                .map(|e| e.0),
            bad
        );
        assert_eq!(
            check_new_count(1, 2, Some(&[vec![9]]), 1, 0)
                .err()
                .map(|e| e.0),
            bad
        );
    }
}
