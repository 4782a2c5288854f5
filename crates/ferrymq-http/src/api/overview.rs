//! `/api/overview`, `/api/whoami`, `/api/nodes`, the health checks and the aliveness test.

use std::sync::atomic::Ordering;

use axum::Json;
use serde_json::{json, Value};

use super::{Params, Q};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::history::{details, Range};
use crate::stats::{counter, BROKER_SERIES};
use crate::AppState;

/// The RabbitMQ version FerryMQ answers as (clients pick features by it).
pub const RABBITMQ_VERSION: &str = "3.13.7";

pub async fn overview(
    axum::extract::State(s): axum::extract::State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let rates = Range::from_query(&q, "msg_rates");
    let lengths = Range::from_query(&q, "lengths");
    let vhosts = s.visible_vhosts(&caller, None)?;
    let (mut exchanges, mut queues, mut consumers, mut ready, mut unacked) = (0, 0, 0, 0, 0);
    for v in &vhosts {
        v.read(|t| {
            exchanges += t.exchanges().count();
            for qe in t.queues() {
                queues += 1;
                let st = qe.handle.stats();
                consumers += st.consumers.load(Ordering::Relaxed);
                ready += st.ready.load(Ordering::Relaxed);
                unacked += st.unacked.load(Ordering::Relaxed);
            }
        });
    }
    let conns: Vec<_> = s
        .broker
        .registry
        .connections()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.meta.user == caller.name())
        .collect();
    let channels: usize = conns.iter().map(|c| c.channel_count()).sum();
    let global = s.broker.global.load();
    let view = s.stats.view();
    let mut message_stats = serde_json::Map::new();
    for (i, name) in BROKER_SERIES.iter().enumerate().take(9) {
        let v = counter(&global, name);
        message_stats.insert((*name).into(), json!(v));
        message_stats.insert(
            format!("{name}_details"),
            details(Some(&view.broker), &view.ticks, i, v, rates),
        );
    }
    for name in ["deliver_no_ack", "get_no_ack", "get_empty", "publish_bytes"] {
        message_stats.insert(name.into(), json!(counter(&global, name)));
    }
    let mut queue_totals = serde_json::Map::new();
    for (i, (name, v)) in [
        ("messages", ready + unacked),
        ("messages_ready", ready),
        ("messages_unacknowledged", unacked),
    ]
    .into_iter()
    .enumerate()
    {
        queue_totals.insert(name.into(), json!(v));
        queue_totals.insert(
            format!("{name}_details"),
            details(Some(&view.broker), &view.ticks, 9 + i, v, lengths),
        );
    }
    drop(view);
    let registry = &s.broker.registry;
    let (mut declared, mut created, mut deleted) = (0, 0, 0);
    for v in s.broker.vhosts() {
        declared += v.queue_churn.declared.load(Ordering::Relaxed);
        created += v.queue_churn.created.load(Ordering::Relaxed);
        deleted += v.queue_churn.deleted.load(Ordering::Relaxed);
    }
    let churn = json!({
        "connection_created": registry.opened.load(Ordering::Relaxed),
        "connection_closed": registry.closed.load(Ordering::Relaxed),
        "channel_created": registry.channel_churn.opened.load(Ordering::Relaxed),
        "channel_closed": registry.channel_churn.closed.load(Ordering::Relaxed),
        "queue_declared": declared,
        "queue_created": created,
        "queue_deleted": deleted,
    });
    let mut o = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {
            "global": [600],
            "basic": [60],
            "detailed": [60]
        },
        "exchange_types": [
            {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
            {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
            {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
            {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
            {"name": "x-delayed-message", "description": "Delayed message exchange (x-delay header)", "enabled": true},
            {"name": "x-message-deduplication", "description": "Message de-duplication exchange", "enabled": true}
        ],
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "FerryMQ",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": &*s.node,
        "erlang_version": "none (FerryMQ is written in Rust)",
        "erlang_full_version": "none",
        "release_series_support_status": "supported",
        "disable_stats": false,
        "is_op_policy_updating_enabled": true,
        "enable_queue_totals": true,
        "message_stats": message_stats,
        "churn_rates": churn,
        "queue_totals": queue_totals,
        "object_totals": {
            "connections": conns.len(),
            "channels": channels,
            "exchanges": exchanges,
            "queues": queues,
            "consumers": consumers,
        },
        "statistics_db_event_queue": 0,
        "node": &*s.node,
    });
    if caller.is_monitor() {
        o["listeners"] = Value::Array(
            s.listeners
                .iter()
                .map(|l| {
                    json!({
                        "node": &*s.node,
                        "protocol": l.protocol,
                        "ip_address": l.addr.ip().to_string(),
                        "port": l.addr.port(),
                    })
                })
                .collect(),
        );
        o["contexts"] = json!([]);
    }
    Ok(Json(o))
}

pub async fn cluster_name(
    axum::extract::State(s): axum::extract::State<AppState>,
    _caller: Caller,
) -> Json<Value> {
    Json(json!({ "name": &*s.node }))
}

pub async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({
        "name": caller.name(),
        "tags": caller.user.tags,
        "is_internal_user": true,
    }))
}

pub async fn extensions(_caller: Caller) -> Json<Value> {
    Json(json!([]))
}

