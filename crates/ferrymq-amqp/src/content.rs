//! Content headers. The property list stays in its wire encoding (it is sent back to
//! consumers byte for byte); a scan pulls out the fields the broker acts on:
//! delivery-mode, priority, expiration and the headers table.

use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;

use crate::error::WireError;
use crate::method::{parse_bounded, table_depth, Cursor};

/// Property flag bits of the basic class, highest first.
pub mod flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const TYPE: u16 = 1 << 5;
    pub const USER_ID: u16 = 1 << 4;
    pub const APP_ID: u16 = 1 << 3;
    pub const CLUSTER_ID: u16 = 1 << 2;
}

/// A decoded content header, borrowing the frame's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader<'a> {
    pub class_id: u16,
    pub body_size: u64,
    /// Property flags and list, as received.
    pub raw_properties: &'a [u8],
    pub persistent: bool,
    pub priority: Option<u8>,
    pub expiration: Option<&'a [u8]>,
    pub reply_to: Option<&'a [u8]>,
    pub user_id: Option<&'a [u8]>,
    pub headers: Option<FieldTable>,
}

/// Decodes a content header frame's payload.
pub fn decode_content_header(payload: &[u8]) -> Result<ContentHeader<'_>, WireError> {
    let mut c = Cursor::new(payload);
    let class_id = c.u16("content header")?;
    c.u16("content header weight")?;
    let body_size = c.u64("content header body size")?;
    let props_start = c.pos;
    let mut flags = c.u16("property flags")?;
    let first = flags;
    // Further flag words (bit 0 = continuation) carry no basic-class properties.
    while flags & 1 != 0 {
        flags = c.u16("property flags")?;
    }
    let mut h = ContentHeader {
        class_id,
        body_size,
        raw_properties: &[],
        persistent: false,
        priority: None,
        expiration: None,
        reply_to: None,
        user_id: None,
        headers: None,
    };
    let short =
        |c: &mut Cursor<'_>, f: u16, what| -> Result<Option<std::ops::Range<usize>>, WireError> {
            if first & f != 0 {
                Ok(Some(c.short_str(what)?))
            } else {
                Ok(None)
            }
        };
    short(&mut c, flag::CONTENT_TYPE, "content-type")?;
    short(&mut c, flag::CONTENT_ENCODING, "content-encoding")?;
    if first & flag::HEADERS != 0 {
        let len = c.u32("headers")? as usize;
        let start = c.pos - 4;
        c.take(len, "headers")?;
        let raw = &payload[start..c.pos];
        let table = parse_bounded(
            raw.len(),
            || parse_field_table(raw).ok().map(|t| t.1),
            table_depth,
        )
        .ok_or(WireError::Syntax("headers table"))?
        .map_err(|()| WireError::Syntax("headers table nested too deeply"))?;
        h.headers = Some(table);
    }
    if first & flag::DELIVERY_MODE != 0 {
        h.persistent = c.u8("delivery-mode")? == 2;
    }
    if first & flag::PRIORITY != 0 {
        h.priority = Some(c.u8("priority")?);
    }
    short(&mut c, flag::CORRELATION_ID, "correlation-id")?;
    h.reply_to = short(&mut c, flag::REPLY_TO, "reply-to")?.map(|r| &payload[r]);
    h.expiration = short(&mut c, flag::EXPIRATION, "expiration")?.map(|r| &payload[r]);
    short(&mut c, flag::MESSAGE_ID, "message-id")?;
    if first & flag::TIMESTAMP != 0 {
        c.u64("timestamp")?;
    }
    short(&mut c, flag::TYPE, "type")?;
    h.user_id = short(&mut c, flag::USER_ID, "user-id")?.map(|r| &payload[r]);
    short(&mut c, flag::APP_ID, "app-id")?;
    short(&mut c, flag::CLUSTER_ID, "cluster-id")?;
    h.raw_properties = &payload[props_start..c.pos];
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_properties() {
        // class 60, weight 0, size 5, flags: content-type, delivery-mode, expiration
        let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        let flags = flag::CONTENT_TYPE | flag::DELIVERY_MODE | flag::EXPIRATION;
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[4, b'j', b's', b'o', b'n', 2, 3, b'1', b'0', b'0']);
        let h = decode_content_header(&p).unwrap();
        assert_eq!(h.body_size, 5);
        assert!(h.persistent);
        assert_eq!(h.expiration, Some(&b"100"[..]));
        assert_eq!(h.raw_properties, &p[12..]);
        // truncated property list
        assert!(decode_content_header(&p[..p.len() - 1]).is_err());
    }

    #[test]
    fn headers_table() {
        let mut p = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&flag::HEADERS.to_be_bytes());
        let entry = [1, b'k', b's', 0, 7];
        p.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        p.extend_from_slice(&entry);
        let h = decode_content_header(&p).unwrap();
        assert!(h.headers.unwrap().contains_key("k"));
    }
}
