//! Kafka metrics with kafka_exporter's names, HELP texts and labels (`topic`,
//! `partition`, `consumergroup`), plus a `vhost` label (FerryMQ's topics and groups live
//! in a vhost). Offsets are read from the partition owners' published offsets; groups
//! from the group coordinator (as the `/api/kafka/groups` endpoints read them).

use std::sync::Arc;

use ferrymq_kafka::kafka_protocol::messages::ApiKey;
use ferrymq_server::kafka::KafkaBroker;

use super::exposition::{Exposition, Kind};
use crate::api::kafka::{describe_group, group_names, GroupView};
use crate::AppState;

pub struct PartitionRow {
    pub partition: String,
    pub log_start: i64,
    pub high_watermark: i64,
}

pub struct TopicRow {
    pub vhost: String,
    pub name: String,
    pub partitions: Vec<PartitionRow>,
}

pub struct GroupRow {
    pub vhost: String,
    pub group: GroupView,
}

/// Topics and groups of every open Kafka vhost.
pub struct KafkaSnapshot {
    pub topics: Vec<TopicRow>,
    pub groups: Vec<GroupRow>,
    /// The fetch session cache (KIP-227): counters, sessions, partitions they hold.
    pub fetch_sessions: (ferrymq_kafka::fetch_session::Stats, usize, usize),
    /// (API key, request bytes, response bytes) per API key seen.
    pub traffic: Vec<(i16, u64, u64)>,
}

impl KafkaSnapshot {
    /// Reads the open vhosts (`vhosts`: only these, `None`: all).
    pub async fn take(s: &AppState, vhosts: &Option<Vec<String>>) -> KafkaSnapshot {
        let mut topics = Vec::new();
        let mut groups = Vec::new();
        let open: Vec<(String, Arc<KafkaBroker>)> = s.kafka.open_vhosts();
        for (vhost, b) in open {
            if vhosts.as_ref().is_some_and(|f| !f.contains(&vhost)) {
                continue;
            }
            let mut ts = b.all_topics();
            ts.sort_by(|a, b| a.name.cmp(&b.name));
            for t in ts {
                let partitions = t
                    .partitions
                    .read()
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let o = p.offsets();
                        PartitionRow {
                            partition: i.to_string(),
                            log_start: o.log_start,
                            high_watermark: o.high_watermark,
                        }
                    })
                    .collect();
                topics.push(TopicRow {
                    vhost: vhost.clone(),
                    name: t.name.to_string(),
                    partitions,
                });
            }
            for name in group_names(&b).await {
                if let Some(group) = describe_group(&b, &name).await {
                    groups.push(GroupRow {
                        vhost: vhost.clone(),
                        group,
                    });
                }
            }
        }
        let fetch_sessions = {
            let c = s.kafka.fetch_sessions.lock();
            (c.stats(), c.len(), c.partitions())
        };
        KafkaSnapshot {
            topics,
            groups,
            fetch_sessions,
            traffic: s.kafka.traffic.snapshot(),
        }
    }
}

