//! The transactional APIs behind the user's permissions: InitProducerId with a
//! transactional id, AddPartitionsToTxn (v0–v3), AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! DescribeTransactions, ListTransactions, and OffsetFetch's `require_stable`. Each checks
//! the request against the connection's [`View`] as Kafka's authorizer does (WRITE on the
//! transactional id first: TRANSACTIONAL_ID_AUTHORIZATION_FAILED; then write on each topic
//! added, read on the group and the topics of committed offsets; DESCRIBE on the id to
//! describe or list it), then asks the vhost's
//! [`TxnService`](crate::kafka_txn::TxnService), and shapes
//! errors for the request's version (PRODUCER_FENCED is INVALID_PRODUCER_EPOCH for
//! versions that predate it, as Kafka answers).

use std::sync::Arc;

use ferrymq_auth::Perm;
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::ResponseError;
use ferrymq_kafka::txn::{PendingOffset, TxnState};

use super::authz::View;
use super::handlers::{s, GROUP_DENIED, TOPIC_DENIED};
use super::KafkaBroker;

/// A partition of a request: its index and its immediate error, if any.
type Checked = (i32, Option<ResponseError>);

/// PRODUCER_FENCED (90) exists from `since`; older versions get INVALID_PRODUCER_EPOCH.
fn versioned(e: ResponseError, v: i16, since: i16) -> i16 {
    if e == ResponseError::ProducerFenced && v < since {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        e.code()
    }
}

fn code_of(r: Result<(), ResponseError>, v: i16, since: i16) -> i16 {
    r.err().map_or(0, |e| versioned(e, v, since))
}

