//! The core layer's error type. The AMQP session maps each variant to a reply code in one
//! place (`ferrymq_amqp::error`), so the core never talks in protocol numbers.

/// Errors from topology and queue operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A named entity does not exist (AMQP 404).
    #[error("no {kind} '{name}' in vhost '{vhost}'")]
    NotFound {
        kind: &'static str,
        name: String,
        vhost: String,
    },
    /// A redeclaration or conditional delete does not match (AMQP 406).
    #[error("{0}")]
    Precondition(String),
    /// The operation is not permitted on this entity (AMQP 403).
    #[error("{0}")]
    AccessRefused(String),
    /// The entity is locked by another connection (AMQP 405).
    #[error("{0}")]
    ResourceLocked(String),
    /// The operation is not allowed (AMQP 530, a connection error).
    #[error("{0}")]
    NotAllowed(String),
    /// The command is malformed or not valid now (AMQP 503, a connection error).
    #[error("{0}")]
    CommandInvalid(String),
    /// An internal failure (AMQP 541).
    #[error("{0}")]
    Internal(String),
}

impl CoreError {
    pub fn not_found(kind: &'static str, name: impl Into<String>, vhost: &str) -> Self {
        CoreError::NotFound {
            kind,
            name: name.into(),
            vhost: vhost.to_owned(),
        }
    }
}
