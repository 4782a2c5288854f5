//! A queue's optional arguments (`x-…`), read once when the queue is created. Validation
//! of their types happens at declare time (`topology::validate_queue_args`); here every
//! value is known to be well formed, and unusable ones are ignored.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::CoreError;
use crate::topology::{int_value, QueueSpec};

/// What a full queue does with a new message (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse the new message: a confirming publisher gets `basic.nack`.
    RejectPublish,
    /// As `RejectPublish`, and dead-letter the refused message.
    RejectPublishDlx,
}

/// `x-queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    /// Quorum semantics on one node: always durable, a delivery limit (default 20), and an
    /// `x-delivery-count` header on redeliveries.
    Quorum,
}

/// Which requeues a delayed-retry queue holds back (`x-delayed-retry-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryType {
    /// Rejected by the consumer (`basic.nack` / `basic.reject` with requeue) and returned
    /// (channel closed, consumer cancelled, connection lost).
    All,
    /// Only messages the consumer rejected with requeue.
    #[default]
    Failed,
    /// Only messages returned without a verdict (channel or connection closed).
    Returned,
}

/// Delayed retry: requeued messages wait `min · 2^(n-1)` ms (capped at `max`) before they
/// are ready again, `n` being the message's delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayedRetry {
    pub kind: RetryType,
    pub min_ms: u64,
    pub max_ms: u64,
}

impl DelayedRetry {
    /// The delay before the `n`th redelivery (n ≥ 1).
    pub fn delay_ms(&self, n: u32) -> u64 {
        let shift = n.saturating_sub(1).min(40);
        self.min_ms.saturating_mul(1u64 << shift).min(self.max_ms)
    }

    /// Whether a requeue of this kind (`failed`: by the consumer's verdict) is delayed.
    pub fn applies(&self, failed: bool) -> bool {
        match self.kind {
            RetryType::All => true,
            RetryType::Failed => failed,
            RetryType::Returned => !failed,
        }
    }
}

/// The default `x-delivery-limit` of quorum queues (RabbitMQ 4.0 and later).
pub const QUORUM_DEFAULT_DELIVERY_LIMIT: u32 = 20;

/// The arguments that shape a queue's behaviour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArgs {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub queue_type: QueueType,
    pub delivery_limit: Option<u32>,
    pub single_active_consumer: bool,
    pub consumer_timeout: Option<u64>,
    pub delayed_retry: Option<DelayedRetry>,
    /// `x-message-deduplication`: drop a publish whose `x-deduplication-header` value is
    /// already in the queue.
    pub deduplication: bool,
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn uint(args: &FieldTable, key: &str) -> Option<u64> {
    args.inner()
        .get(key)
        .and_then(int_value)
        .and_then(|n| u64::try_from(n).ok())
}

impl QueueArgs {
    pub fn from_spec(spec: &QueueSpec) -> QueueArgs {
        Self::parse(&spec.arguments)
    }

    pub fn parse(args: &FieldTable) -> QueueArgs {
        let get = |k: &str| args.inner().get(k);
        let queue_type = match text(get("x-queue-type")).as_deref() {
            Some("quorum") => QueueType::Quorum,
            _ => QueueType::Classic,
        };
        let delivery_limit = uint(args, "x-delivery-limit")
            .map(|n| n.min(u32::MAX as u64) as u32)
            .or(match queue_type {
                QueueType::Quorum => Some(QUORUM_DEFAULT_DELIVERY_LIMIT),
                QueueType::Classic => None,
            });
        let delayed_retry = uint(args, "x-delayed-retry-min")
            .filter(|&n| n > 0)
            .map(|min_ms| DelayedRetry {
                kind: match text(get("x-delayed-retry-type")).as_deref() {
                    Some("all") => RetryType::All,
                    Some("returned") => RetryType::Returned,
                    _ => RetryType::Failed,
                },
                min_ms,
                max_ms: uint(args, "x-delayed-retry-max")
                    .filter(|&m| m >= min_ms)
                    .unwrap_or(u64::from(u32::MAX)),
            });
        QueueArgs {
            message_ttl: uint(args, "x-message-ttl"),
            expires: uint(args, "x-expires").filter(|&n| n > 0),
            max_length: uint(args, "x-max-length"),
            max_length_bytes: uint(args, "x-max-length-bytes"),
            overflow: match text(get("x-overflow")).as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dead_letter_exchange: text(get("x-dead-letter-exchange")),
            dead_letter_routing_key: text(get("x-dead-letter-routing-key")),
            max_priority: uint(args, "x-max-priority")
                .filter(|&n| n > 0)
                .map(|n| n.min(255) as u8),
            queue_type,
            delivery_limit,
            single_active_consumer: matches!(
                get("x-single-active-consumer"),
                Some(AMQPValue::Boolean(true))
            ),
            consumer_timeout: uint(args, "x-consumer-timeout").filter(|&n| n > 0),
            delayed_retry,
            deduplication: matches!(
                get("x-message-deduplication"),
                Some(AMQPValue::Boolean(true))
            ),
        }
    }

