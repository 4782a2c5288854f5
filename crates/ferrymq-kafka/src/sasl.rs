//! A connection's authentication, sans-IO: [`SaslSession`] takes each request that matters
//! to authentication ([`Input`]) and says what to do ([`Outcome`]): serve it, answer and go
//! on, or answer and close. The connection task owns one per connection and calls
//! [`SaslSession::step`] before dispatching anything but ApiVersions (always allowed).
//!
//! The flow is Kafka's (`SaslServerAuthenticator`, KIP-43 and KIP-152):
//!
//! - SaslHandshake v1 names the mechanism; SaslAuthenticate requests carry the tokens.
//!   SaslHandshake v0 names it too, but the tokens then travel raw, each behind a 4-byte
//!   length ([`Input::Token`]), and a failure is answered by closing the connection.
//! - Unknown or disabled mechanism: UNSUPPORTED_SASL_MECHANISM (33) with the enabled
//!   list, then close. Bad credentials: SASL_AUTHENTICATION_FAILED (58) with Kafka's
//!   message, then close (the connection delays the close, Kafka's
//!   `connection.failed.authentication.delay.ms`). Any other request after the handshake
//!   and before success: ILLEGAL_SASL_STATE (34) — SASL requests get it in their response,
//!   other APIs (which have no room for it) are not answered — then close.
//! - A client that sends any other request first does not authenticate: it is the user of
//!   its verified TLS client certificate (the certificate's CN), else `guest`. Such a user
//!   must exist; a loopback-only user (guest) must come from a loopback address.
//! - PLAIN is `authzid\0user\0password`; SCRAM-SHA-256/512 follow KIP-84 (RFC 5802
//!   without channel binding). A user without a SCRAM credential for the mechanism fails
//!   exactly like a wrong password (the exchange runs on a fake salt).
//! - The user name may be `vhost:user` (split at the last colon), choosing the vhost;
//!   otherwise the listener's default vhost applies. The user must have a permission row
//!   in the vhost (RabbitMQ's `connection.open` rule), else 58.
//!
//! Re-authentication (KIP-368) is not offered: `session_lifetime_ms` is 0.

use std::sync::Arc;

use bytes::Bytes;
use ferrymq_auth::scram::{ScramMechanism, ScramServer, ScramServerState};
use ferrymq_auth::{sasl as plain, AuthError, AuthStore, User};
use kafka_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// A SASL mechanism FerryMQ can offer on the Kafka ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    /// Every mechanism FerryMQ implements.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    /// The name on the wire (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }

    /// A mechanism by its wire name (exact, as Kafka compares them).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// How a connection came to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// SASL with this mechanism.
    Sasl(Mechanism),
    /// The CN of a verified TLS client certificate, without SASL.
    Certificate,
    /// No authentication: `guest`.
    Anonymous,
}

/// Who a connection works as, and where.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: Arc<User>,
    pub vhost: String,
    pub login: Login,
}

/// What the session is fed. ApiVersions is never fed: it is always served.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// SaslHandshake of this version naming this mechanism.
    Handshake { version: i16, mechanism: &'a str },
    /// SaslAuthenticate carrying these bytes.
    Authenticate(&'a [u8]),
    /// A raw token (after a v0 handshake; see [`SaslSession::expects_raw_token`]).
    Token(&'a [u8]),
    /// Any other request.
    Request,
}

/// A response the session produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Handshake(SaslHandshakeResponse),
    Authenticate(SaslAuthenticateResponse),
    /// A raw token, to be written behind a 4-byte length.
    Token(Bytes),
}

/// What the connection does with an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Serve the request as [`SaslSession::principal`].
    Serve,
    /// Send this and read on.
    Reply(Reply),
    /// Send this (if anything), then close the connection after the failure delay.
    /// `reason` is for the log.
    Refuse {
        reply: Option<Reply>,
        reason: String,
    },
}

/// What the session needs from the world, per step.
pub struct World<'a> {
    pub store: &'a AuthStore,
    /// The mechanisms offered, in the order SaslHandshake lists them.
    pub enabled: &'a [Mechanism],
    /// Whether the peer's address is a loopback one.
    pub from_loopback: bool,
    /// The vhost of a user name without a `vhost:` prefix.
    pub default_vhost: &'a str,
    /// The CN of the peer's verified TLS client certificate, if any.
    pub certificate_user: Option<&'a str>,
    /// A fresh SCRAM server nonce (printable, no comma), injected so tests are
    /// deterministic: `ferrymq_auth::scram::generate_nonce` in the broker.
    pub nonce: &'a dyn Fn() -> String,
}

/// Which framing the tokens use after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// SaslAuthenticate requests (handshake v1).
    Authenticate,
    /// Raw length-prefixed tokens (handshake v0).
    Raw,
}

enum State {
    /// Nothing but ApiVersions so far.
    Start,
    /// The mechanism is chosen; its first token is due.
    Handshaken {
        mechanism: Mechanism,
        framing: Framing,
    },
    /// SCRAM server-first sent; the client-final is due.
    ScramFinal {
        scram: Box<ScramServerState>,
        vhost: String,
        framing: Framing,
    },
    Authenticated(Principal),
    /// Refused: nothing more is served.
    Closed,
}

