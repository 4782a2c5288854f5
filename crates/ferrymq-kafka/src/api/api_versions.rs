//! ApiVersions: the table of APIs and version ranges this broker serves. The ranges are
//! Apache Kafka 4.0's (kafka-python infers the broker release from them: ListOffsets v10
//! means "4.0"), cut to what the `kafka-protocol` codec knows. A request of an unknown
//! ApiVersions version is answered in v0 with UNSUPPORTED_VERSION and this table (KIP-511).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// (API, min version, max version) served.
pub const TABLE: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    // Transactions, classic protocol (no KIP-890 part 2: no `transaction.version`).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    // Issue 12 admin parity (Kafka 3.x/4.0 ranges).
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    // Kafka ACL admin APIs (Kafka 4.0 serves v1-3; the codec has no v0).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // KIP-554 SCRAM credential administration.
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // Authentication (`crate::sasl`): KIP-43 handshake, KIP-152 authenticate.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    // KIP-848 consumer group protocol (`group::consumer`).
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The served version range of `key`, if it is served at all.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    TABLE
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// The ApiVersions response (`error` is UNSUPPORTED_VERSION for the KIP-511 fallback).
pub fn response(error: Option<ResponseError>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(
            TABLE
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn table_is_within_what_the_codec_knows() {
        for &(key, min, max) in TABLE {
            let codec = key.valid_versions();
            assert!(min <= max, "{key:?}");
            assert!(
                codec.min <= min && max <= codec.max,
                "{key:?} {min}..{max} vs codec {codec}"
            );
        }
        assert_eq!(ProduceRequest::VERSIONS.min, 3);
    }

    #[test]
    fn sasl_is_advertised() {
        // librdkafka refuses SASL ("handshake not supported") without these.
        assert_eq!(supported(ApiKey::SaslHandshake), Some((0, 1)));
        assert_eq!(supported(ApiKey::SaslAuthenticate), Some((0, 2)));
    }

    #[test]
    fn kip_511_fallback_reports_unsupported_version_and_the_table() {
        let r = response(Some(ResponseError::UnsupportedVersion));
        assert_eq!(r.error_code, 35);
        assert_eq!(r.api_keys.len(), TABLE.len());
        assert_eq!(response(None).error_code, 0);
    }
}
