//! The record framing the small journals share (definitions, committed Kafka offsets):
//! `length:u32 BE` `crc32c(payload):u32 BE` `payload`. Reading stops at the first record
//! that is short, oversized, fails its CRC or does not decode: the torn tail of a crash.

/// Bytes before each payload: length and CRC32C.
pub const HEADER: usize = 8;

/// Appends one framed record.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Decodes records from the start of `bytes` until the first bad one; returns them and the
/// length of the valid prefix. Records above `max_record` bytes count as bad.
pub fn parse<T>(
    bytes: &[u8],
    max_record: usize,
    decode: impl Fn(&[u8]) -> Option<T>,
) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= HEADER {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > max_record || bytes.len() - pos - HEADER < len {
            break;
        }
        let payload = &bytes[pos + HEADER..pos + HEADER + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(item) = decode(payload) else {
            break;
        };
        out.push(item);
        pos += HEADER + len;
    }
    (out, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_bad_record() {
        let mut buf = Vec::new();
        frame(b"one", &mut buf);
        frame(b"two", &mut buf);
        let good = buf.len();
        frame(b"three", &mut buf);
        buf.truncate(buf.len() - 1);
        let decode = |p: &[u8]| Some(p.to_vec());
        let (items, valid) = parse(&buf, 1024, decode);
        assert_eq!(items, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(valid, good);
        let mut bad = buf[..good].to_vec();
        bad[HEADER] ^= 1;
        assert_eq!(parse(&bad, 1024, decode), (vec![], 0));
        assert_eq!(parse(&buf[..good], 2, decode), (vec![], 0), "oversized");
    }
}
