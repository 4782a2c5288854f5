//! Record batches (magic v2) as the bench produces and consumes them, built and scanned by
//! hand so that the hot path allocates nothing per record: `BatchBuilder` appends records
//! into one reusable buffer and seals them into a batch (optionally compressed with
//! kafka-protocol's codecs) with its CRC32C; `scan_batches` reads only batch headers from a
//! fetch response. `murmur2` is Kafka's key partitioner (Java clients, kafka-python).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;

/// The codecs a batch can be compressed with (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn attribute(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// Bytes of a v2 batch header, up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Where the CRC-covered part of a batch starts (the attributes field).
const CRC_START: usize = 21;

/// Accumulates records (offset deltas from 0) and seals them into one batch.
pub struct BatchBuilder {
    codec: Codec,
    records: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn new(codec: Codec) -> BatchBuilder {
        BatchBuilder {
            codec,
            records: BytesMut::with_capacity(64 * 1024),
            count: 0,
            base_timestamp: 0,
            max_timestamp: 0,
        }
    }

    /// Records appended since the last `seal`.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed bytes of the records appended so far.
    pub fn records_bytes(&self) -> usize {
        self.records.len()
    }

    /// Appends one record with CreateTime `timestamp_ms`.
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: &[u8]) {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.base_timestamp;
        let offset_delta = self.count as i64;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body_len = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, |k| k.len())
            + varint_len(value.len() as i64)
            + value.len()
            + varint_len(0);
        let r = &mut self.records;
        put_varint(r, body_len as i64);
        r.put_i8(0); // record attributes
        put_varint(r, ts_delta);
        put_varint(r, offset_delta);
        put_varint(r, key_len);
        if let Some(k) = key {
            r.put_slice(k);
        }
        put_varint(r, value.len() as i64);
        r.put_slice(value);
        put_varint(r, 0); // no headers
        self.count += 1;
    }

    /// Seals the appended records into a complete batch (base offset 0, no producer id)
    /// and starts a new one. Compression failures are reported, not panicked on.
    pub fn seal(&mut self) -> anyhow::Result<Bytes> {
        let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + self.records.len());
        out.put_i64(0); // base offset
        out.put_i32(0); // batch length, patched below
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // crc, patched below
        out.put_i16(self.codec.attribute());
        out.put_i32(self.count.saturating_sub(1)); // last offset delta
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(-1); // producer id
        out.put_i16(-1); // producer epoch
        out.put_i32(-1); // base sequence
        out.put_i32(self.count);
        let records = self.records.split().freeze();
        compress(self.codec, &mut out, &records)?;
        let batch_len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&batch_len.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        self.count = 0;
        Ok(out.freeze())
    }
}

fn compress(codec: Codec, out: &mut BytesMut, records: &[u8]) -> anyhow::Result<()> {
    use kafka_protocol::compression as c;
    let fill = |b: &mut BytesMut| -> anyhow::Result<()> {
        b.put_slice(records);
        Ok(())
    };
    match codec {
        Codec::None => out.put_slice(records),
        Codec::Gzip => <c::Gzip as Compressor<BytesMut>>::compress(out, fill)?,
        Codec::Snappy => <c::Snappy as Compressor<BytesMut>>::compress(out, fill)?,
        Codec::Lz4 => <c::Lz4 as Compressor<BytesMut>>::compress(out, fill)?,
        Codec::Zstd => <c::Zstd as Compressor<BytesMut>>::compress(out, fill)?,
    }
    Ok(())
}

/// What the consumer needs from one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    /// Control batches (transaction markers) carry no application records.
    pub control: bool,
    /// The whole batch, header included.
    pub len: usize,
}

/// Reads the headers of the complete batches in `data` (a fetch response's records); a
/// trailing partial batch (allowed by the protocol) is ignored. Never panics.
pub fn scan_batches(data: &[u8]) -> Vec<BatchInfo> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= BATCH_HEADER_LEN {
        let h = &data[pos..];
        let batch_len = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if batch_len < (BATCH_HEADER_LEN - 12) as i32 || h[16] != 2 {
            break;
        }
        let total = 12 + batch_len as usize;
        if total > h.len() {
            break;
        }
        let be_i64 = |at: usize| i64::from_be_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
        let attributes = i16::from_be_bytes([h[21], h[22]]);
        let base_offset = be_i64(0);
        let last_delta = i32::from_be_bytes([h[23], h[24], h[25], h[26]]);
        out.push(BatchInfo {
            base_offset,
            last_offset: base_offset + last_delta as i64,
            record_count: i32::from_be_bytes([h[57], h[58], h[59], h[60]]),
            first_timestamp: be_i64(27),
            max_timestamp: be_i64(35),
            control: attributes & 0x20 != 0,
            len: total,
        });
        pos += total;
    }
    out
}

