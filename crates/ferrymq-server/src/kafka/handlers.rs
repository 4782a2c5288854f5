//! Request → response for every served API. Each handler resolves topics and partitions
//! on the connection's vhost ([`KafkaBroker`]), checks them against the user's permissions
//! ([`super::authz`]; the table is in `docs/kafka-security.md`), talks to partition tasks,
//! and assembles the response with the pure rules of `ferrymq-kafka::api`. Only Produce
//! does work before returning (its appends enter the partition inboxes in request order);
//! everything else is a future the connection's writer awaits in order. Permission checks
//! all happen here, before the future: a response never waits on the user store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_auth::Perm;
use ferrymq_kafka::api::{self, api_versions, configs, create_topics, metadata, produce};
use ferrymq_kafka::group::{join_error, sync_error, ClientInfo};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::protocol::StrBytes;
use ferrymq_kafka::kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;
use uuid::Uuid;

use super::authz::{Authz, View};
use super::connection::{PendingResponse, Reply};
use super::groups;
use super::partition_task::{AppendResult, Command, PartitionHandle, ReadResult};
use super::{KafkaBroker, Topic};

/// What an authenticated connection's requests are served with.
pub struct Session {
    /// The vhost's Kafka side.
    pub broker: Arc<KafkaBroker>,
    /// The user's permissions there.
    pub authz: Authz,
    /// Advertised in Metadata, FindCoordinator and DescribeCluster: the listener's own.
    pub host: String,
    pub port: u16,
    pub peer: SocketAddr,
}

/// Encodes a response; an encoding failure closes the connection.
pub fn encode(key: ApiKey, version: i16, correlation_id: i32, body: ResponseKind) -> Reply {
    match api::encode_response(key, version, correlation_id, &body) {
        Ok(b) => Reply::Bytes(b),
        Err(e) => {
            warn!(error = %e, "could not encode a kafka response: closing the connection");
            Reply::Close
        }
    }
}

fn ready(key: ApiKey, version: i16, cid: i32, body: ResponseKind) -> PendingResponse {
    let bytes = encode(key, version, cid, body);
    Box::pin(async move { bytes })
}

