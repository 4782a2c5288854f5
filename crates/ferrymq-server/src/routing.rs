//! Publish-time routing beyond the plain exchange lookup, for messages that carry headers:
//! sender-selected distribution (`CC` / `BCC` add routing keys; `BCC` is stripped from the
//! delivered properties), delayed-message exchanges (a positive `x-delay` hands the
//! message to the exchange's delay task instead of routing it now) and de-duplication
//! exchanges (a repeated `x-deduplication-header` routes nowhere). Messages without
//! headers never come here (the connection's cached fast path handles them).

use std::sync::Arc;

use ferrymq_core::topology::ExchangeKind;
use ferrymq_core::{dedup, delay, sender, CoreError, Message};

use crate::delayed::{now_ms, DelayedHandle};
use crate::queue_task::QueueHandle;
use crate::vhost::VHost;

/// What to do with a publish that has headers.
pub enum Publish {
    /// Route it now to these queues (the message may have lost its `BCC` header).
    Route(Arc<Message>, Vec<QueueHandle>),
    /// Hold it in a delayed exchange until `due`.
    Hold(DelayedHandle, u64),
}

/// Decides a publish's fate at publish time.
pub fn classify(vhost: &VHost, msg: Arc<Message>) -> Result<Publish, CoreError> {
    classify_routed(vhost, msg)
}

/// [`classify`] for a message whose half-message headers were already handled (a
/// committed half is routed through this).
pub fn classify_routed(vhost: &VHost, msg: Arc<Message>) -> Result<Publish, CoreError> {
    let exchange = exchange_name(&msg)?;
    let kind = vhost.read(|t| t.exchange(exchange).map(|e| e.kind));
    match kind {
        Some(ExchangeKind::Delayed) => {
            if let Some(ms) = delay::delay_ms(msg.headers.as_ref()) {
                if let Some(h) = vhost.delayed_handle(exchange) {
                    return Ok(Publish::Hold(h, now_ms().saturating_add(ms)));
                }
            }
        }
        Some(ExchangeKind::Deduplication) => {
            if let Some(key) = dedup::dedup_key(msg.headers.as_ref()) {
                let ttl = dedup::message_ttl(msg.headers.as_ref());
                if vhost.dedup_seen(exchange, &key, ttl) {
                    return Ok(Publish::Route(msg, Vec::new()));
                }
            }
        }
        _ => {}
    }
    let (msg, targets) = route_now(vhost, msg)?;
    Ok(Publish::Route(msg, targets))
}

fn exchange_name(msg: &Message) -> Result<&str, CoreError> {
    std::str::from_utf8(&msg.exchange)
        .map_err(|_| CoreError::CommandInvalid("exchange name is not UTF-8".into()))
}

/// Routes a message with its routing key plus its `CC` / `BCC` keys, through the
/// exchange's bindings as they are now. Returns the message to deliver (without `BCC`).
pub fn route_now(
    vhost: &VHost,
    msg: Arc<Message>,
) -> Result<(Arc<Message>, Vec<QueueHandle>), CoreError> {
    let exchange = exchange_name(&msg)?;
    let rk = String::from_utf8_lossy(&msg.routing_key).into_owned();
    let extra = sender::extra_routing_keys(msg.headers.as_ref())?;
    let mut keys: Vec<&str> = Vec::with_capacity(1 + extra.len());
    keys.push(&rk);
    keys.extend(extra.iter().map(String::as_str));
    let mut targets = Vec::new();
    vhost.read(|t| t.route_keys(exchange, &keys, msg.headers.as_ref(), &mut targets))?;
    let msg = if sender::has_bcc(msg.headers.as_ref()) {
        Arc::new(without_bcc(&msg)?)
    } else {
        msg
    };
    Ok((msg, targets))
}

/// The message with `BCC` removed from its headers and its properties re-encoded (only
/// messages that carry `BCC` pay for this).
fn without_bcc(msg: &Message) -> Result<Message, CoreError> {
    let (raw, headers) = ferrymq_core::props::rewrite(&msg.raw_properties, false, |h| {
        *h = sender::without_bcc(h)
    })
    .ok_or_else(|| CoreError::Precondition("invalid message: malformed properties".into()))?;
    Ok(Message {
        raw_properties: raw,
        headers: Some(headers),
        ..msg.clone()
    })
}