/// Kafka's texts (`SaslServerAuthenticator`, `PlainSaslServer`, `ScramSaslServer`).
const PLAIN_FAILED: &str = "Authentication failed: Invalid username or password";

fn scram_failed(m: ScramMechanism) -> String {
    AuthError::ScramInvalidCredentials {
        mechanism: m.name(),
    }
    .to_string()
}

/// One connection's authentication state.
pub struct SaslSession {
    state: State,
}

impl Default for SaslSession {
    fn default() -> Self {
        SaslSession::new()
    }
}

impl SaslSession {
    pub fn new() -> SaslSession {
        SaslSession {
            state: State::Start,
        }
    }

    /// The user and vhost, once known.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            State::Authenticated(p) => Some(p),
            _ => None,
        }
    }

    /// Whether the next frame on the wire is a raw token (after a v0 handshake) rather than
    /// a request.
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.state,
            State::Handshaken {
                framing: Framing::Raw,
                ..
            } | State::ScramFinal {
                framing: Framing::Raw,
                ..
            }
        )
    }

    /// Feeds one input.
    pub fn step(&mut self, world: &World<'_>, input: Input<'_>) -> Outcome {
        let state = std::mem::replace(&mut self.state, State::Closed);
        let (next, outcome) = match (state, input) {
            (State::Closed, _) => (
                State::Closed,
                Outcome::Refuse {
                    reply: None,
                    reason: "connection already refused".into(),
                },
            ),
            (State::Authenticated(p), Input::Request) => (State::Authenticated(p), Outcome::Serve),
            (State::Start, Input::Request) => match anonymous(world) {
                Ok(p) => (State::Authenticated(p), Outcome::Serve),
                Err(reason) => (
                    State::Closed,
                    Outcome::Refuse {
                        reply: None,
                        reason,
                    },
                ),
            },
            (State::Start, Input::Handshake { version, mechanism }) => {
                handshake(world, version, mechanism)
            }
            (State::Handshaken { mechanism, framing }, Input::Authenticate(bytes))
                if framing == Framing::Authenticate =>
            {
                first_token(world, mechanism, framing, bytes)
            }
            (State::Handshaken { mechanism, framing }, Input::Token(bytes))
                if framing == Framing::Raw =>
            {
                first_token(world, mechanism, framing, bytes)
            }
            (
                State::ScramFinal {
                    scram,
                    vhost,
                    framing,
                },
                Input::Authenticate(bytes),
            ) if framing == Framing::Authenticate => {
                scram_final(world, &scram, vhost, framing, bytes)
            }
            (
                State::ScramFinal {
                    scram,
                    vhost,
                    framing,
                },
                Input::Token(bytes),
            ) if framing == Framing::Raw => scram_final(world, &scram, vhost, framing, bytes),
            (state, input) => (State::Closed, illegal(&state, input)),
        };
        self.state = next;
        outcome
    }
}

/// The answer to an input that does not fit the state: ILLEGAL_SASL_STATE where the
/// response has room for it, then close.
fn illegal(state: &State, input: Input<'_>) -> Outcome {
    let what = match state {
        State::Start => "before SaslHandshake",
        State::Handshaken { .. } | State::ScramFinal { .. } => "during SASL authentication",
        State::Authenticated(_) => "after authentication",
        State::Closed => "after a refusal",
    };
    let e = ResponseError::IllegalSaslState.code();
    let (reply, name) = match input {
        Input::Handshake { .. } => (
            Some(Reply::Handshake(
                SaslHandshakeResponse::default().with_error_code(e),
            )),
            "SaslHandshake",
        ),
        Input::Authenticate(_) => (
            Some(Reply::Authenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(e)
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Unexpected SaslAuthenticate request {what}"
                    )))),
            )),
            "SaslAuthenticate",
        ),
        Input::Token(_) => (None, "raw SASL token"),
        Input::Request => (None, "request"),
    };
    Outcome::Refuse {
        reply,
        reason: format!("illegal SASL state: {name} {what}"),
    }
}

fn handshake(world: &World<'_>, version: i16, name: &str) -> (State, Outcome) {
    let enabled: Vec<StrBytes> = world
        .enabled
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
    match Mechanism::from_name(name).filter(|m| world.enabled.contains(m)) {
        Some(mechanism) => (
            State::Handshaken {
                mechanism,
                framing: if version == 0 {
                    Framing::Raw
                } else {
                    Framing::Authenticate
                },
            },
            Outcome::Reply(Reply::Handshake(response)),
        ),
        None => (
            State::Closed,
            Outcome::Refuse {
                reply: Some(Reply::Handshake(
                    response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
                )),
                reason: format!("unsupported SASL mechanism {name:?}"),
            },
        ),
    }
}

/// A success reply carrying `token`.
fn success(framing: Framing, token: Vec<u8>) -> Reply {
    match framing {
        Framing::Authenticate => Reply::Authenticate(
            SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(token))
                .with_session_lifetime_ms(0),
        ),
        Framing::Raw => Reply::Token(Bytes::from(token)),
    }
}

