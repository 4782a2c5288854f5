//! FerryMQ's own Kafka endpoints (documented in `docs/http-api.md`): topics with their
//! partitions, log start and end offsets, sizes and configs; consumer groups with state,
//! members, assignments, committed offsets and lag per partition; topic creation and
//! deletion. Read through `KafkaFront`; a vhost's Kafka side opens on first use. Listing
//! needs access to the vhost; creating and deleting topics needs configure permission
//! on the topic name (topics are queue resources, as the Kafka front checks them).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bytes::Buf;
use ferrymq_auth::{Perm, ResourceKind};
use ferrymq_kafka::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use ferrymq_kafka::kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetFetchRequest,
};
use ferrymq_kafka::kafka_protocol::protocol::{Decodable, StrBytes};
use ferrymq_server::kafka::{KafkaBroker, Topic};
use serde_json::{json, Value};

use super::{created_or_updated, list, no_content, Params, Q};
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The Kafka side of a vhost the caller may see.
fn kafka_vhost(
    s: &AppState,
    caller: &Caller,
    vhost: &str,
) -> ApiResult<std::sync::Arc<KafkaBroker>> {
    s.visible_vhosts(caller, Some(vhost))?;
    s.kafka.vhost(vhost).map_err(|e| match e {
        ferrymq_server::kafka::VhostError::NoSuchVhost(_) => ApiError::NotFound,
        e => ApiError::Internal(e.to_string()),
    })
}

/// Bytes under a directory (a partition's segment files).
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

fn topic_json(vhost: &str, b: &KafkaBroker, t: &Topic, detail: bool) -> Value {
    let partitions = t.partitions.read().clone();
    let mut total_messages = 0i64;
    let mut total_size = 0u64;
    let mut details = Vec::new();
    for (i, p) in partitions.iter().enumerate() {
        let o = p.offsets();
        let size = dir_size(&b.partition_dir(&t.name, i as u32));
        total_messages += (o.high_watermark - o.log_start).max(0);
        total_size += size;
        details.push(json!({
            "partition": i,
            "log_start_offset": o.log_start,
            "log_end_offset": o.high_watermark,
            "high_watermark": o.high_watermark,
            "messages": (o.high_watermark - o.log_start).max(0),
            "size_bytes": size,
        }));
    }
    let mut o = json!({
        "name": t.name,
        "vhost": vhost,
        "topic_id": t.id.to_string(),
        "partitions": partitions.len(),
        "messages": total_messages,
        "size_bytes": total_size,
        "configs": *t.overrides.read(),
    });
    if detail {
        o["partition_details"] = Value::Array(details);
    }
    o
}

fn topics_of(vhost: &str, b: &KafkaBroker) -> Vec<Value> {
    let mut topics = b.all_topics();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics
        .iter()
        .map(|t| topic_json(vhost, b, t, true))
        .collect()
}

/// Every open vhost's topics (a vhost's Kafka side opens when a client first uses it).
pub async fn topics_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for (name, b) in s.kafka.open_vhosts() {
        if s.can_see(&caller, &name) {
            items.extend(topics_of(&name, &b));
        }
    }
    list(&q, items)
}

pub async fn topics_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let b = kafka_vhost(&s, &caller, &vhost)?;
    list(&q, topics_of(&vhost, &b))
}

pub async fn topic(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
) -> ApiResult<Json<Value>> {
    let b = kafka_vhost(&s, &caller, &vhost)?;
    let t = b.topic(&name).ok_or(ApiError::NotFound)?;
    Ok(Json(topic_json(&vhost, &b, &t, true)))
}

/// `PUT /api/kafka/topics/{vhost}/{topic}` `{partitions, configs}`: creates the topic
/// (201); an existing topic gets more partitions if asked and its configs replaced (204).
pub async fn create_topic(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    session.authorize(Perm::Configure, ResourceKind::Queue, &name)?;
    let b = kafka_vhost(&s, &caller, &vhost)?;
    let partitions = body.int("partitions")?.unwrap_or(-1);
    let partitions =
        i32::try_from(partitions).map_err(|_| ApiError::bad("partitions out of range"))?;
    let mut configs = BTreeMap::new();
    for (k, v) in body.object("configs")? {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::bad(format!(
                    "config '{k}' must be a string or number"
                )))
            }
        };
        configs.insert(k, v);
    }
    if let Some(t) = b.topic(&name) {
        if partitions > 0 && partitions as usize != t.partition_count() {
            b.create_partitions(&t, partitions, false)
                .map_err(|(_, msg)| ApiError::bad(msg))?;
        }
        if body.get("configs").is_some() {
            for (k, v) in &configs {
                ferrymq_kafka::api::configs::validate(k, v)
                    .map_err(|e| ApiError::bad(format!("config {k}={v}: {e:?}")))?;
            }
            b.set_configs(&t, configs)
                .map_err(|e| ApiError::Internal(format!("{e:?}")))?;
        }
        return Ok(created_or_updated(false));
    }
    let partitions = ferrymq_kafka::api::create_topics::check(
        &name,
        partitions,
        -1,
        &[],
        &configs,
        s.kafka.config.default_partitions,
        ferrymq_kafka::api::metadata::NODE_ID,
    )
    .map_err(|(_, msg)| ApiError::bad(msg))?
    .partitions;
    b.create_topic(&name, partitions, configs)
        .map_err(|(_, msg)| ApiError::bad(msg))?;
    Ok(created_or_updated(true))
}

