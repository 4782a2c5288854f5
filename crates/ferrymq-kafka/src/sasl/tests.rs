//! The SASL session as a client sees it: one `check`-style helper per flow, driven with
//! an in-memory user store and a fixed server nonce.

use super::*;
use ferrymq_auth::scram::ScramClient;
use ferrymq_auth::{PasswordSpec, Permission, Seed, VhostInfo};

const NONCE: &str = "server-nonce-1";

/// guest/guest (administrator, loopback only, `.*` on `/`); bob/secret with `.*` on `/`
/// and `v1`; carol/pw with no permission row anywhere; vhost `v1`.
fn store() -> AuthStore {
    let s = AuthStore::in_memory(Seed::default()).unwrap();
    s.put_vhost(VhostInfo::new("v1")).unwrap();
    for (user, pass) in [("bob", "secret"), ("carol", "pw")] {
        s.put_user(user, Some(PasswordSpec::Plain(pass.into())), vec![])
            .unwrap();
    }
    s.set_permissions("bob", "/", Permission::all()).unwrap();
    s.set_permissions("bob", "v1", Permission::all()).unwrap();
    s
}

struct Client<'a> {
    store: &'a AuthStore,
    enabled: Vec<Mechanism>,
    from_loopback: bool,
    certificate_user: Option<&'a str>,
    session: SaslSession,
}

impl<'a> Client<'a> {
    fn new(store: &'a AuthStore) -> Self {
        Client {
            store,
            enabled: Mechanism::ALL.to_vec(),
            from_loopback: true,
            certificate_user: None,
            session: SaslSession::new(),
        }
    }

    fn remote(mut self) -> Self {
        self.from_loopback = false;
        self
    }

    fn step(&mut self, input: Input<'_>) -> Outcome {
        let nonce = || NONCE.to_owned();
        let world = World {
            store: self.store,
            enabled: &self.enabled,
            from_loopback: self.from_loopback,
            default_vhost: "/",
            certificate_user: self.certificate_user,
            nonce: &nonce,
        };
        self.session.step(&world, input)
    }

    fn handshake(&mut self, version: i16, mechanism: &str) -> Outcome {
        self.step(Input::Handshake { version, mechanism })
    }

    /// Handshake v1 then one SaslAuthenticate; returns the second outcome.
    fn plain(&mut self, token: &[u8]) -> Outcome {
        let hs = self.handshake(1, "PLAIN");
        assert!(matches!(hs, Outcome::Reply(Reply::Handshake(ref r)) if r.error_code == 0));
        self.step(Input::Authenticate(token))
    }

    /// A whole SCRAM exchange over SaslAuthenticate; returns the final outcome.
    fn scram(&mut self, m: ScramMechanism, user: &str, password: &str) -> Outcome {
        let hs = self.handshake(1, m.name());
        assert!(matches!(hs, Outcome::Reply(Reply::Handshake(ref r)) if r.error_code == 0));
        let (mut client, c1) = ScramClient::new(m, user, password, "client-nonce");
        let Outcome::Reply(Reply::Authenticate(s1)) = self.step(Input::Authenticate(&c1)) else {
            panic!("no server-first");
        };
        assert_eq!(s1.error_code, 0);
        assert!(self.session.principal().is_none());
        let c2 = client.server_first(&s1.auth_bytes).unwrap();
        let out = self.step(Input::Authenticate(&c2));
        if let Outcome::Reply(Reply::Authenticate(s2)) = &out {
            client.server_final(&s2.auth_bytes).unwrap();
        }
        out
    }

    fn who(&self) -> Option<(&str, &str, Login)> {
        self.session
            .principal()
            .map(|p| (p.user.name.as_str(), p.vhost.as_str(), p.login))
    }
}

/// The SaslAuthenticate refusal: (error code, message).
fn refused_with(out: &Outcome) -> (i16, String) {
    match out {
        Outcome::Refuse {
            reply: Some(Reply::Authenticate(r)),
            ..
        } => (
            r.error_code,
            r.error_message.as_deref().unwrap_or_default().to_owned(),
        ),
        other => panic!("expected a SaslAuthenticate refusal, got {other:?}"),
    }
}

fn ok_authenticate(out: &Outcome) {
    match out {
        Outcome::Reply(Reply::Authenticate(r)) => {
            assert_eq!(r.error_code, 0, "{r:?}");
            assert_eq!(r.session_lifetime_ms, 0);
        }
        other => panic!("expected success, got {other:?}"),
    }
}

const PLAIN_FAILED_TEXT: &str = "Authentication failed: Invalid username or password";

