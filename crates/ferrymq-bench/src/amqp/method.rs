//! The AMQP 0-9-1 methods this client sends and understands: encoders that append whole
//! frames to an output buffer, and a decoder from a method frame payload to [`Method`].
//! Only the few classes a load generator needs are covered (connection, channel, exchange,
//! queue, basic, confirm); anything else decodes to [`Method::Other`].

use super::wire::{
    put_frame, put_longstr, put_shortstr, put_table, Cursor, FieldValue, WireError, FRAME_BODY,
    FRAME_HEADER, FRAME_METHOD, FRAME_OVERHEAD,
};

/// (class, method) ids.
pub mod id {
    pub const CONNECTION_START: (u16, u16) = (10, 10);
    pub const CONNECTION_START_OK: (u16, u16) = (10, 11);
    pub const CONNECTION_TUNE: (u16, u16) = (10, 30);
    pub const CONNECTION_TUNE_OK: (u16, u16) = (10, 31);
    pub const CONNECTION_OPEN: (u16, u16) = (10, 40);
    pub const CONNECTION_OPEN_OK: (u16, u16) = (10, 41);
    pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
    pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
    pub const CONNECTION_BLOCKED: (u16, u16) = (10, 60);
    pub const CONNECTION_UNBLOCKED: (u16, u16) = (10, 61);
    pub const CHANNEL_OPEN: (u16, u16) = (20, 10);
    pub const CHANNEL_OPEN_OK: (u16, u16) = (20, 11);
    pub const CHANNEL_CLOSE: (u16, u16) = (20, 40);
    pub const EXCHANGE_DECLARE: (u16, u16) = (40, 10);
    pub const EXCHANGE_DECLARE_OK: (u16, u16) = (40, 11);
    pub const EXCHANGE_DELETE: (u16, u16) = (40, 20);
    pub const EXCHANGE_DELETE_OK: (u16, u16) = (40, 21);
    pub const QUEUE_DECLARE: (u16, u16) = (50, 10);
    pub const QUEUE_DECLARE_OK: (u16, u16) = (50, 11);
    pub const QUEUE_BIND: (u16, u16) = (50, 20);
    pub const QUEUE_BIND_OK: (u16, u16) = (50, 21);
    pub const QUEUE_DELETE: (u16, u16) = (50, 40);
    pub const QUEUE_DELETE_OK: (u16, u16) = (50, 41);
    pub const BASIC_QOS: (u16, u16) = (60, 10);
    pub const BASIC_QOS_OK: (u16, u16) = (60, 11);
    pub const BASIC_CONSUME: (u16, u16) = (60, 20);
    pub const BASIC_CONSUME_OK: (u16, u16) = (60, 21);
    pub const BASIC_CANCEL: (u16, u16) = (60, 30);
    pub const BASIC_PUBLISH: (u16, u16) = (60, 40);
    pub const BASIC_RETURN: (u16, u16) = (60, 50);
    pub const BASIC_DELIVER: (u16, u16) = (60, 60);
    pub const BASIC_ACK: (u16, u16) = (60, 80);
    pub const BASIC_NACK: (u16, u16) = (60, 120);
    pub const CONFIRM_SELECT: (u16, u16) = (85, 10);
    pub const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
}

/// A decoded incoming method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// connection.start: the server's properties (string values only) and SASL mechanisms.
    ConnectionStart {
        server_properties: Vec<(String, String)>,
        mechanisms: String,
    },
    /// connection.tune
    ConnectionTune {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    /// connection.close or channel.close: the peer refuses to go on.
    Close {
        class_id: u16,
        reply_code: u16,
        reply_text: String,
        failing: (u16, u16),
    },
    /// connection.blocked / connection.unblocked
    Blocked(bool),
    /// queue.declare-ok
    QueueDeclareOk {
        queue: String,
        messages: u32,
        consumers: u32,
    },
    /// basic.deliver
    Deliver { delivery_tag: u64 },
    /// basic.ack / basic.nack from the broker (publisher confirms).
    Confirm {
        ack: bool,
        delivery_tag: u64,
        multiple: bool,
    },
    /// basic.cancel from the broker (the queue was deleted, for example).
    Cancel { consumer_tag: String },
    /// basic.return
    Return { reply_code: u16, reply_text: String },
    /// Any other method; the arguments are not decoded.
    Other { class: u16, method: u16 },
}