fn later<F>(key: ApiKey, version: i16, cid: i32, fut: F) -> PendingResponse
where
    F: std::future::Future<Output = ResponseKind> + Send + 'static,
{
    Box::pin(async move { encode(key, version, cid, fut.await) })
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn code(r: Result<(), ResponseError>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// The text Kafka puts next to 29 in admin responses.
const DENIED_MESSAGE: &str = "Authorization failed.";

/// The ApiVersions answer (allowed before authentication).
pub fn api_versions(version: i16, correlation_id: i32) -> PendingResponse {
    ready(
        ApiKey::ApiVersions,
        version,
        correlation_id,
        ResponseKind::ApiVersions(api_versions::response(None)),
    )
}

/// The KIP-511 answer to an ApiVersions request of an unknown version.
pub fn api_versions_fallback(correlation_id: i32) -> PendingResponse {
    ready(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        ResponseKind::ApiVersions(api_versions::response(Some(
            ResponseError::UnsupportedVersion,
        ))),
    )
}

/// Starts serving one request of an authenticated connection; `None` means no response
/// is sent (Produce with acks=0). SaslHandshake and SaslAuthenticate never get here.
pub async fn dispatch(
    session: &mut Session,
    header: RequestHeader,
    key: ApiKey,
    body: RequestKind,
) -> Option<PendingResponse> {
    let v = header.request_api_version;
    let cid = header.correlation_id;
    let view = session.authz.view();
    let b = session.broker.clone();
    let groups = || b.groups.clone();
    Some(match body {
        RequestKind::ApiVersions(_) => api_versions(v, cid),
        RequestKind::Metadata(req) => ready(
            key,
            v,
            cid,
            ResponseKind::Metadata(metadata_response(session, &view, v, req)),
        ),
        RequestKind::Produce(req) => {
            return produce_request(&session.broker, &view, v, cid, req).await
        }
        RequestKind::Fetch(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::Fetch(fetch(b, view, v, req).await)
            })
        }
        RequestKind::ListOffsets(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::ListOffsets(list_offsets(b, view, req).await)
            })
        }
        RequestKind::FindCoordinator(req) => ready(
            key,
            v,
            cid,
            ResponseKind::FindCoordinator(find_coordinator(session, &view, v, req)),
        ),
        RequestKind::CreateTopics(req) => ready(
            key,
            v,
            cid,
            ResponseKind::CreateTopics(create_topics_response(&b, &view, req)),
        ),
        RequestKind::DeleteTopics(req) => ready(
            key,
            v,
            cid,
            ResponseKind::DeleteTopics(delete_topics(&b, &view, req)),
        ),
        RequestKind::CreatePartitions(req) => ready(
            key,
            v,
            cid,
            ResponseKind::CreatePartitions(create_partitions(&b, &view, req)),
        ),
        RequestKind::DescribeConfigs(req) => ready(
            key,
            v,
            cid,
            ResponseKind::DescribeConfigs(describe_configs(&b, &view, req)),
        ),
        RequestKind::IncrementalAlterConfigs(req) => ready(
            key,
            v,
            cid,
            ResponseKind::IncrementalAlterConfigs(alter_configs(&b, &view, req)),
        ),
        RequestKind::DeleteRecords(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::DeleteRecords(delete_records(b, view, req).await)
            })
        }
        RequestKind::DescribeCluster(_) => ready(
            key,
            v,
            cid,
            ResponseKind::DescribeCluster(describe_cluster(session)),
        ),
        RequestKind::InitProducerId(req) => ready(
            key,
            v,
            cid,
            ResponseKind::InitProducerId(init_producer_id(&b, &view, req)),
        ),
        RequestKind::JoinGroup(req) => {
            if !view.group(&req.group_id) {
                let e = join_error(v, &req.member_id, GROUP_DENIED);
                return Some(ready(key, v, cid, ResponseKind::JoinGroup(e)));
            }
            let client = ClientInfo {
                client_id: header.client_id.as_deref().unwrap_or_default().to_owned(),
                client_host: format!("/{}", session.peer.ip()),
            };
            let svc = groups();
            later(key, v, cid, async move {
                ResponseKind::JoinGroup(svc.join_group_from(v, client, req).await)
            })
        }
        RequestKind::SyncGroup(req) => {
            if !view.group(&req.group_id) {
                let e = sync_error(v, GROUP_DENIED);
                return Some(ready(key, v, cid, ResponseKind::SyncGroup(e)));
            }
            let svc = groups();
            later(key, v, cid, async move {
                ResponseKind::SyncGroup(svc.sync_group(v, req).await)
            })
        }
        RequestKind::Heartbeat(req) => {
            if !view.group(&req.group_id) {
                let e = HeartbeatResponse::default().with_error_code(GROUP_DENIED.code());
                return Some(ready(key, v, cid, ResponseKind::Heartbeat(e)));
            }
            let svc = groups();
            later(key, v, cid, async move {
                ResponseKind::Heartbeat(svc.heartbeat(v, req).await)
            })
        }
        RequestKind::LeaveGroup(req) => {
            if !view.group(&req.group_id) {
                let e = LeaveGroupResponse::default().with_error_code(GROUP_DENIED.code());
                return Some(ready(key, v, cid, ResponseKind::LeaveGroup(e)));
            }
            let svc = groups();
            later(key, v, cid, async move {
                ResponseKind::LeaveGroup(svc.leave_group(v, req).await)
            })
        }
        RequestKind::OffsetCommit(req) => {
            let fut = groups::offset_commit(view, groups(), v, req);
            later(
                key,
                v,
                cid,
                async move { ResponseKind::OffsetCommit(fut.await) },
            )
        }
        RequestKind::OffsetFetch(req) => {
            let fut = groups::offset_fetch(view, groups(), v, req);
            later(
                key,
                v,
                cid,
                async move { ResponseKind::OffsetFetch(fut.await) },
            )
        }
        RequestKind::ListGroups(req) => {
            let fut = groups::list_groups(view, groups(), v, req);
            later(
                key,
                v,
                cid,
                async move { ResponseKind::ListGroups(fut.await) },
            )
        }
        RequestKind::DescribeGroups(req) => {
            let fut = groups::describe_groups(view, groups(), v, req);
            later(key, v, cid, async move {
                ResponseKind::DescribeGroups(fut.await)
            })
        }
        RequestKind::DeleteGroups(req) => {
            let fut = groups::delete_groups(view, groups(), v, req);
            later(
                key,
                v,
                cid,
                async move { ResponseKind::DeleteGroups(fut.await) },
            )
        }
        other => {
            // Only advertised APIs get this far (frame::decode_request checks the table).
            warn!(api = ?key, "request of an API with no handler: closing the connection");
            drop(other);
            Box::pin(async { Reply::Close })
        }
    })
}