#[test]
fn a_client_that_does_not_authenticate_is_guest_from_loopback_only() {
    let s = store();
    let mut c = Client::new(&s);
    assert_eq!(c.step(Input::Request), Outcome::Serve);
    assert_eq!(c.who(), Some(("guest", "/", Login::Anonymous)));
    assert_eq!(c.step(Input::Request), Outcome::Serve);

    let mut c = Client::new(&s).remote();
    assert!(
        matches!(c.step(Input::Request), Outcome::Refuse { reply: None, ref reason } if reason.contains("localhost"))
    );
    // Nothing more is served on a refused connection.
    assert!(matches!(c.step(Input::Request), Outcome::Refuse { .. }));

    s.delete_user("guest").unwrap();
    let mut c = Client::new(&s);
    assert!(matches!(
        c.step(Input::Request),
        Outcome::Refuse { reply: None, .. }
    ));
}

#[test]
fn a_certificate_user_needs_no_sasl_but_must_exist_and_have_access() {
    let s = store();
    let mut c = Client::new(&s).remote();
    c.certificate_user = Some("bob");
    assert_eq!(c.step(Input::Request), Outcome::Serve);
    assert_eq!(c.who(), Some(("bob", "/", Login::Certificate)));

    for cn in ["nobody", "carol"] {
        let mut c = Client::new(&s).remote();
        c.certificate_user = Some(cn);
        assert!(
            matches!(c.step(Input::Request), Outcome::Refuse { reply: None, .. }),
            "{cn}"
        );
    }
    // SASL wins over the certificate.
    let mut c = Client::new(&s);
    c.certificate_user = Some("carol");
    ok_authenticate(&c.plain(b"\0bob\0secret"));
    assert_eq!(c.who(), Some(("bob", "/", Login::Sasl(Mechanism::Plain))));
}

#[test]
fn plain_logs_in_and_then_serves() {
    let s = store();
    let mut c = Client::new(&s).remote();
    ok_authenticate(&c.plain(b"\0bob\0secret"));
    assert_eq!(c.who(), Some(("bob", "/", Login::Sasl(Mechanism::Plain))));
    assert_eq!(c.step(Input::Request), Outcome::Serve);
    // kafka-python sends the user name as authzid too.
    let mut c = Client::new(&s);
    ok_authenticate(&c.plain(b"bob\0bob\0secret"));
}

#[test]
fn plain_failures_are_58_with_kafkas_text() {
    let s = store();
    for token in [
        &b"\0bob\0wrong"[..],
        b"\0nobody\0secret",
        b"\0bob\0",
        b"garbage",
        b"alice\0bob\0secret",
        b"",
        &[0xff; 300][..],
    ] {
        let mut c = Client::new(&s);
        let (code, message) = refused_with(&c.plain(token));
        assert_eq!(code, 58, "{token:?}");
        assert_eq!(message, PLAIN_FAILED_TEXT, "{token:?}");
        assert!(c.who().is_none());
        assert!(matches!(c.step(Input::Request), Outcome::Refuse { .. }));
    }
}

#[test]
fn the_handshake_lists_the_enabled_mechanisms_and_refuses_others_with_33() {
    let s = store();
    let mut c = Client::new(&s);
    c.enabled = vec![Mechanism::Scram(ScramMechanism::Sha512)];
    match c.handshake(1, "PLAIN") {
        Outcome::Refuse {
            reply: Some(Reply::Handshake(r)),
            ..
        } => {
            assert_eq!(r.error_code, 33);
            let names: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
            assert_eq!(names, ["SCRAM-SHA-512"]);
        }
        other => panic!("{other:?}"),
    }
    for unknown in ["GSSAPI", "OAUTHBEARER", "plain", ""] {
        let mut c = Client::new(&s);
        assert!(matches!(
            c.handshake(1, unknown),
            Outcome::Refuse { reply: Some(Reply::Handshake(ref r)), .. } if r.error_code == 33 && r.mechanisms.len() == 3
        ));
    }
}

