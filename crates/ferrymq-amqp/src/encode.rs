//! Frame encoders for everything the broker sends. Deliveries, returns and confirms are
//! written by hand straight into the connection's write buffer (they are per message);
//! the rare methods go through `amq-protocol`'s generator.

use amq_protocol::frame::{gen_frame, AMQPFrame};
use amq_protocol::protocol::AMQPClass;
use ferrymq_core::Message;

use crate::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};

/// Appends any method frame.
pub fn method(out: &mut Vec<u8>, channel: u16, m: AMQPClass) {
    let frame = AMQPFrame::Method(channel, m);
    // Generation into a Vec cannot fail for valid method structs; if it did, nothing is
    // appended and the peer times out rather than receiving a corrupt frame.
    if let Ok((buf, _)) = cookie_factory::gen(gen_frame(&frame), Vec::with_capacity(64)) {
        out.extend_from_slice(&buf);
    }
}

fn short(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(&s[..n]);
}

/// Starts a frame, returning where its size field is to be patched by `end_frame`.
fn begin_frame(out: &mut Vec<u8>, kind: u8, channel: u16) -> usize {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

fn end_frame(out: &mut Vec<u8>, size_at: usize) {
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

/// Appends the content header and body frames of `msg`.
pub fn content(out: &mut Vec<u8>, channel: u16, msg: &Message, frame_max: u32) {
    let at = begin_frame(out, FRAME_HEADER, channel);
    out.extend_from_slice(&[0, 60, 0, 0]);
    out.extend_from_slice(&(msg.body.len() as u64).to_be_bytes());
    out.extend_from_slice(&msg.raw_properties);
    end_frame(out, at);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in msg.body.chunks(chunk) {
        out.push(FRAME_BODY);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
        out.push(FRAME_END);
    }
}

/// `basic.deliver` + content.
pub fn deliver(
    out: &mut Vec<u8>,
    channel: u16,
    consumer_tag: &[u8],
    delivery_tag: u64,
    redelivered: bool,
    msg: &Message,
    frame_max: u32,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.extend_from_slice(&[0, 60, 0, 60]);
    short(out, consumer_tag);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(redelivered as u8);
    short(out, &msg.exchange);
    short(out, &msg.routing_key);
    end_frame(out, at);
    content(out, channel, msg, frame_max);
}

/// `basic.get-ok` + content.
pub fn get_ok(
    out: &mut Vec<u8>,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    message_count: u32,
    msg: &Message,
    frame_max: u32,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.extend_from_slice(&[0, 60, 0, 71]);
    out.extend_from_slice(&delivery_tag.to_be_bytes());
    out.push(redelivered as u8);
    short(out, &msg.exchange);
    short(out, &msg.routing_key);
    out.extend_from_slice(&message_count.to_be_bytes());
    end_frame(out, at);
    content(out, channel, msg, frame_max);
}

/// `basic.return` + content.
pub fn basic_return(
    out: &mut Vec<u8>,
    channel: u16,
    code: u16,
    text: &str,
    msg: &Message,
    frame_max: u32,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.extend_from_slice(&[0, 60, 0, 50]);
    out.extend_from_slice(&code.to_be_bytes());
    short(out, text.as_bytes());
    short(out, &msg.exchange);
    short(out, &msg.routing_key);
    end_frame(out, at);
    content(out, channel, msg, frame_max);
}

/// A publisher confirm: `basic.ack` (or `basic.nack` when `ack` is false).
pub fn confirm(out: &mut Vec<u8>, channel: u16, delivery_tag: u64, multiple: bool, ack: bool) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    if ack {
        out.extend_from_slice(&[0, 60, 0, 80]);
        out.extend_from_slice(&delivery_tag.to_be_bytes());
        out.push(multiple as u8);
    } else {
        out.extend_from_slice(&[0, 60, 0, 120]);
        out.extend_from_slice(&delivery_tag.to_be_bytes());
        out.push(multiple as u8);
    }
    end_frame(out, at);
}

/// A heartbeat frame.
pub fn heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::peek_frame;
    use crate::method::{decode_method, Method};
    use amq_protocol::frame::parse_frame;
    use bytes::Bytes;

    fn msg(body: Vec<u8>) -> Message {
        Message {
            exchange: Bytes::from_static(b"ex"),
            routing_key: Bytes::from_static(b"rk"),
            raw_properties: Bytes::from_static(&[0x10, 0, 2]),
            body: Bytes::from(body),
            persistent: true,
            priority: None,
            headers: None,
            ttl_ms: None,
        }
    }

    #[test]
    fn deliver_parses_with_amq_protocol() {
        let mut out = Vec::new();
        deliver(&mut out, 3, b"ctag", 42, true, &msg(vec![7; 10]), 4096);
        let (rest, f) = parse_frame(&out[..]).unwrap();
        match f {
            AMQPFrame::Method(
                3,
                AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Deliver(d)),
            ) => {
                assert_eq!(d.consumer_tag.as_str(), "ctag");
                assert_eq!(d.delivery_tag, 42);
                assert!(d.redelivered);
                assert_eq!(d.exchange.as_str(), "ex");
                assert_eq!(d.routing_key.as_str(), "rk");
            }
            other => panic!("{other:?}"),
        }
        let (rest, h) = parse_frame(rest).unwrap();
        match h {
            AMQPFrame::Header(3, h) => {
                assert_eq!(h.body_size, 10);
                assert_eq!(h.properties.delivery_mode(), &Some(2));
            }
            other => panic!("{other:?}"),
        }
        let (rest, b) = parse_frame(rest).unwrap();
        assert_eq!(b, AMQPFrame::Body(3, vec![7; 10]));
        assert!(rest.is_empty());
    }

    #[test]
    fn body_split_by_frame_max() {
        let mut out = Vec::new();
        content(&mut out, 1, &msg(vec![1; 25]), 18);
        let mut pos = 0;
        let mut sizes = vec![];
        while pos < out.len() {
            let h = peek_frame(&out[pos..], 0).unwrap().unwrap();
            sizes.push((h.kind, h.size));
            pos += h.size as usize + FRAME_OVERHEAD;
        }
        assert_eq!(sizes, vec![(2, 15), (3, 10), (3, 10), (3, 5)]);
    }

    #[test]
    fn confirm_round_trip() {
        let mut out = Vec::new();
        confirm(&mut out, 1, 9, true, true);
        let payload = Bytes::copy_from_slice(&out[7..out.len() - 1]);
        assert_eq!(
            decode_method(&payload).unwrap(),
            Method::Ack {
                delivery_tag: 9,
                multiple: true
            }
        );
    }
}