pub async fn empty_list(_caller: Caller) -> Json<Value> {
    Json(json!([]))
}

/// Resident memory (bytes), from `/proc/self/statm`.
fn resident_memory() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// (open, limit) file descriptors.
fn fds() -> (u64, u64) {
    let used = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(0);
    (used, limit)
}

/// Total memory (bytes) from `/proc/meminfo`.
fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn node_json(s: &AppState) -> Value {
    let (fd_used, fd_total) = fds();
    let broker = &s.broker;
    let free = nix::sys::statvfs::statvfs(&broker.config.data_dir)
        .map(|v| v.blocks_available().saturating_mul(v.fragment_size()))
        .unwrap_or(0);
    let disk_alarm = *broker.disk_alarm_signal().borrow();
    json!({
        "name": &*s.node,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "uptime": s.started.elapsed().as_millis() as u64,
        "mem_used": broker.memory.used(),
        "mem_limit": broker.memory.limit(),
        "mem_alarm": broker.memory.alarm(),
        "mem_resident": resident_memory(),
        "mem_available": total_memory(),
        "disk_free": free,
        "disk_free_limit": broker.config.disk_free_limit,
        "disk_free_alarm": disk_alarm,
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": broker.registry.len(),
        "proc_used": 0,
        "proc_total": 0,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "os_pid": std::process::id().to_string(),
        "rates_mode": "basic",
        "enabled_plugins": ["rabbitmq_management"],
        "applications": [],
        "partitions": [],
        "cluster_links": [],
    })
}

pub async fn nodes(
    axum::extract::State(s): axum::extract::State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    super::list(&q, vec![node_json(&s)])
}

pub async fn node(
    axum::extract::State(s): axum::extract::State<AppState>,
    caller: Caller,
    Params(name): Params<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != *s.node {
        return Err(ApiError::NotFound);
    }
    Ok(Json(node_json(&s)))
}

fn ok() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn alarms(
    axum::extract::State(s): axum::extract::State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Value>> {
    let (mem, disk) = (
        s.broker.memory.alarm(),
        *s.broker.disk_alarm_signal().borrow(),
    );
    if mem || disk {
        let what = match (mem, disk) {
            (true, true) => "memory use above the high watermark, disk free space below the limit",
            (true, false) => "memory use above the high watermark",
            _ => "disk free space below the limit",
        };
        return Err(ApiError::Unavailable(format!(
            "resource alarm(s) in effect: {what} on {}",
            s.node
        )));
    }
    Ok(ok())
}

pub async fn virtual_hosts(
    axum::extract::State(s): axum::extract::State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Value>> {
    let down: Vec<String> = s
        .broker
        .auth
        .vhosts()
        .into_iter()
        .filter(|v| s.broker.vhost(&v.name).is_none())
        .map(|v| v.name)
        .collect();
    if !down.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "some virtual hosts are down: {down:?}"
        )));
    }
    Ok(ok())
}

pub async fn in_service(_caller: Caller) -> Json<Value> {
    ok()
}

pub async fn port_listener(
    axum::extract::State(s): axum::extract::State<AppState>,
    _caller: Caller,
    Params(port): Params<String>,
) -> ApiResult<Json<Value>> {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad("port must be an integer"))?;
    if s.listeners.iter().any(|l| l.addr.port() == port) {
        return Ok(Json(json!({"status": "ok", "port": port})));
    }
    Err(ApiError::Unavailable(format!(
        "No active listener on port {port}"
    )))
}

pub async fn protocol_listener(
    axum::extract::State(s): axum::extract::State<AppState>,
    _caller: Caller,
    Params(protocol): Params<String>,
) -> ApiResult<Json<Value>> {
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp" | "amqp0-9-1" => "amqp",
        "amqp091/ssl" | "amqps" => "amqp/ssl",
        other => other,
    };
    if s.listeners.iter().any(|l| l.protocol == wanted) {
        return Ok(Json(json!({"status": "ok", "protocol": protocol})));
    }
    Err(ApiError::Unavailable(format!(
        "No active listener for protocol {protocol}"
    )))
}

/// RabbitMQ 3.x's aliveness test: declare `aliveness-test`, publish, get it back.
pub async fn aliveness(
    axum::extract::State(s): axum::extract::State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
) -> ApiResult<Json<Value>> {
    use ferrymq_core::topology::QueueSpec;
    let mut session = s.session(&caller, &vhost)?;
    session.declare_queue(
        QueueSpec {
            name: "aliveness-test".into(),
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: Default::default(),
        },
        false,
        0,
    )?;
    let msg = ferrymq_core::Message {
        exchange: bytes::Bytes::new(),
        routing_key: bytes::Bytes::from_static(b"aliveness-test"),
        raw_properties: bytes::Bytes::from_static(&[0, 0]),
        body: bytes::Bytes::from_static(b"test_message"),
        persistent: false,
        priority: None,
        headers: None,
        ttl_ms: None,
    };
    session.publish(msg).await?;
    let got = session
        .get("aliveness-test", 1, ferrymq_server::session::GetMode::Ack)
        .await?;
    match got.first() {
        Some(g) if &g.entry.msg.body[..] == b"test_message" => Ok(ok()),
        _ => Err(ApiError::Unavailable("aliveness test failed".into())),
    }
}