#[test]
fn requests_out_of_order_are_illegal_sasl_state() {
    let s = store();
    // Authenticate before any handshake.
    let mut c = Client::new(&s);
    let (code, _) = refused_with(&c.step(Input::Authenticate(b"\0bob\0secret")));
    assert_eq!(code, 34);
    // Another request between the handshake and success: no room for 34, closed.
    let mut c = Client::new(&s);
    c.handshake(1, "PLAIN");
    assert!(matches!(
        c.step(Input::Request),
        Outcome::Refuse { reply: None, ref reason } if reason.contains("illegal SASL state")
    ));
    // A second handshake, during and after authentication.
    let mut c = Client::new(&s);
    c.handshake(1, "PLAIN");
    assert!(matches!(
        c.handshake(1, "PLAIN"),
        Outcome::Refuse { reply: Some(Reply::Handshake(ref r)), .. } if r.error_code == 34
    ));
    let mut c = Client::new(&s);
    ok_authenticate(&c.plain(b"\0bob\0secret"));
    assert!(matches!(
        c.handshake(1, "PLAIN"),
        Outcome::Refuse { reply: Some(Reply::Handshake(ref r)), .. } if r.error_code == 34
    ));
    // A handshake after working as guest.
    let mut c = Client::new(&s);
    assert_eq!(c.step(Input::Request), Outcome::Serve);
    assert!(matches!(c.handshake(1, "PLAIN"), Outcome::Refuse { .. }));
    // A raw token where a request is due.
    let mut c = Client::new(&s);
    c.handshake(1, "PLAIN");
    assert!(matches!(
        c.step(Input::Token(b"\0bob\0secret")),
        Outcome::Refuse { reply: None, .. }
    ));
}

#[test]
fn scram_sha_256_and_512_log_in() {
    let s = store();
    for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        let mut c = Client::new(&s).remote();
        ok_authenticate(&c.scram(m, "bob", "secret"));
        assert_eq!(
            c.who(),
            Some(("bob", "/", Login::Sasl(Mechanism::Scram(m))))
        );
        assert_eq!(c.step(Input::Request), Outcome::Serve);
    }
}

#[test]
fn scram_failures_are_58_with_kafkas_text_whatever_the_cause() {
    let s = store();
    // A user without SCRAM credentials (a hash imported from definitions).
    s.put_user(
        "imported",
        Some(PasswordSpec::Hash(ferrymq_auth::PasswordHash::new(
            ferrymq_auth::HashingAlgorithm::Sha256,
            b"pw",
        ))),
        vec![],
    )
    .unwrap();
    s.set_permissions("imported", "/", Permission::all())
        .unwrap();
    for (user, pass) in [("bob", "wrong"), ("nobody", "secret"), ("imported", "pw")] {
        let mut c = Client::new(&s);
        let (code, message) = refused_with(&c.scram(ScramMechanism::Sha256, user, pass));
        assert_eq!(code, 58, "{user}");
        assert_eq!(
            message,
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
        );
    }
}

#[test]
fn malformed_scram_messages_fail_with_58() {
    let s = store();
    for c1 in [
        &b""[..],
        b"n,,",
        b"y,,n=bob,r=abc",
        b"n,,n=bob",
        b"\xff\xfe",
        b"n,,n=bob,r=a,x=1",
    ] {
        let mut c = Client::new(&s);
        c.handshake(1, "SCRAM-SHA-256");
        let (code, _) = refused_with(&c.step(Input::Authenticate(c1)));
        assert_eq!(code, 58, "{c1:?}");
    }
    // Wrong nonce, wrong proof, garbage in the final message.
    let finals: [&dyn Fn(&str) -> String; 3] = [
        &|c2: &str| c2.replace("r=client-nonce", "r=other-nonce"),
        &|c2: &str| format!("{}AAAA", &c2[..c2.len() - 4]),
        &|_: &str| "c=biws".to_owned(),
    ];
    for tamper in finals {
        let mut c = Client::new(&s);
        c.handshake(1, "SCRAM-SHA-256");
        let (mut client, c1) =
            ScramClient::new(ScramMechanism::Sha256, "bob", "secret", "client-nonce");
        let Outcome::Reply(Reply::Authenticate(s1)) = c.step(Input::Authenticate(&c1)) else {
            panic!()
        };
        let c2 = String::from_utf8(client.server_first(&s1.auth_bytes).unwrap()).unwrap();
        let (code, _) = refused_with(&c.step(Input::Authenticate(tamper(&c2).as_bytes())));
        assert_eq!(code, 58);
    }
}

#[test]
fn a_vhost_prefix_picks_the_vhost_which_needs_a_permission_row() {
    let s = store();
    let mut c = Client::new(&s);
    ok_authenticate(&c.plain(b"\0v1:bob\0secret"));
    assert_eq!(c.who(), Some(("bob", "v1", Login::Sasl(Mechanism::Plain))));

    let mut c = Client::new(&s);
    ok_authenticate(&c.scram(ScramMechanism::Sha512, "v1:bob", "secret"));
    assert_eq!(c.who().map(|w| w.1), Some("v1"));

    for (token, vhost, user) in [
        (&b"\0nowhere:bob\0secret"[..], "nowhere", "bob"),
        (b"\0carol\0pw", "/", "carol"),
    ] {
        let mut c = Client::new(&s);
        let (code, message) = refused_with(&c.plain(token));
        assert_eq!(code, 58);
        assert_eq!(
            message,
            format!("Authentication failed: access to vhost '{vhost}' refused for user '{user}'")
        );
    }
    // A wrong password in another vhost says nothing about the vhost.
    let mut c = Client::new(&s);
    assert_eq!(
        refused_with(&c.plain(b"\0nowhere:bob\0bad")).1,
        PLAIN_FAILED_TEXT
    );
}

