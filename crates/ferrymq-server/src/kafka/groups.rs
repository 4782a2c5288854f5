//! The consumer-group APIs behind the user's permissions: each function checks the
//! request against the connection's [`View`] (read on the group id, and on each topic for
//! commits and offset fetches), sends what is allowed to the vhost's [`GroupService`] and
//! puts Kafka's authorization errors where the refused parts were: GROUP_AUTHORIZATION_FAILED
//! (30) for a group, TOPIC_AUTHORIZATION_FAILED (29) for a topic's partitions. Listings
//! leave out what the user may not see.

use std::collections::BTreeSet;
use std::future::Future;

use ferrymq_auth::{AclOperation, Perm};
use ferrymq_kafka::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use ferrymq_kafka::kafka_protocol::messages::describe_groups_response::DescribedGroup;
use ferrymq_kafka::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use ferrymq_kafka::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::ResponseError;

use super::authz::View;
use super::KafkaBroker;
use crate::kafka_groups::GroupService;

const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;

/// OffsetCommit: read on the group (else 30 on every partition) and on each topic (else 29
/// on its partitions).
pub fn offset_commit(
    view: View,
    svc: GroupService,
    v: i16,
    mut req: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> {
    let group_ok = view.group(&req.group_id);
    let (allowed, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics)
        .into_iter()
        .partition(|t| group_ok && view.topic(Perm::Read, &t.name));
    req.topics = allowed;
    let error = if group_ok { TOPIC_DENIED } else { GROUP_DENIED };
    let refused: Vec<OffsetCommitResponseTopic> = refused
        .into_iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    async move {
        let mut resp = if req.topics.is_empty() {
            OffsetCommitResponse::default()
        } else {
            svc.offset_commit(v, req).await
        };
        resp.topics.extend(refused);
        resp
    }
}

/// OffsetFetch: read on each group (else 30 for the group); topics the user cannot see
/// get 29 on their partitions when named, and are left out of an all-topics fetch.
pub fn offset_fetch(
    view: View,
    svc: GroupService,
    v: i16,
    mut req: OffsetFetchRequest,
) -> impl Future<Output = OffsetFetchResponse> {
    if v >= 8 {
        let refused: BTreeSet<GroupId> = req
            .groups
            .iter()
            .filter(|g| !view.group(&g.group_id))
            .map(|g| g.group_id.clone())
            .collect();
        let order: Vec<GroupId> = req.groups.iter().map(|g| g.group_id.clone()).collect();
        let named: BTreeSet<GroupId> = req
            .groups
            .iter()
            .filter(|g| g.topics.is_some())
            .map(|g| g.group_id.clone())
            .collect();
        req.groups.retain(|g| !refused.contains(&g.group_id));
        return Box::pin(async move {
            let mut resp = if req.groups.is_empty() {
                OffsetFetchResponse::default()
            } else {
                svc.offset_fetch(v, req).await
            };
            for g in &mut resp.groups {
                let named = named.contains(&g.group_id);
                g.topics.retain_mut(|t| visible_v8(&view, named, t));
            }
            let mut answered: Vec<OffsetFetchResponseGroup> = std::mem::take(&mut resp.groups);
            resp.groups = order
                .into_iter()
                .filter_map(|id| {
                    if refused.contains(&id) {
                        return Some(
                            OffsetFetchResponseGroup::default()
                                .with_group_id(id)
                                .with_error_code(GROUP_DENIED.code()),
                        );
                    }
                    let at = answered.iter().position(|g| g.group_id == id)?;
                    Some(answered.swap_remove(at))
                })
                .collect();
            resp
        }) as std::pin::Pin<Box<dyn Future<Output = OffsetFetchResponse> + Send>>;
    }
    if !view.group(&req.group_id) {
        let mut resp = OffsetFetchResponse::default();
        if v >= 2 {
            resp.error_code = GROUP_DENIED.code();
        }
        // v1 has no top-level error: every named partition carries it.
        resp.topics = req
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partition_indexes
                            .into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_error_code(GROUP_DENIED.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        return Box::pin(async move { resp });
    }
    let named = req.topics.is_some();
    Box::pin(async move {
        let mut resp = svc.offset_fetch(v, req).await;
        resp.topics.retain_mut(|t| visible_classic(&view, named, t));
        resp
    })
}

/// Whether a topic of a v8+ OffsetFetch answer stays: one the user may see does; one it
/// may not see stays with 29 on its partitions if the request `named` its topics, and is
/// left out of an all-topics answer.
fn visible_v8(view: &View, named: bool, t: &mut OffsetFetchResponseTopics) -> bool {
    if view.topic_visible(&t.name) {
        return true;
    }
    if !named {
        return false;
    }
    for p in &mut t.partitions {
        *p = OffsetFetchResponsePartitions::default()
            .with_partition_index(p.partition_index)
            .with_committed_offset(-1)
            .with_error_code(TOPIC_DENIED.code());
    }
    true
}

/// [`visible_v8`] for v1–v7 answers.
fn visible_classic(view: &View, named: bool, t: &mut OffsetFetchResponseTopic) -> bool {
    if view.topic_visible(&t.name) {
        return true;
    }
    if !named {
        return false;
    }
    for p in &mut t.partitions {
        *p = OffsetFetchResponsePartition::default()
            .with_partition_index(p.partition_index)
            .with_committed_offset(-1)
            .with_error_code(TOPIC_DENIED.code());
    }
    true
}

/// ListGroups (Kafka's `handleListGroupsRequest`): every group with DESCRIBE on the
/// cluster (an ACL, or an administrator), else only the groups the user may DESCRIBE.
pub async fn list_groups(
    view: View,
    svc: GroupService,
    v: i16,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut resp = svc.list_groups(v, req).await;
    if !view.cluster_op(AclOperation::Describe) {
        resp.groups
            .retain(|g| view.group_op(AclOperation::Describe, &g.group_id));
    }
    resp
}

/// The per-group answers in request order: a group the user may not `op` gets
/// `denied(id)`, the others the coordinator's answer (asked only for the allowed ones).
fn in_request_order<T>(
    order: Vec<GroupId>,
    view: &View,
    op: AclOperation,
    mut answered: Vec<T>,
    id_of: impl Fn(&T) -> &GroupId,
    denied: impl Fn(GroupId) -> T,
) -> Vec<T> {
    order
        .into_iter()
        .filter_map(|id| {
            if !view.group_op(op, &id) {
                return Some(denied(id));
            }
            let at = answered.iter().position(|g| *id_of(g) == id)?;
            Some(answered.swap_remove(at))
        })
        .collect()
}

/// DescribeGroups: DESCRIBE on each group (without ACLs: read on it), else 30 for it.
pub fn describe_groups(
    view: View,
    svc: GroupService,
    v: i16,
    mut req: DescribeGroupsRequest,
) -> impl Future<Output = DescribeGroupsResponse> {
    let order = req.groups.clone();
    req.groups
        .retain(|g| view.group_op(AclOperation::Describe, g));
    async move {
        let answered = if req.groups.is_empty() {
            Vec::new()
        } else {
            svc.describe_groups(v, req).await.groups
        };
        let groups = in_request_order(
            order,
            &view,
            AclOperation::Describe,
            answered,
            |g| &g.group_id,
            |id| {
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(GROUP_DENIED.code())
            },
        );
        DescribeGroupsResponse::default().with_groups(groups)
    }
}

/// DeleteGroups: DELETE on each group (without ACLs: read on it, as the other group
/// APIs), else 30 for it.
pub fn delete_groups(
    view: View,
    svc: GroupService,
    v: i16,
    mut req: DeleteGroupsRequest,
) -> impl Future<Output = DeleteGroupsResponse> {
    let order = req.groups_names.clone();
    req.groups_names
        .retain(|g| view.group_op(AclOperation::Delete, g));
    async move {
        let answered = if req.groups_names.is_empty() {
            Vec::new()
        } else {
            svc.delete_groups(v, req).await.results
        };
        let results = in_request_order(
            order,
            &view,
            AclOperation::Delete,
            answered,
            |g| &g.group_id,
            |id| {
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(GROUP_DENIED.code())
            },
        );
        DeleteGroupsResponse::default().with_results(results)
    }
}

/// The topics the user may read, as the KIP-848 assignors see them (a subscription never
/// reaches a topic the member could not fetch).
pub fn topic_image(
    broker: &KafkaBroker,
    view: &View,
) -> ferrymq_kafka::group::consumer::TopicImage {
    ferrymq_kafka::group::consumer::TopicImage::new(
        broker
            .all_topics()
            .into_iter()
            .filter(|t| view.topic(Perm::Read, &t.name))
            .map(|t| (t.name.clone(), t.id, t.partition_count() as i32)),
    )
}

/// ConsumerGroupDescribe: groups the user may not DESCRIBE (without ACLs: read) get
/// GROUP_AUTHORIZATION_FAILED.
pub fn consumer_group_describe(
    view: View,
    svc: GroupService,
    broker: &KafkaBroker,
    mut req: ConsumerGroupDescribeRequest,
) -> impl Future<Output = ConsumerGroupDescribeResponse> {
    use ferrymq_kafka::kafka_protocol::messages::consumer_group_describe_response::DescribedGroup as CgGroup;
    let order = req.group_ids.clone();
    let (allowed, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut req.group_ids)
        .into_iter()
        .partition(|g| view.group_op(AclOperation::Describe, g));
    req.group_ids = allowed;
    let topics = topic_image(broker, &view);
    async move {
        let mut resp = svc.consumer_describe(req, topics).await;
        resp.groups.extend(refused.into_iter().map(|g| {
            CgGroup::default()
                .with_group_id(g)
                .with_error_code(GROUP_DENIED.code())
                .with_authorized_operations(i32::MIN)
        }));
        resp.groups
            .sort_by_key(|g| order.iter().position(|o| *o == g.group_id));
        resp
    }
}

/// OffsetDelete (key 47): DELETE on the group (without ACLs: read on it, as
/// DeleteGroups), else GROUP_AUTHORIZATION_FAILED for the whole request; READ on each topic (else
/// TOPIC_AUTHORIZATION_FAILED for its partitions) and UNKNOWN_TOPIC_OR_PARTITION for
/// partitions that do not exist, as Kafka's `handleOffsetDeleteRequest`; the rest goes to
/// the coordinator.
pub fn offset_delete(
    view: View,
    svc: GroupService,
    broker: &KafkaBroker,
    req: OffsetDeleteRequest,
) -> impl Future<Output = OffsetDeleteResponse> {
    use ferrymq_kafka::kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let allowed_group = view.group_op(AclOperation::Delete, req.group_id.0.as_str());
    // Per (topic, partition): an error found here, or None to ask the coordinator.
    type Checked = (TopicName, Vec<(i32, Option<ResponseError>)>);
    let mut pre: Vec<Checked> = Vec::new();
    let mut ask = req.clone();
    ask.topics.clear();
    for t in &req.topics {
        let readable = view.topic_op(AclOperation::Read, t.name.0.as_str());
        let topic = broker.topic(t.name.0.as_str());
        let mut parts = Vec::new();
        let mut asked = t.clone();
        asked.partitions.clear();
        for p in &t.partitions {
            let e = if !readable {
                Some(TOPIC_DENIED)
            } else if topic
                .as_ref()
                .and_then(|x| x.partition(p.partition_index))
                .is_none()
            {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                asked.partitions.push(p.clone());
                None
            };
            parts.push((p.partition_index, e));
        }
        if !asked.partitions.is_empty() {
            ask.topics.push(asked);
        }
        pre.push((t.name.clone(), parts));
    }
    async move {
        if !allowed_group {
            return OffsetDeleteResponse::default().with_error_code(GROUP_DENIED.code());
        }
        let answered = svc.offset_delete(ask).await;
        let code_of = |name: &TopicName, partition: i32| {
            answered
                .topics
                .iter()
                .filter(|t| &t.name == name)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .map_or(0, |p| p.error_code)
        };
        let topics = pre
            .into_iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(p, e)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(e.map_or_else(|| code_of(&name, p), |e| e.code()))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default()
            .with_error_code(answered.error_code)
            .with_topics(topics)
    }
}