impl Method {
    /// Decodes a method frame payload.
    pub fn decode(payload: &[u8]) -> Result<Method, WireError> {
        let mut c = Cursor::new(payload);
        let class = c.u16("method class")?;
        let method = c.u16("method id")?;
        Ok(match (class, method) {
            id::BASIC_DELIVER => {
                c.skip_shortstr("basic.deliver consumer-tag")?;
                Method::Deliver {
                    delivery_tag: c.u64("basic.deliver delivery-tag")?,
                }
            }
            id::BASIC_ACK | id::BASIC_NACK => {
                let delivery_tag = c.u64("basic.ack delivery-tag")?;
                let bits = c.u8("basic.ack bits")?;
                Method::Confirm {
                    ack: (class, method) == id::BASIC_ACK,
                    delivery_tag,
                    multiple: bits & 1 != 0,
                }
            }
            id::CONNECTION_START => {
                c.u8("connection.start version-major")?;
                c.u8("connection.start version-minor")?;
                let server_properties = c.table_strings("connection.start server-properties")?;
                let mechanisms = c.longstr("connection.start mechanisms")?;
                c.longstr("connection.start locales")?;
                Method::ConnectionStart {
                    server_properties,
                    mechanisms: String::from_utf8_lossy(mechanisms).into_owned(),
                }
            }
            id::CONNECTION_TUNE => Method::ConnectionTune {
                channel_max: c.u16("connection.tune channel-max")?,
                frame_max: c.u32("connection.tune frame-max")?,
                heartbeat: c.u16("connection.tune heartbeat")?,
            },
            id::CONNECTION_CLOSE | id::CHANNEL_CLOSE => {
                let reply_code = c.u16("close reply-code")?;
                let reply_text = c.shortstr("close reply-text")?;
                let failing_class = c.u16("close class-id")?;
                let failing_method = c.u16("close method-id")?;
                Method::Close {
                    class_id: class,
                    reply_code,
                    reply_text,
                    failing: (failing_class, failing_method),
                }
            }
            id::CONNECTION_BLOCKED => Method::Blocked(true),
            id::CONNECTION_UNBLOCKED => Method::Blocked(false),
            id::QUEUE_DECLARE_OK => Method::QueueDeclareOk {
                queue: c.shortstr("queue.declare-ok queue")?,
                messages: c.u32("queue.declare-ok message-count")?,
                consumers: c.u32("queue.declare-ok consumer-count")?,
            },
            id::BASIC_CANCEL => Method::Cancel {
                consumer_tag: c.shortstr("basic.cancel consumer-tag")?,
            },
            id::BASIC_RETURN => Method::Return {
                reply_code: c.u16("basic.return reply-code")?,
                reply_text: c.shortstr("basic.return reply-text")?,
            },
            (class, method) => Method::Other { class, method },
        })
    }

    /// The (class, method) id of this method, for matching replies.
    pub fn id(&self) -> (u16, u16) {
        match self {
            Method::ConnectionStart { .. } => id::CONNECTION_START,
            Method::ConnectionTune { .. } => id::CONNECTION_TUNE,
            Method::Close { class_id: 10, .. } => id::CONNECTION_CLOSE,
            Method::Close { .. } => id::CHANNEL_CLOSE,
            Method::Blocked(true) => id::CONNECTION_BLOCKED,
            Method::Blocked(false) => id::CONNECTION_UNBLOCKED,
            Method::QueueDeclareOk { .. } => id::QUEUE_DECLARE_OK,
            Method::Deliver { .. } => id::BASIC_DELIVER,
            Method::Confirm { ack: true, .. } => id::BASIC_ACK,
            Method::Confirm { ack: false, .. } => id::BASIC_NACK,
            Method::Cancel { .. } => id::BASIC_CANCEL,
            Method::Return { .. } => id::BASIC_RETURN,
            Method::Other { class, method } => (*class, *method),
        }
    }
}

/// Appends a method frame whose arguments are written by `args`.
fn put_method(
    out: &mut Vec<u8>,
    channel: u16,
    (class, method): (u16, u16),
    args: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut result = Ok(());
    put_frame(out, FRAME_METHOD, channel, |o| {
        o.extend_from_slice(&class.to_be_bytes());
        o.extend_from_slice(&method.to_be_bytes());
        result = args(o);
    });
    result
}

