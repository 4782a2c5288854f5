//! The crate's one error type.
//!
//! `AuthError` covers SASL parsing, SCRAM exchanges, the auth database and definitions
//! import. The protocol fronts map it to wire codes in one place each: AMQP sends 403
//! `ACCESS_REFUSED` (with RabbitMQ's generic login text, never the detail) for every
//! credentials failure, Kafka sends 58 `SASL_AUTHENTICATION_FAILED`. `Display` texts are
//! the details worth logging; they never say whether a user exists.
//!
//! [`ScramError`] and [`SaslError`] are aliases so call sites read naturally.
//! [`AccessRefused`](crate::perm::AccessRefused) is a separate small struct because it is
//! returned on the publish path and carries the exact RabbitMQ text.

use std::path::PathBuf;

use crate::perm::AccessRefused;

/// Error of a SCRAM exchange (alias of [`AuthError`]).
pub type ScramError = AuthError;
/// Error of a SASL PLAIN parse (alias of [`AuthError`]).
pub type SaslError = AuthError;

/// Everything that can go wrong in `ferrymq-auth`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    // ---- credentials ----------------------------------------------------------------
    /// Wrong password, unknown user, passwordless user or blank password. Deliberately one
    /// variant for all of them (no user-enumeration oracle). RabbitMQ logs
    /// "user 'u' - invalid credentials".
    #[error("user '{username}' - invalid credentials")]
    InvalidCredentials { username: String },

    /// A user listed in `loopback_users` connected from a non-loopback address.
    /// Text as RabbitMQ's `rabbit_reader`.
    #[error("user '{username}' can only connect via localhost")]
    LoopbackOnly { username: String },

    /// The SCRAM proof did not verify (or the user is unknown). Text as Kafka's
    /// `SaslServerAuthenticator` (error code 58).
    #[error(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
    )]
    ScramInvalidCredentials { mechanism: &'static str },

    // ---- malformed SASL messages ----------------------------------------------------
    /// A SASL PLAIN response that is not `authzid \0 user \0 pass`.
    #[error("invalid SASL/PLAIN response: {0}")]
    MalformedPlain(&'static str),

    /// A SCRAM message that does not follow RFC 5802 / KIP-84 as FerryMQ accepts it.
    #[error("invalid SCRAM message: {0}")]
    MalformedScram(&'static str),

    /// The client asked for an authorization id other than its user name (Kafka refuses
    /// this for PLAIN and SCRAM alike).
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthzidMismatch,

    /// SCRAM iteration count outside what Kafka accepts (4096..=16384).
    #[error("SCRAM iterations {iterations} out of range {min}..={max}")]
    InvalidIterations { iterations: u32, min: u32, max: u32 },

    /// A mechanism name or Kafka mechanism id that is not SCRAM-SHA-256/512.
    #[error("unsupported SASL mechanism {0}")]
    UnsupportedMechanism(String),

    // ---- password hashes ------------------------------------------------------------
    /// A `hashing_algorithm` other than `rabbit_password_hashing_{sha256,sha512,md5}`.
    #[error("unknown password hashing algorithm '{0}'")]
    UnknownHashingAlgorithm(String),

    /// A base64 field (password hash, SCRAM salt or key) that does not decode.
    #[error("invalid base64 in {field}")]
    InvalidBase64 { field: &'static str },

    // ---- the database ---------------------------------------------------------------
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),

    #[error("vhost '{0}' does not exist")]
    NoSuchVhost(String),

    /// RabbitMQ refuses to delete a vhost with `protected_from_deletion`.
    #[error("refusing to delete vhost '{0}' because it is protected from deletion")]
    VhostProtected(String),

    /// Connection-level refusal (`connection.open`): the vhost does not exist or the user
    /// has no permission row in it. RabbitMQ sends 530 `NOT_ALLOWED - ` + this text.
    #[error("access to vhost '{vhost}' refused for user '{user}'")]
    VhostAccessRefused { vhost: String, user: String },

    /// An empty or otherwise unusable user/vhost/exchange name.
    #[error("invalid {what} name '{name}'")]
    InvalidName { what: &'static str, name: String },

    /// A permission or topic-permission pattern the regex engine rejects.
    #[error("invalid regular expression '{pattern}': {reason}")]
    InvalidRegex { pattern: String, reason: String },

    /// A resource access check failed.
    #[error(transparent)]
    AccessRefused(#[from] AccessRefused),

    // ---- definitions ----------------------------------------------------------------
    /// A definitions document that is not valid JSON of the expected shape, or whose
    /// contents contradict each other (e.g. a user with both `password` and
    /// `password_hash`).
    #[error("invalid definitions: {0}")]
    InvalidDefinitions(String),

    // ---- persistence ----------------------------------------------------------------
    #[error("auth store I/O on {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The snapshot file exists but cannot be read back. FerryMQ refuses to start rather
    /// than re-seeding `guest` over a damaged database.
    #[error("auth store {path} is corrupt: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl AuthError {
    /// True for the failures that must be answered as "bad credentials" on the wire
    /// (AMQP 403 login refused, Kafka 58), including loopback refusals and malformed SASL.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            AuthError::InvalidCredentials { .. }
                | AuthError::LoopbackOnly { .. }
                | AuthError::ScramInvalidCredentials { .. }
                | AuthError::MalformedPlain(_)
                | AuthError::MalformedScram(_)
                | AuthError::AuthzidMismatch
        )
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
