//! Connections (list, show, close), channels and consumers, from the broker's connection
//! registry. Monitors and administrators see every connection; other users their own.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use ferrymq_server::stats::{ChannelStats, ConnectionEntry};
use serde_json::{json, Value};

use super::{list, no_content, Params, Q};
use crate::amqp_json::table_to_json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::history::{details, Range};
use crate::stats::{counter, CHANNEL_SERIES, CONNECTION_SERIES};
use crate::AppState;

/// RabbitMQ's reason when the API closes a connection.
pub const CLOSE_REASON: &str = "Closed via management plugin";

fn visible(s: &AppState, caller: &Caller, vhost: Option<&str>) -> Vec<Arc<ConnectionEntry>> {
    s.broker
        .registry
        .connections()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.meta.user == caller.name())
        .filter(|c| vhost.is_none_or(|v| c.meta.vhost == v))
        .collect()
}

fn connection_json(s: &AppState, c: &ConnectionEntry, rates: Option<Range>) -> Value {
    let m = &c.meta;
    let view = s.stats.view();
    let ring = view.connections.get(&c.id);
    let recv = c.counters.recv_oct.load(Relaxed);
    let send = c.counters.send_oct.load(Relaxed);
    let mut o = json!({
        "name": c.name,
        "node": &*s.node,
        "type": "network",
        "protocol": m.protocol.name(),
        "user": m.user,
        "user_who_performed_action": m.user,
        "vhost": m.vhost,
        "host": m.local.ip().to_string(),
        "port": m.local.port(),
        "peer_host": m.peer.ip().to_string(),
        "peer_port": m.peer.port(),
        "ssl": m.tls,
        "auth_mechanism": "PLAIN",
        "connected_at": m.connected_at,
        "client_properties": table_to_json(&m.client_properties),
        "channels": c.channel_count(),
        "channel_max": m.channel_max,
        "frame_max": m.frame_max,
        "timeout": m.timeout,
        "state": "running",
        "recv_oct": recv,
        "recv_cnt": c.counters.recv_cnt.load(Relaxed),
        "send_oct": send,
        "send_cnt": c.counters.send_cnt.load(Relaxed),
        "send_pend": 0,
    });
    o["recv_oct_details"] = details(ring, &view.ticks, 0, recv, rates);
    o["send_oct_details"] = details(ring, &view.ticks, 1, send, rates);
    debug_assert_eq!(CONNECTION_SERIES.len(), 2);
    o
}

pub async fn list_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let rates = Range::from_query(&q, "msg_rates");
    let items = visible(&s, &caller, None)
        .iter()
        .map(|c| connection_json(&s, c, rates))
        .collect();
    list(&q, items)
}

pub async fn list_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    s.visible_vhosts(&caller, Some(&vhost))?;
    let rates = Range::from_query(&q, "msg_rates");
    let items = visible(&s, &caller, Some(&vhost))
        .iter()
        .map(|c| connection_json(&s, c, rates))
        .collect();
    list(&q, items)
}

fn find(s: &AppState, caller: &Caller, name: &str) -> ApiResult<Arc<ConnectionEntry>> {
    let c = s.broker.registry.by_name(name).ok_or(ApiError::NotFound)?;
    if !caller.is_monitor() && c.meta.user != caller.name() {
        return Err(ApiError::NotFound);
    }
    Ok(c)
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let c = find(&s, &caller, &name)?;
    Ok(Json(connection_json(
        &s,
        &c,
        Range::from_query(&q, "msg_rates"),
    )))
}