/// connection.start-ok with PLAIN credentials and the client capabilities RabbitMQ expects.
pub fn connection_start_ok(out: &mut Vec<u8>, user: &str, password: &str) -> Result<(), WireError> {
    let cap = |name: &str| (name.to_string(), FieldValue::Bool(true));
    let properties = vec![
        (
            "product".to_string(),
            FieldValue::LongStr("FerryMQ bench".into()),
        ),
        (
            "version".to_string(),
            FieldValue::LongStr(env!("CARGO_PKG_VERSION").into()),
        ),
        ("platform".to_string(), FieldValue::LongStr("Rust".into())),
        (
            "connection_name".to_string(),
            FieldValue::LongStr("ferrymq bench amqp".into()),
        ),
        (
            "capabilities".to_string(),
            FieldValue::Table(vec![
                cap("publisher_confirms"),
                cap("basic.nack"),
                cap("consumer_cancel_notify"),
                cap("connection.blocked"),
                cap("exchange_exchange_bindings"),
                cap("authentication_failure_close"),
                cap("per_consumer_qos"),
            ]),
        ),
    ];
    let mut response = Vec::with_capacity(user.len() + password.len() + 2);
    response.push(0);
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    put_method(out, 0, id::CONNECTION_START_OK, |o| {
        put_table(o, &properties)?;
        put_shortstr(o, "PLAIN")?;
        put_longstr(o, &response);
        put_shortstr(o, "en_US")
    })
}

/// connection.tune-ok
pub fn connection_tune_ok(out: &mut Vec<u8>, channel_max: u16, frame_max: u32, heartbeat: u16) {
    let _ = put_method(out, 0, id::CONNECTION_TUNE_OK, |o| {
        o.extend_from_slice(&channel_max.to_be_bytes());
        o.extend_from_slice(&frame_max.to_be_bytes());
        o.extend_from_slice(&heartbeat.to_be_bytes());
        Ok(())
    });
}

/// connection.open
pub fn connection_open(out: &mut Vec<u8>, vhost: &str) -> Result<(), WireError> {
    put_method(out, 0, id::CONNECTION_OPEN, |o| {
        put_shortstr(o, vhost)?;
        put_shortstr(o, "")?;
        o.push(0);
        Ok(())
    })
}

/// connection.close (normal shutdown) sent by the client.
pub fn connection_close(out: &mut Vec<u8>) {
    let _ = put_method(out, 0, id::CONNECTION_CLOSE, |o| {
        o.extend_from_slice(&200u16.to_be_bytes());
        put_shortstr(o, "bye")?;
        o.extend_from_slice(&[0, 0, 0, 0]);
        Ok(())
    });
}

/// connection.close-ok
pub fn connection_close_ok(out: &mut Vec<u8>) {
    let _ = put_method(out, 0, id::CONNECTION_CLOSE_OK, |_| Ok(()));
}

/// channel.open
pub fn channel_open(out: &mut Vec<u8>, channel: u16) {
    let _ = put_method(out, channel, id::CHANNEL_OPEN, |o| put_shortstr(o, ""));
}

/// Flags of queue.declare and exchange.declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeclareFlags {
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub no_wait: bool,
}

/// exchange.declare
pub fn exchange_declare(
    out: &mut Vec<u8>,
    channel: u16,
    name: &str,
    kind: &str,
    flags: DeclareFlags,
    arguments: &[(String, FieldValue)],
) -> Result<(), WireError> {
    put_method(out, channel, id::EXCHANGE_DECLARE, |o| {
        o.extend_from_slice(&[0, 0]);
        put_shortstr(o, name)?;
        put_shortstr(o, kind)?;
        // passive, durable, auto-delete, internal, no-wait
        let bits = u8::from(flags.passive)
            | u8::from(flags.durable) << 1
            | u8::from(flags.auto_delete) << 2
            | u8::from(flags.no_wait) << 4;
        o.push(bits);
        put_table(o, arguments)
    })
}

/// exchange.delete
pub fn exchange_delete(out: &mut Vec<u8>, channel: u16, name: &str) -> Result<(), WireError> {
    put_method(out, channel, id::EXCHANGE_DELETE, |o| {
        o.extend_from_slice(&[0, 0]);
        put_shortstr(o, name)?;
        o.push(0);
        Ok(())
    })
}

