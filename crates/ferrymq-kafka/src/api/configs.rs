//! Topic configs (DescribeConfigs, IncrementalAlterConfigs, CreateTopics `configs`).
//! FerryMQ acts on `retention.ms`, `retention.bytes`, `segment.bytes`, `segment.ms` (for
//! compacted topics with `max.compaction.lag.ms` only), `cleanup.policy`,
//! `max.message.bytes` and the compaction ones (`min.cleanable.dirty.ratio`,
//! `delete.retention.ms`, `min.compaction.lag.ms`, `max.compaction.lag.ms`); the other
//! names Kafka defines for topics are accepted, stored and described, with Kafka's
//! defaults. Unknown names get INVALID_CONFIG, as in Kafka.
//!
//! Two names Kafka 3.x still took and 4.0 removed are accepted, validated and described so
//! that tools written for 3.x keep working: `message.format.version` and
//! `message.downconversion.enable`. Kafka 3.x ignores the first once the inter-broker
//! protocol is 3.0 or later (records stay in format v2) and FerryMQ does the same: records
//! are always stored as produced, in v2 batches; FerryMQ never down-converts on fetch
//! (Fetch below v4 is not served), so the second has no effect either.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

/// Topic config names with Kafka's default values.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.after.max.ms", "9223372036854775807"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.difference.max.ms", "9223372036854775807"),
    ("message.downconversion.enable", "true"),
    ("message.format.version", "3.0-IV1"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

/// The default value of a topic config, if the name is one.
pub fn default_of(name: &str) -> Option<&'static str> {
    DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Checks a value for a config name: INVALID_CONFIG for unknown names and bad values.
pub fn validate(name: &str, value: &str) -> Result<(), ResponseError> {
    let Some(_) = default_of(name) else {
        return Err(ResponseError::InvalidConfig);
    };
    let int = |min: i64| match value.trim().parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => Err(ResponseError::InvalidConfig),
    };
    match name {
        "retention.ms" | "retention.bytes" => int(-1),
        "segment.bytes" => match value.trim().parse::<i32>() {
            Ok(v) if v >= 14 => Ok(()),
            _ => Err(ResponseError::InvalidConfig),
        },
        "max.message.bytes" => match value.trim().parse::<i32>() {
            Ok(v) if v >= 0 => Ok(()),
            _ => Err(ResponseError::InvalidConfig),
        },
        "cleanup.policy" => {
            let ok = value
                .split(',')
                .map(str::trim)
                .all(|p| p == "delete" || p == "compact");
            if ok && !value.trim().is_empty() {
                Ok(())
            } else {
                Err(ResponseError::InvalidConfig)
            }
        }
        "delete.retention.ms"
        | "file.delete.delay.ms"
        | "flush.messages"
        | "flush.ms"
        | "index.interval.bytes"
        | "min.compaction.lag.ms"
        | "segment.index.bytes"
        | "segment.jitter.ms"
        | "segment.ms"
        | "message.timestamp.after.max.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.difference.max.ms"
        | "min.insync.replicas" => int(0),
        "max.compaction.lag.ms" => int(1),
        "min.cleanable.dirty.ratio" => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(ResponseError::InvalidConfig),
        },
        "message.timestamp.type" => match value.trim() {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(ResponseError::InvalidConfig),
        },
        "message.format.version" => {
            if is_metadata_version(value.trim()) {
                Ok(())
            } else {
                Err(ResponseError::InvalidConfig)
            }
        }
        "message.downconversion.enable" | "preallocate" | "unclean.leader.election.enable" => {
            match value.trim() {
                "true" | "false" => Ok(()),
                _ => Err(ResponseError::InvalidConfig),
            }
        }
        _ => Ok(()),
    }
}

