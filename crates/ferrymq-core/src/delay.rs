//! Delayed messages (`x-delayed-message` exchanges, the convention of RabbitMQ's
//! rabbitmq-delayed-message-exchange plugin): the declare-time argument `x-delayed-type`
//! naming the routing algorithm underneath, the per-message `x-delay` header, and
//! [`DelaySchedule`], the in-memory index of held messages. The index keeps only
//! `(due, offset)` pairs (16 bytes each) in a binary heap; bodies stay in the delay log on
//! disk. Time is passed in, never read: `now` and due times are milliseconds since the
//! Unix epoch, so they survive a restart.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::CoreError;
use crate::topology::{int_value, ExchangeKind};

/// Exchange type name of a delayed-message exchange.
pub const DELAYED_TYPE: &str = "x-delayed-message";
/// Declare argument naming the underlying routing type.
pub const DELAYED_TYPE_ARG: &str = "x-delayed-type";
/// Message header carrying the delay in milliseconds.
pub const DELAY_HEADER: &str = "x-delay";

/// The routing algorithm under a delayed exchange, from its `x-delayed-type` argument.
/// Missing or not one of direct/fanout/topic/headers: 406, as the plugin answers.
pub fn underlying_kind(args: &FieldTable) -> Result<ExchangeKind, CoreError> {
    let name = match args.inner().get(DELAYED_TYPE_ARG) {
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str()),
        _ => None,
    };
    match name.and_then(ExchangeKind::parse) {
        Some(
            k @ (ExchangeKind::Direct
            | ExchangeKind::Fanout
            | ExchangeKind::Topic
            | ExchangeKind::Headers),
        ) => Ok(k),
        _ => Err(CoreError::Precondition(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type".into(),
        )),
    }
}

/// The delay a message asks for: `Some(ms)` for a positive integer `x-delay` header;
/// absent, zero, negative or non-integer means "route now" (`None`), as in the plugin.
pub fn delay_ms(headers: Option<&FieldTable>) -> Option<u64> {
    let v = headers?.inner().get(DELAY_HEADER)?;
    let n = match v {
        AMQPValue::Float(f) => *f as i64,
        AMQPValue::Double(d) => *d as i64,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        v => int_value(v)?,
    };
    (n > 0).then_some(n as u64)
}

/// Held messages ordered by due time (ties by offset, i.e. publish order).
#[derive(Debug, Default)]
pub struct DelaySchedule {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl DelaySchedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds the message stored at `offset` until `due` (ms since the epoch).
    pub fn insert(&mut self, due: u64, offset: u64) {
        self.heap.push(Reverse((due, offset)));
    }

    /// Due time of the earliest held message.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// Removes and returns the earliest message if it is due at `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, u64)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Number of held messages.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops every held message (the exchange was deleted).
    pub fn clear(&mut self) {
        self.heap = BinaryHeap::new();
    }

    /// Gives back memory after a large burst has drained.
    pub fn shrink(&mut self) {
        if self.heap.capacity() > 1024 && self.heap.capacity() > 4 * self.heap.len() {
            self.heap.shrink_to(self.heap.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(DELAY_HEADER.into(), v);
        t
    }

    #[test]
    fn delay_header_values() {
        let check = |v: AMQPValue, want: Option<u64>| {
            assert_eq!(delay_ms(Some(&headers(v.clone()))), want, "{v:?}");
        };
        check(AMQPValue::LongInt(200), Some(200));
        check(
            AMQPValue::LongLongInt(40 * 24 * 3600 * 1000),
            Some(3_456_000_000),
        );
        check(AMQPValue::ShortShortInt(5), Some(5));
        check(AMQPValue::LongInt(0), None);
        check(AMQPValue::LongInt(-10), None);
        check(AMQPValue::LongString("1500".into()), Some(1500));
        check(AMQPValue::LongString("soon".into()), None);
        check(AMQPValue::Boolean(true), None);
        assert_eq!(delay_ms(None), None);
        assert_eq!(delay_ms(Some(&FieldTable::default())), None);
    }

    #[test]
    fn delayed_type_argument() {
        let args = |v: Option<AMQPValue>| {
            let mut t = FieldTable::default();
            if let Some(v) = v {
                t.insert(DELAYED_TYPE_ARG.into(), v);
            }
            underlying_kind(&t)
        };
        assert_eq!(
            args(Some(AMQPValue::LongString("topic".into()))),
            Ok(ExchangeKind::Topic)
        );
        assert_eq!(
            args(Some(AMQPValue::LongString("headers".into()))),
            Ok(ExchangeKind::Headers)
        );
        assert!(args(None).is_err());
        assert!(args(Some(AMQPValue::LongString("nope".into()))).is_err());
        assert!(args(Some(AMQPValue::LongString(DELAYED_TYPE.into()))).is_err());
        assert!(args(Some(AMQPValue::LongInt(1))).is_err());
    }

    #[test]
    fn schedule_releases_by_due_time_then_offset() {
        let mut s = DelaySchedule::new();
        s.insert(300, 0);
        s.insert(100, 1);
        s.insert(200, 2);
        s.insert(100, 3);
        assert_eq!(s.len(), 4);
        assert_eq!(s.next_due(), Some(100));
        assert_eq!(s.pop_due(99), None, "nothing due yet");
        assert_eq!(s.pop_due(150), Some((100, 1)));
        assert_eq!(s.pop_due(150), Some((100, 3)));
        assert_eq!(s.pop_due(150), None);
        assert_eq!(s.pop_due(1000), Some((200, 2)));
        assert_eq!(s.pop_due(1000), Some((300, 0)));
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn schedule_matches_a_sorted_model() {
        // Deterministic pseudo-random due times; the schedule must release exactly the
        // sorted order of (due, offset), and only what is due.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut s = DelaySchedule::new();
        let mut model = Vec::new();
        for offset in 0..10_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let due = x % 60_000;
            s.insert(due, offset);
            model.push((due, offset));
        }
        model.sort();
        let mut got = Vec::new();
        for now in (0..=60_000).step_by(997) {
            while let Some(e) = s.pop_due(now) {
                assert!(e.0 <= now);
                got.push(e);
            }
        }
        while let Some(e) = s.pop_due(u64::MAX) {
            got.push(e);
        }
        assert_eq!(got, model);
        s.shrink();
        assert_eq!(std::mem::size_of::<Reverse<(u64, u64)>>(), 16);
    }
}
