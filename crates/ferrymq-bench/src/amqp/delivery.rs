//! The consumer's frame state machine: follows `basic.deliver` → content header → body
//! frames just far enough to know when a message is complete, its delivery tag, and the
//! send timestamp the producer put in the first 8 body bytes. Pure: frames in, events out.

use super::method::{id, Method};
use super::wire::{
    Cursor, Frame, WireError, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
};

/// What one incoming frame meant to the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// The frame was part of a message still being received.
    Partial,
    /// A whole message arrived.
    Delivered {
        /// Its delivery tag, to acknowledge it.
        delivery_tag: u64,
        /// The producer's send time (nanoseconds since the UNIX epoch), if the body had one.
        sent_at: Option<u64>,
        /// Body bytes 8..16 (big-endian), if the first body frame had them: the delay in
        /// ms that a delayed-message producer asked for (zero in other runs).
        delay_ms: Option<u64>,
    },
    /// The broker sent a heartbeat.
    Heartbeat,
    /// Any method other than `basic.deliver` (close, cancel, blocked, ...).
    Method(Method),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages.
    Idle,
    /// After basic.deliver, waiting for the content header.
    Header { delivery_tag: u64 },
    /// Inside the body: `remaining` bytes to go; `sent_at` read from the first body frame.
    Body {
        delivery_tag: u64,
        remaining: u64,
        first: bool,
        sent_at: Option<u64>,
        delay_ms: Option<u64>,
    },
}

/// Tracks where in a delivery the consumer's channel is.
#[derive(Debug, Clone)]
pub struct DeliveryParser {
    state: State,
}

impl Default for DeliveryParser {
    fn default() -> Self {
        Self::new()
    }
}

impl DeliveryParser {
    /// A parser between messages.
    pub fn new() -> Self {
        DeliveryParser { state: State::Idle }
    }

