//! Fetch: reads partitions through their owner tasks, long-polls on their published
//! offsets, and keeps fetch sessions (KIP-227) in the listener's cache
//! ([`ferrymq_kafka::fetch_session`], rules there): a session belongs to the vhost and
//! user that created it, and an incremental response carries only partitions with news.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_auth::Perm;
use ferrymq_kafka::api;
use ferrymq_kafka::fetch_session::{
    Outcome, PartKey, PartitionRequest, Plan, Reported, SessionError, TopicRef,
};
use ferrymq_kafka::kafka_protocol::messages::*;
use ferrymq_kafka::kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::authz::View;
use super::handlers::TOPIC_DENIED;
use super::partition_task::{Command, PartitionHandle, ReadResult};
use super::{KafkaBroker, Topic};

/// The most a Fetch response carries whatever the client asks (Kafka's broker setting
/// `fetch.max.bytes`, 55 MiB), beyond the first batch, which is always whole.
pub const FETCH_MAX_BYTES: usize = 57_671_680;

/// Milliseconds on a monotonic clock (for session use times).
fn now_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

async fn read(
    p: &PartitionHandle,
    offset: i64,
    partition_max: usize,
    remaining: usize,
    first: bool,
    committed: bool,
) -> Option<ReadResult> {
    let (reply, rx) = oneshot::channel();
    p.tx.send(Command::Read {
        offset,
        partition_max,
        remaining,
        first_in_response: first,
        committed,
        reply,
    })
    .await
    .ok()?;
    rx.await.ok()
}

fn session_error_code(e: SessionError) -> i16 {
    match e {
        SessionError::NotFound => ResponseError::FetchSessionIdNotFound.code(),
        SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch.code(),
        SessionError::TopicIdMismatch => ResponseError::FetchSessionTopicIdError.code(),
    }
}

/// A topic of the plan, resolved, with its partitions' indexes in the plan.
struct PlanTopic {
    key: TopicRef,
    topic: Result<Arc<Topic>, ResponseError>,
    /// (index in the plan, partition).
    parts: Vec<(usize, i32)>,
}

/// Groups the plan's partitions by topic (first appearance order) and resolves each
/// topic; a topic the user may not read is answered with 29.
fn resolve(broker: &KafkaBroker, view: &View, plan: &Plan) -> Vec<PlanTopic> {
    let mut topics: Vec<PlanTopic> = Vec::new();
    for (i, (k, _)) in plan.partitions.iter().enumerate() {
        if let Some(t) = topics.iter_mut().find(|t| t.key == k.topic) {
            t.parts.push((i, k.partition));
            continue;
        }
        let topic = match &k.topic {
            TopicRef::Id(id) => match broker.topic_by_id(*id) {
                Some(t) if view.topic(Perm::Read, &t.name) => Ok(t),
                Some(_) => Err(TOPIC_DENIED),
                None => Err(ResponseError::UnknownTopicId),
            },
            TopicRef::Name(name) => match broker.topic(name) {
                Some(t) if view.topic(Perm::Read, &t.name) => Ok(t),
                Some(_) => Err(TOPIC_DENIED),
                None if !view.topic(Perm::Read, name) => Err(TOPIC_DENIED),
                None => Err(ResponseError::UnknownTopicOrPartition),
            },
        };
        topics.push(PlanTopic {
            key: k.topic.clone(),
            topic,
            parts: vec![(i, k.partition)],
        });
    }
    topics
}

/// The request's partitions and forgotten partitions as session keys.
fn request_keys(v: i16, req: &FetchRequest) -> (Vec<(PartKey, PartitionRequest)>, Vec<PartKey>) {
    let ids = v >= 13;
    let key = |name: &ferrymq_kafka::kafka_protocol::messages::TopicName, id: uuid::Uuid| {
        if ids {
            TopicRef::Id(id)
        } else {
            TopicRef::Name(name.0.to_string())
        }
    };
    let updates = req
        .topics
        .iter()
        .flat_map(|ft| {
            let t = key(&ft.topic, ft.topic_id);
            ft.partitions.iter().map(move |fp| {
                (
                    PartKey::new(t.clone(), fp.partition),
                    PartitionRequest {
                        fetch_offset: fp.fetch_offset,
                        max_bytes: fp.partition_max_bytes,
                    },
                )
            })
        })
        .collect();
    let forgotten = req
        .forgotten_topics_data
        .iter()
        .flat_map(|f| {
            let t = key(&f.topic, f.topic_id);
            f.partitions
                .iter()
                .map(move |p| PartKey::new(t.clone(), *p))
        })
        .collect();
    (updates, forgotten)
}

