//! ConsumerGroupDescribe (API 69) on the consumer groups.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescAssignment, DescribedGroup, Member as DescMember, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, TopicName,
};

use super::{sb, Assignment, ConsumerGroups, TopicImage};

/// READ, DELETE, DESCRIBE (no ACLs restrict groups further).
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

fn described(a: &Assignment, topics: &TopicImage) -> DescAssignment {
    DescAssignment::default().with_topic_partitions(
        a.iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic_id(*t)
                    .with_topic_name(TopicName(sb(topics.name(*t).unwrap_or_default())))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

impl ConsumerGroups {
    /// ConsumerGroupDescribe. `classic(group)` tells whether a classic group of that id
    /// exists (it is answered GROUP_ID_NOT_FOUND "not a consumer group", as Kafka does).
    pub fn describe(
        &self,
        r: &ConsumerGroupDescribeRequest,
        topics: &TopicImage,
        classic: &dyn Fn(&str) -> bool,
    ) -> ConsumerGroupDescribeResponse {
        let groups = r
            .group_ids
            .iter()
            .map(|gid| {
                let id = gid.0.as_str();
                let Some(g) = self.groups.get(id) else {
                    let msg = if classic(id) {
                        format!("Group {id} is not a consumer group.")
                    } else {
                        format!("Group {id} not found.")
                    };
                    return DescribedGroup::default()
                        .with_group_id(GroupId(sb(id)))
                        .with_group_state(sb("Dead"))
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(sb(&msg)))
                        .with_authorized_operations(i32::MIN);
                };
                let members = g
                    .members
                    .iter()
                    .map(|(mid, m)| {
                        DescMember::default()
                            .with_member_id(sb(mid))
                            .with_instance_id(m.instance_id.as_deref().map(sb))
                            .with_rack_id(m.rack_id.as_deref().map(sb))
                            .with_member_epoch(m.epoch)
                            .with_client_id(sb(&m.client.client_id))
                            .with_client_host(sb(&m.client.client_host))
                            .with_subscribed_topic_names(
                                m.topics.iter().map(|t| TopicName(sb(t))).collect(),
                            )
                            .with_subscribed_topic_regex(m.regex.as_ref().map(|(s, _)| sb(s)))
                            .with_assignment(described(&m.assigned, topics))
                            .with_target_assignment(described(
                                &g.target.get(mid).cloned().unwrap_or_default(),
                                topics,
                            ))
                            // 1: the member uses the consumer protocol (v1 field).
                            .with_member_type(1)
                    })
                    .collect();
                DescribedGroup::default()
                    .with_group_id(GroupId(sb(id)))
                    .with_group_state(sb(g.state().name()))
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(sb(if g.assignor.is_empty() {
                        self.config
                            .assignors
                            .first()
                            .map_or("uniform", |s| s.as_str())
                    } else {
                        &g.assignor
                    }))
                    .with_members(members)
                    .with_authorized_operations(if r.include_authorized_operations {
                        GROUP_OPERATIONS
                    } else {
                        i32::MIN
                    })
            })
            .collect();
        ConsumerGroupDescribeResponse::default().with_groups(groups)
    }
}