// ---- Metadata ----

fn metadata_response(
    session: &Session,
    view: &View,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let broker = &session.broker;
    let view_of = |t: &Topic| metadata::TopicView::Found {
        name: t.name.clone(),
        id: t.id,
        partitions: t.partition_count() as i32,
    };
    let denied = |name: Option<String>, id: Uuid| metadata::TopicView::Error {
        name,
        id,
        error: TOPIC_DENIED,
    };
    let topics = match req.topics {
        // All topics: the ones the user cannot see are left out, silently (Kafka's rule).
        None => broker
            .all_topics()
            .iter()
            .filter(|t| view.topic_visible(&t.name))
            .map(|t| view_of(t))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|rt| {
                let Some(name) = rt.name.map(|n| n.0.to_string()) else {
                    return match broker.topic_by_id(rt.topic_id) {
                        Some(t) if view.topic_visible(&t.name) => view_of(&t),
                        Some(_) => denied(None, rt.topic_id),
                        None => metadata::TopicView::Error {
                            name: None,
                            id: rt.topic_id,
                            error: ResponseError::UnknownTopicId,
                        },
                    };
                };
                if !view.topic_visible(&name) {
                    return denied(Some(name), Uuid::nil());
                }
                if let Some(t) = broker.topic(&name) {
                    return view_of(&t);
                }
                if !api::valid_topic_name(&name) {
                    return metadata::TopicView::Error {
                        name: Some(name),
                        id: Uuid::nil(),
                        error: ResponseError::InvalidTopicException,
                    };
                }
                // v0-v3 have no flag: auto-creation is implied (Kafka's behaviour). Creating
                // needs configure on the topic; without it the topic is just unknown.
                let allowed = version < 4 || req.allow_auto_topic_creation;
                if allowed && broker.config.auto_create_topics && view.topic(Perm::Configure, &name)
                {
                    match broker.create_topic(
                        &name,
                        broker.config.default_partitions,
                        BTreeMap::new(),
                    ) {
                        Ok(t) => return view_of(&t),
                        Err((ResponseError::TopicAlreadyExists, _)) => {
                            if let Some(t) = broker.topic(&name) {
                                return view_of(&t);
                            }
                        }
                        Err(_) => {}
                    }
                }
                metadata::TopicView::Error {
                    name: Some(name),
                    id: Uuid::nil(),
                    error: ResponseError::UnknownTopicOrPartition,
                }
            })
            .collect(),
    };
    metadata::response(&session.host, i32::from(session.port), topics)
}

// ---- Produce ----

/// A partition of a Produce request: its index and its immediate error or pending append.
type PartitionAppend = (i32, Result<oneshot::Receiver<AppendResult>, ResponseError>);