/// Serves a Fetch request for `owner` (vhost and user).
pub async fn fetch(
    broker: Arc<KafkaBroker>,
    owner: String,
    view: View,
    v: i16,
    req: FetchRequest,
) -> FetchResponse {
    let (updates, forgotten) = request_keys(v, &req);
    // Fetch v4-v6 have no session fields: their defaults (id 0, epoch -1) are sessionless.
    let sessions = broker.config.fetch_sessions.clone();
    let begun = sessions.lock().begin(
        &owner,
        req.session_id,
        req.session_epoch,
        v >= 13,
        now_ms(),
        updates,
        forgotten,
    );
    let plan = match begun {
        Ok(p) => p,
        Err(e) => return FetchResponse::default().with_error_code(session_error_code(e)),
    };
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let committed = req.isolation_level == 1;
    // Bounded by the broker's cap too (KIP-74: still at least one whole batch).
    let max_bytes = if req.max_bytes <= 0 {
        FETCH_MAX_BYTES
    } else {
        (req.max_bytes as usize).min(FETCH_MAX_BYTES)
    };
    let topics = resolve(&broker, &view, &plan);
    loop {
        let mut total = 0usize;
        let mut has_error = false;
        let mut watches = Vec::new();
        let mut datas: Vec<Option<fetch_response::PartitionData>> =
            vec![None; plan.partitions.len()];
        let mut outcomes = vec![
            Outcome {
                reported: Reported::default(),
                has_records: false,
                has_error: false,
            };
            plan.partitions.len()
        ];
        for t in &topics {
            for &(i, partition) in &t.parts {
                let fp = plan.partitions[i].1;
                let mut pd =
                    fetch_response::PartitionData::default().with_partition_index(partition);
                let handle = match &t.topic {
                    Ok(t) => t
                        .partition(partition)
                        .ok_or(ResponseError::UnknownTopicOrPartition),
                    Err(e) => Err(*e),
                };
                match handle {
                    Err(e) => {
                        has_error = true;
                        outcomes[i].has_error = true;
                        outcomes[i].reported = Reported {
                            high_watermark: -1,
                            last_stable: -1,
                            log_start: -1,
                        };
                        pd = pd.with_error_code(e.code()).with_high_watermark(-1);
                    }
                    Ok(h) => {
                        let o = h.offsets();
                        watches.push(h.offsets.clone());
                        let end = if committed {
                            o.last_stable
                        } else {
                            o.high_watermark
                        };
                        let result = if fp.fetch_offset == end {
                            // Caught up: nothing to read (no round trip).
                            Some(ReadResult {
                                records: Vec::new(),
                                offsets: o,
                                error: None,
                                aborted: Vec::new(),
                            })
                        } else {
                            read(
                                &h,
                                fp.fetch_offset,
                                fp.max_bytes.max(0) as usize,
                                max_bytes.saturating_sub(total),
                                total == 0,
                                committed,
                            )
                            .await
                        };
                        let r = result.unwrap_or(ReadResult {
                            records: Vec::new(),
                            offsets: o,
                            error: Some(ResponseError::UnknownTopicOrPartition),
                            aborted: Vec::new(),
                        });
                        if let Some(e) = r.error {
                            has_error = true;
                            outcomes[i].has_error = true;
                            pd = pd.with_error_code(e.code());
                        }
                        total += r.records.len();
                        outcomes[i].has_records = !r.records.is_empty();
                        outcomes[i].reported = Reported {
                            high_watermark: r.offsets.high_watermark,
                            last_stable: r.offsets.last_stable,
                            log_start: r.offsets.log_start,
                        };
                        pd = pd
                            .with_high_watermark(r.offsets.high_watermark)
                            .with_last_stable_offset(r.offsets.last_stable)
                            .with_log_start_offset(r.offsets.log_start)
                            .with_records(Some(Bytes::from(r.records)));
                        if committed {
                            pd = pd.with_aborted_transactions(Some(
                                r.aborted
                                    .into_iter()
                                    .map(|(pid, first)| {
                                        fetch_response::AbortedTransaction::default()
                                            .with_producer_id(ProducerId(pid))
                                            .with_first_offset(first)
                                    })
                                    .collect(),
                            ));
                        }
                    }
                }
                datas[i] = Some(pd);
            }
        }
        let now = Instant::now();
        let done = api::fetch::ready(total, req.min_bytes, now >= deadline, has_error)
            || watches.is_empty();
        if done {
            return respond(&broker, &owner, v, &plan, &topics, datas, &outcomes);
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
            _ = broker.closed() => {
                return respond(&broker, &owner, v, &plan, &topics, datas, &outcomes);
            }
        }
    }
}

/// Assembles the response: with a session, only the partitions it says carry news.
fn respond(
    broker: &KafkaBroker,
    owner: &str,
    v: i16,
    plan: &Plan,
    topics: &[PlanTopic],
    mut datas: Vec<Option<fetch_response::PartitionData>>,
    outcomes: &[Outcome],
) -> FetchResponse {
    let (session_id, include) =
        broker
            .config
            .fetch_sessions
            .lock()
            .finish(owner, plan, outcomes, now_ms());
    let mut responses = Vec::new();
    for t in topics {
        let partitions: Vec<_> = t
            .parts
            .iter()
            .filter(|(i, _)| include[*i])
            .filter_map(|(i, _)| datas[*i].take())
            .collect();
        if partitions.is_empty() {
            continue;
        }
        let mut tr = fetch_response::FetchableTopicResponse::default().with_partitions(partitions);
        match &t.key {
            TopicRef::Id(id) if v >= 13 => tr = tr.with_topic_id(*id),
            TopicRef::Name(name) => tr = tr.with_topic(TopicName(name.clone().into())),
            TopicRef::Id(_) => {}
        }
        responses.push(tr);
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses)
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
