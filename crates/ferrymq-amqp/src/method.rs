//! Method decoding. The methods on every message's path (`basic.publish`, `ack`, `nack`,
//! `reject`) are decoded by hand without allocating; everything else goes through
//! `amq-protocol`'s parser on a large stack (its parser recurses on nested tables).

use crate::error::WireError;
use amq_protocol::protocol::{parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

/// `basic.publish` arguments, borrowing the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    pub mandatory: bool,
    pub immediate: bool,
}

/// A decoded method.
#[derive(Debug, Clone, PartialEq)]
pub enum Method<'a> {
    Publish(Publish<'a>),
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    Nack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        delivery_tag: u64,
        requeue: bool,
    },
    /// Decoded by hand because `amq-protocol` drops `prefetch_size`, which RabbitMQ refuses
    /// when non-zero.
    Qos {
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    },
    Other(AMQPClass),
}

/// A small cursor over a payload that reports truncation instead of panicking.
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Syntax(what))?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Syntax(what))?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let s = self.take(8, what)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_be_bytes(b))
    }
    /// Position range of a short string's bytes.
    pub fn short_str(&mut self, what: &'static str) -> Result<std::ops::Range<usize>, WireError> {
        let n = self.u8(what)? as usize;
        let start = self.pos;
        self.take(n, what)?;
        Ok(start..start + n)
    }
}

/// Payloads above this size are parsed on a fresh, large stack so that deeply nested
/// field tables cannot overflow the connection task's stack.
const SMALL_PAYLOAD: usize = 1024;

/// Deepest nesting of tables and arrays accepted in any field table. Deeper values are
/// refused as a syntax error: they serve no purpose and recursive code (parsing, dropping,
/// comparing) over them could exhaust a task's stack.
pub const MAX_TABLE_DEPTH: usize = 64;

/// Runs a recursive `amq-protocol` parse on a stack large enough for whatever nesting its
/// input has, checks the result's depth there, and drops it there if it is too deep.
pub(crate) fn parse_bounded<T>(
    input_len: usize,
    parse: impl FnOnce() -> Option<T>,
    depth: impl Fn(&T) -> usize,
) -> Option<Result<T, ()>> {
    let run = move || {
        let v = parse()?;
        if depth(&v) > MAX_TABLE_DEPTH {
            drop(v);
            return Some(Err(()));
        }
        Some(Ok(v))
    };
    if input_len <= SMALL_PAYLOAD {
        run()
    } else {
        // Each nesting level needs at least 5 input bytes; give each a few KiB of stack.
        let stack = (input_len / 5 + 16) * 32 * 1024;
        stacker::grow(stack.max(1 << 20), run)
    }
}

