//! Transaction markers (Kafka's `EndTransactionMarker` in a control batch): building the
//! batch the coordinator writes to each partition of a decided transaction, and reading
//! the decision back from a stored control batch. A marker is a v2 batch with attributes
//! transactional | control (0x30), the transaction's producer id and epoch, base sequence
//! -1 and one record: key `version:i16 = 0, type:i16` (0 ABORT, 1 COMMIT), value
//! `version:i16 = 0, coordinator_epoch:i32`.

use crate::batch::{self, HEADER_LEN};

/// Builds a marker batch (base offset 0; the partition assigns the real one), coordinator
/// epoch 0.
pub fn marker_batch(producer_id: i64, epoch: i16, commit: bool, timestamp: i64) -> Vec<u8> {
    marker_batch_seq(producer_id, epoch, commit, timestamp, 0)
}

/// [`marker_batch`] with `coordinator_epoch` set. FerryMQ's coordinator puts there the
/// transaction's sequence number per transactional id (`TxnMeta::seq`, >= 1), so a
/// marker written again after a crash is recognised as already written (clients ignore
/// the field: Kafka's consumers skip control records).
pub fn marker_batch_seq(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    timestamp: i64,
    coordinator_epoch: i32,
) -> Vec<u8> {
    let mut record = Vec::with_capacity(20);
    record.push(0); // attributes
    record.push(0); // timestamp delta (varint 0)
    record.push(0); // offset delta (varint 0)
    record.push(8); // key length 4 (zigzag varint)
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&(i16::from(commit)).to_be_bytes());
    record.push(12); // value length 6 (zigzag varint)
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&coordinator_epoch.to_be_bytes());
    record.push(0); // header count
    let mut b = Vec::with_capacity(HEADER_LEN + 1 + record.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let batch_length = (HEADER_LEN - batch::LOG_OVERHEAD + 1 + record.len()) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&0x30i16.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // record count
    b.push((record.len() as u8) << 1); // record length (zigzag varint, < 64)
    b.extend_from_slice(&record);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Reads a zigzag varint.
fn varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// The decision of a stored control batch: `Some(true)` COMMIT, `Some(false)` ABORT,
/// `None` if it is not a well-formed marker (unknown control types are ignored, as
/// clients do).
pub fn marker_type(batch: &[u8]) -> Option<bool> {
    marker_info(batch).map(|(commit, _)| commit)
}

/// A stored marker's decision and coordinator epoch (FerryMQ: the transaction's sequence
/// number, 0 for markers written before it was recorded or without a value).
pub fn marker_info(batch: &[u8]) -> Option<(bool, i32)> {
    let h = batch::parse_header(batch).ok()?;
    if !h.is_control() || h.compression() != 0 || h.record_count < 1 {
        return None;
    }
    let b = &batch[..h.size];
    let mut at = HEADER_LEN;
    varint(b, &mut at)?; // length
    at += 1; // attributes
    varint(b, &mut at)?; // timestamp delta
    varint(b, &mut at)?; // offset delta
    if varint(b, &mut at)? < 4 {
        return None;
    }
    let key = b.get(at..at + 4)?;
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        0 => false,
        1 => true,
        _ => return None,
    };
    at += 4;
    // Value: version:i16, coordinator_epoch:i32 (absent or short: 0).
    let coordinator_epoch = match varint(b, &mut at) {
        Some(n) if n >= 6 => b
            .get(at + 2..at + 6)
            .map_or(0, |v| i32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        _ => 0,
    };
    Some((commit, coordinator_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn markers_decode_as_kafka_control_records() {
        for commit in [true, false] {
            let b = marker_batch(42, 3, commit, 1_000);
            let h = batch::parse_header(&b).unwrap();
            assert_eq!(h.size, b.len());
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(
                crc32c::crc32c(&b[21..]),
                u32::from_be_bytes(b[17..21].try_into().unwrap())
            );
            assert_eq!(marker_type(&b), Some(commit));
            assert_eq!(marker_info(&b), Some((commit, 0)));
            // The reference decoder reads it: one control record, key = version 0 + type.
            let mut bytes = Bytes::from(b);
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 1);
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            assert_eq!(r.key.as_deref(), Some(&[0, 0, 0, u8::from(commit)][..]));
            assert_eq!(r.value.as_deref(), Some(&[0, 0, 0, 0, 0, 0][..]));
        }
    }

    #[test]
    fn marker_carries_the_transaction_sequence() {
        let b = marker_batch_seq(7, 1, false, 5, 123_456);
        assert_eq!(marker_info(&b), Some((false, 123_456)));
        let mut bytes = Bytes::from(b);
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(
            set.records[0].value.as_deref(),
            Some(&[0, 0, 0, 0x01, 0xe2, 0x40][..])
        );
    }

    #[test]
    fn marker_type_never_panics_on_garbage() {
        let b = marker_batch(1, 0, true, 0);
        for cut in 0..b.len() {
            let _ = marker_type(&b[..cut]);
        }
        for i in HEADER_LEN..b.len() {
            let mut d = b.clone();
            d[i] = 0xff;
            let _ = marker_type(&d);
        }
        assert_eq!(
            marker_type(&super::super::batch::tests::batch(
                1,
                kafka_protocol::records::Compression::None
            )),
            None
        );
    }
}
