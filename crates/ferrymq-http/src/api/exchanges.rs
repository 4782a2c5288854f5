//! Exchanges: list, show, declare (PUT), delete, and `POST …/publish`. The default
//! exchange is `amq.default` in paths. Declares and deletes go through the caller's
//! `Session` (configure permission), publishes too (write permission, topic permissions).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use ferrymq_core::topology::{ExchangeKind, ExchangeSpec};
use ferrymq_server::vhost::VHost;
use serde_json::{json, Value};
use std::collections::HashMap;

use super::{created_or_updated, list, no_content, Params, Q};
use crate::amqp_json::{decode_payload, properties_from_json, table_to_json};
use crate::auth::Caller;
use crate::body::{query_bool, Body};
use crate::error::{ApiError, ApiResult};
use crate::history::{details, Range};
use crate::stats::Sampled;
use crate::AppState;

/// The name an exchange has in the engine (`amq.default` is the default exchange `""`).
pub fn engine_name(path_name: &str) -> &str {
    if path_name == "amq.default" {
        ""
    } else {
        path_name
    }
}

/// One exchange as the API shows it; `view` gives the `*_details` rates (and with
/// `rates` the `msg_rates_age` sample series).
pub fn exchange_json(v: &VHost, e: &ExchangeSpec, view: &Sampled, rates: Option<Range>) -> Value {
    let (publish_in, publish_out) = v.exchange_counts(&e.name);
    let ring = view.exchanges.get(&(v.name.clone(), e.name.clone()));
    let mut o = json!({
        "name": &*e.name,
        "vhost": v.name,
        "type": e.kind.as_str(),
        "durable": e.durable,
        "auto_delete": e.auto_delete,
        "internal": e.internal,
        "arguments": table_to_json(&e.arguments),
        "user_who_performed_action": "",
        "policy": null,
        "message_stats": {
            "publish_in": publish_in,
            "publish_in_details": details(ring, &view.ticks, 0, publish_in, rates),
            "publish_out": publish_out,
            "publish_out_details": details(ring, &view.ticks, 1, publish_out, rates),
        },
    });
    if let Some(n) = v.delayed_pending(&e.name) {
        o["x_delayed_pending"] = json!(n);
    }
    if let Some(n) = v.dedup_cache_size(&e.name) {
        o["x_deduplication_cache_size"] = json!(n);
    }
    o
}

fn exchanges_of(s: &AppState, v: &VHost, q: &HashMap<String, String>) -> Vec<Value> {
    let mut specs: Vec<ExchangeSpec> = v.read(|t| t.exchanges().cloned().collect());
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let rates = Range::from_query(q, "msg_rates");
    let view = s.stats.view();
    specs
        .iter()
        .map(|e| exchange_json(v, e, &view, rates))
        .collect()
}

pub async fn list_all(
    State(s): State<AppState>,
    caller: Caller,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in s.visible_vhosts(&caller, None)? {
        items.extend(exchanges_of(&s, &v, &q));
    }
    list(&q, items)
}