/// Closes the connection: AMQP clients get `connection.close` 320 `CONNECTION_FORCED -
/// Closed via management plugin` (or the `X-Reason` header's text), Kafka clients a
/// closed socket. Administrators may close any connection, other users their own.
pub async fn close(
    State(s): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Params(name): Params<String>,
) -> ApiResult<Response> {
    let c = s.broker.registry.by_name(&name).ok_or(ApiError::NotFound)?;
    if !caller.is_admin() && c.meta.user != caller.name() {
        return Err(ApiError::NotAuthorised("Not administrator user".into()));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .unwrap_or(CLOSE_REASON);
    c.close(reason);
    Ok(no_content())
}

fn channel_json(
    s: &AppState,
    c: &ConnectionEntry,
    ch: &ChannelStats,
    rates: Option<Range>,
) -> Value {
    let view = s.stats.view();
    let ring = view.channels.get(&(c.id, ch.number));
    let counts = ch.counters.load();
    let mut stats = serde_json::Map::new();
    for (i, name) in CHANNEL_SERIES.iter().enumerate() {
        let v = counter(&counts, name);
        stats.insert((*name).into(), json!(v));
        stats.insert(
            format!("{name}_details"),
            details(ring, &view.ticks, i, v, rates),
        );
    }
    stats.insert("deliver_no_ack".into(), json!(counts.deliver_no_ack));
    stats.insert("get_no_ack".into(), json!(counts.get_no_ack));
    stats.insert("get_empty".into(), json!(counts.get_empty));
    json!({
        "name": format!("{} ({})", c.name, ch.number),
        "number": ch.number,
        "node": &*s.node,
        "vhost": c.meta.vhost,
        "user": c.meta.user,
        "user_who_performed_action": c.meta.user,
        "state": "running",
        "connection_details": {
            "name": c.name,
            "peer_host": c.meta.peer.ip().to_string(),
            "peer_port": c.meta.peer.port(),
        },
        "consumer_count": ch.consumers.lock().len(),
        "confirm": ch.confirm.load(Relaxed),
        "transactional": ch.transactional.load(Relaxed),
        "prefetch_count": ch.prefetch_count.load(Relaxed),
        "global_prefetch_count": ch.global_prefetch_count.load(Relaxed),
        "messages_unacknowledged": ch.unacked.load(Relaxed),
        "messages_unconfirmed": ch.unconfirmed.load(Relaxed),
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "pending_raft_commands": 0,
        "message_stats": stats,
    })
}

fn channels(
    s: &AppState,
    caller: &Caller,
    vhost: Option<&str>,
    rates: Option<Range>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for c in visible(s, caller, vhost) {
        let chans: Vec<Arc<ChannelStats>> = c.channels.lock().clone();
        for ch in chans {
            out.push(channel_json(s, &c, &ch, rates));
        }
    }
    out
}

pub async fn channels_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let rates = Range::from_query(&q, "msg_rates");
    list(&q, channels(&s, &caller, None, rates))
}

pub async fn channels_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    s.visible_vhosts(&caller, Some(&vhost))?;
    let rates = Range::from_query(&q, "msg_rates");
    list(&q, channels(&s, &caller, Some(&vhost), rates))
}

pub async fn connection_channels(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let c = find(&s, &caller, &name)?;
    let rates = Range::from_query(&q, "msg_rates");
    let chans: Vec<Arc<ChannelStats>> = c.channels.lock().clone();
    list(
        &q,
        chans
            .iter()
            .map(|ch| channel_json(&s, &c, ch, rates))
            .collect(),
    )
}

/// `/api/channels/{name}`: the name is `"<connection name> (<number>)"`.
pub async fn channel(
    State(s): State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let (conn, number) = name
        .rsplit_once(" (")
        .and_then(|(c, n)| Some((c, n.strip_suffix(')')?.parse::<u16>().ok()?)))
        .ok_or(ApiError::NotFound)?;
    let c = find(&s, &caller, conn)?;
    let ch = c
        .channels
        .lock()
        .iter()
        .find(|ch| ch.number == number)
        .cloned()
        .ok_or(ApiError::NotFound)?;
    Ok(Json(channel_json(
        &s,
        &c,
        &ch,
        Range::from_query(&q, "msg_rates"),
    )))
}

fn consumers(s: &AppState, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in visible(s, caller, vhost) {
        let chans: Vec<Arc<ChannelStats>> = c.channels.lock().clone();
        for ch in chans {
            for k in ch.consumers.lock().iter() {
                out.push(json!({
                    "consumer_tag": k.tag,
                    "queue": {"name": k.queue, "vhost": c.meta.vhost},
                    "channel_details": {
                        "name": format!("{} ({})", c.name, ch.number),
                        "number": ch.number,
                        "node": &*s.node,
                        "connection_name": c.name,
                        "peer_host": c.meta.peer.ip().to_string(),
                        "peer_port": c.meta.peer.port(),
                        "user": c.meta.user,
                    },
                    "ack_required": k.ack_required,
                    "exclusive": k.exclusive,
                    "prefetch_count": k.prefetch_count,
                    "arguments": table_to_json(&k.arguments),
                    "active": true,
                    "activity_status": "up",
                }));
            }
        }
    }
    out
}

pub async fn consumers_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    list(&q, consumers(&s, &caller, None))
}

pub async fn consumers_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    s.visible_vhosts(&caller, Some(&vhost))?;
    list(&q, consumers(&s, &caller, Some(&vhost)))
}
