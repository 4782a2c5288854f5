//! Dynamic broker configs and group configs (IncrementalAlterConfigs / AlterConfigs /
//! DescribeConfigs on BROKER and GROUP resources), as Kafka's `DynamicBrokerConfig` and
//! `GroupConfig` define them: which names may change at runtime, their validation and the
//! topic defaults they stand for. Pure: the server stores and applies them.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

/// DescribeConfigs `config_source` values (Kafka's `ConfigSource`).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_DEFAULT: i8 = 5;
pub const SOURCE_GROUP: i8 = 8;

/// Broker config names Kafka lets IncrementalAlterConfigs change at runtime (a subset of
/// `DynamicBrokerConfig.AllDynamicConfigs`, Kafka 4.0), with Kafka's static defaults.
/// Only the first ones (see [`TOPIC_SYNONYMS`]) act here; the others are stored and
/// described (FerryMQ has no Kerberos, no SSL keystore reloading, no thread pools to size).
pub const DYNAMIC: &[(&str, &str)] = &[
    // DynamicLogConfig: topic-config synonyms.
    ("message.max.bytes", "1048588"),
    ("log.retention.ms", "604800000"),
    ("log.retention.bytes", "-1"),
    ("log.cleanup.policy", "delete"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", ""),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.message.timestamp.type", "CreateTime"),
    ("compression.type", "producer"),
    ("min.insync.replicas", "1"),
    ("unclean.leader.election.enable", "false"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.preallocate", "false"),
    // LogCleaner.ReconfigurableConfigs.
    ("log.cleaner.threads", "1"),
    ("log.cleaner.backoff.ms", "15000"),
    (
        "log.cleaner.io.max.bytes.per.second",
        "1.7976931348623157E308",
    ),
    // DynamicThreadPool.ReconfigurableConfigs.
    ("num.io.threads", "8"),
    ("num.network.threads", "3"),
    ("num.replica.fetchers", "1"),
    ("num.recovery.threads.per.data.dir", "2"),
    ("background.threads", "10"),
    // SocketServer / DynamicListenerConfig.
    ("max.connections", "2147483647"),
    ("max.connections.per.ip", "2147483647"),
    ("max.connection.creation.rate", "2147483647"),
    // DynamicProducerStateManagerConfig.
    ("producer.id.expiration.ms", "86400000"),
    // Listener SASL configs (DynamicBrokerConfig.DynamicSecurityConfigs).
    ("sasl.enabled.mechanisms", "GSSAPI"),
    ("sasl.kerberos.service.name", ""),
    ("sasl.kerberos.kinit.cmd", "/usr/bin/kinit"),
    ("sasl.kerberos.min.time.before.relogin", "60000"),
    ("sasl.kerberos.ticket.renew.jitter", "0.05"),
    ("sasl.kerberos.ticket.renew.window.factor", "0.8"),
    ("sasl.kerberos.principal.to.local.rules", "DEFAULT"),
    ("sasl.login.refresh.window.factor", "0.8"),
    ("sasl.login.refresh.window.jitter", "0.05"),
    ("sasl.login.refresh.min.period.seconds", "60"),
    ("sasl.login.refresh.buffer.seconds", "300"),
    // SslConfigs.RECONFIGURABLE_CONFIGS.
    ("ssl.keystore.type", "JKS"),
    ("ssl.keystore.location", ""),
    ("ssl.truststore.type", "JKS"),
    ("ssl.truststore.location", ""),
    ("ssl.protocol", "TLSv1.3"),
    ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
    ("ssl.cipher.suites", ""),
    ("ssl.client.auth", "none"),
    ("ssl.endpoint.identification.algorithm", "https"),
];

/// Broker names FerryMQ acts on, as the topic config they are the default of.
pub const TOPIC_SYNONYMS: &[(&str, &str)] = &[
    ("message.max.bytes", "max.message.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
];

/// Group config names (Kafka's `GroupConfig`, KIP-848), with their defaults and bounds
/// (the broker's `group.consumer.min/max.*` defaults).
pub const GROUP: &[(&str, &str, i64, i64)] = &[
    ("consumer.session.timeout.ms", "45000", 45_000, 60_000),
    ("consumer.heartbeat.interval.ms", "5000", 5_000, 15_000),
    ("share.session.timeout.ms", "45000", 45_000, 60_000),
    ("share.heartbeat.interval.ms", "5000", 5_000, 15_000),
    ("share.record.lock.duration.ms", "30000", 15_000, 60_000),
];

/// The static default of a dynamic broker config name.
pub fn broker_default(name: &str) -> Option<&'static str> {
    DYNAMIC.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Checks a dynamic broker config: INVALID_REQUEST ("Cannot update these configs
/// dynamically") for names that are not dynamic, INVALID_CONFIG for bad values.
pub fn validate_broker(name: &str, value: &str) -> Result<(), (ResponseError, String)> {
    if broker_default(name).is_none() {
        return Err((
            ResponseError::InvalidRequest,
            format!("Cannot update these configs dynamically: Set({name})"),
        ));
    }
    let bad = || {
        (
            ResponseError::InvalidConfig,
            format!("Invalid value {value} for configuration {name}"),
        )
    };
    let v = value.trim();
    let int = |min: i64| match v.parse::<i64>() {
        Ok(x) if x >= min => Ok(()),
        _ => Err(bad()),
    };
    if let Some((_, topic)) = TOPIC_SYNONYMS.iter().find(|(b, _)| *b == name) {
        return super::configs::validate(topic, value).map_err(|_| bad());
    }
    match name {
        "log.cleanup.policy" => {
            super::configs::validate("cleanup.policy", value).map_err(|_| bad())
        }
        "log.segment.bytes" => super::configs::validate("segment.bytes", value).map_err(|_| bad()),
        "log.cleaner.min.cleanable.ratio" => {
            super::configs::validate("min.cleanable.dirty.ratio", value).map_err(|_| bad())
        }
        "num.io.threads"
        | "num.network.threads"
        | "num.replica.fetchers"
        | "num.recovery.threads.per.data.dir"
        | "background.threads"
        | "log.cleaner.threads"
        | "max.connections"
        | "max.connections.per.ip"
        | "max.connection.creation.rate" => int(1),
        "log.roll.ms" | "log.flush.interval.ms" if v.is_empty() => Ok(()),
        "log.roll.ms"
        | "log.flush.interval.ms"
        | "log.cleaner.delete.retention.ms"
        | "log.cleaner.min.compaction.lag.ms"
        | "log.flush.interval.messages"
        | "log.cleaner.backoff.ms"
        | "producer.id.expiration.ms"
        | "sasl.kerberos.min.time.before.relogin"
        | "min.insync.replicas" => int(0),
        "log.preallocate" | "unclean.leader.election.enable" => match v {
            "true" | "false" => Ok(()),
            _ => Err(bad()),
        },
        _ => Ok(()),
    }
}

/// One broker config as DescribeConfigs reports it: value and source.
pub fn describe_broker(
    name: &str,
    per_broker: &BTreeMap<String, String>,
    cluster: &BTreeMap<String, String>,
) -> Option<(String, i8)> {
    let default = broker_default(name)?;
    Some(match (per_broker.get(name), cluster.get(name)) {
        (Some(v), _) => (v.clone(), SOURCE_DYNAMIC_BROKER),
        (None, Some(v)) => (v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER),
        (None, None) => (default.to_owned(), SOURCE_DEFAULT),
    })
}

/// The topic defaults the dynamic broker configs set (per-broker over cluster-default),
/// as topic config name → (value, DescribeConfigs source).
pub fn topic_defaults(
    per_broker: &BTreeMap<String, String>,
    cluster: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, i8)> {
    TOPIC_SYNONYMS
        .iter()
        .filter_map(|(b, t)| {
            let (v, source) = describe_broker(b, per_broker, cluster)?;
            (source != SOURCE_DEFAULT).then(|| ((*t).to_owned(), (v, source)))
        })
        .collect()
}

/// The default of a group config name.
pub fn group_default(name: &str) -> Option<&'static str> {
    GROUP.iter().find(|g| g.0 == name).map(|g| g.1)
}

/// Checks a group config: INVALID_CONFIG for unknown names and values out of bounds.
pub fn validate_group(name: &str, value: &str) -> Result<(), (ResponseError, String)> {
    let Some((_, _, min, max)) = GROUP.iter().find(|g| g.0 == name) else {
        return Err((
            ResponseError::InvalidConfig,
            format!("Unknown group config name: {name}"),
        ));
    };
    match value.trim().parse::<i64>() {
        Ok(v) if (*min..=*max).contains(&v) => Ok(()),
        _ => Err((
            ResponseError::InvalidConfig,
            format!("{name} must be between {min} and {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn broker_validation() {
        assert!(validate_broker("sasl.kerberos.min.time.before.relogin", "58000").is_ok());
        assert!(validate_broker("background.threads", "9").is_ok());
        assert!(validate_broker("background.threads", "0").is_err());
        assert!(validate_broker("log.cleanup.policy", "delete,compact").is_ok());
        assert!(validate_broker("log.cleanup.policy", "forever").is_err());
        assert!(validate_broker("message.max.bytes", "-5").is_err());
        let (e, m) = validate_broker("broker.id", "3").unwrap_err();
        assert_eq!(e, ResponseError::InvalidRequest);
        assert!(m.contains("Cannot update these configs dynamically"));
        assert_eq!(
            validate_broker("no.such", "1").unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn sources_and_topic_defaults() {
        let cluster = map(&[("message.max.bytes", "2000"), ("log.retention.ms", "1000")]);
        let broker = map(&[("message.max.bytes", "3000")]);
        assert_eq!(
            describe_broker("message.max.bytes", &broker, &cluster),
            Some(("3000".into(), SOURCE_DYNAMIC_BROKER))
        );
        assert_eq!(
            describe_broker("log.retention.ms", &broker, &cluster),
            Some(("1000".into(), SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
        assert_eq!(
            describe_broker("background.threads", &broker, &cluster),
            Some(("10".into(), SOURCE_DEFAULT))
        );
        let d = topic_defaults(&broker, &cluster);
        assert_eq!(
            d.get("max.message.bytes"),
            Some(&("3000".into(), SOURCE_DYNAMIC_BROKER))
        );
        assert_eq!(
            d.get("retention.ms"),
            Some(&("1000".into(), SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
        assert!(!d.contains_key("retention.bytes"));
    }

    #[test]
    fn group_validation() {
        assert!(validate_group("consumer.session.timeout.ms", "50000").is_ok());
        assert!(validate_group("consumer.session.timeout.ms", "1000").is_err());
        assert!(validate_group("consumer.heartbeat.interval.ms", "x").is_err());
        assert!(validate_group("session.timeout.ms", "50000").is_err());
    }
}
