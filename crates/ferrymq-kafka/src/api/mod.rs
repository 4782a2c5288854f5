//! One module per Kafka API (mini-redis `cmd` style): each holds the pure part of serving
//! it — validation rules, the error codes Kafka uses, and response assembly from what the
//! broker found. The broker (`ferrymq-server::kafka`) supplies the state.

pub mod api_versions;
pub mod configs;
pub mod create_topics;
pub mod dynamic_configs;
pub mod fetch;
pub mod metadata;
pub mod produce;
pub mod records;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

use crate::error::KafkaError;
use crate::frame::api_name;

/// Encodes a response (size prefix, header, body) for a request of `api_key` v`version`.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, KafkaError> {
    let err = |reason: String| KafkaError::Encode {
        api: api_name(api_key),
        version,
        reason,
    };
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(|e| err(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| err(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// A topic name is valid if Kafka would accept it: 1..=249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(valid_topic_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }
}
