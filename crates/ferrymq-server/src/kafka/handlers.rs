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

use bytes::Bytes;
use ferrymq_auth::{AclOperation, Perm};
use ferrymq_kafka::api::records::Rejection;
use ferrymq_kafka::api::{self, api_versions, metadata, produce};
use ferrymq_kafka::group::{join_error, sync_error, ClientInfo};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::protocol::StrBytes;
use ferrymq_kafka::kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tracing::warn;
use uuid::Uuid;

use super::admin::*;
use super::authz::{Authz, View};
use super::connection::{PendingResponse, Reply};
use super::describe;
use super::groups;
use super::partition_task::{AppendResult, Command, PartitionHandle};
use super::txn;
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

pub(super) fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

pub(super) fn code(r: Result<(), ResponseError>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

pub(super) const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
pub(super) const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
pub(super) const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// The text Kafka puts next to 29 in admin responses.
pub(super) const DENIED_MESSAGE: &str = "Authorization failed.";

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
    throttle_ms: i32,
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
            return produce_request(&session.broker, &view, v, cid, req, throttle_ms).await
        }
        RequestKind::Fetch(req) => {
            let b = b.clone();
            // Fetch sessions belong to the vhost and user that created them.
            let owner = format!("{}\0{}", session.authz.vhost(), session.authz.user());
            later(key, v, cid, async move {
                ResponseKind::Fetch(super::fetch::fetch(b, owner, view, v, req).await)
            })
        }
        RequestKind::ListOffsets(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::ListOffsets(list_offsets(b, view, v, req).await)
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
        RequestKind::AlterConfigs(req) => ready(
            key,
            v,
            cid,
            ResponseKind::AlterConfigs(legacy_alter_configs(&b, &view, req)),
        ),
        RequestKind::DescribeLogDirs(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::DescribeLogDirs(describe::log_dirs(b, view, req).await)
            })
        }
        RequestKind::DescribeProducers(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::DescribeProducers(describe::producers(b, view, req).await)
            })
        }
        RequestKind::OffsetForLeaderEpoch(req) => ready(
            key,
            v,
            cid,
            ResponseKind::OffsetForLeaderEpoch(describe::offset_for_leader_epoch(&b, &view, req)),
        ),
        RequestKind::ElectLeaders(req) => ready(
            key,
            v,
            cid,
            ResponseKind::ElectLeaders(describe::elect_leaders(&b, &view, v, req)),
        ),
        RequestKind::DeleteRecords(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::DeleteRecords(delete_records(b, view, req).await)
            })
        }
        RequestKind::DescribeCluster(req) => ready(
            key,
            v,
            cid,
            ResponseKind::DescribeCluster(describe_cluster(session, &view, &req)),
        ),
        RequestKind::InitProducerId(req) if req.transactional_id.is_some() => {
            let id = req.transactional_id.as_ref().map_or("", |t| t.0.as_str());
            let allowed = view.txn_id_writable(&b, id);
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::InitProducerId(txn::init_producer_id(b, allowed, v, req).await)
            })
        }
        RequestKind::InitProducerId(req) => ready(
            key,
            v,
            cid,
            ResponseKind::InitProducerId(init_producer_id(&b, &view, req)),
        ),
        RequestKind::AddPartitionsToTxn(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::AddPartitionsToTxn(txn::add_partitions(b, view, v, req).await)
            })
        }
        RequestKind::AddOffsetsToTxn(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::AddOffsetsToTxn(txn::add_offsets(b, view, v, req).await)
            })
        }
        RequestKind::TxnOffsetCommit(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(b, view, v, req).await)
            })
        }
        RequestKind::EndTxn(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::EndTxn(txn::end_txn(b, view, v, req).await)
            })
        }
        RequestKind::DescribeTransactions(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::DescribeTransactions(txn::describe_transactions(b, view, req).await)
            })
        }
        RequestKind::ListTransactions(req) => {
            let b = b.clone();
            later(key, v, cid, async move {
                ResponseKind::ListTransactions(txn::list_transactions(b, view, req).await)
            })
        }
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
            let stable = req.require_stable;
            let group = req.group_id.0.to_string();
            let fut = groups::offset_fetch(view, groups(), v, req);
            let b = b.clone();
            later(key, v, cid, async move {
                let mut resp = fut.await;
                txn::mark_unstable(&b, v, stable, &group, &mut resp).await;
                ResponseKind::OffsetFetch(resp)
            })
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
        RequestKind::ConsumerGroupHeartbeat(req) => {
            if !view.group(&req.group_id) {
                let e =
                    ConsumerGroupHeartbeatResponse::default().with_error_code(GROUP_DENIED.code());
                return Some(ready(key, v, cid, ResponseKind::ConsumerGroupHeartbeat(e)));
            }
            let client = ClientInfo {
                client_id: header.client_id.as_deref().unwrap_or_default().to_owned(),
                client_host: format!("/{}", session.peer.ip()),
            };
            let (svc, topics) = (groups(), groups::topic_image(&b, &view));
            later(key, v, cid, async move {
                ResponseKind::ConsumerGroupHeartbeat(
                    svc.consumer_heartbeat(v, client, req, topics).await,
                )
            })
        }
        RequestKind::ConsumerGroupDescribe(req) => {
            let fut = groups::consumer_group_describe(view, groups(), &b, req);
            later(key, v, cid, async move {
                ResponseKind::ConsumerGroupDescribe(fut.await)
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
        RequestKind::OffsetDelete(req) => {
            let fut = groups::offset_delete(view, groups(), &b, req);
            later(
                key,
                v,
                cid,
                async move { ResponseKind::OffsetDelete(fut.await) },
            )
        }
        RequestKind::CreateAcls(req) => ready(
            key,
            v,
            cid,
            ResponseKind::CreateAcls(super::acls::create_acls(&mut session.authz, req)),
        ),
        RequestKind::DescribeAcls(req) => ready(
            key,
            v,
            cid,
            ResponseKind::DescribeAcls(super::acls::describe_acls(&mut session.authz, req)),
        ),
        RequestKind::DeleteAcls(req) => ready(
            key,
            v,
            cid,
            ResponseKind::DeleteAcls(super::acls::delete_acls(&mut session.authz, req)),
        ),
        RequestKind::DescribeUserScramCredentials(req) => ready(
            key,
            v,
            cid,
            ResponseKind::DescribeUserScramCredentials(super::scram_admin::describe(
                &mut session.authz,
                req,
            )),
        ),
        RequestKind::AlterUserScramCredentials(req) => ready(
            key,
            v,
            cid,
            ResponseKind::AlterUserScramCredentials(super::scram_admin::alter(
                &mut session.authz,
                req,
            )),
        ),
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
    let topic_ops = version >= 8 && req.include_topic_authorized_operations;
    let cluster_ops = (8..=10).contains(&version) && req.include_cluster_authorized_operations;
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
                if allowed
                    && broker.config.auto_create_topics
                    && view.topic_op(AclOperation::Create, &name)
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
    let mut resp = metadata::response(&session.host, i32::from(session.port), topics);
    if cluster_ops {
        resp.cluster_authorized_operations = view.cluster_authorized_operations();
    }
    if topic_ops {
        // KIP-430: the operations the user may do on each topic it sees.
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations = view.topic_authorized_operations(name);
            }
        }
    }
    resp
}

