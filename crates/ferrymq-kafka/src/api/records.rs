//! Per-record checks of a produce, as Kafka's `LogValidator` makes them, with KIP-467's
//! per-record errors: a record without a key on a compacted topic (INVALID_RECORD), a
//! CreateTime timestamp outside `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` (INVALID_TIMESTAMP), a batch larger than
//! `max.message.bytes` (MESSAGE_TOO_LARGE), a partition's records larger than a segment
//! (RECORD_LIST_TOO_LARGE). A failing record fails its partition's whole append. Batches
//! are decoded (decompressed if need be) only when a rule needs the records. For
//! `message.timestamp.type=LogAppendTime` [`set_log_append_time`] stamps the batches.

use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;

use super::configs::TopicConfig;
use crate::batch::BatchHeader;

/// Why a partition's records were refused: the partition's error, KIP-467's record
/// errors (the record's index in its batch, a message) and the partition's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub error: ResponseError,
    pub record_errors: Vec<(i32, String)>,
    pub message: Option<String>,
}

impl From<ResponseError> for Rejection {
    fn from(error: ResponseError) -> Rejection {
        Rejection {
            error,
            record_errors: Vec::new(),
            message: None,
        }
    }
}

impl Rejection {
    fn with_message(error: ResponseError, message: String) -> Rejection {
        Rejection {
            error,
            record_errors: Vec::new(),
            message: Some(message),
        }
    }
}

