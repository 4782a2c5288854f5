//! Fuzz target bodies, one per decoder that sees untrusted bytes.
//!
//! Each function must never panic on any input; the asserts inside check the decoder's own
//! invariants. The cargo-afl binaries in `fuzz/fuzz_targets/` call these functions, and
//! `tests/replay.rs` feeds every file of `fuzz/corpus/<target>/` to the same function under
//! `cargo test`, so a corpus entry that once crashed stays a regression test.

use std::sync::OnceLock;

use ferrymq_auth::{AuthStore, PasswordSpec, Permission, Seed};
use ferrymq_kafka::sasl::{Input, Mechanism, Outcome, SaslSession, World};

/// A fuzz target: its name (the binary and the corpus directory) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("amqp_frame", amqp_frame),
    ("amqp_method", amqp_method),
    ("amqp_content_header", amqp_content_header),
    ("kafka_request", kafka_request),
    ("kafka_record_batch", kafka_record_batch),
    ("kafka_sasl", kafka_sasl),
];

/// Frame splitting must never panic, and a frame it accepts must fit in the input.
pub fn amqp_frame(data: &[u8]) {
    let max = if data.len() > 2 {
        u16::from_be_bytes([data[0], data[1]]) as u32 * 4
    } else {
        0
    };
    if let Ok(Some(h)) = ferrymq_amqp::frame::peek_frame(data, max) {
        assert!(h.size as usize + ferrymq_amqp::frame::FRAME_OVERHEAD <= data.len());
    }
}

/// Method decoding (hand-written hot path and amq-protocol fallback) must never panic.
pub fn amqp_method(data: &[u8]) {
    let _ = ferrymq_amqp::method::decode_method(data);
}

/// Content header scanning must never panic, and accepted properties lie inside the input.
pub fn amqp_content_header(data: &[u8]) {
    if let Ok(h) = ferrymq_amqp::content::decode_content_header(data) {
        assert!(h.raw_properties.len() <= data.len());
    }
}

/// Kafka request framing and decoding must never panic on any bytes.
pub fn kafka_request(data: &[u8]) {
    if let Ok(Some(len)) = ferrymq_kafka::frame::peek_request(data, 1 << 20) {
        assert!(len <= data.len());
        let frame = bytes::Bytes::copy_from_slice(&data[4..len]);
        let _ = ferrymq_kafka::frame::decode_request(frame);
    }
    let _ = ferrymq_kafka::frame::decode_request(bytes::Bytes::copy_from_slice(data));
}

/// Record batch validation must never panic, and what it accepts must tile the input.
pub fn kafka_record_batch(data: &[u8]) {
    if let Ok(headers) = ferrymq_kafka::batch::validate(data) {
        let total: usize = headers.iter().map(|h| h.size).sum();
        assert_eq!(total, data.len());
    }
    let _ = ferrymq_kafka::batch::parse_header(data);
}

fn store() -> &'static AuthStore {
    static STORE: OnceLock<AuthStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = AuthStore::in_memory(Seed::default()).expect("in-memory auth store");
        s.put_user("bob", Some(PasswordSpec::Plain("secret".into())), vec![])
            .expect("user");
        s.set_permissions("bob", "/", Permission::all())
            .expect("permissions");
        s
    })
}

/// A Kafka connection's SASL session must never panic, whatever tokens arrive in whatever
/// order: the input is cut into steps (handshake of a chosen mechanism and version,
/// SaslAuthenticate bytes, raw v0 tokens, other requests) fed to one `SaslSession`.
pub fn kafka_sasl(data: &[u8]) {
    let nonce = || "fuzz-nonce".to_owned();
    let world = World {
        store: store(),
        enabled: &Mechanism::ALL,
        from_loopback: data.first().is_some_and(|b| b & 1 == 1),
        default_vhost: "/",
        certificate_user: None,
        nonce: &nonce,
    };
    let mut session = SaslSession::new();
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&op, tail)) = rest.split_first() {
        let len = (tail.first().copied().unwrap_or(0) as usize).min(tail.len().saturating_sub(1));
        let bytes = tail.get(1..1 + len).unwrap_or_default();
        rest = tail.get(1 + len..).unwrap_or_default();
        let input = match op % 4 {
            0 => Input::Handshake {
                version: i16::from(op >> 7),
                mechanism: match (op >> 2) % 4 {
                    0 => "PLAIN",
                    1 => "SCRAM-SHA-256",
                    2 => "SCRAM-SHA-512",
                    _ => std::str::from_utf8(bytes).unwrap_or("?"),
                },
            },
            1 => Input::Authenticate(bytes),
            2 => Input::Token(bytes),
            _ => Input::Request,
        };
        if let Outcome::Refuse { .. } = session.step(&world, input) {
            // A refused session serves nothing more.
            assert!(session.principal().is_none());
            assert!(matches!(
                session.step(&world, Input::Request),
                Outcome::Refuse { .. }
            ));
            return;
        }
    }
}
