//! AMQP 0-9-1 framing and primitive field codecs: splitting a byte stream into frames,
//! reading and writing integers, short/long strings and field tables. Everything here is
//! pure (no I/O) and every decoder returns an error instead of panicking on bad input.

use thiserror::Error;

/// Frame type of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes of framing around a payload: type (1), channel (2), size (4) and the end octet (1).
pub const FRAME_OVERHEAD: usize = 8;
/// The protocol header a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// A malformed or unexpected byte sequence from the peer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// A frame did not end with 0xCE.
    #[error("frame end octet is {found:#04x}, expected 0xce")]
    BadFrameEnd { found: u8 },
    /// A frame announced a payload larger than the negotiated maximum.
    #[error("frame payload of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge { size: u32, max: u32 },
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// The server answered the protocol header with its own protocol header (version mismatch).
    #[error("server rejected the protocol header and offered AMQP {0}.{1}.{2}")]
    ProtocolMismatch(u8, u8, u8),
    /// A field ran past the end of its frame payload.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field table holds a value type this decoder does not know.
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    /// A short string longer than 255 bytes was to be encoded.
    #[error("short string of {0} bytes exceeds 255")]
    ShortStrTooLong(usize),
    /// A frame arrived that the current protocol state does not allow.
    #[error("unexpected {0}")]
    Unexpected(String),
}

/// One frame borrowed from a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Frame type (`FRAME_METHOD`, ...).
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Payload between the header and the end octet.
    pub payload: &'a [u8],
}

/// Splits the next frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame, otherwise the frame and
/// the number of bytes it occupied. `max_payload` bounds the announced payload size so a
/// corrupt length cannot make the caller allocate without limit.
pub fn parse_frame(buf: &[u8], max_payload: u32) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    if buf.len() < 7 {
        // A server that dislikes our protocol header answers with its own 8-byte header.
        if buf.len() >= 4 && &buf[..4] == b"AMQP" {
            return if buf.len() >= 8 {
                Err(WireError::ProtocolMismatch(buf[5], buf[6], buf[7]))
            } else {
                Ok(None)
            };
        }
        return Ok(None);
    }
    if &buf[..4] == b"AMQP" {
        return if buf.len() >= 8 {
            Err(WireError::ProtocolMismatch(buf[5], buf[6], buf[7]))
        } else {
            Ok(None)
        };
    }
    let kind = buf[0];
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(WireError::UnknownFrameType(kind));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    if size > max_payload {
        return Err(WireError::FrameTooLarge {
            size,
            max: max_payload,
        });
    }
    let total = 7 + size as usize + 1;
    if buf.len() < total {
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(WireError::BadFrameEnd { found: end });
    }
    Ok(Some((
        Frame {
            kind,
            channel,
            payload: &buf[7..total - 1],
        },
        total,
    )))
}

/// Appends a whole frame whose payload is written by `body`; patches in the payload size.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, channel: u16, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let size_at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(FRAME_END);
}

/// Appends a heartbeat frame.
pub fn put_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Appends a short string (u8 length + bytes).
pub fn put_shortstr(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    let len = u8::try_from(s.len()).map_err(|_| WireError::ShortStrTooLong(s.len()))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends a long string (u32 length + bytes).
pub fn put_longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A value in a field table, limited to what this client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// 't'
    Bool(bool),
    /// 'l'
    I64(i64),
    /// 'S'
    LongStr(String),
    /// 'F'
    Table(Vec<(String, FieldValue)>),
}

