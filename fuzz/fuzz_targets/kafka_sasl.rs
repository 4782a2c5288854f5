//! A Kafka connection's SASL session must never panic, whatever tokens arrive in whatever
//! order: the input is cut into steps (handshake of a chosen mechanism and version,
//! SaslAuthenticate bytes, raw v0 tokens, other requests) fed to one `SaslSession`.
#![no_main]
use std::sync::OnceLock;

use ferrymq_auth::{AuthStore, PasswordSpec, Permission, Seed};
use ferrymq_kafka::sasl::{Input, Mechanism, Outcome, SaslSession, World};
use libfuzzer_sys::fuzz_target;

fn store() -> &'static AuthStore {
    static STORE: OnceLock<AuthStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = AuthStore::in_memory(Seed::default()).unwrap();
        s.put_user("bob", Some(PasswordSpec::Plain("secret".into())), vec![])
            .unwrap();
        s.set_permissions("bob", "/", Permission::all()).unwrap();
        s
    })
}

fuzz_target!(|data: &[u8]| {
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
});