pub async fn delete_topic(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    session.authorize(Perm::Configure, ResourceKind::Queue, &name)?;
    let b = kafka_vhost(&s, &caller, &vhost)?;
    b.delete_topic(&name).map_err(|e| match e {
        ferrymq_kafka::kafka_protocol::ResponseError::UnknownTopicOrPartition => ApiError::NotFound,
        e => ApiError::Internal(format!("{e:?}")),
    })?;
    Ok(no_content())
}

/// A member's assignment (the consumer protocol's bytes), as topic → partitions.
fn assignment(bytes: &bytes::Bytes) -> Value {
    let mut b = bytes.clone();
    if b.remaining() < 2 {
        return json!({});
    }
    let version = b.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut b, version) {
        Ok(a) => Value::Object(
            a.assigned_partitions
                .iter()
                .map(|tp| (tp.topic.0.to_string(), json!(tp.partitions)))
                .collect(),
        ),
        Err(_) => json!({}),
    }
}

/// A committed offset of a group, with the partition's end and the lag.
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    /// The partition's high watermark (`None` if the topic or partition is gone).
    pub log_end: Option<i64>,
    pub metadata: Option<String>,
}

impl GroupOffset {
    pub fn lag(&self) -> Option<i64> {
        self.log_end.map(|e| (e - self.committed).max(0))
    }
}

/// A consumer group as the coordinator describes it, with its committed offsets.
pub struct GroupView {
    pub name: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<Value>,
    pub offsets: Vec<GroupOffset>,
}

/// Describes `group` (members, state) and reads its committed offsets; `None` if the
/// group does not exist (or is dead).
pub async fn describe_group(b: &KafkaBroker, group: &str) -> Option<GroupView> {
    let described = b
        .groups
        .describe_groups(
            5,
            DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]),
        )
        .await;
    let g = described.groups.into_iter().next()?;
    if g.error_code != 0 || g.group_state.as_str() == "Dead" {
        return None;
    }
    let fetched = b
        .groups
        .offset_fetch(
            8,
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                .with_topics(None)]),
        )
        .await;
    let mut offsets = Vec::new();
    for fg in fetched.groups {
        for t in fg.topics {
            let topic = t.name.0.to_string();
            let handle = b.topic(&topic);
            for p in t.partitions {
                if p.committed_offset < 0 {
                    continue;
                }
                let log_end = handle
                    .as_ref()
                    .and_then(|h| h.partition(p.partition_index))
                    .map(|h| h.offsets().high_watermark);
                offsets.push(GroupOffset {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    committed: p.committed_offset,
                    log_end,
                    metadata: p.metadata.as_ref().map(|m| m.to_string()),
                });
            }
        }
    }
    let members = g
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id.to_string(),
                "group_instance_id": m.group_instance_id.as_ref().map(|s| s.to_string()),
                "client_id": m.client_id.to_string(),
                "client_host": m.client_host.to_string(),
                "assignment": assignment(&m.member_assignment),
            })
        })
        .collect();
    Some(GroupView {
        name: group.to_owned(),
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
        offsets,
    })
}

async fn group_json(vhost: &str, b: &KafkaBroker, group: &str) -> Option<Value> {
    let g = describe_group(b, group).await?;
    let total_lag: i64 = g.offsets.iter().filter_map(GroupOffset::lag).sum();
    let offsets: Vec<Value> = g
        .offsets
        .iter()
        .map(|o| {
            json!({
                "topic": o.topic,
                "partition": o.partition,
                "committed_offset": o.committed,
                "log_end_offset": o.log_end,
                "lag": o.lag(),
                "metadata": o.metadata,
            })
        })
        .collect();
    Some(json!({
        "name": group,
        "vhost": vhost,
        "state": g.state,
        "protocol_type": g.protocol_type,
        "protocol": g.protocol,
        "members": g.members,
        "offsets": offsets,
        "lag": total_lag,
    }))
}

/// The names of a vhost's consumer groups, sorted.
pub async fn group_names(b: &KafkaBroker) -> Vec<String> {
    let listed = b.groups.list_groups(4, ListGroupsRequest::default()).await;
    let mut names: Vec<String> = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    names.sort();
    names
}

async fn groups_of(vhost: &str, b: &KafkaBroker) -> Vec<Value> {
    let mut out = Vec::new();
    for n in group_names(b).await {
        if let Some(g) = group_json(vhost, b, &n).await {
            out.push(g);
        }
    }
    out
}

pub async fn groups_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for (name, b) in s.kafka.open_vhosts() {
        if s.can_see(&caller, &name) {
            items.extend(groups_of(&name, &b).await);
        }
    }
    list(&q, items)
}

pub async fn groups_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let b = kafka_vhost(&s, &caller, &vhost)?;
    list(&q, groups_of(&vhost, &b).await)
}

pub async fn group(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
) -> ApiResult<Json<Value>> {
    let b = kafka_vhost(&s, &caller, &vhost)?;
    group_json(&vhost, &b, &name)
        .await
        .map(Json)
        .ok_or(ApiError::NotFound)
}