/// queue.declare
pub fn queue_declare(
    out: &mut Vec<u8>,
    channel: u16,
    name: &str,
    flags: DeclareFlags,
    arguments: &[(String, FieldValue)],
) -> Result<(), WireError> {
    put_method(out, channel, id::QUEUE_DECLARE, |o| {
        o.extend_from_slice(&[0, 0]);
        put_shortstr(o, name)?;
        // passive, durable, exclusive, auto-delete, no-wait
        let bits = u8::from(flags.passive)
            | u8::from(flags.durable) << 1
            | u8::from(flags.exclusive) << 2
            | u8::from(flags.auto_delete) << 3
            | u8::from(flags.no_wait) << 4;
        o.push(bits);
        put_table(o, arguments)
    })
}

/// queue.bind
pub fn queue_bind(
    out: &mut Vec<u8>,
    channel: u16,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), WireError> {
    put_method(out, channel, id::QUEUE_BIND, |o| {
        o.extend_from_slice(&[0, 0]);
        put_shortstr(o, queue)?;
        put_shortstr(o, exchange)?;
        put_shortstr(o, routing_key)?;
        o.push(0);
        put_table(o, &[])
    })
}

/// queue.delete
pub fn queue_delete(out: &mut Vec<u8>, channel: u16, queue: &str) -> Result<(), WireError> {
    put_method(out, channel, id::QUEUE_DELETE, |o| {
        o.extend_from_slice(&[0, 0]);
        put_shortstr(o, queue)?;
        o.push(0);
        Ok(())
    })
}

/// basic.qos with a per-consumer prefetch count.
pub fn basic_qos(out: &mut Vec<u8>, channel: u16, prefetch_count: u16) {
    let _ = put_method(out, channel, id::BASIC_QOS, |o| {
        o.extend_from_slice(&0u32.to_be_bytes());
        o.extend_from_slice(&prefetch_count.to_be_bytes());
        o.push(0);
        Ok(())
    });
}

/// basic.consume
pub fn basic_consume(
    out: &mut Vec<u8>,
    channel: u16,
    queue: &str,
    consumer_tag: &str,
    no_ack: bool,
) -> Result<(), WireError> {
    put_method(out, channel, id::BASIC_CONSUME, |o| {
        o.extend_from_slice(&[0, 0]);
        put_shortstr(o, queue)?;
        put_shortstr(o, consumer_tag)?;
        // no-local, no-ack, exclusive, no-wait
        o.push(u8::from(no_ack) << 1);
        put_table(o, &[])
    })
}

/// basic.ack sent by a consumer.
pub fn basic_ack(out: &mut Vec<u8>, channel: u16, delivery_tag: u64, multiple: bool) {
    let _ = put_method(out, channel, id::BASIC_ACK, |o| {
        o.extend_from_slice(&delivery_tag.to_be_bytes());
        o.push(u8::from(multiple));
        Ok(())
    });
}

/// confirm.select
pub fn confirm_select(out: &mut Vec<u8>, channel: u16) {
    let _ = put_method(out, channel, id::CONFIRM_SELECT, |o| {
        o.push(0);
        Ok(())
    });
}

/// Name of the message header carrying the delay of a delayed-message exchange.
pub const DELAY_HEADER: &str = "x-delay";

/// Body bytes a delayed message needs: the send time (0..8) and the delay in ms (8..16).
pub const DELAYED_BODY_MIN: usize = 16;

/// The frames of one published message, encoded once and copied per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTemplate {
    /// basic.publish + content header + body frame(s).
    pub bytes: Vec<u8>,
    /// Offset of the first body byte within `bytes`, if the body is non-empty.
    pub body_offset: Option<usize>,
    /// Offset within `bytes` of the 8-byte big-endian value of the `x-delay` header
    /// (field type 'l', signed 64-bit), when the template carries one.
    pub delay_offset: Option<usize>,
    /// Length of the first body frame's payload.
    first_body: usize,
}

impl PublishTemplate {
    /// Encodes a message of `size` zero bytes, split into body frames that fit `frame_max`.
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Result<PublishTemplate, WireError> {
        Self::encode(
            channel,
            exchange,
            routing_key,
            size,
            persistent,
            frame_max,
            false,
        )
    }