/// Writes the kafka_exporter families.
pub fn render(e: &mut Exposition, k: &KafkaSnapshot) {
    e.single(
        "kafka_brokers",
        Kind::Gauge,
        "Number of Brokers in the Kafka Cluster.",
        1u64,
    );
    render_fetch_sessions(e, k);
    render_traffic(e, k);
    e.family(
        "kafka_topic_partitions",
        Kind::Gauge,
        "Number of partitions for this Topic",
    );
    for t in &k.topics {
        e.sample(
            "kafka_topic_partitions",
            &[("vhost", &t.vhost), ("topic", &t.name)],
            t.partitions.len(),
        );
    }
    type PartFam = (&'static str, &'static str, fn(&PartitionRow) -> i64);
    let per_partition: [PartFam; 7] = [
        (
            "kafka_topic_partition_current_offset",
            "Current Offset of a Broker at Topic/Partition",
            |p| p.high_watermark,
        ),
        (
            "kafka_topic_partition_oldest_offset",
            "Oldest Offset of a Broker at Topic/Partition",
            |p| p.log_start,
        ),
        (
            "kafka_topic_partition_in_sync_replica",
            "Number of In-Sync Replicas for this Topic/Partition",
            |_| 1,
        ),
        (
            "kafka_topic_partition_leader",
            "Leader Broker ID of this Topic/Partition",
            |_| i64::from(ferrymq_kafka::api::metadata::NODE_ID),
        ),
        (
            "kafka_topic_partition_leader_is_preferred",
            "1 if Topic/Partition is using the Preferred Broker",
            |_| 1,
        ),
        (
            "kafka_topic_partition_replicas",
            "Number of Replicas for this Topic/Partition",
            |_| 1,
        ),
        (
            "kafka_topic_partition_under_replicated_partition",
            "1 if Topic/Partition is under Replicated",
            |_| 0,
        ),
    ];
    for (name, help, get) in per_partition {
        e.family(name, Kind::Gauge, help);
        for t in &k.topics {
            for p in &t.partitions {
                e.sample(
                    name,
                    &[
                        ("vhost", &t.vhost),
                        ("topic", &t.name),
                        ("partition", &p.partition),
                    ],
                    get(p),
                );
            }
        }
    }
    e.family(
        "kafka_consumergroup_current_offset",
        Kind::Gauge,
        "Current Offset of a ConsumerGroup at Topic/Partition",
    );
    for g in &k.groups {
        for o in &g.group.offsets {
            e.sample(
                "kafka_consumergroup_current_offset",
                &[
                    ("vhost", &g.vhost),
                    ("consumergroup", &g.group.name),
                    ("topic", &o.topic),
                    ("partition", &o.partition.to_string()),
                ],
                o.committed,
            );
        }
    }
    e.family(
        "kafka_consumergroup_current_offset_sum",
        Kind::Gauge,
        "Current Offset of a ConsumerGroup at Topic for all partitions",
    );
    for g in &k.groups {
        for (topic, sum) in per_topic(&g.group, |o| Some(o.committed)) {
            e.sample(
                "kafka_consumergroup_current_offset_sum",
                &[
                    ("vhost", &g.vhost),
                    ("consumergroup", &g.group.name),
                    ("topic", topic),
                ],
                sum,
            );
        }
    }
    e.family(
        "kafka_consumergroup_lag",
        Kind::Gauge,
        "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
    );
    for g in &k.groups {
        for o in &g.group.offsets {
            if let Some(lag) = o.lag() {
                e.sample(
                    "kafka_consumergroup_lag",
                    &[
                        ("vhost", &g.vhost),
                        ("consumergroup", &g.group.name),
                        ("topic", &o.topic),
                        ("partition", &o.partition.to_string()),
                    ],
                    lag,
                );
            }
        }
    }
    e.family(
        "kafka_consumergroup_lag_sum",
        Kind::Gauge,
        "Current Approximate Lag of a ConsumerGroup at Topic for all partitions",
    );
    for g in &k.groups {
        for (topic, sum) in per_topic(&g.group, |o| o.lag()) {
            e.sample(
                "kafka_consumergroup_lag_sum",
                &[
                    ("vhost", &g.vhost),
                    ("consumergroup", &g.group.name),
                    ("topic", topic),
                ],
                sum,
            );
        }
    }
    e.family(
        "kafka_consumergroup_members",
        Kind::Gauge,
        "Amount of members in a consumer group",
    );
    for g in &k.groups {
        e.sample(
            "kafka_consumergroup_members",
            &[("vhost", &g.vhost), ("consumergroup", &g.group.name)],
            g.group.members.len(),
        );
    }
}

/// Sums of `get` per topic, in topic order.
fn per_topic(
    g: &GroupView,
    get: impl Fn(&crate::api::kafka::GroupOffset) -> Option<i64>,
) -> Vec<(&str, i64)> {
    let mut sums: std::collections::BTreeMap<&str, i64> = Default::default();
    for o in &g.offsets {
        if let Some(v) = get(o) {
            *sums.entry(o.topic.as_str()).or_default() += v;
        }
    }
    sums.into_iter().collect()
}

/// FerryMQ's own fetch session families (KIP-227): how clients fetch and the cache's use.
fn render_fetch_sessions(e: &mut Exposition, k: &KafkaSnapshot) {
    let (st, sessions, partitions) = &k.fetch_sessions;
    e.family(
        "ferrymq_kafka_fetch_requests_total",
        Kind::Counter,
        "Fetch requests by kind: sessionless (epoch -1), full (epoch 0), incremental, session_error",
    );
    for (kind, n) in [
        ("sessionless", st.sessionless_fetches),
        ("full", st.full_fetches),
        ("incremental", st.incremental_fetches),
        ("session_error", st.session_errors),
    ] {
        e.sample("ferrymq_kafka_fetch_requests_total", &[("kind", kind)], n);
    }
    e.single(
        "ferrymq_kafka_fetch_sessions",
        Kind::Gauge,
        "Fetch sessions in the cache",
        *sessions as u64,
    );
    e.single(
        "ferrymq_kafka_fetch_session_partitions",
        Kind::Gauge,
        "Partitions held by all fetch sessions",
        *partitions as u64,
    );
    e.single(
        "ferrymq_kafka_fetch_sessions_evicted_total",
        Kind::Counter,
        "Fetch sessions evicted to make room for another",
        st.evicted,
    );
    e.single(
        "ferrymq_kafka_fetch_sessions_not_created_total",
        Kind::Counter,
        "Full fetches that found no free fetch session slot",
        st.not_created,
    );
}

/// Bytes of requests read and responses written per API (size prefixes included).
fn render_traffic(e: &mut Exposition, k: &KafkaSnapshot) {
    let name = |key: i16| match ApiKey::try_from(key) {
        Ok(a) => format!("{a:?}"),
        Err(_) => key.to_string(),
    };
    for (family, help, response) in [
        (
            "ferrymq_kafka_request_bytes_total",
            "Bytes of Kafka requests read, by API",
            false,
        ),
        (
            "ferrymq_kafka_response_bytes_total",
            "Bytes of Kafka responses written, by API",
            true,
        ),
    ] {
        e.family(family, Kind::Counter, help);
        for &(key, req, resp) in &k.traffic {
            let api = name(key);
            e.sample(family, &[("api", &api)], if response { resp } else { req });
        }
    }
}