// ---- Produce ----

/// A partition of a Produce request: its index and its immediate error or pending append.
/// A pending append carries the LogAppendTime it was stamped with (-1: CreateTime).
type PartitionAppend = (
    i32,
    Result<(oneshot::Receiver<AppendResult>, i64), Rejection>,
);

async fn produce_request(
    broker: &Arc<KafkaBroker>,
    view: &View,
    v: i16,
    cid: i32,
    req: ProduceRequest,
    throttle_ms: i32,
) -> Option<PendingResponse> {
    let acks = req.acks;
    let valid_acks = produce::valid_acks(acks);
    // (topic name, [(partition, immediate error or pending append)])
    let mut pending: Vec<(TopicName, Vec<PartitionAppend>)> = Vec::new();
    let txn_id = req.transactional_id;
    // Kafka: a Produce with a transactional id needs WRITE on that id (every partition
    // gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED otherwise). Topic write is checked per
    // partition, so without an ACL on the id it is allowed.
    let txn_denied = txn_id
        .as_ref()
        .is_some_and(|t| !view.transactional_id(&t.0, true));
    for td in req.topic_data {
        let topic = broker.topic(&td.name.0);
        let writable = view.topic(Perm::Write, &td.name.0);
        let mut parts = Vec::new();
        for pd in td.partition_data {
            let result = if !valid_acks {
                Err(ResponseError::InvalidRequiredAcks.into())
            } else if txn_denied {
                Err(ResponseError::TransactionalIdAuthorizationFailed.into())
            } else if !writable {
                Err(TOPIC_DENIED.into())
            } else {
                match topic
                    .as_ref()
                    .and_then(|t| t.partition(pd.index).map(|p| (t, p)))
                {
                    None => Err(ResponseError::UnknownTopicOrPartition.into()),
                    Some((t, p)) => {
                        let txn = (broker.as_ref(), txn_id.as_ref().map(|t| t.0.as_str()));
                        let records = pd.records.unwrap_or_default();
                        start_append(t, (&p, pd.index), records, txn).await
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
                let mut append_time = -1;
                let outcome = match result {
                    Err(e) => Err(e),
                    Ok((rx, time)) => {
                        append_time = time;
                        rx.await
                            .unwrap_or(Err(ResponseError::UnknownServerError))
                            .map_err(Rejection::from)
                    }
                };
                let mut r = produce_response::PartitionProduceResponse::default()
                    .with_index(index)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(log_start);
                match outcome {
                    Ok(base) => {
                        r = r
                            .with_base_offset(base)
                            .with_log_append_time_ms(append_time)
                    }
                    Err(e) => {
                        r = r
                            .with_error_code(e.error.code())
                            .with_base_offset(-1)
                            .with_error_message(e.message.map(|m| s(&m)))
                            .with_record_errors(
                                e.record_errors
                                    .into_iter()
                                    .map(|(i, m)| {
                                        produce_response::BatchIndexAndErrorMessage::default()
                                            .with_batch_index(i)
                                            .with_batch_index_error_message(Some(s(&m)))
                                    })
                                    .collect(),
                            )
                    }
                }
                partition_responses.push(r);
            }
            responses.push(
                produce_response::TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        let r = ProduceResponse::default().with_responses(responses);
        // The field exists from v1 on.
        let r = if v >= 1 {
            r.with_throttle_time_ms(throttle_ms)
        } else {
            r
        };
        ResponseKind::Produce(r)
    }))
}

/// Validates a partition's records (structure, then the topic's per-record rules of
/// `api::records`) and sends them to the partition task (in order), as received: a slice
/// of the request buffer, no copy — unless the topic stamps LogAppendTime, which rewrites
/// the batch headers in a copy.
async fn start_append(
    topic: &Topic,
    (partition, index): (&PartitionHandle, i32),
    records: Bytes,
    (broker, transactional_id): (&KafkaBroker, Option<&str>),
) -> Result<(oneshot::Receiver<AppendResult>, i64), Rejection> {
    let config = topic.config.read().clone();
    let headers = produce::check_records(&records, usize::MAX)?;
    let now = now_ms();
    api::records::check(
        &records,
        &headers,
        &config,
        &format!("{}-{index}", topic.name),
        now,
    )?;
    if let Some(h) = headers.iter().find(|h| h.is_transactional()) {
        // Transactional records need the request's transactional id (Kafka refuses them
        // without one) and, KIP-890 part 1, a partition added to that id's ongoing
        // transaction: a late or stray write cannot land outside the transaction.
        let Some(id) = transactional_id else {
            return Err(ResponseError::TransactionalIdAuthorizationFailed.into());
        };
        let verified =
            broker
                .txns
                .verify_partition(id, h.producer_id, h.producer_epoch, &topic.name, index);
        if let Err(e) = verified {
            // Old clients retry NOT_ENOUGH_REPLICAS where Kafka has a transient
            // coordinator error (ReplicaManager's mapping).
            return Err(match e {
                ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
                e => e,
            }
            .into());
        }
    }
    let (records, append_time) = if config.log_append_time {
        let mut copy = records.to_vec();
        api::records::set_log_append_time(&mut copy, &headers, now);
        (Bytes::from(copy), now)
    } else {
        (records, -1)
    };
    let (reply, rx) = oneshot::channel();
    partition
        .tx
        .send(Command::Append {
            records,
            headers,
            reply,
        })
        .await
        .map_err(|_| ResponseError::UnknownTopicOrPartition)?;
    Ok((rx, append_time))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---- ListOffsets ----

async fn list_offsets(
    broker: Arc<KafkaBroker>,
    view: View,
    v: i16,
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
                        // Latest: the last stable offset at read_committed.
                        -1 if req.isolation_level == 1 => r = r.with_offset(o.last_stable),
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
                        // Max timestamp (KIP-734), from v7 on.
                        -3 if v >= 7 => {
                            let (reply, rx) = oneshot::channel();
                            let sent = h.tx.send(Command::MaxTimestamp { reply }).await;
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
    // Key type 0 is a group, 1 a transactional id (this node coordinates both). A group's
    // coordinator is found only by users who may DESCRIBE the group, as in Kafka
    // (without ACLs: read on it); a transactional id's by users an ACL on the id lets
    // DESCRIBE it (WRITE implies it; no ACL on the id: anyone, the id's requests are
    // checked themselves).
    let error_for = |key: &str| {
        if req.key_type == 1 {
            (!view.transactional_id_op(AclOperation::Describe, key, || true))
                .then_some(ResponseError::TransactionalIdAuthorizationFailed)
        } else if req.key_type != 0 {
            Some(ResponseError::InvalidRequest)
        } else if !view.group_op(AclOperation::Describe, key) {
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

fn describe_cluster(
    session: &Session,
    view: &View,
    req: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    let ops = if req.include_cluster_authorized_operations {
        view.cluster_authorized_operations()
    } else {
        i32::MIN
    };
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(ops)
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
    if !view.cluster_op(AclOperation::IdempotentWrite) && !view.may_write_somewhere(broker) {
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
