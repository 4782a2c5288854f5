//! Record batches (magic 2) as producers send them and consumers receive them. The broker
//! never re-encodes a batch: [`validate`] checks sizes, the magic byte and the CRC32C
//! (which covers attributes through the end, so the base offset and partition leader
//! epoch before it can be rewritten freely), and [`set_base_offset`] assigns offsets in
//! place. Layout (big-endian), byte offsets into the batch:
//!
//! ```text
//!  0 base_offset i64        8 batch_length i32 (bytes after this field)
//! 12 partition_leader_epoch i32   16 magic i8   17 crc u32 (CRC32C of 21..end)
//! 21 attributes i16 (bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control)
//! 23 last_offset_delta i32  27 base_timestamp i64  35 max_timestamp i64
//! 43 producer_id i64        51 producer_epoch i16  53 base_sequence i32
//! 57 record_count i32       61 records…
//! ```

use kafka_protocol::ResponseError;

/// The smallest encoded record (length, attributes, timestamp delta, offset delta, key
/// length, value length, header count: one byte each).
pub const MIN_RECORD_LEN: usize = 7;
/// Most records a compressed batch may announce. The count is only checked against the
/// compressed size for uncompressed batches; this bound keeps a crafted count from making
/// later decoding (compaction, ListOffsets) reserve unbounded memory.
pub const MAX_COMPRESSED_RECORDS: i32 = 1 << 20;

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length`'s coverage starts (base offset + length field).
pub const LOG_OVERHEAD: usize = 12;

/// The fixed fields of a v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes of the whole batch, header included.
    pub size: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the producer asked for idempotence (a producer id is set).
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// The last offset of the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The last sequence number (sequences wrap at i32::MAX like Kafka's).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Why a produced batch was rejected, with the error code Kafka sends for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated or inconsistent batch sizes")]
    BadSize,
    #[error("CRC32C mismatch")]
    BadCrc,
    #[error("message format magic {0} (only v2 is accepted)")]
    OldMagic(i8),
    #[error("unknown magic {0}")]
    BadMagic(i8),
    #[error("invalid batch fields")]
    Invalid,
}

impl BatchError {
    /// The Produce error code: CORRUPT_MESSAGE for damage; INVALID_RECORD for old
    /// message formats (Kafka's `ProduceRequest.validateRecords` rejects magic < 2 in
    /// Produce v3+ with `InvalidRecordException`).
    pub fn code(&self) -> ResponseError {
        match self {
            BatchError::OldMagic(_) => ResponseError::InvalidRecord,
            _ => ResponseError::CorruptMessage,
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the header of the batch at the start of `buf` without checking its CRC.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < LOG_OVERHEAD + 5 {
        return Err(BatchError::BadSize);
    }
    let magic = buf[16] as i8;
    match magic {
        2 => {}
        0 | 1 => return Err(BatchError::OldMagic(magic)),
        m => return Err(BatchError::BadMagic(m)),
    }
    if buf.len() < HEADER_LEN {
        return Err(BatchError::BadSize);
    }
    let batch_length = i32_at(buf, 8);
    if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::BadSize);
    }
    let size = LOG_OVERHEAD + batch_length as usize;
    if size > buf.len() {
        return Err(BatchError::BadSize);
    }
    Ok(BatchHeader {
        base_offset: i64_at(buf, 0),
        size,
        attributes: i16_at(buf, 21),
        last_offset_delta: i32_at(buf, 23),
        base_timestamp: i64_at(buf, 27),
        max_timestamp: i64_at(buf, 35),
        producer_id: i64_at(buf, 43),
        producer_epoch: i16_at(buf, 51),
        base_sequence: i32_at(buf, 53),
        record_count: i32_at(buf, 57),
    })
}

/// Checks every batch in a Produce partition's `records` (one or more batches, back to
/// back) and returns their headers. The whole set is rejected if any batch is bad.
pub fn validate(records: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let h = parse_header(rest)?;
        let stored = i32_at(rest, 17) as u32;
        if crc32c::crc32c(&rest[21..h.size]) != stored {
            return Err(BatchError::BadCrc);
        }
        let max_records = if h.compression() == 0 {
            ((h.size - HEADER_LEN) / MIN_RECORD_LEN) as i32
        } else {
            MAX_COMPRESSED_RECORDS
        };
        if h.record_count < 0
            || h.record_count > max_records
            || h.last_offset_delta < 0
            || (h.record_count > 0 && h.last_offset_delta != h.record_count - 1)
            || h.is_control()
        {
            return Err(BatchError::Invalid);
        }
        out.push(h);
        rest = &rest[h.size..];
    }
    if out.is_empty() {
        return Err(BatchError::BadSize);
    }
    Ok(out)
}

/// Sets the base offset of the batch at the start of `batch` (covered by no CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if batch.len() >= 8 {
        batch[..8].copy_from_slice(&base_offset.to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    pub(crate) fn batch(n: usize, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                delete_horizon: false,
                producer_id: 42,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 10 + i as i32,
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 20])),
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

    #[test]
    fn parses_a_real_batch() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let b = batch(3, c);
            let hs = validate(&b).unwrap();
            assert_eq!(hs.len(), 1);
            let h = hs[0];
            assert_eq!(h.size, b.len());
            assert_eq!(h.record_count, 3);
            assert_eq!(h.last_offset_delta, 2);
            assert_eq!(h.producer_id, 42);
            assert_eq!(h.producer_epoch, 1);
            assert_eq!(h.base_sequence, 10);
            assert_eq!(h.last_sequence(), 12);
            assert_eq!(h.max_timestamp, 1_002);
            assert_eq!(h.compression(), c as i16);
        }
    }

    #[test]
    fn base_offset_rewrite_keeps_the_crc_valid() {
        let mut b = batch(2, Compression::None);
        set_base_offset(&mut b, 1234);
        let h = validate(&b).unwrap()[0];
        assert_eq!(h.base_offset, 1234);
        let mut bytes = Bytes::from(b);
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.records[1].offset, 1235);
    }

    #[test]
    fn two_batches_back_to_back() {
        let mut b = batch(2, Compression::None);
        b.extend(batch(5, Compression::None));
        let hs = validate(&b).unwrap();
        assert_eq!(
            hs.iter().map(|h| h.record_count).collect::<Vec<_>>(),
            [2, 5]
        );
    }

    #[test]
    fn damage_is_corrupt_message() {
        let b = batch(3, Compression::None);
        // Every single-bit flip outside the base offset and the partition leader epoch
        // (the two fields the broker may rewrite) is caught (size, magic or CRC).
        for at in (8..12).chain(16..b.len()) {
            let mut d = b.clone();
            d[at] ^= 0x10;
            let r = validate(&d);
            assert!(r.is_err(), "flip at {at} accepted");
            if at != 16 {
                assert_eq!(r.unwrap_err().code(), ResponseError::CorruptMessage, "{at}");
            }
        }
        for cut in 0..b.len() {
            assert_eq!(
                validate(&b[..cut]).unwrap_err().code(),
                ResponseError::CorruptMessage
            );
        }
    }

    #[test]
    fn record_counts_must_fit_the_bytes() {
        // A valid CRC over a header announcing far more records than the bytes hold.
        let mut b = batch(1, Compression::None);
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate(&b), Err(BatchError::Invalid));
        let mut z = batch(2, Compression::Zstd);
        z[57..61].copy_from_slice(&(MAX_COMPRESSED_RECORDS + 1).to_be_bytes());
        z[23..27].copy_from_slice(&MAX_COMPRESSED_RECORDS.to_be_bytes());
        let crc = crc32c::crc32c(&z[21..]);
        z[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate(&z), Err(BatchError::Invalid));
    }

    #[test]
    fn old_magic_is_rejected() {
        let mut b = batch(1, Compression::None);
        b[16] = 1;
        assert_eq!(validate(&b), Err(BatchError::OldMagic(1)));
        assert_eq!(BatchError::OldMagic(0).code(), ResponseError::InvalidRecord);
    }
}
