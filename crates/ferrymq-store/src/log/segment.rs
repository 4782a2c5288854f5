//! One segment of the log: a `.seg` file of framed records with consecutive offsets
//! starting at the base offset in its name, the active segment's small write buffer, its
//! sparse index and its ack bookkeeping. Also the cursor that walks records in a segment
//! by reading chunks at positions (page cache), and the recovery scan built on it.

use std::path::{Path, PathBuf};

use ferrymq_core::queue::Offset;

use super::ack::AckSet;
use super::backend::BackendFile;
use super::error::{Corruption, LogError};
use super::index::SparseIndex;
use super::record::{self, Decoded};

/// File name of the segment, index or ack file of the segment starting at `base`.
pub fn file_name(base: Offset, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// Parses `00000000000000000042.seg` into `(42, "seg")`.
pub fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// A segment and everything the log knows about it.
pub struct Segment<F> {
    pub base: Offset,
    /// One past the last record's offset.
    pub next: Offset,
    pub file: F,
    pub path: PathBuf,
    /// Bytes already handed to the file.
    pub flushed: u64,
    /// Framed records appended but not yet written (active segment only).
    pub buf: Vec<u8>,
    /// Bytes of the file known durable.
    pub synced: u64,
    pub index: SparseIndex,
    /// A sealed segment is complete and durable; only the last segment is not sealed.
    pub sealed: bool,
    pub acks: AckSet,
    /// The `.ack` file, opened or created on first use, and its length.
    pub ack_file: Option<(F, u64)>,
    pub ack_dirty: bool,
}

impl<F: BackendFile> Segment<F> {
    /// Logical length: file plus write buffer.
    pub fn len(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.next - self.base
    }

    /// True once every record is acked.
    pub fn all_acked(&self) -> bool {
        self.acks.len() >= self.count()
    }

    /// Fills `out` from position `pos`, from the file and then the write buffer.
    pub fn read_bytes(&self, pos: u64, out: &mut [u8]) -> Result<(), LogError> {
        let mut done = 0usize;
        if pos < self.flushed {
            let n = (out.len() as u64).min(self.flushed - pos) as usize;
            self.file
                .read_exact_at(&mut out[..n], pos)
                .map_err(|e| LogError::io("read", &self.path, e))?;
            done = n;
        }
        if done < out.len() {
            let from = (pos + done as u64).saturating_sub(self.flushed) as usize;
            let src = from
                .checked_add(out.len() - done)
                .and_then(|to| self.buf.get(from..to))
                .ok_or_else(|| LogError::Corrupt {
                    path: self.path.clone(),
                    position: pos,
                    reason: Corruption::Truncated,
                })?;
            out[done..].copy_from_slice(src);
        }
        Ok(())
    }
}

/// A record found by a [`Cursor`]; its payload stays in the cursor's chunk.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub offset: Offset,
    pub timestamp: i64,
    pub position: u64,
    pub frame_len: u64,
    payload_at: usize,
    payload_len: usize,
}

/// Walks records forward from a position, reading the segment in chunks.
#[derive(Debug)]
pub struct Cursor {
    pub pos: u64,
    chunk: Vec<u8>,
    chunk_pos: u64,
    chunk_size: usize,
}

impl Cursor {
    /// A cursor at byte `pos` reading `chunk_size` bytes at a time.
    pub fn new(pos: u64, chunk_size: usize) -> Self {
        Cursor {
            pos,
            chunk: Vec::new(),
            chunk_pos: pos,
            chunk_size: chunk_size.max(record::HEADER_LEN),
        }
    }

    /// The payload of a record this cursor just returned.
    pub fn payload(&self, found: &Found) -> &[u8] {
        self.chunk
            .get(found.payload_at..found.payload_at + found.payload_len)
            .unwrap_or_default()
    }