/// InitProducerId with a transactional id.
pub async fn init_producer_id(
    broker: Arc<KafkaBroker>,
    allowed: bool,
    v: i16,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if !allowed {
        return fail(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let id = req
        .transactional_id
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let expected = (req.producer_id.0 >= 0 && req.producer_epoch >= 0)
        .then_some((req.producer_id.0, req.producer_epoch));
    match broker
        .txns
        .init_producer_id(id, req.transaction_timeout_ms, expected)
        .await
    {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(e) => fail(versioned(e, v, 4)),
    }
}

/// AddPartitionsToTxn v0–v3 (v4+ is the inter-broker form, not advertised).
pub async fn add_partitions(
    broker: Arc<KafkaBroker>,
    view: View,
    v: i16,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    // Per partition: an immediate error, or None (to be decided by the coordinator).
    let mut checked: Vec<(TopicName, Vec<Checked>)> = Vec::new();
    let mut all = Vec::new();
    let id_ok = view.txn_id_writable(&broker, &req.v3_and_below_transactional_id);
    for t in &req.v3_and_below_topics {
        let name = t.name.0.as_str();
        let topic = broker.topic(name);
        let writable = view.topic(Perm::Write, name);
        let parts = t
            .partitions
            .iter()
            .map(|&p| {
                let e = if !id_ok {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                } else if !writable {
                    Some(TOPIC_DENIED)
                } else if topic.as_ref().and_then(|t| t.partition(p)).is_none() {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else {
                    all.push((name.to_owned(), p));
                    None
                };
                (p, e)
            })
            .collect();
        checked.push((t.name.clone(), parts));
    }
    let any_refused = checked
        .iter()
        .any(|(_, ps)| ps.iter().any(|(_, e)| e.is_some()));
    // Kafka: if any partition is refused, the others are not attempted (55).
    let outcome = if any_refused {
        Err(ResponseError::OperationNotAttempted)
    } else if all.is_empty() {
        Ok(())
    } else {
        broker
            .txns
            .add_partitions(
                req.v3_and_below_transactional_id.0.to_string(),
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
                all,
            )
            .await
    };
    let results = checked
        .into_iter()
        .map(|(name, parts)| {
            add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                .with_name(name)
                .with_results_by_partition(
                    parts
                        .into_iter()
                        .map(|(p, e)| {
                            let code = match e {
                                Some(e) => e.code(),
                                None => code_of(outcome, v, 2),
                            };
                            add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// AddOffsetsToTxn.
pub async fn add_offsets(
    broker: Arc<KafkaBroker>,
    view: View,
    v: i16,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let r = if !view.txn_id_writable(&broker, &req.transactional_id) {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !view.group(&req.group_id) {
        Err(GROUP_DENIED)
    } else {
        broker
            .txns
            .add_offsets(
                req.transactional_id.0.to_string(),
                req.producer_id.0,
                req.producer_epoch,
                req.group_id.0.to_string(),
            )
            .await
    };
    AddOffsetsToTxnResponse::default().with_error_code(code_of(r, v, 2))
}

/// TxnOffsetCommit: the offsets wait in the transaction until it commits.
pub async fn txn_offset_commit(
    broker: Arc<KafkaBroker>,
    view: View,
    v: i16,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let id_ok = view.txn_id_writable(&broker, &req.transactional_id);
    let group_ok = view.group(&req.group_id);
    let group = req.group_id.0.to_string();
    let mut checked = Vec::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let readable = view.topic(Perm::Read, name);
        let topic = broker.topic(name);
        let parts: Vec<Checked> = t
            .partitions
            .iter()
            .map(|p| {
                let e = if !id_ok {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                } else if !group_ok {
                    Some(GROUP_DENIED)
                } else if !readable {
                    Some(TOPIC_DENIED)
                } else if topic
                    .as_ref()
                    .and_then(|t| t.partition(p.partition_index))
                    .is_none()
                {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else {
                    offsets.push(PendingOffset {
                        group: group.clone(),
                        topic: name.to_owned(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    });
                    None
                };
                (p.partition_index, e)
            })
            .collect();
        checked.push((t.name.clone(), parts));
    }
    let outcome = if offsets.is_empty() {
        Ok(())
    } else if let Err(e) = broker
        .groups
        .validate_txn_offset_commit(
            group.clone(),
            req.member_id.to_string(),
            req.group_instance_id.as_ref().map(|i| i.to_string()),
            req.generation_id,
        )
        .await
    {
        // KIP-447: a zombie consumer-producer (older generation, removed member, fenced
        // static instance) cannot commit offsets for the group.
        Err(e)
    } else {
        broker
            .txns
            .txn_offset_commit(
                req.transactional_id.0.to_string(),
                req.producer_id.0,
                req.producer_epoch,
                offsets,
            )
            .await
    };
    let topics = checked
        .into_iter()
        .map(|(name, parts)| {
            txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, e)| {
                            let code = match e {
                                Some(e) => e.code(),
                                None => code_of(outcome, v, 3),
                            };
                            txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn.
pub async fn end_txn(
    broker: Arc<KafkaBroker>,
    view: View,
    v: i16,
    req: EndTxnRequest,
) -> EndTxnResponse {
    let r = if !view.txn_id_writable(&broker, &req.transactional_id) {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    } else {
        broker
            .txns
            .end_txn(
                req.transactional_id.0.to_string(),
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
            )
            .await
    };
    EndTxnResponse::default()
        .with_error_code(code_of(r, v, 2))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// DescribeTransactions: DESCRIBE on each id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED
/// for it); as Kafka does, the partitions of topics the user may not describe are left
/// out.
pub async fn describe_transactions(
    broker: Arc<KafkaBroker>,
    view: View,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let ids: Vec<String> = req
        .transactional_ids
        .iter()
        .map(|t| t.0.to_string())
        .collect();
    let visible: Vec<bool> = ids.iter().map(|id| view.txn_id_visible(id)).collect();
    let found = if visible.iter().any(|&v| v) {
        broker.txns.describe(ids.clone()).await
    } else {
        None
    };
    let states = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let st = describe_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !visible[i] {
                return st
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
            }
            match found
                .as_ref()
                .and_then(|f| f.get(i))
                .and_then(|(_, m)| m.as_ref())
            {
                None if found.is_none() => {
                    st.with_error_code(ResponseError::CoordinatorNotAvailable.code())
                }
                None => st.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                Some(m) => {
                    let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
                    for (t, p) in m.partitions.iter().filter(|(t, _)| view.topic_visible(t)) {
                        match topics.last_mut() {
                            Some(last) if last.topic.0.as_str() == t => last.partitions.push(*p),
                            _ => topics.push(
                                describe_transactions_response::TopicData::default()
                                    .with_topic(TopicName(s(t)))
                                    .with_partitions(vec![*p]),
                            ),
                        }
                    }
                    st.with_transaction_state(s(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions, with state, producer id and (v1) duration filters; as Kafka does,
/// only the ids the user may DESCRIBE are listed (no error for the others).
pub async fn list_transactions(
    broker: Arc<KafkaBroker>,
    view: View,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let Some(all) = broker.txns.list().await else {
        return ListTransactionsResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for f in &req.state_filters {
        match TxnState::from_name(f) {
            Some(st) => states.push(st),
            None => unknown.push(f.clone()),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let listed = all
        .into_iter()
        .filter(|(id, _)| view.txn_id_visible(id))
        .filter(|(_, m)| req.state_filters.is_empty() || states.contains(&m.state))
        .filter(|(_, m)| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|(_, m)| {
            req.duration_filter < 0
                || (m.state == TxnState::Ongoing && now - m.start_ms >= req.duration_filter)
        })
        .map(|(id, m)| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

/// OffsetFetch with `require_stable`: partitions whose group has offsets waiting in a
/// transaction get UNSTABLE_OFFSET_COMMIT (the client retries).
pub async fn mark_unstable(
    broker: &KafkaBroker,
    v: i16,
    require_stable: bool,
    group_v7: &str,
    resp: &mut OffsetFetchResponse,
) {
    if !require_stable {
        return;
    }
    let code = ResponseError::UnstableOffsetCommit.code();
    if v >= 8 {
        for g in resp.groups.iter_mut() {
            let pending = broker.txns.pending_offsets(g.group_id.0.to_string()).await;
            for t in g.topics.iter_mut() {
                for p in t.partitions.iter_mut() {
                    if pending.contains(&(t.name.0.to_string(), p.partition_index)) {
                        p.error_code = code;
                        p.committed_offset = -1;
                    }
                }
            }
        }
    } else {
        let pending = broker.txns.pending_offsets(group_v7.to_owned()).await;
        for t in resp.topics.iter_mut() {
            for p in t.partitions.iter_mut() {
                if pending.contains(&(t.name.0.to_string(), p.partition_index)) {
                    p.error_code = code;
                    p.committed_offset = -1;
                }
            }
        }
    }
}