/// Kafka's murmur2 (seed 0x9747b28c) as Java's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Java's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varint_len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    fn build(codec: Codec, n: usize, keyed: bool) -> Bytes {
        let mut b = BatchBuilder::new(codec);
        for i in 0..n {
            let key = format!("key-{i}");
            let value = vec![(i % 251) as u8; 100 + i];
            b.append(
                1_700_000_000_000 + i as i64 * 3,
                keyed.then_some(key.as_bytes()),
                &value,
            );
        }
        assert_eq!(b.len(), n);
        b.seal().unwrap()
    }

    /// kafka-protocol's decoder verifies the CRC32C and decompresses: every record comes
    /// back with its key, value, timestamp and offset, for every codec.
    #[test]
    fn batches_decode_with_kafka_protocol() {
        for (codec, expect) in [
            (Codec::None, Compression::None),
            (Codec::Gzip, Compression::Gzip),
            (Codec::Snappy, Compression::Snappy),
            (Codec::Lz4, Compression::Lz4),
            (Codec::Zstd, Compression::Zstd),
        ] {
            for keyed in [false, true] {
                let mut bytes = build(codec, 50, keyed);
                let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
                assert_eq!(set.compression, expect);
                assert_eq!(set.records.len(), 50);
                for (i, r) in set.records.iter().enumerate() {
                    assert_eq!(r.offset, i as i64);
                    assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64 * 3);
                    assert_eq!(
                        r.value.as_deref(),
                        Some(&vec![(i % 251) as u8; 100 + i][..])
                    );
                    let key = format!("key-{i}");
                    assert_eq!(r.key.as_deref(), keyed.then_some(key.as_bytes()));
                }
            }
        }
    }

    #[test]
    fn corrupted_batch_fails_the_crc_check() {
        let good = build(Codec::None, 5, true);
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        let err = RecordBatchDecoder::decode(&mut bad.freeze()).unwrap_err();
        assert!(
            err.to_string().contains("Cyclic redundancy check failed"),
            "{err}"
        );
    }

    #[test]
    fn builder_resets_after_seal() {
        let mut b = BatchBuilder::new(Codec::None);
        b.append(5, None, b"a");
        let first = b.seal().unwrap();
        assert!(b.is_empty());
        b.append(9, None, b"bb");
        b.append(10, None, b"cc");
        let second = b.seal().unwrap();
        assert!(first.len() < second.len());
        let set = RecordBatchDecoder::decode(&mut second.clone()).unwrap();
        assert_eq!(set.records.len(), 2);
        assert_eq!(set.records[0].timestamp, 9);
        assert_eq!(set.records[1].offset, 1);
    }

    #[test]
    fn scan_matches_kafka_protocol_batch_info() {
        let mut data = BytesMut::new();
        data.put_slice(&build(Codec::None, 3, false));
        data.put_slice(&build(Codec::Zstd, 7, true));
        // Rewrite the second batch's base offset as a broker would (outside the CRC).
        let first_len = scan_batches(&data)[0].len;
        data[first_len..first_len + 8].copy_from_slice(&3i64.to_be_bytes());
        let whole = data.clone().freeze();
        data.put_slice(&build(Codec::None, 2, false)[..40]); // trailing partial batch
        let scanned = scan_batches(&data);
        assert_eq!(scanned.len(), 2);
        let info = RecordBatchDecoder::decode_batch_info(&mut whole.clone()).unwrap();
        for (s, i) in scanned.iter().zip(&info) {
            assert_eq!(s.base_offset, i.min_offset);
            assert_eq!(s.record_count, i.record_count);
            assert_eq!(s.first_timestamp, i.min_timestamp);
            assert!(!s.control);
        }
        assert_eq!(scanned[1].base_offset, 3);
        assert_eq!(scanned[1].last_offset, 9);
        assert_eq!(scanned[0].max_timestamp, 1_700_000_000_006);
        assert_eq!(scanned[0].len + scanned[1].len, whole.len());
    }

    #[test]
    fn scan_never_panics_on_garbage() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..400 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = scan_batches(&data);
        }
        let mut huge = build(Codec::None, 1, false).to_vec();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(scan_batches(&huge).is_empty());
    }

    /// Values from Kafka's `UtilsTest.testMurmur2` and its default partitioner.
    #[test]
    fn murmur2_matches_java() {
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert_eq!(
            partition_for_key(b"foobar", 7),
            (-790332482i32 & 0x7fffffff) as u32 % 7
        );
    }

    #[test]
    fn varints_are_zigzag() {
        for (v, enc) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (64, vec![0x80, 1]),
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(&b[..], &enc[..], "{v}");
            assert_eq!(varint_len(v), enc.len());
        }
    }
}