/// Appends a field table (u32 byte length + name/value pairs).
pub fn put_table(out: &mut Vec<u8>, table: &[(String, FieldValue)]) -> Result<(), WireError> {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    for (name, value) in table {
        put_shortstr(out, name)?;
        match value {
            FieldValue::Bool(b) => {
                out.push(b't');
                out.push(u8::from(*b));
            }
            FieldValue::I64(v) => {
                out.push(b'l');
                out.extend_from_slice(&v.to_be_bytes());
            }
            FieldValue::LongStr(s) => {
                out.push(b'S');
                put_longstr(out, s.as_bytes());
            }
            FieldValue::Table(t) => {
                out.push(b'F');
                put_table(out, t)?;
            }
        }
    }
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A cursor over a frame payload whose reads fail with `Truncated` instead of panicking.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated(what))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(WireError::Truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    /// Reads a u8.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Reads a short string, replacing invalid UTF-8.
    pub fn shortstr(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u8(what)? as usize;
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    /// Skips a short string without allocating.
    pub fn skip_shortstr(&mut self, what: &'static str) -> Result<(), WireError> {
        let len = self.u8(what)? as usize;
        self.take(len, what).map(|_| ())
    }

    /// Reads a long string as raw bytes.
    pub fn longstr(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// Reads a field table, keeping only the string values (enough to show the server's
    /// product and version) but validating the whole structure.
    pub fn table_strings(
        &mut self,
        what: &'static str,
    ) -> Result<Vec<(String, String)>, WireError> {
        let bytes = self.longstr(what)?;
        let mut inner = Cursor::new(bytes);
        let mut out = Vec::new();
        while !inner.remaining().is_empty() {
            let name = inner.shortstr(what)?;
            if let Some(s) = inner.field_value(what)? {
                out.push((name, s));
            }
        }
        Ok(out)
    }

    /// Reads one field value; returns it as text if it is a string.
    fn field_value(&mut self, what: &'static str) -> Result<Option<String>, WireError> {
        let kind = self.u8(what)?;
        let skip = match kind {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' | b'U' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' => {
                let s = self.longstr(what)?;
                return Ok(Some(String::from_utf8_lossy(s).into_owned()));
            }
            b'x' | b'A' | b'F' => {
                // Arrays and nested tables are validated loosely: skipped by their length.
                self.longstr(what)?;
                return Ok(None);
            }
            other => return Err(WireError::UnknownFieldType(other)),
        };
        self.take(skip, what)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, kind, channel, |o| o.extend_from_slice(payload));
        out
    }

    #[test]
    fn frame_round_trip() {
        let bytes = frame_bytes(FRAME_METHOD, 7, b"hello");
        assert_eq!(
            bytes,
            [1, 0, 7, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0xCE]
        );
        let (frame, used) = parse_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            frame,
            Frame {
                kind: FRAME_METHOD,
                channel: 7,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = frame_bytes(FRAME_BODY, 1, &[9; 40]);
        for n in 0..bytes.len() {
            assert_eq!(parse_frame(&bytes[..n], 1024), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut bytes = frame_bytes(FRAME_HEADER, 1, b"ab");
        bytes.extend(frame_bytes(FRAME_HEARTBEAT, 0, b""));
        let (f1, n1) = parse_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(f1.payload, b"ab");
        let (f2, n2) = parse_frame(&bytes[n1..], 1024).unwrap().unwrap();
        assert_eq!(f2.kind, FRAME_HEARTBEAT);
        assert_eq!(n1 + n2, bytes.len());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut bytes = frame_bytes(FRAME_METHOD, 0, b"x");
        let last = bytes.len() - 1;
        bytes[last] = 0;
        assert_eq!(
            parse_frame(&bytes, 1024),
            Err(WireError::BadFrameEnd { found: 0 })
        );
        assert_eq!(
            parse_frame(&[9, 0, 0, 0, 0, 0, 0, 0xCE], 1024),
            Err(WireError::UnknownFrameType(9))
        );
        assert_eq!(
            parse_frame(&[1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF], 1024),
            Err(WireError::FrameTooLarge {
                size: u32::MAX,
                max: 1024
            })
        );
        assert_eq!(
            parse_frame(b"AMQP\x00\x00\x09\x01", 1024),
            Err(WireError::ProtocolMismatch(0, 9, 1))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator stands in for a fuzzer.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (state >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            let _ = parse_frame(&bytes, 64);
            let mut c = Cursor::new(&bytes);
            let _ = c.table_strings("t");
            let mut c = Cursor::new(&bytes);
            let _ = c.shortstr("s").and_then(|_| c.u64("u"));
        }
    }

    #[test]
    fn table_round_trip_keeps_strings() {
        let table = vec![
            (
                "product".to_string(),
                FieldValue::LongStr("RabbitMQ".into()),
            ),
            ("n".to_string(), FieldValue::I64(-3)),
            (
                "capabilities".to_string(),
                FieldValue::Table(vec![("basic.nack".into(), FieldValue::Bool(true))]),
            ),
            ("version".to_string(), FieldValue::LongStr("3.10".into())),
        ];
        let mut out = Vec::new();
        put_table(&mut out, &table).unwrap();
        let strings = Cursor::new(&out).table_strings("table").unwrap();
        assert_eq!(
            strings,
            vec![
                ("product".into(), "RabbitMQ".into()),
                ("version".into(), "3.10".into())
            ]
        );
        // Truncating anywhere is an error, never a panic.
        for n in 0..out.len() {
            assert!(
                Cursor::new(&out[..n]).table_strings("table").is_err(),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn shortstr_limits() {
        let mut out = Vec::new();
        assert_eq!(
            put_shortstr(&mut out, &"a".repeat(256)),
            Err(WireError::ShortStrTooLong(256))
        );
        put_shortstr(&mut out, "abc").unwrap();
        assert_eq!(Cursor::new(&out).shortstr("s").unwrap(), "abc");
    }
}
