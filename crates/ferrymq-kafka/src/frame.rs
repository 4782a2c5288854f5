//! Request framing: a 4-byte big-endian size, then the request (header + body). Pure:
//! [`peek_request`] says whether a whole request is buffered, [`decode_request`] turns one
//! into a typed request. Neither panics on any input.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::api::api_versions;
use crate::error::KafkaError;

/// Largest request accepted (Kafka's `socket.request.max.bytes` default, 100 MiB).
pub const MAX_REQUEST_BYTES: usize = 104_857_600;

/// The length of the first complete request in `buf` (size prefix included), `None` if
/// more bytes are needed, or an error for a size that is negative or above `max`.
pub fn peek_request(buf: &[u8], max: usize) -> Result<Option<usize>, KafkaError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 || size as usize > max {
        return Err(KafkaError::BadSize {
            size: i64::from(size),
            max,
        });
    }
    let total = 4 + size as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// A request taken off the wire.
#[derive(Debug)]
pub enum Decoded {
    /// A request of a supported API and version.
    Request {
        header: RequestHeader,
        api_key: ApiKey,
        body: Box<RequestKind>,
    },
    /// An ApiVersions request of a version this broker does not know (KIP-511): answer
    /// v0 with UNSUPPORTED_VERSION and the version table.
    ApiVersionsFallback { correlation_id: i32 },
}

/// Decodes one request (without its size prefix). Unknown API keys and versions outside
/// the advertised table are errors, except ApiVersions (see [`Decoded`]).
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, KafkaError> {
    if frame.len() < 8 {
        return Err(KafkaError::ShortHeader { len: frame.len() });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key).map_err(|()| KafkaError::UnknownApiKey(key))?;
    let Some(range) = api_versions::supported(api_key) else {
        return Err(KafkaError::UnknownApiKey(key));
    };
    if version < range.0 || version > range.1 {
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::ApiVersionsFallback { correlation_id });
        }
        return Err(KafkaError::UnsupportedVersion { key, version });
    }
    let malformed = |reason: String| KafkaError::Malformed {
        api: api_name(api_key),
        version,
        reason,
    };
    let header_version = api_key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| malformed(e.to_string()))?;
    // Trailing bytes after the body are ignored, as Kafka does.
    let body = RequestKind::decode(api_key, &mut frame, version)
        .map(Box::new)
        .map_err(|e| malformed(e.to_string()))?;
    Ok(Decoded::Request {
        header,
        api_key,
        body,
    })
}

/// A readable name of an API for errors and logs.
pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn request<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn peek_needs_the_whole_request() {
        assert_eq!(peek_request(&[], 100), Ok(None));
        assert_eq!(peek_request(&[0, 0, 0], 100), Ok(None));
        assert_eq!(peek_request(&[0, 0, 0, 2, 1], 100), Ok(None));
        assert_eq!(peek_request(&[0, 0, 0, 2, 1, 2, 3], 100), Ok(Some(6)));
        assert!(peek_request(&[0xff, 0xff, 0xff, 0xff], 100).is_err());
        assert!(peek_request(&[0, 0, 1, 0], 100).is_err());
    }

    #[test]
    fn decodes_flexible_and_classic_headers() {
        for version in [0, 4, 9, 12] {
            let frame = request(ApiKey::Metadata, version, &MetadataRequest::default());
            match decode_request(frame).unwrap() {
                Decoded::Request {
                    header, api_key, ..
                } => {
                    assert_eq!(api_key, ApiKey::Metadata);
                    assert_eq!(header.correlation_id, 7);
                    assert_eq!(header.request_api_version, version);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_and_versions() {
        let mut raw = vec![0x7f, 0x00, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            decode_request(Bytes::from(raw.clone())).unwrap_err(),
            KafkaError::UnknownApiKey(0x7f00)
        );
        // Produce v99.
        raw[0] = 0;
        raw[1] = 0;
        raw[3] = 99;
        assert!(matches!(
            decode_request(Bytes::from(raw.clone())),
            Err(KafkaError::UnsupportedVersion {
                key: 0,
                version: 99
            })
        ));
        // ApiVersions v99 → fallback with the correlation id.
        raw[1] = 18;
        assert!(matches!(
            decode_request(Bytes::from(raw)),
            Ok(Decoded::ApiVersionsFallback { correlation_id: 1 })
        ));
        let ok = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert!(matches!(
            decode_request(ok),
            Ok(Decoded::Request {
                api_key: ApiKey::ApiVersions,
                ..
            })
        ));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        let frame = request(ApiKey::Metadata, 12, &MetadataRequest::default());
        for cut in 0..frame.len() {
            let _ = decode_request(frame.slice(..cut));
        }
        // Arbitrary garbage after a valid header prefix.
        for seed in 0u32..2000 {
            let mut bytes = vec![0u8; (seed % 64) as usize + 8];
            let mut x = seed.wrapping_mul(2_654_435_761);
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            bytes[0] = 0;
            bytes[1] = (seed % 70) as u8;
            bytes[2] = 0;
            bytes[3] = (seed % 13) as u8;
            let _ = decode_request(Bytes::from(bytes));
        }
    }
}
