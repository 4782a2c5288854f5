//! CreateTopics / CreatePartitions rules: the error Kafka sends for each bad request.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::{configs, valid_topic_name};

/// Largest partition count accepted for one topic.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Checks a topic to create: its name, partition count (-1 takes `default_partitions`),
/// replication factor (-1 or 1: there is one node) and configs. Returns the partition
/// count to create.
pub fn check(
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    has_assignments: bool,
    configs: &BTreeMap<String, String>,
    default_partitions: i32,
) -> Result<i32, (ResponseError, String)> {
    if !valid_topic_name(name) {
        return Err((
            ResponseError::InvalidTopicException,
            format!("Topic name {name:?} is illegal: 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'"),
        ));
    }
    if has_assignments {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "manual replica assignment is not supported".into(),
        ));
    }
    let partitions = if num_partitions == -1 {
        default_partitions
    } else {
        num_partitions
    };
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err((
            ResponseError::InvalidPartitions,
            format!("Number of partitions must be larger than 0 (and at most {MAX_PARTITIONS})."),
        ));
    }
    if replication_factor != -1 && replication_factor != 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("Replication factor: {replication_factor} larger than available brokers: 1."),
        ));
    }
    for (k, v) in configs {
        configs::validate(k, v).map_err(|e| (e, format!("Invalid config {k}={v}")))?;
    }
    Ok(partitions)
}

/// Checks a CreatePartitions request: the new total must exceed the current count.
pub fn check_new_count(current: usize, requested: i32) -> Result<(), (ResponseError, String)> {
    if requested <= current as i32 || requested > MAX_PARTITIONS {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "Topic currently has {current} partitions, {requested} would not be an increase."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let none = BTreeMap::new();
        assert_eq!(check("t", -1, -1, false, &none, 3), Ok(3));
        assert_eq!(check("t", 6, 1, false, &none, 3), Ok(6));
        assert_eq!(
            check("a b", 1, 1, false, &none, 1).unwrap_err().0,
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            check("t", 0, 1, false, &none, 1).unwrap_err().0,
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            check("t", 1, 3, false, &none, 1).unwrap_err().0,
            ResponseError::InvalidReplicationFactor
        );
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_owned(), "x".to_owned());
        assert_eq!(
            check("t", 1, 1, false, &bad, 1).unwrap_err().0,
            ResponseError::InvalidConfig
        );
        assert!(check_new_count(3, 3).is_err());
        assert!(check_new_count(3, 4).is_ok());
    }
}
