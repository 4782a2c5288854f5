//! The one error type of the log layer, and its mapping onto the crate's [`StoreError`].

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ferrymq_core::queue::Offset;

use crate::StoreError;

/// Why bytes on disk were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Fewer bytes than a header or the announced payload: a torn write.
    Truncated,
    /// A length field above the configured maximum record size.
    TooLong(u32),
    /// The CRC32C does not match the bytes.
    BadCrc,
    /// A record carries another offset than its position in the segment implies.
    WrongOffset { expected: Offset, found: Offset },
    /// A header field (magic, base offset, sizes) is inconsistent.
    BadHeader,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Truncated => f.write_str("truncated"),
            Corruption::TooLong(n) => write!(f, "length {n} above the maximum"),
            Corruption::BadCrc => f.write_str("CRC32C mismatch"),
            Corruption::WrongOffset { expected, found } => {
                write!(f, "offset {found} where {expected} was expected")
            }
            Corruption::BadHeader => f.write_str("inconsistent header"),
        }
    }
}

/// Errors of the segmented log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error ({op}) on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: Corruption,
    },
    #[error("offset {offset} is not in the log (it holds {start}..{end} with gaps where segments were deleted)")]
    NoSuchOffset {
        offset: Offset,
        start: Offset,
        end: Offset,
    },
    #[error("record of {size} bytes exceeds the maximum of {max}")]
    RecordTooLarge { size: usize, max: u32 },
    #[error("an fsync or a failed write left the log in an unknown state; reopen it to recover")]
    Poisoned,
    #[error("invalid fsync policy {0:?} (expected always, never or interval:<ms>)")]
    BadPolicy(String),
    #[error("the group-commit inbox is full")]
    Busy,
    #[error("the group-commit thread has stopped")]
    Closed,
    #[error("the batch this write belonged to failed: {0}")]
    Batch(#[source] Arc<LogError>),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for "no space left on device", however deep it is wrapped.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => source.raw_os_error() == Some(28),
            LogError::Batch(inner) => inner.is_disk_full(),
            _ => false,
        }
    }
}

impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        if e.is_disk_full() {
            return StoreError::Full;
        }
        match e {
            LogError::Io { path, source, .. } => StoreError::Io {
                path: path.display().to_string(),
                source,
            },
            LogError::Corrupt { ref path, .. } => StoreError::Io {
                path: path.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            },
            other => StoreError::Io {
                path: String::new(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}
