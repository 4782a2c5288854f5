//! The one error type of the Kafka wire layer.

/// Why a request could not be taken off the wire. Every variant closes the connection it
/// arrived on (what Kafka does), and nothing else.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaError {
    #[error("request size {size} is negative or above the maximum of {max}")]
    BadSize { size: i64, max: usize },
    #[error("request of {len} bytes is too short for a request header")]
    ShortHeader { len: usize },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API key {key} version {version} is not supported")]
    UnsupportedVersion { key: i16, version: i16 },
    #[error("malformed {api} v{version} request: {reason}")]
    Malformed {
        api: &'static str,
        version: i16,
        reason: String,
    },
    #[error("could not encode a {api} v{version} response: {reason}")]
    Encode {
        api: &'static str,
        version: i16,
        reason: String,
    },
}
