//! Queues: list (current counts from the queue tasks' published numbers, exact from the
//! first moment), show, declare (PUT), delete, purge (`DELETE …/contents`) and
//! `POST …/get`. Changes go through the caller's `Session`.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use ferrymq_core::topology::{QueueEntry, QueueSpec};
use ferrymq_server::queue_task::QueueHandle;
use ferrymq_server::session::GetMode;
use ferrymq_server::vhost::VHost;
use serde_json::{json, Map, Value};

use super::{created_or_updated, no_content, Params, Q};
use crate::amqp_json::{encode_payload, properties_to_json, table_to_json};
use crate::auth::Caller;
use crate::body::{query_bool, Body};
use crate::error::{ApiError, ApiResult};
use crate::history::{details, Range, Ticks};
use crate::stats::{counter, Sampled, QUEUE_SERIES};
use crate::AppState;

fn queue_type(spec: &QueueSpec) -> &'static str {
    use amq_protocol::types::AMQPValue;
    let t = match spec.arguments.inner().get("x-queue-type") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    match t.as_str() {
        "quorum" => "quorum",
        "stream" => "stream",
        _ => "classic",
    }
}

/// One queue as RabbitMQ's management plugin shows it, with FerryMQ's exact counts.
pub fn queue_json(
    s: &AppState,
    view: &Sampled,
    v: &VHost,
    e: &QueueEntry<QueueHandle>,
    rates: Option<Range>,
    lengths: Option<Range>,
) -> Value {
    let st = e.handle.stats();
    let (ready, unacked) = (st.ready.load(Relaxed), st.unacked.load(Relaxed));
    let c = st.counters.load();
    let ring = view.queues.get(&e.handle.id());
    let ticks: &Ticks = &view.ticks;
    let effective = v.effective_arguments(&e.spec);
    let mut o = json!({
        "name": &*e.spec.name,
        "vhost": v.name,
        "type": queue_type(&e.spec),
        "durable": e.spec.durable,
        "auto_delete": e.spec.auto_delete,
        "exclusive": e.spec.exclusive_owner.is_some(),
        "arguments": table_to_json(&e.spec.arguments),
        "node": &*s.node,
        "state": "running",
        "policy": effective.policy,
        "operator_policy": effective.operator_policy,
        "effective_policy_definition": table_to_json(&effective.arguments),
        "consumers": st.consumers.load(Relaxed),
        "consumer_capacity": 1.0,
        "consumer_utilisation": 1.0,
        "exclusive_consumer_tag": null,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes_ready": st.ready_bytes.load(Relaxed),
        "x_delayed_retries": st.delayed.load(Relaxed),
        "recoverable_slaves": null,
    });
    for (i, (name, value)) in [
        ("messages_ready", ready),
        ("messages_unacknowledged", unacked),
        ("messages", ready + unacked),
    ]
    .into_iter()
    .enumerate()
    {
        o[format!("{name}_details")] = details(ring, ticks, i, value, lengths);
    }
    let mut stats = Map::new();
    for (i, name) in QUEUE_SERIES.iter().enumerate().skip(3) {
        let value = counter(&c, name);
        stats.insert((*name).into(), json!(value));
        stats.insert(
            format!("{name}_details"),
            details(ring, ticks, i, value, rates),
        );
    }
    for name in ["deliver_no_ack", "get_no_ack", "get_empty", "publish_bytes"] {
        stats.insert(name.into(), json!(counter(&c, name)));
    }
    o["message_stats"] = Value::Object(stats);
    if let Some(owner) = e.spec.exclusive_owner {
        if let Some(conn) = s
            .broker
            .registry
            .connections()
            .into_iter()
            .find(|c| c.id == owner)
        {
            o["owner_pid_details"] = json!({
                "name": conn.name,
                "peer_host": conn.meta.peer.ip().to_string(),
                "peer_port": conn.meta.peer.port(),
            });
        }
    }
    o
}

/// The queues of `vhosts`, listed as the query asks (only the page's queues rendered
/// when it pages by name).
fn list_queues(
    s: &AppState,
    vhosts: &[std::sync::Arc<VHost>],
    q: &std::collections::HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let rates = Range::from_query(q, "msg_rates");
    let lengths = Range::from_query(q, "lengths");
    let mut entries: Vec<(usize, QueueEntry<QueueHandle>)> = Vec::new();
    for (i, v) in vhosts.iter().enumerate() {
        let mut these: Vec<QueueEntry<QueueHandle>> = v.read(|t| t.queues().cloned().collect());
        these.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        entries.extend(these.into_iter().map(|e| (i, e)));
    }
    let view = s.stats.view();
    let out = crate::list::ListQuery::parse(q)?.apply_lazy(
        entries,
        |(_, e)| &e.spec.name,
        |(i, e), path| sort_value(&vhosts[*i], e, path),
        |(i, e)| queue_json(s, &view, &vhosts[*i], e, rates, lengths),
    )?;
    Ok(Json(out))
}