pub async fn list_vhost(
    State(s): State<AppState>,
    caller: Caller,
    Params(vhost): Params<String>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.visible_vhost(&caller, &vhost)?;
    list(&q, exchanges_of(&s, &v, &q))
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Json<Value>> {
    let v = s.visible_vhost(&caller, &vhost)?;
    let e = v
        .read(|t| t.exchange(engine_name(&name)).cloned())
        .ok_or(ApiError::NotFound)?;
    let view = s.stats.view();
    Ok(Json(exchange_json(
        &v,
        &e,
        &view,
        Range::from_query(&q, "msg_rates"),
    )))
}

/// `PUT /api/exchanges/{vhost}/{name}` `{type*, durable, auto_delete, internal,
/// arguments}`: 201 when created, 204 when an equivalent exchange existed, 400 when it is
/// not equivalent or the input is bad.
pub async fn declare(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    if name.is_empty()
        || name == "amq.default"
        || name.starts_with("amq.") && !exists(&session.vhost, &name)
    {
        return Err(ApiError::bad(format!(
            "exchange name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    if name.len() > 255 {
        return Err(ApiError::bad("exchange name longer than 255 bytes"));
    }
    let kind_name = body.required_string("type")?;
    let kind = ExchangeKind::parse(&kind_name)
        .ok_or_else(|| ApiError::bad(format!("invalid exchange type '{kind_name}'")))?;
    let arguments = crate::amqp_json::json_to_table(&body.object("arguments")?);
    kind.validate_args(&arguments)?;
    let spec = ExchangeSpec {
        name: name.as_str().into(),
        kind,
        durable: body.bool_or("durable", true)?,
        auto_delete: body.bool_or("auto_delete", false)?,
        internal: body.bool_or("internal", false)?,
        arguments,
    };
    let existed = exists(&session.vhost, &name);
    session.declare_exchange(spec, false)?;
    Ok(created_or_updated(!existed))
}

fn exists(v: &VHost, name: &str) -> bool {
    v.read(|t| t.exchange(name).is_some())
}

/// `DELETE /api/exchanges/{vhost}/{name}[?if-unused=true]`.
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    Q(q): Q,
) -> ApiResult<Response> {
    let mut session = s.session(&caller, &vhost)?;
    let name = engine_name(&name);
    if name.is_empty() || name.starts_with("amq.") {
        return Err(ApiError::NotAuthorised(format!(
            "operation not permitted on the exchange '{name}'"
        )));
    }
    if !exists(&session.vhost, name) {
        return Err(ApiError::NotFound);
    }
    session.delete_exchange(name, query_bool(q.get("if-unused")))?;
    Ok(no_content())
}

/// `POST /api/exchanges/{vhost}/{name}/publish` `{routing_key, properties, payload,
/// payload_encoding}` (all required, as RabbitMQ) → `{"routed": bool}`; a message a
/// queue refuses (nack) is a 400.
pub async fn publish(
    State(s): State<AppState>,
    caller: Caller,
    Params((vhost, name)): Params<(String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let mut session = s.session(&caller, &vhost)?;
    let routing_key = body.required_string("routing_key")?;
    if routing_key.len() > 255 {
        return Err(ApiError::bad("routing_key longer than 255 bytes"));
    }
    let payload = body.required_string("payload")?;
    let encoding = body.required_string("payload_encoding")?;
    if body.get("properties").is_none() {
        return Err(ApiError::bad("[{key_missing,properties}]"));
    }
    let props = properties_from_json(&body.object("properties")?)?;
    if let Some(uid) = props.user_id() {
        if uid.as_str() != caller.name() && !caller.user.has_tag("impersonator") {
            return Err(ApiError::bad(format!(
                "user_id property set to '{uid}' but authenticated user was '{}'",
                caller.name()
            )));
        }
    }
    let bytes = decode_payload(&payload, &encoding)?;
    if bytes.len() as u64 > s.broker.config.max_message_size {
        return Err(ApiError::bad(format!(
            "message size {} is larger than configured max size {}",
            bytes.len(),
            s.broker.config.max_message_size
        )));
    }
    let exchange = engine_name(&name);
    if !exists(&session.vhost, exchange) {
        return Err(ApiError::NotFound);
    }
    let raw = ferrymq_core::props::encode(&props);
    let msg = ferrymq_core::Message {
        exchange: bytes::Bytes::copy_from_slice(exchange.as_bytes()),
        routing_key: bytes::Bytes::from(routing_key.into_bytes()),
        raw_properties: raw,
        body: bytes::Bytes::from(bytes),
        persistent: props.delivery_mode() == &Some(2),
        priority: *props.priority(),
        headers: props.headers().clone(),
        ttl_ms: props
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse().ok()),
    };
    let size = msg.size() as u64;
    let routed = session.publish(msg).await?;
    s.broker.global.add(&ferrymq_server::stats::Counts {
        publish: 1,
        publish_bytes: size,
        drop_unroutable: u64::from(!routed),
        ..Default::default()
    });
    Ok(Json(json!({ "routed": routed })))
}