    /// Like [`Self::new`] with a `headers` table holding `x-delay` as a fixed-width
    /// integer (0 until patched), for a delayed-message exchange. The body must hold at
    /// least [`DELAYED_BODY_MIN`] bytes in its first frame: send time and delay.
    pub fn delayed(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Result<PublishTemplate, WireError> {
        Self::encode(
            channel,
            exchange,
            routing_key,
            size,
            persistent,
            frame_max,
            true,
        )
    }

    fn encode(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        size: usize,
        persistent: bool,
        frame_max: u32,
        delay: bool,
    ) -> Result<PublishTemplate, WireError> {
        let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
        if delay && (size < DELAYED_BODY_MIN || chunk < DELAYED_BODY_MIN) {
            return Err(WireError::Unexpected(format!(
                "delayed messages need a body (and first body frame) of at least {DELAYED_BODY_MIN} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(64 + size);
        put_method(&mut bytes, channel, id::BASIC_PUBLISH, |o| {
            o.extend_from_slice(&[0, 0]);
            put_shortstr(o, exchange)?;
            put_shortstr(o, routing_key)?;
            o.push(0);
            Ok(())
        })?;
        let mut delay_offset = None;
        let mut header = Ok(());
        put_frame(&mut bytes, FRAME_HEADER, channel, |o| {
            o.extend_from_slice(&id::BASIC_PUBLISH.0.to_be_bytes());
            o.extend_from_slice(&0u16.to_be_bytes());
            o.extend_from_slice(&(size as u64).to_be_bytes());
            if delay {
                // headers (bit 13) and delivery-mode (bit 12), in property order.
                o.extend_from_slice(&0x3000u16.to_be_bytes());
                header = put_table(o, &[(DELAY_HEADER.to_string(), FieldValue::I64(0))]);
                // The table ends with the header's 8-byte value.
                delay_offset = Some(o.len() - 8);
            } else {
                o.extend_from_slice(&0x1000u16.to_be_bytes()); // delivery-mode present
            }
            o.push(if persistent { 2 } else { 1 });
        });
        header?;
        let body_offset = (size > 0).then(|| bytes.len() + 7);
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk);
            put_frame(&mut bytes, FRAME_BODY, channel, |o| {
                o.resize(o.len() + n, 0)
            });
            left -= n;
        }
        Ok(PublishTemplate {
            bytes,
            body_offset,
            delay_offset,
            first_body: size.min(chunk),
        })
    }

    /// Patches one copy of the template (`msg`, as long as `bytes`) in place: the send
    /// time (ns since the UNIX epoch) into body bytes 0..8 when the body has room, and,
    /// for a delayed template, `delay_ms` into the `x-delay` header and body bytes 8..16.
    pub fn patch(&self, msg: &mut [u8], sent_at: u64, delay_ms: u64) {
        debug_assert_eq!(msg.len(), self.bytes.len());
        let Some(body) = self.body_offset else {
            return;
        };
        if let Some(at) = self.delay_offset {
            msg[at..at + 8].copy_from_slice(&delay_ms.to_be_bytes());
            msg[body + 8..body + 16].copy_from_slice(&delay_ms.to_be_bytes());
        }
        if self.first_body >= 8 {
            msg[body..body + 8].copy_from_slice(&sent_at.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::parse_frame;
    use super::*;

    fn single_method(bytes: &[u8]) -> Method {
        let (frame, used) = parse_frame(bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.kind, FRAME_METHOD);
        Method::decode(frame.payload).unwrap()
    }

    #[test]
    fn ack_round_trip() {
        let mut out = Vec::new();
        basic_ack(&mut out, 1, 42, true);
        assert_eq!(out.len(), 21);
        assert_eq!(
            single_method(&out),
            Method::Confirm {
                ack: true,
                delivery_tag: 42,
                multiple: true
            }
        );
    }

    #[test]
    fn deliver_decodes_tag() {
        let mut out = Vec::new();
        put_method(&mut out, 1, id::BASIC_DELIVER, |o| {
            put_shortstr(o, "ctag")?;
            o.extend_from_slice(&7u64.to_be_bytes());
            o.push(0);
            put_shortstr(o, "")?;
            put_shortstr(o, "q")
        })
        .unwrap();
        assert_eq!(single_method(&out), Method::Deliver { delivery_tag: 7 });
    }

    #[test]
    fn close_decodes_reply() {
        let mut out = Vec::new();
        put_method(&mut out, 0, id::CONNECTION_CLOSE, |o| {
            o.extend_from_slice(&403u16.to_be_bytes());
            put_shortstr(o, "ACCESS_REFUSED")?;
            o.extend_from_slice(&10u16.to_be_bytes());
            o.extend_from_slice(&11u16.to_be_bytes());
            Ok(())
        })
        .unwrap();
        let m = single_method(&out);
        assert_eq!(
            m,
            Method::Close {
                class_id: 10,
                reply_code: 403,
                reply_text: "ACCESS_REFUSED".into(),
                failing: (10, 11)
            }
        );
        assert_eq!(m.id(), id::CONNECTION_CLOSE);
    }

    #[test]
    fn start_ok_is_well_formed() {
        let mut out = Vec::new();
        connection_start_ok(&mut out, "guest", "secret").unwrap();
        let (frame, _) = parse_frame(&out, 1 << 20).unwrap().unwrap();
        let mut c = Cursor::new(frame.payload);
        assert_eq!(
            (c.u16("c").unwrap(), c.u16("m").unwrap()),
            id::CONNECTION_START_OK
        );
        let props = c.table_strings("props").unwrap();
        assert!(props.contains(&("product".into(), "FerryMQ bench".into())));
        assert_eq!(c.shortstr("mech").unwrap(), "PLAIN");
        assert_eq!(c.longstr("resp").unwrap(), b"\0guest\0secret");
        assert_eq!(c.shortstr("locale").unwrap(), "en_US");
        assert!(c.remaining().is_empty());
    }

    #[test]
    fn publish_template_layout() {
        let t = PublishTemplate::new(1, "", "q", 16, true, 131072).unwrap();
        let mut rest = &t.bytes[..];
        let (publish, n) = parse_frame(rest, 1 << 20).unwrap().unwrap();
        assert_eq!(
            Method::decode(publish.payload).unwrap().id(),
            id::BASIC_PUBLISH
        );
        rest = &rest[n..];
        let (header, n) = parse_frame(rest, 1 << 20).unwrap().unwrap();
        assert_eq!(header.kind, FRAME_HEADER);
        assert_eq!(&header.payload[4..12], &16u64.to_be_bytes());
        assert_eq!(header.payload[14], 2);
        rest = &rest[n..];
        let (body, n) = parse_frame(rest, 1 << 20).unwrap().unwrap();
        assert_eq!((body.kind, body.payload.len()), (FRAME_BODY, 16));
        assert_eq!(n, rest.len());
        assert_eq!(t.body_offset, Some(t.bytes.len() - 16 - 1));
    }

    #[test]
    fn large_bodies_are_split() {
        let t = PublishTemplate::new(1, "x", "", 100, false, 40).unwrap();
        let mut rest = &t.bytes[..];
        let mut body_sizes = Vec::new();
        while let Some((frame, n)) = parse_frame(rest, 1 << 20).unwrap() {
            if frame.kind == FRAME_BODY {
                body_sizes.push(frame.payload.len());
            }
            rest = &rest[n..];
        }
        assert_eq!(body_sizes, vec![32, 32, 32, 4]);
        assert!(rest.is_empty());
    }

    #[test]
    fn truncated_methods_are_errors() {
        let mut out = Vec::new();
        queue_declare(&mut out, 1, "q", DeclareFlags::default(), &[]).unwrap();
        let mut ok = Vec::new();
        put_method(&mut ok, 1, id::QUEUE_DECLARE_OK, |o| {
            put_shortstr(o, "amq.gen-1")?;
            o.extend_from_slice(&5u32.to_be_bytes());
            o.extend_from_slice(&1u32.to_be_bytes());
            Ok(())
        })
        .unwrap();
        let (frame, _) = parse_frame(&ok, 1 << 20).unwrap().unwrap();
        assert_eq!(
            Method::decode(frame.payload).unwrap(),
            Method::QueueDeclareOk {
                queue: "amq.gen-1".into(),
                messages: 5,
                consumers: 1
            }
        );
        for n in 0..frame.payload.len() {
            assert!(Method::decode(&frame.payload[..n]).is_err(), "prefix {n}");
        }
    }
}
