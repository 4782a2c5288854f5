//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs / IncrementalAlterConfigs and DeleteRecords, each authorised per topic.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrymq_auth::{AclOperation, Perm};
use ferrymq_kafka::api::{configs, create_topics, metadata};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::protocol::StrBytes;
use ferrymq_kafka::kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::admin_dynamic::{self, RESOURCE_GROUP};
use super::authz::View;
use super::broker::Topic;
use super::handlers::{code, s, DENIED_MESSAGE, TOPIC_DENIED};
use super::partition_task::Command;
use super::KafkaBroker;

pub(super) fn config_map(
    pairs: impl Iterator<Item = (StrBytes, Option<StrBytes>)>,
) -> BTreeMap<String, String> {
    pairs
        .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
        .collect()
}

pub(super) fn create_topics_response(
    broker: &KafkaBroker,
    view: &View,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let configs = config_map(t.configs.into_iter().map(|c| (c.name, c.value)));
        let mut r =
            create_topics_response::CreatableTopicResult::default().with_name(t.name.clone());
        let assignments: Vec<(i32, Vec<i32>)> = t
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        let checked = create_topics::check(
            &name,
            t.num_partitions,
            t.replication_factor,
            &assignments,
            &configs,
            broker.config.default_partitions,
            metadata::NODE_ID,
        );
        let outcome = checked.and_then(|c| {
            if !view.topic_op(AclOperation::Create, &name) {
                return Err((TOPIC_DENIED, DENIED_MESSAGE.to_owned()));
            }
            if broker.topic(&name).is_some() {
                return Err((
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                ));
            }
            if req.validate_only {
                return Ok((Uuid::nil(), c.partitions, c.replication_factor));
            }
            broker
                .create_topic_replicated(
                    &name,
                    c.partitions,
                    c.replication_factor,
                    c.assignment,
                    configs.clone(),
                )
                .map(|t| (t.id, c.partitions, c.replication_factor))
        });
        match outcome {
            Ok((id, partitions, replication_factor)) => {
                let defaults = broker.dynamic.read().topic_defaults();
                r = r
                    .with_topic_id(id)
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(Some(
                        configs::DEFAULTS
                            .iter()
                            .map(|(k, d)| {
                                let (value, source) = match (configs.get(*k), defaults.get(*k)) {
                                    (Some(v), _) => (v.clone(), 1),
                                    (None, Some((v, source))) => (v.clone(), *source),
                                    (None, None) => ((*d).to_owned(), 5),
                                };
                                create_topics_response::CreatableTopicConfigs::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(&value)))
                                    .with_config_source(source)
                            })
                            .collect(),
                    ));
            }
            Err((e, msg)) => {
                r = r
                    .with_error_code(e.code())
                    .with_error_message(Some(s(&msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) fn delete_topics(
    broker: &KafkaBroker,
    view: &View,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .into_iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)),
    );
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => broker.topic(n),
                None => broker.topic_by_id(id),
            };
            let r = delete_topics_response::DeletableTopicResult::default();
            let denied = match (&topic, &name) {
                (Some(t), _) => !view.topic_op(AclOperation::Delete, &t.name),
                (None, Some(n)) => !view.topic_op(AclOperation::Delete, n),
                (None, None) => false,
            };
            if denied {
                let name = topic.as_ref().map(|t| t.name.clone()).or(name);
                return r
                    .with_name(name.map(|n| TopicName(s(&n))))
                    .with_topic_id(topic.as_ref().map_or(id, |t| t.id))
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(Some(s(DENIED_MESSAGE)));
            }
            match topic {
                None => {
                    let e = if name.is_none() {
                        ResponseError::UnknownTopicId
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    r.with_name(name.map(|n| TopicName(s(&n))))
                        .with_topic_id(id)
                        .with_error_code(e.code())
                }
                Some(t) => r
                    .with_name(Some(TopicName(s(&t.name))))
                    .with_topic_id(t.id)
                    .with_error_code(code(broker.delete_topic(&t.name))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) fn create_partitions(
    broker: &KafkaBroker,
    view: &View,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let r = create_partitions_response::CreatePartitionsTopicResult::default()
                .with_name(t.name.clone());
            let outcome = match broker.topic(&t.name.0) {
                _ if !view.topic(Perm::Configure, &t.name.0) => {
                    Err((TOPIC_DENIED, DENIED_MESSAGE.to_owned()))
                }
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{}' does not exist.", &*t.name.0),
                )),
                Some(topic) => broker.create_partitions_assigned(
                    &topic,
                    t.count,
                    t.assignments.as_ref().map(|a| {
                        a.iter()
                            .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                            .collect()
                    }),
                    req.validate_only,
                ),
            };
            match outcome {
                Ok(()) => r,
                Err((e, m)) => r.with_error_code(e.code()).with_error_message(Some(s(&m))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;

pub(super) fn describe_configs(
    broker: &KafkaBroker,
    view: &View,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let r = describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match res.resource_type {
                RESOURCE_TOPIC if !view.topic_op(AclOperation::DescribeConfigs, &res.resource_name) => r
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(Some(s(DENIED_MESSAGE))),
                RESOURCE_TOPIC => match broker.topic(&res.resource_name) {
                    None => r.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    Some(t) => {
                        let overrides = t.overrides.read().clone();
                        let defaults = broker.dynamic.read().topic_defaults();
                        let wanted = res.configuration_keys.map(|ks| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                        let configs = configs::DEFAULTS
                            .iter()
                            .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == k)))
                            .map(|(k, d)| {
                                let (value, source) = match (overrides.get(*k), defaults.get(*k)) {
                                    (Some(v), _) => (v.clone(), 1),
                                    (None, Some((v, source))) => (v.clone(), *source),
                                    (None, None) => ((*d).to_owned(), 5),
                                };
                                describe_configs_response::DescribeConfigsResourceResult::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(&value)))
                                    .with_config_source(source)
                            })
                            .collect();
                        r.with_configs(configs)
                    }
                },
                RESOURCE_BROKER | RESOURCE_GROUP => {
                    let wanted = res
                        .configuration_keys
                        .map(|ks| ks.iter().map(|k| k.to_string()).collect());
                    match admin_dynamic::describe(broker, view, res.resource_type, &res.resource_name, wanted) {
                        Ok(configs) => r.with_configs(configs),
                        Err((code, message)) => r
                            .with_error_code(code)
                            .with_error_message(message.as_deref().map(s)),
                    }
                }
                _ => r.with_error_code(ResponseError::InvalidRequest.code()),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The topic an AlterConfigs or IncrementalAlterConfigs resource names, or the error code
/// (and message) its per-resource result gets (BROKER and GROUP resources are
/// `admin_dynamic`'s): other resource types are INVALID_REQUEST, a topic needs ALTER_CONFIGS
/// (without ACLs covering it: configure permission).
fn config_target(
    broker: &KafkaBroker,
    view: &View,
    resource_type: i8,
    name: &str,
) -> Result<Arc<Topic>, (i16, Option<&'static str>)> {
    match resource_type {
        RESOURCE_TOPIC if !view.topic_op(AclOperation::AlterConfigs, name) => {
            Err((TOPIC_DENIED.code(), Some(DENIED_MESSAGE)))
        }
        RESOURCE_TOPIC => broker
            .topic(name)
            .ok_or((ResponseError::UnknownTopicOrPartition.code(), None)),
        _ => Err((ResponseError::InvalidRequest.code(), None)),
    }
}

pub(super) fn alter_configs(
    broker: &KafkaBroker,
    view: &View,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let r = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let ops: Vec<admin_dynamic::Op> = res
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            if matches!(res.resource_type, RESOURCE_BROKER | RESOURCE_GROUP) {
                return match admin_dynamic::alter(
                    broker,
                    view,
                    res.resource_type,
                    &res.resource_name,
                    &ops,
                    false,
                    req.validate_only,
                ) {
                    Ok(()) => r,
                    Err((code, message)) => r
                        .with_error_code(code)
                        .with_error_message(message.as_deref().map(s)),
                };
            }
            let topic = match config_target(broker, view, res.resource_type, &res.resource_name) {
                Ok(t) => t,
                Err((code, message)) => {
                    return r.with_error_code(code).with_error_message(message.map(s))
                }
            };
            // The same SET / DELETE / APPEND / SUBTRACT as broker and group configs, over
            // the topic's overrides and the topic defaults.
            let mut overrides = topic.overrides.read().clone();
            let check = |name: &str, value: &str| {
                configs::validate(name, value).map_err(|e| (e, format!("Invalid config {name}")))
            };
            if let Err((code, message)) =
                admin_dynamic::apply_ops(&mut overrides, &ops, &check, &configs::default_of)
            {
                return r
                    .with_error_code(code)
                    .with_error_message(message.as_deref().map(s));
            }
            if req.validate_only {
                return r;
            }
            r.with_error_code(code(broker.set_configs(&topic, overrides)))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// AlterConfigs (legacy, key 33): the given configs replace the topic's whole set of
/// dynamic configs (names left out return to their defaults), all validated first.
pub(super) fn legacy_alter_configs(
    broker: &KafkaBroker,
    view: &View,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|res| {
            let r = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if matches!(res.resource_type, RESOURCE_BROKER | RESOURCE_GROUP) {
                let mut ops: Vec<admin_dynamic::Op> = Vec::new();
                for c in &res.configs {
                    let Some(v) = c.value.as_ref() else {
                        return r
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(s(&format!(
                                "Null value not supported for : {}",
                                c.name.as_str()
                            ))));
                    };
                    ops.push((c.name.to_string(), 0, Some(v.to_string())));
                }
                return match admin_dynamic::alter(
                    broker,
                    view,
                    res.resource_type,
                    &res.resource_name,
                    &ops,
                    true,
                    req.validate_only,
                ) {
                    Ok(()) => r,
                    Err((code, message)) => r
                        .with_error_code(code)
                        .with_error_message(message.as_deref().map(s)),
                };
            }
            let topic = match config_target(broker, view, res.resource_type, &res.resource_name) {
                Ok(t) => t,
                Err((code, message)) => {
                    return r.with_error_code(code).with_error_message(message.map(s))
                }
            };
            let mut overrides = BTreeMap::new();
            for c in &res.configs {
                let name = c.name.to_string();
                let Some(value) = c.value.as_ref().map(|v| v.to_string()) else {
                    return r
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(s(&format!(
                            "Null value not supported for : {name}"
                        ))));
                };
                if let Err(e) = configs::validate(&name, &value) {
                    return r
                        .with_error_code(e.code())
                        .with_error_message(Some(s(&format!("Invalid config {name}={value}"))));
                }
                overrides.insert(name, value);
            }
            if req.validate_only {
                return r;
            }
            r.with_error_code(code(broker.set_configs(&topic, overrides)))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub(super) async fn delete_records(
    broker: Arc<KafkaBroker>,
    view: View,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        // Deleting records destroys data like deleting the topic: configure.
        let allowed = view.topic_op(AclOperation::Delete, &t.name.0);
        let topic = broker.topic(&t.name.0).filter(|_| allowed);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let r = delete_records_response::DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index);
            let outcome = match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None if !allowed => Err(TOPIC_DENIED),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(h) => {
                    let (reply, rx) = oneshot::channel();
                    match h
                        .tx
                        .send(Command::DeleteRecords {
                            offset: p.offset,
                            reply,
                        })
                        .await
                    {
                        Ok(()) => rx
                            .await
                            .unwrap_or(Err(ResponseError::UnknownTopicOrPartition)),
                        Err(_) => Err(ResponseError::UnknownTopicOrPartition),
                    }
                }
            };
            partitions.push(match outcome {
                Ok(low) => r.with_low_watermark(low),
                Err(e) => r.with_error_code(e.code()).with_low_watermark(-1),
            });
        }
        topics.push(
            delete_records_response::DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