    /// Consumes one frame.
    pub fn on_frame(&mut self, frame: Frame<'_>) -> Result<ConsumerEvent, WireError> {
        match (frame.kind, self.state) {
            (FRAME_METHOD, State::Idle) => {
                let method = Method::decode(frame.payload)?;
                if let Method::Deliver { delivery_tag } = method {
                    self.state = State::Header { delivery_tag };
                    Ok(ConsumerEvent::Partial)
                } else {
                    Ok(ConsumerEvent::Method(method))
                }
            }
            (FRAME_HEADER, State::Header { delivery_tag }) => {
                let mut c = Cursor::new(frame.payload);
                let class = c.u16("content header class")?;
                if class != id::BASIC_DELIVER.0 {
                    return Err(WireError::Unexpected(format!(
                        "content header of class {class}"
                    )));
                }
                c.u16("content header weight")?;
                let size = c.u64("content header body size")?;
                if size == 0 {
                    self.state = State::Idle;
                    return Ok(ConsumerEvent::Delivered {
                        delivery_tag,
                        sent_at: None,
                        delay_ms: None,
                    });
                }
                self.state = State::Body {
                    delivery_tag,
                    remaining: size,
                    first: true,
                    sent_at: None,
                    delay_ms: None,
                };
                Ok(ConsumerEvent::Partial)
            }
            (
                FRAME_BODY,
                State::Body {
                    delivery_tag,
                    remaining,
                    first,
                    sent_at,
                    delay_ms,
                },
            ) => {
                let len = frame.payload.len() as u64;
                if len > remaining {
                    return Err(WireError::Unexpected(format!(
                        "body frame of {len} bytes with only {remaining} left in the message"
                    )));
                }
                let word = |i: usize| {
                    let mut w = [0; 8];
                    w.copy_from_slice(frame.payload.get(i * 8..i * 8 + 8)?);
                    Some(u64::from_be_bytes(w))
                };
                let (sent_at, delay_ms) = if first {
                    (word(0), word(1))
                } else {
                    (sent_at, delay_ms)
                };
                if len == remaining {
                    self.state = State::Idle;
                    Ok(ConsumerEvent::Delivered {
                        delivery_tag,
                        sent_at,
                        delay_ms,
                    })
                } else {
                    self.state = State::Body {
                        delivery_tag,
                        remaining: remaining - len,
                        first: false,
                        sent_at,
                        delay_ms,
                    };
                    Ok(ConsumerEvent::Partial)
                }
            }
            (FRAME_HEARTBEAT, _) => Ok(ConsumerEvent::Heartbeat),
            (FRAME_METHOD, _) => {
                // A close may interrupt a half-received message; anything else is a protocol error.
                let method = Method::decode(frame.payload)?;
                if matches!(method, Method::Close { .. }) {
                    self.state = State::Idle;
                    Ok(ConsumerEvent::Method(method))
                } else {
                    Err(WireError::Unexpected(format!(
                        "method {:?} inside a delivery",
                        method.id()
                    )))
                }
            }
            (kind, state) => Err(WireError::Unexpected(format!(
                "frame type {kind} in consumer state {state:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::method::{basic_ack, PublishTemplate};
    use super::super::wire::{parse_frame, put_frame, put_shortstr};
    use super::*;

    /// Rewrites a publish template into what a broker delivers: basic.deliver instead of
    /// basic.publish, same header and body frames.
    fn delivery_bytes(tag: u64, body: &[u8], frame_max: u32) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, FRAME_METHOD, 1, |o| {
            o.extend_from_slice(&60u16.to_be_bytes());
            o.extend_from_slice(&60u16.to_be_bytes());
            put_shortstr(o, "ctag").unwrap();
            o.extend_from_slice(&tag.to_be_bytes());
            o.push(0);
            put_shortstr(o, "").unwrap();
            put_shortstr(o, "q").unwrap();
        });
        let mut t = PublishTemplate::new(1, "", "q", body.len(), false, frame_max).unwrap();
        if let Some(at) = t.body_offset {
            // Only single-frame bodies are patched here; enough for these tests.
            let n = body.len().min(frame_max as usize - 8);
            t.bytes[at..at + n].copy_from_slice(&body[..n]);
        }
        let (publish, n) = parse_frame(&t.bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(publish.kind, FRAME_METHOD);
        out.extend_from_slice(&t.bytes[n..]);
        out
    }

    fn run(bytes: &[u8]) -> Result<Vec<ConsumerEvent>, WireError> {
        let mut p = DeliveryParser::new();
        let mut rest = bytes;
        let mut events = Vec::new();
        while let Some((frame, n)) = parse_frame(rest, 1 << 20)? {
            let e = p.on_frame(frame)?;
            if e != ConsumerEvent::Partial {
                events.push(e);
            }
            rest = &rest[n..];
        }
        Ok(events)
    }

    #[test]
    fn stamped_message() {
        let mut body = 123_456_789u64.to_be_bytes().to_vec();
        body.extend_from_slice(&42u64.to_be_bytes());
        let events = run(&delivery_bytes(5, &body, 4096)).unwrap();
        assert_eq!(
            events,
            vec![ConsumerEvent::Delivered {
                delivery_tag: 5,
                sent_at: Some(123_456_789),
                delay_ms: Some(42),
            }]
        );
        // Eight bytes: a stamp, no delay.
        let events = run(&delivery_bytes(6, &body[..8], 4096)).unwrap();
        assert_eq!(
            events,
            vec![ConsumerEvent::Delivered {
                delivery_tag: 6,
                sent_at: Some(123_456_789),
                delay_ms: None,
            }]
        );
    }

    #[test]
    fn empty_and_tiny_bodies() {
        let mut bytes = delivery_bytes(1, b"", 4096);
        bytes.extend(delivery_bytes(2, b"abc", 4096));
        let events = run(&bytes).unwrap();
        assert_eq!(
            events,
            vec![
                ConsumerEvent::Delivered {
                    delivery_tag: 1,
                    sent_at: None,
                    delay_ms: None,
                },
                ConsumerEvent::Delivered {
                    delivery_tag: 2,
                    sent_at: None,
                    delay_ms: None,
                },
            ]
        );
    }

    #[test]
    fn multi_frame_body() {
        let events = run(&delivery_bytes(9, &[1; 100], 40)).unwrap();
        assert_eq!(events.len(), 1);
        assert!(matches!(
            events[0],
            ConsumerEvent::Delivered {
                delivery_tag: 9,
                sent_at: Some(_),
                delay_ms: Some(_),
            }
        ));
    }

    /// A patched delayed-message template, delivered back, yields the stamp and delay.
    #[test]
    fn patched_delayed_template_round_trip() {
        let t = PublishTemplate::delayed(1, "dx", "q", 24, true, 4096).unwrap();
        let mut msg = t.bytes.clone();
        t.patch(&mut msg, 987_654_321, 59_999);
        let (publish, n) = parse_frame(&msg, 1 << 20).unwrap().unwrap();
        assert_eq!(publish.kind, FRAME_METHOD);
        let mut bytes = Vec::new();
        put_frame(&mut bytes, FRAME_METHOD, 1, |o| {
            o.extend_from_slice(&60u16.to_be_bytes());
            o.extend_from_slice(&60u16.to_be_bytes());
            put_shortstr(o, "ctag").unwrap();
            o.extend_from_slice(&3u64.to_be_bytes());
            o.push(0);
            put_shortstr(o, "dx").unwrap();
            put_shortstr(o, "q").unwrap();
        });
        bytes.extend_from_slice(&msg[n..]);
        assert_eq!(
            run(&bytes).unwrap(),
            vec![ConsumerEvent::Delivered {
                delivery_tag: 3,
                sent_at: Some(987_654_321),
                delay_ms: Some(59_999),
            }]
        );
    }

    #[test]
    fn out_of_order_frames_are_errors() {
        let bytes = delivery_bytes(1, b"abcdefgh", 4096);
        let (first, n) = parse_frame(&bytes, 1 << 20).unwrap().unwrap();
        // Body without deliver + header.
        assert!(run(&bytes[n..]).is_err());
        // A method (not close) in the middle of a delivery.
        let mut p = DeliveryParser::new();
        p.on_frame(first).unwrap();
        let mut ack = Vec::new();
        basic_ack(&mut ack, 1, 1, false);
        let (ack_frame, _) = parse_frame(&ack, 1 << 20).unwrap().unwrap();
        assert!(p.on_frame(ack_frame).is_err());
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut p = DeliveryParser::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let payload: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8).collect();
            let kind = [FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT]
                [(state >> 60) as usize % 4];
            if p.on_frame(Frame {
                kind,
                channel: 1,
                payload: &payload,
            })
            .is_err()
            {
                p = DeliveryParser::new();
            }
        }
    }
}