/// Nesting depth of a field table (an empty table has depth 1).
pub fn table_depth(t: &FieldTable) -> usize {
    1 + t.inner().values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::FieldTable(t) => table_depth(t),
        AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn class_depth(c: &AMQPClass) -> usize {
    use amq_protocol::protocol::{basic, connection, exchange, queue};
    match c {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => {
            table_depth(&m.client_properties)
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => table_depth(&m.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => table_depth(&m.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => table_depth(&m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => table_depth(&m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => table_depth(&m.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => table_depth(&m.arguments),
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => table_depth(&m.arguments),
        _ => 0,
    }
}

/// Decodes a method frame's payload.
pub fn decode_method(payload: &[u8]) -> Result<Method<'_>, WireError> {
    let mut c = Cursor::new(payload);
    let class = c.u16("method header")?;
    let method = c.u16("method header")?;
    match (class, method) {
        (60, 40) => {
            c.u16("basic.publish")?;
            let ex = c.short_str("basic.publish exchange")?;
            let rk = c.short_str("basic.publish routing key")?;
            let bits = c.u8("basic.publish flags")?;
            Ok(Method::Publish(Publish {
                exchange: &payload[ex],
                routing_key: &payload[rk],
                mandatory: bits & 1 != 0,
                immediate: bits & 2 != 0,
            }))
        }
        (60, 80) => {
            let delivery_tag = c.u64("basic.ack")?;
            let bits = c.u8("basic.ack")?;
            Ok(Method::Ack {
                delivery_tag,
                multiple: bits & 1 != 0,
            })
        }
        (60, 120) => {
            let delivery_tag = c.u64("basic.nack")?;
            let bits = c.u8("basic.nack")?;
            Ok(Method::Nack {
                delivery_tag,
                multiple: bits & 1 != 0,
                requeue: bits & 2 != 0,
            })
        }
        (60, 10) => {
            let prefetch_size = c.u32("basic.qos")?;
            let prefetch_count = c.u16("basic.qos")?;
            let bits = c.u8("basic.qos")?;
            Ok(Method::Qos {
                prefetch_size,
                prefetch_count,
                global: bits & 1 != 0,
            })
        }
        (60, 90) => {
            let delivery_tag = c.u64("basic.reject")?;
            let bits = c.u8("basic.reject")?;
            Ok(Method::Reject {
                delivery_tag,
                requeue: bits & 1 != 0,
            })
        }
        _ => {
            let known_class = matches!(class, 10 | 20 | 30 | 40 | 50 | 60 | 85 | 90);
            let parsed = parse_bounded(
                payload.len(),
                || parse_class(payload).ok().map(|(_, m)| m),
                class_depth,
            );
            match parsed {
                Some(Ok(m)) => Ok(Method::Other(m)),
                Some(Err(())) => Err(WireError::Syntax("field table nested too deeply")),
                None if !known_class || !method_exists(class, method) => {
                    Err(WireError::UnknownMethod { class, method })
                }
                None => Err(WireError::Syntax("method arguments")),
            }
        }
    }
}

fn method_exists(class: u16, method: u16) -> bool {
    let ids: &[u16] = match class {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    ids.contains(&method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn publish_and_acks() {
        let p = Bytes::from_static(&[0, 60, 0, 40, 0, 0, 2, b'e', b'x', 1, b'k', 3]);
        assert_eq!(
            decode_method(&p).unwrap(),
            Method::Publish(Publish {
                exchange: b"ex",
                routing_key: b"k",
                mandatory: true,
                immediate: true
            })
        );
        let a = Bytes::from_static(&[0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 1, 2, 1]);
        assert_eq!(
            decode_method(&a).unwrap(),
            Method::Ack {
                delivery_tag: 258,
                multiple: true
            }
        );
        assert!(matches!(
            decode_method(&a.slice(..8)),
            Err(WireError::Syntax(_))
        ));
        assert!(matches!(
            decode_method(&Bytes::from_static(&[0, 60, 0, 40, 0, 0, 9])),
            Err(WireError::Syntax(_))
        ));
    }

    #[test]
    fn other_methods_and_unknown() {
        // channel.open with its reserved short string
        let open = Bytes::from_static(&[0, 20, 0, 10, 0]);
        assert!(matches!(
            decode_method(&open),
            Ok(Method::Other(AMQPClass::Channel(_)))
        ));
        assert_eq!(
            decode_method(&Bytes::from_static(&[0, 99, 0, 1])),
            Err(WireError::UnknownMethod {
                class: 99,
                method: 1
            })
        );
        assert_eq!(
            decode_method(&Bytes::from_static(&[0, 20, 0, 99])),
            Err(WireError::UnknownMethod {
                class: 20,
                method: 99
            })
        );
    }

    #[test]
    fn deeply_nested_table_does_not_overflow() {
        // queue.declare with arguments nested 20 000 levels deep.
        let depth = 20_000usize;
        let mut table = Vec::new();
        // innermost: empty table
        let mut inner: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 0..depth {
            let mut t = vec![1, b'a', b'F'];
            t.extend_from_slice(&inner);
            let mut framed = (t.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&t);
            inner = framed;
        }
        table.extend_from_slice(&[0, 50, 0, 10, 0, 0, 1, b'q', 0]);
        table.extend_from_slice(&inner);
        let r = decode_method(&table);
        assert_eq!(r, Err(WireError::Syntax("field table nested too deeply")));
    }
}