    /// The TTL a message with its own TTL `msg_ttl` gets here: the shorter of the two.
    pub fn ttl_for(&self, msg_ttl: Option<u64>) -> Option<u64> {
        match (self.message_ttl, msg_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the queue may refuse publishes (the publisher's confirm then depends on it).
    pub fn may_reject_publish(&self) -> bool {
        (self.max_length.is_some() || self.max_length_bytes.is_some())
            && self.overflow != Overflow::DropHead
    }
}

/// The checks RabbitMQ makes on `x-queue-type` at declare time: an unknown type is a 406,
/// and a quorum queue must be durable, non-exclusive and not auto-delete.
pub fn validate_queue_type(vhost: &str, spec: &QueueSpec) -> Result<(), CoreError> {
    let name = &spec.name;
    let Some(v) = spec.arguments.inner().get("x-queue-type") else {
        return Ok(());
    };
    let kind = text(Some(v)).unwrap_or_default();
    match kind.as_str() {
        "classic" => Ok(()),
        "quorum" => {
            let bad = if !spec.durable {
                Some("non-durable")
            } else if spec.exclusive_owner.is_some() {
                Some("exclusive")
            } else if spec.auto_delete {
                Some("auto-delete")
            } else {
                None
            };
            match bad {
                Some(p) => Err(CoreError::Precondition(format!(
                    "invalid property '{p}' for queue '{name}' in vhost '{vhost}'"
                ))),
                None => Ok(()),
            }
        }
        other => Err(CoreError::Precondition(format!(
            "invalid arg 'x-queue-type' for queue '{name}' in vhost '{vhost}': unsupported queue type '{other}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;
    use std::sync::Arc;

    fn spec(args: &[(&str, AMQPValue)], durable: bool) -> QueueSpec {
        let mut t = FieldTable::default();
        for (k, v) in args {
            t.insert((*k).into(), v.clone());
        }
        QueueSpec {
            name: Arc::from("q"),
            durable,
            exclusive_owner: None,
            auto_delete: false,
            arguments: t,
        }
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn parses_every_argument() {
        let a = QueueArgs::from_spec(&spec(
            &[
                ("x-message-ttl", AMQPValue::LongInt(100)),
                ("x-expires", AMQPValue::ShortInt(5)),
                ("x-max-length", AMQPValue::LongLongInt(3)),
                ("x-max-length-bytes", AMQPValue::LongUInt(1000)),
                ("x-overflow", s("reject-publish-dlx")),
                ("x-dead-letter-exchange", s("dlx")),
                ("x-dead-letter-routing-key", s("dead")),
                ("x-max-priority", AMQPValue::ShortShortUInt(10)),
                ("x-delayed-retry-min", AMQPValue::LongInt(100)),
                ("x-delayed-retry-max", AMQPValue::LongInt(1000)),
                ("x-delayed-retry-type", s("all")),
            ],
            true,
        ));
        assert_eq!(a.message_ttl, Some(100));
        assert_eq!(a.expires, Some(5));
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.max_length_bytes, Some(1000));
        assert_eq!(a.overflow, Overflow::RejectPublishDlx);
        assert!(a.may_reject_publish());
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(a.dead_letter_routing_key.as_deref(), Some("dead"));
        assert_eq!(a.max_priority, Some(10));
        assert_eq!(a.queue_type, QueueType::Classic);
        assert_eq!(a.delivery_limit, None);
        let r = a.delayed_retry.unwrap();
        assert_eq!(r.kind, RetryType::All);
        assert_eq!(
            (r.delay_ms(1), r.delay_ms(2), r.delay_ms(3), r.delay_ms(9)),
            (100, 200, 400, 1000)
        );
    }

    #[test]
    fn quorum_defaults_and_rules() {
        let q = spec(&[("x-queue-type", s("quorum"))], true);
        assert_eq!(QueueArgs::from_spec(&q).delivery_limit, Some(20));
        assert!(validate_queue_type("/", &q).is_ok());
        let q = spec(
            &[
                ("x-queue-type", s("quorum")),
                ("x-delivery-limit", AMQPValue::LongInt(0)),
            ],
            true,
        );
        assert_eq!(QueueArgs::from_spec(&q).delivery_limit, Some(0));
        let transient = spec(&[("x-queue-type", s("quorum"))], false);
        assert!(matches!(
            validate_queue_type("/", &transient),
            Err(CoreError::Precondition(_))
        ));
        let unknown = spec(&[("x-queue-type", s("fancy"))], true);
        assert!(matches!(
            validate_queue_type("/", &unknown),
            Err(CoreError::Precondition(_))
        ));
        assert!(validate_queue_type("/", &spec(&[("x-queue-type", s("classic"))], false)).is_ok());
    }
}