/// The value a queue has at a sort path, for the paths that are cheap to read (counts,
/// flags, vhost); `None` for the others (the list then renders every queue to sort).
fn sort_value(v: &VHost, e: &QueueEntry<QueueHandle>, path: &str) -> Option<Value> {
    let st = e.handle.stats();
    let (ready, unacked) = (st.ready.load(Relaxed), st.unacked.load(Relaxed));
    Some(match path {
        "vhost" => json!(v.name),
        "messages" => json!(ready + unacked),
        "messages_ready" => json!(ready),
        "messages_unacknowledged" => json!(unacked),
        "consumers" => json!(st.consumers.load(Relaxed)),
        "message_bytes_ready" => json!(st.ready_bytes.load(Relaxed)),
        "durable" => json!(e.spec.durable),
        "auto_delete" => json!(e.spec.auto_delete),
        "exclusive" => json!(e.spec.exclusive_owner.is_some()),
        "type" => json!(queue_type(&e.spec)),
        _ => return None,
    })
}

pub async fn list_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let vhosts = s.visible_vhosts(&caller, None)?;
    list_queues(&s, &vhosts, &q)
}

pub async fn list_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.visible_vhosts(&caller, Some(&vhost))?;
    list_queues(&s, &v, &q)
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.visible_vhost(&caller, &vhost)?;
    let e = v
        .read(|t| t.queue(&name).cloned())
        .ok_or(ApiError::NotFound)?;
    // One queue: let it apply what was sent to it before this read (bounded, so a stuck
    // queue still answers with its last published numbers).
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(250),
        e.handle
            .ask(|reply| ferrymq_server::queue_task::QueueCmd::Sync { reply }),
    )
    .await;
    let view = s.stats.view();
    Ok(Json(queue_json(
        &s,
        &view,
        &v,
        &e,
        Range::from_query(&q, "msg_rates"),
        Range::from_query(&q, "lengths"),
    )))
}

/// `PUT /api/queues/{vhost}/{name}` `{durable, auto_delete, arguments, node}` (the type
/// through `x-queue-type`): 201 created, 204 an equivalent queue existed, 400 otherwise.
pub async fn declare(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad("queue name must be 1..=255 bytes"));
    }
    ferrymq_core::topology::check_queue_name(&name)?;
    let mut arguments = crate::amqp_json::json_to_table(&body.object("arguments")?);
    if let Some(t) = body.string("type")? {
        if !arguments.inner().contains_key("x-queue-type") && t != "classic" {
            arguments.insert(
                "x-queue-type".into(),
                amq_protocol::types::AMQPValue::LongString(t.as_str().into()),
            );
        }
    }
    ferrymq_core::topology::validate_queue_args(&vhost, &name, &arguments)?;
    let spec = QueueSpec {
        name: name.as_str().into(),
        durable: body.bool_or("durable", true)?,
        exclusive_owner: None,
        auto_delete: body.bool_or("auto_delete", false)?,
        arguments,
    };
    ferrymq_core::args::validate_queue_type(&vhost, &spec)?;
    let declared = session.declare_queue(spec, false, 0)?;
    Ok(created_or_updated(matches!(
        declared,
        ferrymq_core::topology::Declared::Created(_)
    )))
}

/// `DELETE /api/queues/{vhost}/{name}[?if-empty=true&if-unused=true]`.
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    session
        .delete_queue(
            &name,
            query_bool(q.get("if-unused")),
            query_bool(q.get("if-empty")),
        )
        .await?;
    Ok(no_content())
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: purge.
pub async fn purge(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    session.purge(&name).await?;
    Ok(no_content())
}

/// The most messages one `POST …/get` takes.
const MAX_GET: i64 = 10_000;

/// `POST /api/queues/{vhost}/{name}/get` `{count, ackmode, encoding, truncate?}`.
pub async fn get_messages(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let mut session = s.session(&caller, &vhost)?;
    let count = body
        .int("count")?
        .ok_or_else(|| ApiError::bad("[{key_missing,count}]"))?;
    if !(0..=MAX_GET).contains(&count) {
        return Err(ApiError::bad(format!("count must be 0..={MAX_GET}")));
    }
    let mode = match body.required_string("ackmode")?.as_str() {
        "ack_requeue_true" | "get_requeue" | "requeue_true" => GetMode::AckRequeue,
        "ack_requeue_false" | "get" | "requeue_false" => GetMode::Ack,
        "reject_requeue_true" => GetMode::RejectRequeue,
        "reject_requeue_false" => GetMode::Reject,
        other => return Err(ApiError::bad(format!("Unknown ackmode: {other}"))),
    };
    let base64_only = match body.required_string("encoding")?.as_str() {
        "auto" => false,
        "base64" => true,
        other => return Err(ApiError::bad(format!("Unknown encoding: {other}"))),
    };
    let truncate = body
        .int("truncate")?
        .filter(|t| *t >= 0)
        .map(|t| t as usize);
    let got = session.get(&name, count as usize, mode).await?;
    let mut out = Vec::with_capacity(got.len());
    for g in got {
        let msg = &g.entry.msg;
        let body_bytes = match truncate {
            Some(t) if t < msg.body.len() => &msg.body[..t],
            _ => &msg.body[..],
        };
        let (payload, encoding) = encode_payload(body_bytes, base64_only);
        let props = ferrymq_core::props::parse(&msg.raw_properties)
            .map(|p| properties_to_json(&p))
            .unwrap_or_else(|| json!({}));
        out.push(json!({
            "payload_bytes": msg.body.len(),
            "redelivered": g.entry.redelivered(),
            "exchange": String::from_utf8_lossy(&msg.exchange),
            "routing_key": String::from_utf8_lossy(&msg.routing_key),
            "message_count": g.remaining,
            "properties": props,
            "payload": payload,
            "payload_encoding": encoding,
        }));
    }
    Ok(Json(Value::Array(out)))
}