async fn produce_request(
    broker: &Arc<KafkaBroker>,
    view: &View,
    v: i16,
    cid: i32,
    req: ProduceRequest,
) -> Option<PendingResponse> {
    let acks = req.acks;
    let valid_acks = produce::valid_acks(acks);
    // (topic name, [(partition, immediate error or pending append)])
    let mut pending: Vec<(TopicName, Vec<PartitionAppend>)> = Vec::new();
    for td in req.topic_data {
        let topic = broker.topic(&td.name.0);
        let writable = view.topic(Perm::Write, &td.name.0);
        let mut parts = Vec::new();
        for pd in td.partition_data {
            let result = if !valid_acks {
                Err(ResponseError::InvalidRequiredAcks)
            } else if !writable {
                Err(TOPIC_DENIED)
            } else {
                match topic
                    .as_ref()
                    .and_then(|t| t.partition(pd.index).map(|p| (t, p)))
                {
                    None => Err(ResponseError::UnknownTopicOrPartition),
                    Some((t, p)) => {
                        start_append(t, &p, pd.records.as_deref().unwrap_or_default()).await
                    }
                }
            };
            parts.push((pd.index, result));
        }
        pending.push((td.name, parts));
    }
    if acks == 0 {
        return None;
    }
    let offsets_of = |t: &TopicName, p: i32| {
        broker
            .topic(&t.0)
            .and_then(|t| t.partition(p))
            .map(|h| h.offsets().log_start)
            .unwrap_or(-1)
    };
    let starts: Vec<Vec<i64>> = pending
        .iter()
        .map(|(t, parts)| parts.iter().map(|(p, _)| offsets_of(t, *p)).collect())
        .collect();
    Some(later(ApiKey::Produce, v, cid, async move {
        let mut responses = Vec::new();
        for ((name, parts), starts) in pending.into_iter().zip(starts) {
            let mut partition_responses = Vec::new();
            for ((index, result), log_start) in parts.into_iter().zip(starts) {
                let outcome = match result {
                    Err(e) => Err(e),
                    Ok(rx) => rx.await.unwrap_or(Err(ResponseError::UnknownServerError)),
                };
                let mut r = produce_response::PartitionProduceResponse::default()
                    .with_index(index)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(log_start);
                match outcome {
                    Ok(base) => r = r.with_base_offset(base),
                    Err(e) => r = r.with_error_code(e.code()).with_base_offset(-1),
                }
                partition_responses.push(r);
            }
            responses.push(
                produce_response::TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
    }))
}

/// Validates a partition's records and sends them to the partition task (in order).
async fn start_append(
    topic: &Topic,
    partition: &PartitionHandle,
    records: &[u8],
) -> Result<oneshot::Receiver<AppendResult>, ResponseError> {
    let max = topic.config.read().max_message_bytes;
    let headers = produce::check_records(records, max)?;
    let mut batches = Vec::with_capacity(headers.len());
    let mut at = 0;
    for h in headers {
        batches.push((h, records[at..at + h.size].to_vec()));
        at += h.size;
    }
    let (reply, rx) = oneshot::channel();
    partition
        .tx
        .send(Command::Append { batches, reply })
        .await
        .map_err(|_| ResponseError::UnknownTopicOrPartition)?;
    Ok(rx)
}

// ---- Fetch ----

async fn read(
    p: &PartitionHandle,
    offset: i64,
    partition_max: usize,
    remaining: usize,
    first: bool,
) -> Option<ReadResult> {
    let (reply, rx) = oneshot::channel();
    p.tx.send(Command::Read {
        offset,
        partition_max,
        remaining,
        first_in_response: first,
        reply,
    })
    .await
    .ok()?;
    rx.await.ok()
}

async fn fetch(broker: Arc<KafkaBroker>, view: View, v: i16, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        // Fetch sessions are not kept: sessionless fetches only (KIP-227 allows this).
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    // Resolve topics once; a topic the user may not read is answered with 29.
    let topics: Vec<(Result<Arc<Topic>, ResponseError>, fetch_request::FetchTopic)> = req
        .topics
        .into_iter()
        .map(|ft| {
            let (t, name) = if v >= 13 {
                (broker.topic_by_id(ft.topic_id), None)
            } else {
                (broker.topic(&ft.topic), Some(ft.topic.0.to_string()))
            };
            let resolved = match (t, name) {
                (Some(t), _) if view.topic(Perm::Read, &t.name) => Ok(t),
                (Some(_), _) => Err(TOPIC_DENIED),
                (None, Some(name)) if !view.topic(Perm::Read, &name) => Err(TOPIC_DENIED),
                (None, Some(_)) => Err(ResponseError::UnknownTopicOrPartition),
                (None, None) => Err(ResponseError::UnknownTopicId),
            };
            (resolved, ft)
        })
        .collect();
    loop {
        let mut total = 0usize;
        let mut has_error = false;
        let mut responses = Vec::new();
        let mut watches = Vec::new();
        for (topic, ft) in &topics {
            let mut partitions = Vec::new();
            for fp in &ft.partitions {
                let mut pd =
                    fetch_response::PartitionData::default().with_partition_index(fp.partition);
                let handle = match topic {
                    Ok(t) => t
                        .partition(fp.partition)
                        .ok_or(ResponseError::UnknownTopicOrPartition),
                    Err(e) => Err(*e),
                };
                match handle {
                    Err(e) => {
                        has_error = true;
                        pd = pd.with_error_code(e.code()).with_high_watermark(-1);
                    }
                    Ok(h) => {
                        let o = h.offsets();
                        watches.push(h.offsets.clone());
                        let result = if fp.fetch_offset == o.high_watermark {
                            // Caught up: nothing to read (no round trip).
                            Some(ReadResult {
                                records: Vec::new(),
                                offsets: o,
                                error: None,
                            })
                        } else {
                            read(
                                &h,
                                fp.fetch_offset,
                                fp.partition_max_bytes.max(0) as usize,
                                max_bytes.saturating_sub(total),
                                total == 0,
                            )
                            .await
                        };
                        let r = result.unwrap_or(ReadResult {
                            records: Vec::new(),
                            offsets: o,
                            error: Some(ResponseError::UnknownTopicOrPartition),
                        });
                        if let Some(e) = r.error {
                            has_error = true;
                            pd = pd.with_error_code(e.code());
                        }
                        total += r.records.len();
                        pd = pd
                            .with_high_watermark(r.offsets.high_watermark)
                            .with_last_stable_offset(r.offsets.high_watermark)
                            .with_log_start_offset(r.offsets.log_start)
                            .with_records(Some(Bytes::from(r.records)));
                    }
                }
                partitions.push(pd);
            }
            let mut tr =
                fetch_response::FetchableTopicResponse::default().with_partitions(partitions);
            if v >= 13 {
                tr = tr.with_topic_id(ft.topic_id);
            } else {
                tr = tr.with_topic(ft.topic.clone());
            }
            responses.push(tr);
        }
        let now = Instant::now();
        if api::fetch::ready(total, req.min_bytes, now >= deadline, has_error) || watches.is_empty()
        {
            return FetchResponse::default().with_responses(responses);
        }
        // Long poll: wait for any partition's high watermark to move, or the deadline.
        let changed = async {
            let futs: Vec<_> = watches
                .iter_mut()
                .map(|w| {
                    w.mark_unchanged();
                    Box::pin(w.changed())
                })
                .collect();
            select_any(futs).await;
        };
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = broker.closed() => return FetchResponse::default().with_responses(responses),
        }
    }
}

/// Resolves when any of the futures does.
async fn select_any<F: std::future::Future + Unpin>(mut futs: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

// ---- ListOffsets ----

async fn list_offsets(
    broker: Arc<KafkaBroker>,
    view: View,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let readable = view.topic(Perm::Read, &t.name.0);
        let topic = broker.topic(&t.name.0).filter(|_| readable);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let mut r = list_offsets_response::ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None if !readable => r = r.with_error_code(TOPIC_DENIED.code()),
                None => r = r.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(h) => {
                    let o = h.offsets();
                    match p.timestamp {
                        // Earliest, earliest-local.
                        -2 | -4 => r = r.with_offset(o.log_start),
                        // Latest (= last stable offset: no transactions).
                        -1 => r = r.with_offset(o.high_watermark),
                        ts if ts >= 0 => {
                            let (reply, rx) = oneshot::channel();
                            let sent =
                                h.tx.send(Command::OffsetForTime {
                                    timestamp: ts,
                                    reply,
                                })
                                .await;
                            match (sent, rx.await) {
                                (Ok(()), Ok(Ok(Some((offset, ts))))) => {
                                    r = r.with_offset(offset).with_timestamp(ts)
                                }
                                (Ok(()), Ok(Ok(None))) => {}
                                (_, Ok(Err(e))) => r = r.with_error_code(e.code()),
                                _ => {
                                    r = r.with_error_code(
                                        ResponseError::UnknownTopicOrPartition.code(),
                                    )
                                }
                            }
                        }
                        // -3 (max timestamp) and others: not served.
                        _ => r = r.with_error_code(ResponseError::UnsupportedVersion.code()),
                    }
                }
            }
            partitions.push(r);
        }
        topics.push(
            list_offsets_response::ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

// ---- FindCoordinator ----

fn find_coordinator(
    session: &Session,
    view: &View,
    v: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let host = s(&session.host);
    let port = i32::from(session.port);
    let node = BrokerId(metadata::NODE_ID);
    // Key type 1 is a transaction coordinator: transactions are not served. A group's
    // coordinator is found only by users who may read the group (Kafka: DESCRIBE GROUP).
    let error_for = |key: &str| {
        if req.key_type != 0 {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if !view.group(key) {
            Some(GROUP_DENIED)
        } else {
            None
        }
    };
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let error = error_for(&key);
                let c = find_coordinator_response::Coordinator::default().with_key(key);
                match error {
                    Some(e) => c
                        .with_error_code(e.code())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                    None => c.with_node_id(node).with_host(host.clone()).with_port(port),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match error_for(&req.key) {
        Some(e) => FindCoordinatorResponse::default()
            .with_error_code(e.code())
            .with_node_id(BrokerId(-1))
            .with_port(-1),
        None => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
    }
}

// ---- Admin ----

fn config_map(
    pairs: impl Iterator<Item = (StrBytes, Option<StrBytes>)>,
) -> BTreeMap<String, String> {
    pairs
        .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
        .collect()
}

fn create_topics_response(
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
        let checked = create_topics::check(
            &name,
            t.num_partitions,
            t.replication_factor,
            !t.assignments.is_empty(),
            &configs,
            broker.config.default_partitions,
        );
        let outcome = checked.and_then(|partitions| {
            if !view.topic(Perm::Configure, &name) {
                return Err((TOPIC_DENIED, DENIED_MESSAGE.to_owned()));
            }
            if broker.topic(&name).is_some() {
                return Err((
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                ));
            }
            if req.validate_only {
                return Ok((Uuid::nil(), partitions));
            }
            broker
                .create_topic(&name, partitions, configs.clone())
                .map(|t| (t.id, partitions))
        });
        match outcome {
            Ok((id, partitions)) => {
                r = r
                    .with_topic_id(id)
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)
                    .with_configs(Some(
                        configs::DEFAULTS
                            .iter()
                            .map(|(k, d)| {
                                let (value, source) = match configs.get(*k) {
                                    Some(v) => (v.clone(), 1),
                                    None => ((*d).to_owned(), 5),
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

fn delete_topics(
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
                (Some(t), _) => !view.topic(Perm::Configure, &t.name),
                (None, Some(n)) => !view.topic(Perm::Configure, n),
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

fn create_partitions(
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
                Some(_) if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) => Err((
                    ResponseError::InvalidReplicaAssignment,
                    "manual assignment is not supported".to_owned(),
                )),
                Some(topic) => broker.create_partitions(&topic, t.count, req.validate_only),
            };
            match outcome {
                Ok(()) => r,
                Err((e, m)) => r.with_error_code(e.code()).with_error_message(Some(s(&m))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn describe_configs(
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
                RESOURCE_TOPIC if !view.topic_visible(&res.resource_name) => r
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(Some(s(DENIED_MESSAGE))),
                RESOURCE_BROKER if !view.cluster() => r
                    .with_error_code(CLUSTER_DENIED.code())
                    .with_error_message(Some(s(DENIED_MESSAGE))),
                RESOURCE_TOPIC => match broker.topic(&res.resource_name) {
                    None => r.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    Some(t) => {
                        let overrides = t.overrides.read().clone();
                        let wanted = res.configuration_keys.map(|ks| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                        let configs = configs::DEFAULTS
                            .iter()
                            .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == k)))
                            .map(|(k, d)| {
                                let (value, source) = match overrides.get(*k) {
                                    Some(v) => (v.clone(), 1),
                                    None => ((*d).to_owned(), 5),
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
                RESOURCE_BROKER => r,
                _ => r.with_error_code(ResponseError::InvalidRequest.code()),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn alter_configs(
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
            if res.resource_type != RESOURCE_TOPIC {
                return r.with_error_code(ResponseError::InvalidRequest.code());
            }
            if !view.topic(Perm::Configure, &res.resource_name) {
                return r
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(Some(s(DENIED_MESSAGE)));
            }
            let Some(topic) = broker.topic(&res.resource_name) else {
                return r.with_error_code(ResponseError::UnknownTopicOrPartition.code());
            };
            let mut overrides = topic.overrides.read().clone();
            for c in &res.configs {
                let name = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string());
                let list = |o: &BTreeMap<String, String>| -> Vec<String> {
                    o.get(&name)
                        .cloned()
                        .or_else(|| configs::default_of(&name).map(str::to_owned))
                        .unwrap_or_default()
                        .split(',')
                        .map(|x| x.trim().to_owned())
                        .filter(|x| !x.is_empty())
                        .collect()
                };
                let result = match (c.config_operation, value) {
                    (0, Some(v)) => configs::validate(&name, &v).map(|()| {
                        overrides.insert(name.clone(), v);
                    }),
                    (1, _) => {
                        if configs::default_of(&name).is_none() {
                            Err(ResponseError::InvalidConfig)
                        } else {
                            overrides.remove(&name);
                            Ok(())
                        }
                    }
                    (2, Some(v)) => {
                        let mut items = list(&overrides);
                        for x in v.split(',').map(str::trim) {
                            if !items.iter().any(|i| i == x) {
                                items.push(x.to_owned());
                            }
                        }
                        let joined = items.join(",");
                        configs::validate(&name, &joined).map(|()| {
                            overrides.insert(name.clone(), joined);
                        })
                    }
                    (3, Some(v)) => {
                        let drop: Vec<&str> = v.split(',').map(str::trim).collect();
                        let items: Vec<String> = list(&overrides)
                            .into_iter()
                            .filter(|i| !drop.contains(&i.as_str()))
                            .collect();
                        let joined = items.join(",");
                        configs::validate(&name, &joined).map(|()| {
                            overrides.insert(name.clone(), joined);
                        })
                    }
                    _ => Err(ResponseError::InvalidConfig),
                };
                if let Err(e) = result {
                    return r
                        .with_error_code(e.code())
                        .with_error_message(Some(s(&format!("Invalid config {name}"))));
                }
            }
            if req.validate_only {
                return r;
            }
            r.with_error_code(code(broker.set_configs(&topic, overrides)))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn delete_records(
    broker: Arc<KafkaBroker>,
    view: View,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        // Deleting records destroys data like deleting the topic: configure.
        let allowed = view.topic(Perm::Configure, &t.name.0);
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

fn describe_cluster(session: &Session) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(s(metadata::CLUSTER_ID))
        .with_controller_id(BrokerId(metadata::NODE_ID))
        .with_brokers(vec![
            describe_cluster_response::DescribeClusterBroker::default()
                .with_broker_id(BrokerId(metadata::NODE_ID))
                .with_host(s(&session.host))
                .with_port(i32::from(session.port)),
        ])
}

fn init_producer_id(
    broker: &KafkaBroker,
    view: &View,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        // Transactions are not served (no transaction coordinator).
        return r
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster (here the
    // administrator tag) or WRITE on some topic.
    if !view.cluster() && !view.may_write_somewhere(broker) {
        return r
            .with_error_code(CLUSTER_DENIED.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 {
        // KIP-360: an idempotent producer bumping its own epoch keeps its id.
        if req.producer_epoch < i16::MAX - 1 {
            return r
                .with_producer_id(req.producer_id)
                .with_producer_epoch(req.producer_epoch + 1);
        }
    }
    match broker.allocate_producer_id() {
        Ok(id) => r.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            warn!(error = %e, "could not allocate a producer id");
            r.with_error_code(ResponseError::KafkaStorageError.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
