//! Record framing: how one message sits in a segment file. Pure functions over byte
//! slices; the decoder returns "need more bytes", a record, or a [`Corruption`], and never
//! panics, whatever the input.
//!
//! ```text
//! 0      4      8          16          24
//! | len  | crc  |  offset  | timestamp |  payload (len bytes) ...
//! ```
//! All integers little-endian. `len` is the payload length (u32). `crc` is CRC32C
//! (Castagnoli) over `len ‖ offset ‖ timestamp ‖ payload`, i.e. every byte of the record
//! except the CRC itself. `offset` is the record's absolute offset (u64), `timestamp` is
//! milliseconds since the Unix epoch (i64), chosen by the writer.

use ferrymq_core::queue::Offset;

use super::error::Corruption;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// A record's fixed-size header, decoded but not yet checked against its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub crc: u32,
    pub offset: Offset,
    pub timestamp: i64,
}

impl Header {
    /// Total bytes of the framed record.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// Decodes the first [`HEADER_LEN`] bytes; `None` if `buf` is shorter.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let h = buf.get(..HEADER_LEN)?;
        Some(Header {
            len: u32::from_le_bytes(h[0..4].try_into().ok()?),
            crc: u32::from_le_bytes(h[4..8].try_into().ok()?),
            offset: u64::from_le_bytes(h[8..16].try_into().ok()?),
            timestamp: i64::from_le_bytes(h[16..24].try_into().ok()?),
        })
    }

    /// The CRC this header's fields and `payload` should carry.
    pub fn expected_crc(&self, payload: &[u8]) -> u32 {
        checksum(self.len, self.offset, self.timestamp, payload)
    }
}

fn checksum(len: u32, offset: Offset, timestamp: i64, payload: &[u8]) -> u32 {
    let mut fields = [0u8; 20];
    fields[0..4].copy_from_slice(&len.to_le_bytes());
    fields[4..12].copy_from_slice(&offset.to_le_bytes());
    fields[12..20].copy_from_slice(&timestamp.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&fields), payload)
}

/// Bytes a record with a payload of `payload_len` takes on disk.
pub fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN as u64 + payload_len as u64
}

/// Appends the framed record to `out`. The caller has checked that the payload fits in
/// a u32.
pub fn encode(out: &mut Vec<u8>, offset: Offset, timestamp: i64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, offset, timestamp, payload).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends the framed record whose payload is `head ‖ tail` to `out`, without joining
/// the two first: the bytes written are exactly those of [`encode`] over the joined
/// payload. (The CRC is computed over the tail again rather than derived from a CRC the
/// caller knows: `crc32c_combine` costs a few dozen 32×32 GF(2) matrix products for a
/// 100 KiB tail, several times the hardware CRC of the bytes themselves.)
pub fn encode_parts(out: &mut Vec<u8>, offset: Offset, timestamp: i64, head: &[u8], tail: &[u8]) {
    let len = u32::try_from(head.len() + tail.len()).unwrap_or(u32::MAX);
    let mut fields = [0u8; 20];
    fields[0..4].copy_from_slice(&len.to_le_bytes());
    fields[4..12].copy_from_slice(&offset.to_le_bytes());
    fields[12..20].copy_from_slice(&timestamp.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&fields), head), tail);
    out.reserve(HEADER_LEN + head.len() + tail.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
}

/// A record decoded from a buffer, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: Offset,
    pub timestamp: i64,
    pub payload: &'a [u8],
}

/// Outcome of decoding at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checked record and its framed size.
    Record(RecordRef<'a>, u64),
    /// The buffer ends inside the record; it needs at least this many bytes in total.
    Incomplete(u64),
}

/// Decodes one record at the start of `buf`, rejecting payloads above `max_len`.
pub fn decode(buf: &[u8], max_len: u32) -> Result<Decoded<'_>, Corruption> {
    let Some(h) = Header::parse(buf) else {
        return Ok(Decoded::Incomplete(HEADER_LEN as u64));
    };
    if h.len > max_len {
        return Err(Corruption::TooLong(h.len));
    }
    let total = h.frame_len();
    let Some(payload) = usize::try_from(total)
        .ok()
        .and_then(|t| buf.get(HEADER_LEN..t))
    else {
        return Ok(Decoded::Incomplete(total));
    };
    if h.expected_crc(payload) != h.crc {
        return Err(Corruption::BadCrc);
    }
    Ok(Decoded::Record(
        RecordRef {
            offset: h.offset,
            timestamp: h.timestamp,
            payload,
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(offset: Offset, ts: i64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, offset, ts, payload);
        v
    }

    #[test]
    fn round_trip() {
        let buf = framed(42, -7, b"body");
        assert_eq!(buf.len() as u64, frame_len(4));
        let Decoded::Record(r, n) = decode(&buf, 1024).unwrap() else {
            panic!("expected a record")
        };
        assert_eq!(
            (r.offset, r.timestamp, r.payload, n),
            (42, -7, &b"body"[..], 28)
        );
    }

    #[test]
    fn layout_is_little_endian_with_crc_over_everything_else() {
        let buf = framed(0x0102, 0x0304, b"xy");
        assert_eq!(&buf[0..4], &[2, 0, 0, 0]);
        assert_eq!(&buf[8..16], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[16..24], &[4, 3, 0, 0, 0, 0, 0, 0]);
        let mut covered = buf[0..4].to_vec();
        covered.extend_from_slice(&buf[8..]);
        assert_eq!(&buf[4..8], &crc32c::crc32c(&covered).to_le_bytes());
    }

    #[test]
    fn parts_frame_like_the_joined_payload() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for cut in [0, 1, 8, 21, 299, 300] {
            let (head, tail) = payload.split_at(cut);
            let mut v = Vec::new();
            encode_parts(&mut v, 77, 1234, head, tail);
            assert_eq!(v, framed(77, 1234, &payload), "cut at {cut}");
        }
    }

    #[test]
    fn empty_payload() {
        let buf = framed(1, 2, b"");
        assert!(matches!(decode(&buf, 0), Ok(Decoded::Record(_, 24))));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let buf = framed(9, 9, b"payload");
        for cut in 0..buf.len() {
            match decode(&buf[..cut], 1024) {
                Ok(Decoded::Incomplete(need)) => assert!(need > cut as u64),
                other => panic!("prefix {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let buf = framed(3, 1_700_000_000_000, b"some payload");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode(&bad, 1024) {
                    Err(_) | Ok(Decoded::Incomplete(_)) => {}
                    Ok(Decoded::Record(..)) => panic!("flip of byte {byte} bit {bit} accepted"),
                }
            }
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_reading() {
        let mut buf = framed(0, 0, b"abc");
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&buf, 1 << 20), Err(Corruption::TooLong(u32::MAX)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::log::fault::SimRng::new(5);
        for _ in 0..20_000 {
            let len = rng.up_to(64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len >= 4 && rng.chance(1, 2) {
                let l = rng.up_to(40) as u32;
                buf[0..4].copy_from_slice(&l.to_le_bytes());
            }
            let _ = decode(&buf, u32::MAX);
            let _ = decode(&buf, 16);
        }
    }
}