/// Refusal with Kafka's 58 and `message` (with raw framing: close without an answer, as
/// Kafka does).
fn failed(framing: Framing, message: String, reason: String) -> (State, Outcome) {
    let reply = match framing {
        Framing::Authenticate => Some(Reply::Authenticate(
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        )),
        Framing::Raw => None,
    };
    (State::Closed, Outcome::Refuse { reply, reason })
}

fn first_token(
    world: &World<'_>,
    mechanism: Mechanism,
    framing: Framing,
    bytes: &[u8],
) -> (State, Outcome) {
    match mechanism {
        Mechanism::Plain => match plain_login(world, bytes) {
            Ok(p) => (
                State::Authenticated(p),
                Outcome::Reply(success(framing, Vec::new())),
            ),
            Err((message, reason)) => failed(framing, message, reason),
        },
        Mechanism::Scram(m) => {
            let first = match ScramServer::client_first(m, bytes) {
                Ok(f) => f,
                Err(e) => return failed(framing, scram_failed(m), e.to_string()),
            };
            let (vhost, user) = plain::split_vhost_user(&first.username);
            let vhost = vhost.unwrap_or(world.default_vhost).to_owned();
            let cred = world.store.scram_credential(user, m);
            let (server_first, scram) = first.server_first(cred.as_ref(), &(world.nonce)());
            (
                State::ScramFinal {
                    scram: Box::new(scram),
                    vhost,
                    framing,
                },
                Outcome::Reply(success(framing, server_first)),
            )
        }
    }
}

fn plain_login(world: &World<'_>, bytes: &[u8]) -> Result<Principal, (String, String)> {
    let creds = plain::parse_plain(bytes).map_err(|e| (PLAIN_FAILED.to_owned(), e.to_string()))?;
    let (vhost, name) = plain::split_vhost_user(&creds.username);
    let vhost = vhost.unwrap_or(world.default_vhost);
    let user = world
        .store
        .authenticate_plain(name, &creds.password, world.from_loopback)
        .map_err(|e| (refusal_text(&e, PLAIN_FAILED), e.to_string()))?;
    admit(world, user, vhost, Login::Sasl(Mechanism::Plain))
}

fn scram_final(
    world: &World<'_>,
    scram: &ScramServerState,
    vhost: String,
    framing: Framing,
    bytes: &[u8],
) -> (State, Outcome) {
    let m = scram.mechanism();
    let generic = scram_failed(m);
    let server_final = match scram.client_final(bytes) {
        Ok(s) => s,
        Err(e) => return failed(framing, generic, e.to_string()),
    };
    let (_, name) = plain::split_vhost_user(scram.username());
    let Some(user) = world.store.user(name) else {
        // Deleted during the exchange.
        return failed(framing, generic, format!("user '{name}' no longer exists"));
    };
    if let Err(e) = world.store.check_loopback(&user.name, world.from_loopback) {
        return failed(framing, refusal_text(&e, &generic), e.to_string());
    }
    match admit(world, user, &vhost, Login::Sasl(Mechanism::Scram(m))) {
        Ok(p) => (
            State::Authenticated(p),
            Outcome::Reply(success(framing, server_final)),
        ),
        Err((message, reason)) => failed(framing, message, reason),
    }
}

/// The message a client sees for an authentication error: the loopback refusal says so
/// (RabbitMQ's text; the password was right), everything else gets the mechanism's generic
/// text (no oracle on which part was wrong).
fn refusal_text(e: &AuthError, generic: &str) -> String {
    match e {
        AuthError::LoopbackOnly { .. } => format!("Authentication failed: {e}"),
        _ => generic.to_owned(),
    }
}

/// The last check of every login: the vhost exists and the user has a permission row in
/// it (RabbitMQ's `connection.open` rule).
fn admit(
    world: &World<'_>,
    user: Arc<User>,
    vhost: &str,
    login: Login,
) -> Result<Principal, (String, String)> {
    if world.store.access(&user.name, vhost).is_none() {
        let e = AuthError::VhostAccessRefused {
            vhost: vhost.to_owned(),
            user: user.name.clone(),
        };
        return Err((format!("Authentication failed: {e}"), e.to_string()));
    }
    Ok(Principal {
        user,
        vhost: vhost.to_owned(),
        login,
    })
}

/// The user of a client that did not authenticate: its certificate's CN, else `guest`.
fn anonymous(world: &World<'_>) -> Result<Principal, String> {
    let (name, login) = match world.certificate_user {
        Some(cn) => (cn, Login::Certificate),
        None => ("guest", Login::Anonymous),
    };
    let user = world
        .store
        .user(name)
        .ok_or_else(|| format!("unauthenticated client: user '{name}' does not exist"))?;
    world
        .store
        .check_loopback(&user.name, world.from_loopback)
        .map_err(|e| format!("unauthenticated client: {e}"))?;
    admit(world, user, world.default_vhost, login).map_err(|(_, reason)| reason)
}

#[cfg(test)]
mod tests;