/// The Kafka text of a record error inside a partition message.
fn shown(errors: &[(i32, String)]) -> String {
    let items: Vec<String> = errors
        .iter()
        .take(3)
        .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Checks one partition's records (`headers` from `produce::check_records`) against the
/// topic's configs at `now_ms`. `topic_partition` names it in messages (`name-index`).
pub fn check(
    records: &[u8],
    headers: &[BatchHeader],
    config: &TopicConfig,
    topic_partition: &str,
    now_ms: i64,
) -> Result<(), Rejection> {
    if let Some(h) = headers.iter().find(|h| h.size > config.max_message_bytes) {
        return Err(Rejection::with_message(
            ResponseError::MessageTooLarge,
            format!(
                "The record batch size in the append to {topic_partition} is {} bytes which exceeds the maximum configured value of {}.",
                h.size, config.max_message_bytes
            ),
        ));
    }
    if records.len() as u64 > config.segment_bytes {
        return Err(Rejection::with_message(
            ResponseError::RecordListTooLarge,
            format!(
                "The size of this batch ({} bytes) exceeds the size of the segment ({} bytes) of {topic_partition}.",
                records.len(),
                config.segment_bytes
            ),
        ));
    }
    let check_time = !config.log_append_time
        && (config.timestamp_before_ms < i64::MAX || config.timestamp_after_ms < i64::MAX);
    if !config.compact && !check_time {
        return Ok(());
    }
    let low = now_ms.saturating_sub(config.timestamp_before_ms);
    let high = now_ms.saturating_add(config.timestamp_after_ms);
    let mut at = 0;
    for h in headers {
        let bytes = &records[at..at + h.size];
        at += h.size;
        if h.is_control() {
            continue;
        }
        let mut buf = bytes::Bytes::copy_from_slice(bytes);
        let set =
            RecordBatchDecoder::decode(&mut buf).map_err(|_| ResponseError::CorruptMessage)?;
        let mut errors = Vec::new();
        let mut bad_time = false;
        for (i, r) in set.records.iter().enumerate() {
            let i = i as i32;
            if config.compact && r.key.is_none() {
                errors.push((
                    i,
                    format!("Compacted topic cannot accept message without key in topic partition {topic_partition}."),
                ));
            } else if check_time && r.timestamp != -1 && !(low..=high).contains(&r.timestamp) {
                bad_time = true;
                errors.push((
                    i,
                    format!(
                        "Timestamp {} of message with offset {} is out of range. The timestamp should be within [{low}, {high}]",
                        r.timestamp, r.offset
                    ),
                ));
            }
        }
        if errors.is_empty() {
            continue;
        }
        // Kafka's `processRecordErrors`: INVALID_TIMESTAMP if any timestamp is bad.
        let (error, message) = if bad_time {
            (
                ResponseError::InvalidTimestamp,
                "One or more records have been rejected due to invalid timestamp".to_owned(),
            )
        } else {
            (
                ResponseError::InvalidRecord,
                format!(
                    "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: {}",
                    errors.len(),
                    shown(&errors)
                ),
            )
        };
        return Err(Rejection {
            error,
            record_errors: errors,
            message: Some(message),
        });
    }
    Ok(())
}

/// Stamps every batch with `now_ms` as LogAppendTime: timestamp-type bit set, max
/// timestamp `now_ms`, CRC recomputed (Kafka's `setMaxTimestamp(LOG_APPEND_TIME, now)`).
pub fn set_log_append_time(records: &mut [u8], headers: &[BatchHeader], now_ms: i64) {
    let mut at = 0;
    for h in headers {
        let b = &mut records[at..at + h.size];
        at += h.size;
        if h.is_control() {
            continue;
        }
        let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x08;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[35..43].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use std::collections::BTreeMap;

    fn records(keys: &[Option<&str>], ts: i64, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                delete_horizon: false,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch while offset - sequence is even.
                sequence: i as i32,
                timestamp: ts,
                key: k.map(|k| Bytes::from(k.to_owned())),
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn config(pairs: &[(&str, &str)]) -> TopicConfig {
        let o: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TopicConfig::resolve(&o)
    }

    fn run(b: &[u8], c: &TopicConfig, now: i64) -> Result<(), Rejection> {
        let hs = batch::validate(b).unwrap();
        check(b, &hs, c, "t-0", now)
    }

    #[test]
    fn null_keys_on_compacted_topics() {
        let compact = config(&[("cleanup.policy", "compact")]);
        for c in [Compression::None, Compression::Zstd] {
            let b = records(&[Some("a"), None, Some("b"), None], 5, c);
            let r = run(&b, &compact, 5).unwrap_err();
            assert_eq!(r.error, ResponseError::InvalidRecord);
            let idx: Vec<i32> = r.record_errors.iter().map(|e| e.0).collect();
            assert_eq!(idx, [1, 3]);
            assert!(r.record_errors[0]
                .1
                .contains("without key in topic partition t-0"));
            assert!(r.message.unwrap().contains("2 record errors"));
            // The same records on a delete topic are fine.
            assert_eq!(run(&b, &config(&[]), 5), Ok(()));
        }
        let keyed = records(&[Some("a")], 5, Compression::None);
        assert_eq!(run(&keyed, &compact, 5), Ok(()));
    }

    #[test]
    fn timestamps_out_of_bounds() {
        let c = config(&[("message.timestamp.before.max.ms", "1000")]);
        let old = records(&[Some("a"), Some("b")], 1_000, Compression::None);
        let r = run(&old, &c, 10_000).unwrap_err();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
        assert_eq!(r.record_errors.len(), 2);
        assert_eq!(run(&old, &c, 1_500), Ok(()));
        let after = config(&[("message.timestamp.after.max.ms", "10")]);
        assert!(run(&old, &after, 0).is_err());
        // The deprecated difference bounds both sides.
        let diff = config(&[("message.timestamp.difference.max.ms", "10")]);
        assert!(run(&old, &diff, 2_000).is_err());
        assert!(run(&old, &diff, 0).is_err());
        assert_eq!(run(&old, &diff, 1_005), Ok(()));
        // LogAppendTime topics do not check producer timestamps.
        let lat = config(&[
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.before.max.ms", "1000"),
        ]);
        assert_eq!(run(&old, &lat, 10_000), Ok(()));
    }

    #[test]
    fn sizes() {
        let b = records(&[Some("a")], 1, Compression::None);
        let small = config(&[("max.message.bytes", "10")]);
        assert_eq!(
            run(&b, &small, 1).unwrap_err().error,
            ResponseError::MessageTooLarge
        );
        let tiny_segment = config(&[("segment.bytes", "14")]);
        assert_eq!(
            run(&b, &tiny_segment, 1).unwrap_err().error,
            ResponseError::RecordListTooLarge
        );
    }

    #[test]
    fn log_append_time_stamps_and_keeps_the_batch_valid() {
        let mut b = records(&[Some("a"), Some("b")], 7, Compression::Gzip);
        let hs = batch::validate(&b).unwrap();
        set_log_append_time(&mut b, &hs, 123_456);
        let hs = batch::validate(&b).expect("crc still valid");
        assert_eq!(hs[0].max_timestamp, 123_456);
        let set = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
        assert!(set
            .records
            .iter()
            .all(|r| r.timestamp_type == TimestampType::LogAppend));
    }
}
