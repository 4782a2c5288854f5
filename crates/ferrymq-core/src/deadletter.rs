//! Dead-lettering as RabbitMQ does it: the message that leaves a queue for its
//! `x-dead-letter-exchange` carries an `x-death` history (one entry per (queue, reason),
//! most recent first, with a count), `x-first-death-*` and `x-last-death-*` headers, loses
//! its `expiration`, and is routed with the dead-letter routing key or its original keys.
//! Cycles (a message dead-lettered back into a queue it already died in, with no rejection
//! on the way) are dropped.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;

use crate::message::Message;
use crate::props;
use crate::sender;

/// Why a message left its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `basic.reject` / `basic.nack` without requeue (or `reject-publish-dlx`).
    Rejected,
    /// Its TTL passed.
    Expired,
    /// Dropped by `x-max-length` / `x-max-length-bytes`.
    Maxlen,
    /// Returned more often than `x-delivery-limit`.
    DeliveryLimit,
    /// A half message whose transaction was never decided (checks exhausted).
    TransactionExpired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
            Reason::TransactionExpired => "transaction_expired",
        }
    }
}

fn text(v: Option<&AMQPValue>) -> Option<&[u8]> {
    match v? {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

fn long_str(s: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_vec()))
}

/// The keys a message was routed with: its routing key, then the `CC` header's.
pub fn routing_keys(msg: &Message) -> Vec<Bytes> {
    let mut keys = vec![msg.routing_key.clone()];
    if let Some(AMQPValue::FieldArray(cc)) = msg.headers.as_ref().and_then(|h| h.inner().get("CC"))
    {
        for v in cc.as_slice() {
            if let Some(k) = text(Some(v)) {
                keys.push(Bytes::copy_from_slice(k));
            }
        }
    }
    keys
}

/// The message as it leaves `queue` for dead-letter exchange `dlx`, and the routing keys
/// to route it with there. `now_secs` is the wall clock (seconds since the epoch).
pub fn dead_letter(
    msg: &Message,
    queue: &str,
    reason: Reason,
    dlx: &str,
    dlrk: Option<&str>,
    now_secs: u64,
) -> (Message, Vec<Bytes>) {
    let original_keys = routing_keys(msg);
    let route_keys = match dlrk {
        Some(k) => vec![Bytes::copy_from_slice(k.as_bytes())],
        None => original_keys.clone(),
    };
    let original_expiration = msg.ttl_ms;
    let edit = |h: &mut FieldTable| {
        update_headers(
            h,
            msg,
            queue,
            reason,
            &original_keys,
            original_expiration,
            now_secs,
        );
        if dlrk.is_some() && h.inner().contains_key("CC") {
            // The keys are replaced: RabbitMQ drops CC.
            *h = sender::without(h, "CC");
        }
        if h.inner().contains_key("BCC") {
            *h = sender::without_bcc(h);
        }
    };
    let (raw_properties, headers) = match props::rewrite(&msg.raw_properties, true, edit) {
        Some(r) => r,
        // Properties that no longer parse cannot be annotated: keep them as they are.
        None => (
            msg.raw_properties.clone(),
            msg.headers.clone().unwrap_or_default(),
        ),
    };
    let out = Message {
        exchange: Bytes::copy_from_slice(dlx.as_bytes()),
        routing_key: route_keys[0].clone(),
        raw_properties,
        body: msg.body.clone(),
        persistent: msg.persistent,
        priority: msg.priority,
        headers: Some(headers),
        ttl_ms: None,
    };
    (out, route_keys)
}

fn update_headers(
    h: &mut FieldTable,
    msg: &Message,
    queue: &str,
    reason: Reason,
    keys: &[Bytes],
    original_expiration: Option<u64>,
    now_secs: u64,
) {
    let exchange = &msg.exchange[..];
    let mut deaths: Vec<AMQPValue> = match h.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    // An existing entry for (queue, reason) is counted up and moved to the front.
    let existing = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => {
            text(t.inner().get("queue")) == Some(queue.as_bytes())
                && text(t.inner().get("reason")) == Some(reason.as_str().as_bytes())
        }
        _ => false,
    });
    let entry = match existing {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else {
                unreachable!("matched a table above")
            };
            let count = t
                .inner()
                .get("count")
                .and_then(crate::topology::int_value)
                .unwrap_or(0);
            t.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            t.insert("time".into(), AMQPValue::Timestamp(now_secs));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long_str(reason.as_str().as_bytes()));
            t.insert("queue".into(), long_str(queue.as_bytes()));
            t.insert("time".into(), AMQPValue::Timestamp(now_secs));
            t.insert("exchange".into(), long_str(exchange));
            let rks: Vec<AMQPValue> = keys.iter().map(|k| long_str(k)).collect();
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(rks)),
            );
            if let Some(exp) = original_expiration {
                t.insert(
                    "original-expiration".into(),
                    long_str(exp.to_string().as_bytes()),
                );
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    h.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    if !h.inner().contains_key("x-first-death-reason") {
        h.insert(
            "x-first-death-reason".into(),
            long_str(reason.as_str().as_bytes()),
        );
        h.insert("x-first-death-queue".into(), long_str(queue.as_bytes()));
        h.insert("x-first-death-exchange".into(), long_str(exchange));
    }
    h.insert(
        "x-last-death-reason".into(),
        long_str(reason.as_str().as_bytes()),
    );
    h.insert("x-last-death-queue".into(), long_str(queue.as_bytes()));
    h.insert("x-last-death-exchange".into(), long_str(exchange));
}

