//! Frame splitting: `type:u8 channel:u16 size:u32 payload[size] 0xCE`.

use crate::error::WireError;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Bytes of framing around a payload.
pub const FRAME_OVERHEAD: usize = 8;

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub kind: u8,
    pub channel: u16,
    pub size: u32,
}

/// Looks at the start of `buf`: `Ok(None)` if a whole frame has not arrived yet, otherwise
/// the frame's head (its payload is `buf[7..7 + size]`, and the frame takes
/// `size + FRAME_OVERHEAD` bytes). `max_frame` bounds the whole frame, as `frame_max` does.
pub fn peek_frame(buf: &[u8], max_frame: u32) -> Result<Option<FrameHead>, WireError> {
    if buf.len() < 7 {
        return Ok(None);
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
    if max_frame != 0 && (size as u64 + FRAME_OVERHEAD as u64) > max_frame as u64 {
        return Err(WireError::FrameTooLarge {
            size,
            max: max_frame,
        });
    }
    let total = size as usize + FRAME_OVERHEAD;
    if buf.len() < total {
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(WireError::BadFrameEnd(end));
    }
    Ok(Some(FrameHead {
        kind,
        channel,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames() {
        let f = [1, 0, 5, 0, 0, 0, 2, 9, 9, 0xCE, 8];
        assert_eq!(peek_frame(&f[..5], 0), Ok(None));
        assert_eq!(peek_frame(&f[..9], 0), Ok(None));
        assert_eq!(
            peek_frame(&f, 0),
            Ok(Some(FrameHead {
                kind: 1,
                channel: 5,
                size: 2
            }))
        );
        assert_eq!(
            peek_frame(&f, 9),
            Err(WireError::FrameTooLarge { size: 2, max: 9 })
        );
        assert_eq!(
            peek_frame(&[1, 0, 0, 0, 0, 0, 0, 0x00], 0),
            Err(WireError::BadFrameEnd(0))
        );
        assert_eq!(
            peek_frame(&[7, 0, 0, 0, 0, 0, 0, 0xCE], 0),
            Err(WireError::UnknownFrameType(7))
        );
    }
}