    /// The next record, `None` at the end of the segment, or `LogError::Corrupt` at a torn
    /// or damaged record (the cursor stays before it).
    pub fn next<F: BackendFile>(
        &mut self,
        seg: &Segment<F>,
        max_len: u32,
    ) -> Result<Option<Found>, LogError> {
        let end = seg.len();
        if self.pos >= end {
            return Ok(None);
        }
        let corrupt = |position, reason| LogError::Corrupt {
            path: seg.path.clone(),
            position,
            reason,
        };
        loop {
            let chunk_end = self.chunk_pos + self.chunk.len() as u64;
            if self.pos < self.chunk_pos || self.pos > chunk_end {
                self.chunk.clear();
                self.chunk_pos = self.pos;
            }
            let at = (self.pos - self.chunk_pos) as usize;
            match record::decode(&self.chunk[at..], max_len) {
                Ok(Decoded::Record(r, n)) => {
                    let found = Found {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        position: self.pos,
                        frame_len: n,
                        payload_at: at + record::HEADER_LEN,
                        payload_len: r.payload.len(),
                    };
                    self.pos += n;
                    return Ok(Some(found));
                }
                Ok(Decoded::Incomplete(need)) => {
                    if self.pos + need > end {
                        return Err(corrupt(self.pos, Corruption::Truncated));
                    }
                    if (self.chunk.len() - at) as u64 >= need {
                        // Cannot happen: decode had the bytes it asked for.
                        return Err(corrupt(self.pos, Corruption::Truncated));
                    }
                    let want = need.max(self.chunk_size as u64).min(end - self.pos) as usize;
                    self.chunk.resize(want, 0);
                    self.chunk_pos = self.pos;
                    seg.read_bytes(self.pos, &mut self.chunk)?;
                }
                Err(reason) => return Err(corrupt(self.pos, reason)),
            }
        }
    }

    /// Advances to the record with offset `target`, which must be at or after the
    /// cursor's record `current`. Returns it, or `None` if the segment ends first.
    pub fn seek<F: BackendFile>(
        &mut self,
        seg: &Segment<F>,
        max_len: u32,
        mut current: Offset,
        target: Offset,
    ) -> Result<Option<Found>, LogError> {
        while let Some(found) = self.next(seg, max_len)? {
            if found.offset != current {
                return Err(LogError::Corrupt {
                    path: seg.path.clone(),
                    position: found.position,
                    reason: Corruption::WrongOffset {
                        expected: current,
                        found: found.offset,
                    },
                });
            }
            if current == target {
                return Ok(Some(found));
            }
            current += 1;
        }
        Ok(None)
    }
}

/// What a recovery scan found in a segment.
#[derive(Debug)]
pub struct Scan {
    pub index: SparseIndex,
    pub next: Offset,
    /// Bytes of valid records from the start.
    pub valid_len: u64,
    /// The first bad record, if the segment does not end cleanly.
    pub damage: Option<(u64, Corruption)>,
}

/// Reads every record of `seg` from the start, checking framing, CRCs and offsets.
pub fn scan<F: BackendFile>(
    seg: &Segment<F>,
    max_len: u32,
    interval: u32,
) -> Result<Scan, LogError> {
    let mut index = SparseIndex::new(interval);
    let mut cursor = Cursor::new(0, 1 << 20);
    let mut next = seg.base;
    let mut valid_len = 0;
    let mut damage = None;
    loop {
        match cursor.next(seg, max_len) {
            Ok(Some(found)) => {
                if found.offset != next {
                    let reason = Corruption::WrongOffset {
                        expected: next,
                        found: found.offset,
                    };
                    damage = Some((found.position, reason));
                    break;
                }
                let rel = u32::try_from(next - seg.base).unwrap_or(u32::MAX);
                index.on_append(rel, found.position, found.frame_len, found.timestamp);
                next += 1;
                valid_len = found.position + found.frame_len;
            }
            Ok(None) => break,
            Err(LogError::Corrupt {
                position, reason, ..
            }) => {
                damage = Some((position, reason));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Scan {
        index,
        next,
        valid_len,
        damage,
    })
}

/// Path of a segment's file with extension `ext` in `dir`.
pub fn path_in(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(file_name(base, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_twenty_digits() {
        assert_eq!(file_name(42, "seg"), "00000000000000000042.seg");
        assert_eq!(
            parse_file_name("00000000000000000042.seg"),
            Some((42, "seg"))
        );
        assert_eq!(
            parse_file_name(&file_name(u64::MAX, "ack")),
            Some((u64::MAX, "ack"))
        );
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_file_name("99999999999999999999.seg"), None);
        assert_eq!(parse_file_name("lock"), None);
    }
}