/// A version string as Kafka's `MetadataVersion.fromVersionString` reads it: dotted
/// numbers (`0.10.0`, `0.10.0.0`, `2.8`) with an optional `-IV<n>` suffix (`3.0-IV1`).
fn is_metadata_version(v: &str) -> bool {
    let (base, iv) = match v.split_once("-IV") {
        Some((b, n)) => (b, Some(n)),
        None => (v, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = base.split('.').collect();
    parts.len() >= 2
        && parts.len() <= 4
        && parts.iter().all(|p| digits(p))
        && iv.map_or(true, digits)
}

/// The configs FerryMQ acts on, resolved from a topic's overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// Delete segments whose newest record is older than this (-1: never).
    pub retention_ms: i64,
    /// Delete oldest segments while a partition is larger than this (-1: never).
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub compact: bool,
    pub delete: bool,
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches.
    pub log_append_time: bool,
    /// How far a CreateTime record may lie before / after the broker's clock
    /// (`message.timestamp.before.max.ms` / `after.max.ms`, both bounded by the
    /// deprecated `message.timestamp.difference.max.ms`).
    pub timestamp_before_ms: i64,
    pub timestamp_after_ms: i64,
    /// Compaction: a pass runs when dirty bytes / all cleanable bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// Compaction: tombstones are kept at least this long after their segment was
    /// first cleaned.
    pub delete_retention_ms: i64,
    /// `segment.ms`: a compacted log with `max.compaction.lag.ms` set seals its active
    /// segment once it is this old (or the lag, if less).
    pub segment_ms: i64,
    /// Compaction: segments holding a record younger than this are not cleaned yet.
    pub min_compaction_lag_ms: i64,
    /// Compaction: a log whose first dirty record is older than this is cleaned whatever
    /// its dirty ratio.
    pub max_compaction_lag_ms: i64,
}

impl TopicConfig {
    /// Resolves the overrides (validated earlier) over Kafka's defaults.
    pub fn resolve(overrides: &BTreeMap<String, String>) -> TopicConfig {
        let get = |name: &str| {
            overrides
                .get(name)
                .map(String::as_str)
                .or_else(|| default_of(name))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let policy = get("cleanup.policy");
        let difference = get("message.timestamp.difference.max.ms")
            .parse::<i64>()
            .unwrap_or(i64::MAX);
        TopicConfig {
            retention_ms: get("retention.ms").parse().unwrap_or(604_800_000),
            retention_bytes: get("retention.bytes").parse().unwrap_or(-1),
            segment_bytes: get("segment.bytes").parse().unwrap_or(1 << 30),
            compact: policy.split(',').any(|p| p.trim() == "compact"),
            delete: policy.split(',').any(|p| p.trim() == "delete"),
            max_message_bytes: get("max.message.bytes").parse().unwrap_or(1_048_588),
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            timestamp_before_ms: get("message.timestamp.before.max.ms")
                .parse::<i64>()
                .unwrap_or(i64::MAX)
                .min(difference),
            timestamp_after_ms: get("message.timestamp.after.max.ms")
                .parse::<i64>()
                .unwrap_or(i64::MAX)
                .min(difference),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio").parse().unwrap_or(0.5),
            delete_retention_ms: get("delete.retention.ms").parse().unwrap_or(86_400_000),
            segment_ms: get("segment.ms").parse().unwrap_or(604_800_000),
            min_compaction_lag_ms: get("min.compaction.lag.ms").parse().unwrap_or(0),
            max_compaction_lag_ms: get("max.compaction.lag.ms").parse().unwrap_or(i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.01").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "-0.1").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "NaN").is_err());
        assert!(validate("delete.retention.ms", "0").is_ok());
        assert!(validate("delete.retention.ms", "-1").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("segment.bytes", "1").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("preallocate", "true").is_ok());
        assert!(validate("max.compaction.lag.ms", "0").is_err());
        assert!(validate("max.compaction.lag.ms", "1").is_ok());
        assert!(validate("min.compaction.lag.ms", "0").is_ok());
        // Kafka 3.x's deprecated format names (librdkafka's 0092 sets the first).
        assert!(validate("message.format.version", "0.10.0.0").is_ok());
        assert!(validate("message.format.version", "0.10.0-IV1").is_ok());
        assert!(validate("message.format.version", "3.0-IV1").is_ok());
        assert!(validate("message.format.version", "2.8").is_ok());
        assert!(validate("message.format.version", "latest").is_err());
        assert!(validate("message.format.version", "3").is_err());
        assert!(validate("message.format.version", "3.0-IV").is_err());
        assert!(validate("message.downconversion.enable", "false").is_ok());
        assert!(validate("message.downconversion.enable", "no").is_err());
    }

    #[test]
    fn resolve_overrides_over_defaults() {
        let d = TopicConfig::resolve(&BTreeMap::new());
        assert_eq!(d.retention_ms, 604_800_000);
        assert_eq!(d.max_message_bytes, 1_048_588);
        assert!(d.delete && !d.compact);
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_owned(), "compact".to_owned());
        o.insert("retention.bytes".to_owned(), "5000".to_owned());
        let c = TopicConfig::resolve(&o);
        assert!(c.compact && !c.delete);
        assert_eq!(c.retention_bytes, 5000);
    }
}