#[test]
fn guest_over_sasl_from_a_remote_peer_is_refused_with_the_reason() {
    let s = store();
    let mut c = Client::new(&s).remote();
    let (code, message) = refused_with(&c.plain(b"\0guest\0guest"));
    assert_eq!(code, 58);
    assert_eq!(
        message,
        "Authentication failed: user 'guest' can only connect via localhost"
    );
    let mut c = Client::new(&s).remote();
    let (code, message) = refused_with(&c.scram(ScramMechanism::Sha256, "guest", "guest"));
    assert_eq!(code, 58);
    assert!(message.contains("localhost"), "{message}");
    // From loopback it works.
    let mut c = Client::new(&s);
    ok_authenticate(&c.plain(b"\0guest\0guest"));
}

#[test]
fn handshake_v0_switches_to_raw_tokens() {
    let s = store();
    let mut c = Client::new(&s);
    assert!(!c.session.expects_raw_token());
    assert!(matches!(
        c.handshake(0, "PLAIN"),
        Outcome::Reply(Reply::Handshake(_))
    ));
    assert!(c.session.expects_raw_token());
    assert_eq!(
        c.step(Input::Token(b"bob\0bob\0secret")),
        Outcome::Reply(Reply::Token(Bytes::new()))
    );
    assert!(!c.session.expects_raw_token());
    assert_eq!(c.step(Input::Request), Outcome::Serve);

    // A failure closes without an answer (Kafka's v0 behaviour).
    let mut c = Client::new(&s);
    c.handshake(0, "PLAIN");
    assert!(matches!(
        c.step(Input::Token(b"\0bob\0nope")),
        Outcome::Refuse { reply: None, .. }
    ));

    // SCRAM over raw tokens.
    let mut c = Client::new(&s);
    c.handshake(0, "SCRAM-SHA-256");
    let (mut client, c1) = ScramClient::new(ScramMechanism::Sha256, "bob", "secret", "cn");
    let Outcome::Reply(Reply::Token(s1)) = c.step(Input::Token(&c1)) else {
        panic!()
    };
    assert!(c.session.expects_raw_token());
    let c2 = client.server_first(&s1).unwrap();
    let Outcome::Reply(Reply::Token(s2)) = c.step(Input::Token(&c2)) else {
        panic!()
    };
    client.server_final(&s2).unwrap();
    assert_eq!(c.who().map(|w| w.0), Some("bob"));
    // SaslAuthenticate after a v0 handshake is out of order.
    let mut c = Client::new(&s);
    c.handshake(0, "PLAIN");
    assert!(matches!(
        c.step(Input::Authenticate(b"\0bob\0secret")),
        Outcome::Refuse { .. }
    ));
}

#[test]
fn mechanism_names() {
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(m.name()), Some(m));
    }
    assert_eq!(Mechanism::from_name("scram-sha-256"), None);
}

/// The fuzz target's driver over deterministic pseudo-random inputs: no input sequence
/// panics, and a refused session stays refused.
#[test]
fn random_token_sequences_never_panic() {
    let s = store();
    let nonce = || NONCE.to_owned();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"];
    let prefixes: [&[u8]; 5] = [b"n,,n=bob,r=", b"c=biws,r=", b"\0bob\0", b"bob\0bob\0", b""];
    for _ in 0..3000 {
        let world = World {
            store: &s,
            enabled: &Mechanism::ALL,
            from_loopback: next() % 2 == 0,
            default_vhost: "/",
            certificate_user: None,
            nonce: &nonce,
        };
        let mut session = SaslSession::new();
        for _ in 0..(next() % 5) {
            let mut bytes = prefixes[(next() % 5) as usize].to_vec();
            for _ in 0..(next() % 40) {
                bytes.push(next() as u8);
            }
            let input = match next() % 4 {
                0 => Input::Handshake {
                    version: (next() % 2) as i16,
                    mechanism: names[(next() % 4) as usize],
                },
                1 => Input::Authenticate(&bytes),
                2 => Input::Token(&bytes),
                _ => Input::Request,
            };
            if let Outcome::Refuse { .. } = session.step(&world, input) {
                assert!(session.principal().is_none());
                assert!(matches!(
                    session.step(&world, Input::Request),
                    Outcome::Refuse { .. }
                ));
                break;
            }
        }
    }
}
