//! Log compaction (`cleanup.policy=compact`): keep only the latest record of each key.
//! Pure: the partition task feeds it stored batches. [`latest_offsets`] scans every batch
//! for the last offset of each key; [`compact_batch`] rebuilds one batch without the
//! records a later one supersedes. A rebuilt batch keeps its codec; one left with no
//! records becomes a header-only batch that keeps its base offset and last offset delta
//! (as Kafka keeps empty batches), so offsets never move. Records without a key and the
//! latest tombstone of each key are kept. Batches are decoded with `kafka-protocol` (it
//! allocates per record: this runs in the background, never on the produce path).

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::batch::{self, HEADER_LEN, LOG_OVERHEAD};

/// The offset of the last record of each key in `batches`.
pub fn latest_offsets<'a>(batches: impl IntoIterator<Item = &'a [u8]>) -> HashMap<Bytes, i64> {
    let mut latest = HashMap::new();
    for b in batches {
        let mut buf = Bytes::copy_from_slice(b);
        let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
            continue;
        };
        for r in set.records {
            if r.control {
                continue; // transaction markers are not keyed data
            }
            if let Some(key) = r.key {
                latest.insert(key, r.offset);
            }
        }
    }
    latest
}

fn compression_of(attributes: i16) -> Compression {
    match attributes & 0x7 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// The batch without superseded records, or `None` if nothing is to be removed (or the
/// batch cannot be decoded: it is then kept as it is).
pub fn compact_batch(stored: &[u8], latest: &HashMap<Bytes, i64>) -> Option<Vec<u8>> {
    let header = batch::parse_header(stored).ok()?;
    if header.is_control() || header.record_count == 0 {
        return None;
    }
    let mut buf = Bytes::copy_from_slice(stored);
    let set = RecordBatchDecoder::decode(&mut buf).ok()?;
    let total = set.records.len();
    let mut kept: Vec<_> = set
        .records
        .into_iter()
        .filter(|r| match &r.key {
            Some(k) => latest.get(k).map_or(true, |&o| o <= r.offset),
            None => true,
        })
        .collect();
    if kept.len() == total {
        return None;
    }
    if kept.is_empty() {
        return Some(empty_batch(stored));
    }
    // The encoder keeps records in one batch only while offset - sequence is constant.
    let first_offset = kept[0].offset;
    let first_seq = kept[0].sequence;
    for r in kept.iter_mut() {
        r.sequence = first_seq.wrapping_add((r.offset - first_offset) as i32);
    }
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &kept,
        &RecordEncodeOptions {
            version: 2,
            compression: compression_of(header.attributes),
        },
    )
    .ok()?;
    // Exactly one batch came out (guarded, since the store keeps one batch per record).
    let out = out.to_vec();
    let rebuilt = batch::parse_header(&out).ok()?;
    (rebuilt.size == out.len()).then_some(out)
}

/// A batch with the stored one's header (base offset, last offset delta, producer fields)
/// and no records.
fn empty_batch(stored: &[u8]) -> Vec<u8> {
    let mut b = stored[..HEADER_LEN].to_vec();
    b[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
    let attributes = i16::from_be_bytes([b[21], b[22]]) & !0x7;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Record, TimestampType};

    fn batch(base: i64, keys: &[&str], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1 + i as i32,
                timestamp: 1000,
                key: Some(Bytes::from(k.to_string())),
                value: Some(Bytes::from(format!("{k}@{}", base + i as i64))),
                headers: Default::default(),
                delete_horizon: false,
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

    fn values(b: &[u8]) -> Vec<(i64, String)> {
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b)).unwrap();
        set.records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn keeps_the_latest_record_per_key() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let b1 = batch(0, &["a", "b", "c"], c);
            let b2 = batch(3, &["a", "d"], c);
            let b3 = batch(5, &["b", "a"], c);
            let latest = latest_offsets([&b1[..], &b2[..], &b3[..]]);
            assert_eq!(latest[&Bytes::from("a")], 6);
            let c1 = compact_batch(&b1, &latest).expect("a and b superseded");
            assert_eq!(values(&c1), [(2, "c@2".to_owned())]);
            let h = batch::validate(&c1).unwrap()[0];
            assert_eq!(h.compression(), c as i16);
            // A gap inside a batch: offsets 0 and 2 kept, one batch.
            let b4 = batch(0, &["x", "y", "z"], c);
            let b5 = batch(3, &["y"], c);
            let gap = latest_offsets([&b4[..], &b5[..]]);
            let c4 = compact_batch(&b4, &gap).expect("y superseded");
            assert_eq!(values(&c4), [(0, "x@0".to_owned()), (2, "z@2".to_owned())]);
            let h = batch::parse_header(&c4).unwrap();
            assert_eq!((h.size, h.base_offset, h.last_offset()), (c4.len(), 0, 2));
            // b2 keeps only d; b3 is all latest.
            assert_eq!(
                values(&compact_batch(&b2, &latest).unwrap()),
                [(4, "d@4".to_owned())]
            );
            assert_eq!(compact_batch(&b3, &latest), None);
        }
    }

    #[test]
    fn an_emptied_batch_keeps_its_offsets() {
        let b1 = batch(10, &["a", "a"], Compression::Gzip);
        let b2 = batch(12, &["a"], Compression::None);
        let latest = latest_offsets([&b1[..], &b2[..]]);
        let c1 = compact_batch(&b1, &latest).unwrap();
        let h = batch::validate(&c1).expect("valid CRC")[0];
        assert_eq!(
            (h.base_offset, h.last_offset(), h.record_count),
            (10, 11, 0)
        );
        assert_eq!(h.compression(), 0);
    }
}