/// Whether dead-lettering a message (with its updated `x-death`) into `target` closes a
/// cycle that no rejection interrupted: such deliveries are dropped, as RabbitMQ does.
/// A rejection anywhere on the way from the last visit of `target` means a consumer is
/// involved, so the message is let through.
pub fn is_cycle(reason: Reason, headers: Option<&FieldTable>, target: &str) -> bool {
    if reason == Reason::Rejected {
        return false;
    }
    let Some(AMQPValue::FieldArray(deaths)) = headers.and_then(|h| h.inner().get("x-death")) else {
        return false;
    };
    for d in deaths.as_slice() {
        let AMQPValue::FieldTable(t) = d else {
            continue;
        };
        if text(t.inner().get("reason")) == Some(b"rejected") {
            return false;
        }
        if text(t.inner().get("queue")) == Some(target.as_bytes()) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::ShortString;

    fn msg(ttl: Option<u64>) -> Message {
        let mut p = AMQPProperties::default().with_delivery_mode(2);
        if let Some(t) = ttl {
            p = p.with_expiration(ShortString::from(t.to_string()));
        }
        Message {
            exchange: Bytes::from_static(b"ex"),
            routing_key: Bytes::from_static(b"rk"),
            raw_properties: props::encode(&p),
            body: Bytes::from_static(b"body"),
            persistent: true,
            priority: None,
            headers: None,
            ttl_ms: ttl,
        }
    }

    fn deaths(m: &Message) -> Vec<FieldTable> {
        match m.headers.as_ref().unwrap().inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    _ => panic!("not a table"),
                })
                .collect(),
            _ => panic!("no x-death"),
        }
    }

    fn s<'a>(t: &'a FieldTable, k: &str) -> &'a [u8] {
        text(t.inner().get(k)).unwrap()
    }

    #[test]
    fn first_death_records_everything() {
        let (m, keys) = dead_letter(&msg(Some(500)), "q1", Reason::Expired, "dlx", None, 1000);
        assert_eq!(keys, vec![Bytes::from_static(b"rk")]);
        assert_eq!(&m.exchange[..], b"dlx");
        assert_eq!(m.ttl_ms, None);
        let p = props::parse(&m.raw_properties).unwrap();
        assert_eq!(*p.expiration(), None);
        assert_eq!(*p.delivery_mode(), Some(2));
        let d = deaths(&m);
        assert_eq!(d.len(), 1);
        assert_eq!(s(&d[0], "reason"), b"expired");
        assert_eq!(s(&d[0], "queue"), b"q1");
        assert_eq!(s(&d[0], "exchange"), b"ex");
        assert_eq!(s(&d[0], "original-expiration"), b"500");
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(d[0].inner().get("time"), Some(&AMQPValue::Timestamp(1000)));
        let h = m.headers.as_ref().unwrap();
        assert_eq!(text(h.inner().get("x-first-death-queue")), Some(&b"q1"[..]));
        assert_eq!(
            text(h.inner().get("x-last-death-reason")),
            Some(&b"expired"[..])
        );
    }

    #[test]
    fn repeated_death_counts_and_moves_to_front() {
        let (m1, _) = dead_letter(&msg(None), "a", Reason::Rejected, "dlx", Some("b"), 1);
        let (m2, _) = dead_letter(&m1, "b", Reason::Expired, "dlx2", None, 2);
        let (m3, keys) = dead_letter(&m2, "a", Reason::Rejected, "dlx", Some("b"), 3);
        assert_eq!(keys, vec![Bytes::from_static(b"b")]);
        let d = deaths(&m3);
        assert_eq!(d.len(), 2);
        assert_eq!(s(&d[0], "queue"), b"a");
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(s(&d[1], "queue"), b"b");
        let h = m3.headers.as_ref().unwrap();
        assert_eq!(text(h.inner().get("x-first-death-queue")), Some(&b"a"[..]));
        assert_eq!(text(h.inner().get("x-last-death-queue")), Some(&b"a"[..]));
        assert_eq!(
            text(h.inner().get("x-first-death-exchange")),
            Some(&b"ex"[..])
        );
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        let (m, _) = dead_letter(&msg(None), "q", Reason::Expired, "dlx", None, 1);
        assert!(is_cycle(Reason::Expired, m.headers.as_ref(), "q"));
        assert!(!is_cycle(Reason::Expired, m.headers.as_ref(), "other"));
        // A rejection on the way breaks the cycle.
        let (m2, _) = dead_letter(&m, "other", Reason::Rejected, "dlx", None, 2);
        let (m3, _) = dead_letter(&m2, "q", Reason::Expired, "dlx", None, 3);
        assert!(!is_cycle(Reason::Expired, m3.headers.as_ref(), "other"));
        // The current death being a rejection never counts as a cycle.
        assert!(!is_cycle(Reason::Rejected, m.headers.as_ref(), "q"));
    }

    #[test]
    fn cc_keys_are_routing_keys_and_dropped_with_a_dead_letter_key() {
        let mut m = msg(None);
        let mut h = FieldTable::default();
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long_str(b"k2")])),
        );
        let p = props::with_headers(&AMQPProperties::default(), h.clone(), false);
        m.raw_properties = props::encode(&p);
        m.headers = Some(h);
        let (d, keys) = dead_letter(&m, "q", Reason::Maxlen, "dlx", None, 1);
        assert_eq!(
            keys,
            vec![Bytes::from_static(b"rk"), Bytes::from_static(b"k2")]
        );
        assert!(d.headers.as_ref().unwrap().inner().contains_key("CC"));
        let (d, keys) = dead_letter(&m, "q", Reason::Maxlen, "dlx", Some("x"), 1);
        assert_eq!(keys, vec![Bytes::from_static(b"x")]);
        assert!(!d.headers.as_ref().unwrap().inner().contains_key("CC"));
    }
}
