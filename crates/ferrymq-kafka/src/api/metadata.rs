//! Metadata response assembly from the broker's view of its topics: one node (this
//! broker) leads every partition.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

/// The node id of this broker.
pub const NODE_ID: i32 = 0;
/// The cluster id reported in Metadata and DescribeCluster.
pub const CLUSTER_ID: &str = "ferrymq-cluster";

/// What Metadata reports about one topic.
#[derive(Debug, Clone)]
pub enum TopicView {
    Found {
        name: String,
        id: Uuid,
        partitions: i32,
    },
    Error {
        name: Option<String>,
        id: Uuid,
        error: ResponseError,
    },
}

/// Builds the response: this node at `host:port`, the topics as found.
pub fn response(host: &str, port: i32, topics: Vec<TopicView>) -> MetadataResponse {
    let node = BrokerId(NODE_ID);
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(StrBytes::from_string(host.to_owned()))
            .with_port(port)])
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(node)
        .with_topics(
            topics
                .into_iter()
                .map(|t| match t {
                    TopicView::Found {
                        name,
                        id,
                        partitions,
                    } => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_topic_id(id)
                        .with_partitions(
                            (0..partitions)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(node)
                                        .with_leader_epoch(0)
                                        .with_replica_nodes(vec![node])
                                        .with_isr_nodes(vec![node])
                                })
                                .collect(),
                        ),
                    TopicView::Error { name, id, error } => MetadataResponseTopic::default()
                        .with_error_code(error.code())
                        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                        .with_topic_id(id),
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_leads_every_partition() {
        let r = response(
            "127.0.0.1",
            9092,
            vec![
                TopicView::Found {
                    name: "a".into(),
                    id: Uuid::from_u128(1),
                    partitions: 3,
                },
                TopicView::Error {
                    name: Some("b".into()),
                    id: Uuid::nil(),
                    error: ResponseError::UnknownTopicOrPartition,
                },
            ],
        );
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(r.topics[0].partitions.len(), 3);
        assert!(r.topics[0].partitions.iter().all(|p| p.leader_id.0 == 0));
        assert_eq!(r.topics[1].error_code, 3);
    }
}
