//! The sparse index of a segment: one entry every `interval` bytes of records, mapping a
//! relative offset to its byte position (offset index) and carrying the largest timestamp
//! of all records before it (time index). Both columns grow monotonically, so both
//! lookups are binary searches followed by a short forward scan of at most `interval`
//! bytes in the segment.
//!
//! The index of the active segment lives only in memory. When a segment is sealed its
//! index is written once to a `.idx` file, protected by one CRC32C; on open a missing,
//! torn or stale `.idx` is rebuilt by scanning the segment.
//!
//! `.idx` layout (little-endian):
//! ```text
//! 0   magic "FMQIDX01"        8 bytes
//! 8   base offset             u64
//! 16  next offset (end)       u64   base + number of records
//! 24  segment length          u64   bytes of the .seg file it describes
//! 32  max timestamp           i64   i64::MIN if the segment is empty
//! 40  interval                u32
//! 44  entry count n           u32
//! 48  n × entry (16 bytes):   rel offset u32, position u32, max timestamp before i64
//! 48+16n crc32c               u32   over bytes 0..48+16n
//! ```

use ferrymq_core::queue::Offset;

use super::error::Corruption;

/// Magic at the start of a `.idx` file.
pub const MAGIC: &[u8; 8] = b"FMQIDX01";
const HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 16;

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record, relative to the segment's base offset.
    pub rel_offset: u32,
    /// Byte position of the record in the segment file.
    pub position: u32,
    /// Largest timestamp of the records before this one in the segment (`i64::MIN` if none).
    pub max_ts_before: i64,
}

/// The in-memory sparse index of one segment, together with the segment's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseIndex {
    entries: Vec<IndexEntry>,
    interval: u32,
    since_last: u64,
    max_ts: i64,
}

impl SparseIndex {
    /// An empty index adding an entry every `interval` bytes.
    pub fn new(interval: u32) -> Self {
        SparseIndex {
            entries: Vec::new(),
            interval: interval.max(1),
            since_last: 0,
            max_ts: i64::MIN,
        }
    }

    /// Notes a record appended at `position` with relative offset `rel`.
    pub fn on_append(&mut self, rel: u32, position: u64, frame_len: u64, timestamp: i64) {
        if position > 0 && self.since_last >= u64::from(self.interval) {
            if let Ok(position) = u32::try_from(position) {
                self.entries.push(IndexEntry {
                    rel_offset: rel,
                    position,
                    max_ts_before: self.max_ts,
                });
                self.since_last = 0;
            }
        }
        self.since_last += frame_len;
        self.max_ts = self.max_ts.max(timestamp);
    }

    /// Largest timestamp in the segment (`i64::MIN` if empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_ts
    }

    /// The entries (for tests and the file encoder).
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Where to start scanning for relative offset `rel`: `(rel_offset, position)` of the
    /// last entry at or before it, or the start of the segment.
    pub fn floor(&self, rel: u32) -> (u32, u64) {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel);
        match i.checked_sub(1) {
            Some(i) => (
                self.entries[i].rel_offset,
                u64::from(self.entries[i].position),
            ),
            None => (0, 0),
        }
    }

    /// Where to start scanning for the first record with timestamp `>= ts`: the last entry
    /// all of whose predecessors are older than `ts`.
    pub fn floor_time(&self, ts: i64) -> (u32, u64) {
        let i = self.entries.partition_point(|e| e.max_ts_before < ts);
        match i.checked_sub(1) {
            Some(i) => (
                self.entries[i].rel_offset,
                u64::from(self.entries[i].position),
            ),
            None => (0, 0),
        }
    }

    /// Serializes the index of a sealed segment into the `.idx` format.
    pub fn encode(&self, base: Offset, next: Offset, segment_len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&next.to_le_bytes());
        out.extend_from_slice(&segment_len.to_le_bytes());
        out.extend_from_slice(&self.max_ts.to_le_bytes());
        out.extend_from_slice(&self.interval.to_le_bytes());
        let n = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for e in self.entries.iter().take(n as usize) {
            out.extend_from_slice(&e.rel_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&e.max_ts_before.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a `.idx` file. Returns the index, the next offset and the segment length it
    /// describes. Never panics.
    pub fn decode(buf: &[u8], base: Offset) -> Result<(SparseIndex, Offset, u64), Corruption> {
        let u64_at = |at: usize| -> Result<u64, Corruption> {
            buf.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(Corruption::Truncated)
        };
        let u32_at = |at: usize| -> Result<u32, Corruption> {
            buf.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or(Corruption::Truncated)
        };
        if buf.len() < HEADER_LEN + 4 {
            return Err(Corruption::Truncated);
        }
        let body_len = buf.len() - 4;
        if crc32c::crc32c(&buf[..body_len]) != u32_at(body_len)? {
            return Err(Corruption::BadCrc);
        }
        if &buf[..8] != MAGIC || u64_at(8)? != base {
            return Err(Corruption::BadHeader);
        }
        let next = u64_at(16)?;
        let segment_len = u64_at(24)?;
        let max_ts = u64_at(32)? as i64;
        let interval = u32_at(40)?;
        let n = u32_at(44)? as usize;
        let expected_len = n
            .checked_mul(ENTRY_LEN)
            .and_then(|e| e.checked_add(HEADER_LEN));
        if next < base || expected_len != Some(body_len) || interval == 0 {
            return Err(Corruption::BadHeader);
        }
        let mut entries = Vec::with_capacity(n);
        let mut prev: Option<IndexEntry> = None;
        for i in 0..n {
            let at = HEADER_LEN + i * ENTRY_LEN;
            let e = IndexEntry {
                rel_offset: u32_at(at)?,
                position: u32_at(at + 4)?,
                max_ts_before: u64_at(at + 8)? as i64,
            };
            let ordered = match prev {
                None => true,
                Some(p) => {
                    p.rel_offset < e.rel_offset
                        && p.position < e.position
                        && p.max_ts_before <= e.max_ts_before
                }
            };
            if !ordered
                || u64::from(e.rel_offset) >= next - base
                || u64::from(e.position) >= segment_len
            {
                return Err(Corruption::BadHeader);
            }
            entries.push(e);
            prev = Some(e);
        }
        let index = SparseIndex {
            entries,
            interval,
            since_last: 0,
            max_ts,
        };
        Ok((index, next, segment_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an index over records of the given (size, timestamp) and returns it with
    /// each record's position.
    fn build(interval: u32, records: &[(u64, i64)]) -> (SparseIndex, Vec<u64>) {
        let mut idx = SparseIndex::new(interval);
        let mut pos = 0;
        let mut positions = Vec::new();
        for (rel, &(size, ts)) in records.iter().enumerate() {
            idx.on_append(rel as u32, pos, size, ts);
            positions.push(pos);
            pos += size;
        }
        (idx, positions)
    }

    #[test]
    fn an_entry_every_interval_bytes() {
        let recs = vec![(40, 0); 10];
        let (idx, _) = build(100, &recs);
        // Records at 0,40,80 | 120 (entry: 120 bytes since start) ...
        let rels: Vec<u32> = idx.entries().iter().map(|e| e.rel_offset).collect();
        assert_eq!(rels, vec![3, 6, 9]);
        assert_eq!(idx.entries()[0].position, 120);
    }

    #[test]
    fn floor_never_overshoots_and_scan_is_bounded() {
        let recs: Vec<(u64, i64)> = (0..200).map(|i| (24 + (i * 7) % 50, i as i64)).collect();
        let (idx, positions) = build(128, &recs);
        for rel in 0..200u32 {
            let (start_rel, start_pos) = idx.floor(rel);
            assert!(start_rel <= rel);
            assert_eq!(positions[start_rel as usize], start_pos);
            let gap = positions[rel as usize] - start_pos;
            assert!(gap < 128 + 74, "scan of {gap} bytes for {rel}");
        }
    }

    #[test]
    fn time_floor_with_non_monotonic_timestamps() {
        let ts = [5, 3, 9, 1, 12, 7, 7, 20, 2, 15, 30, 4];
        let recs: Vec<(u64, i64)> = ts.iter().map(|&t| (30, t)).collect();
        let (idx, positions) = build(50, &recs);
        for target in -1..35 {
            let first = ts.iter().position(|&t| t >= target);
            let (start_rel, start_pos) = idx.floor_time(target);
            assert_eq!(positions[start_rel as usize], start_pos);
            if let Some(first) = first {
                assert!(start_rel as usize <= first, "target {target}");
            }
            assert!(ts[..start_rel as usize].iter().all(|&t| t < target));
        }
        assert_eq!(idx.max_timestamp(), 30);
    }

    #[test]
    fn garbage_index_files_never_panic() {
        let mut rng = crate::log::fault::SimRng::new(9);
        for _ in 0..5000 {
            let len = rng.up_to(200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if len >= 52 {
                buf[..8].copy_from_slice(MAGIC);
                let body = len - 4;
                let crc = crc32c::crc32c(&buf[..body]);
                buf[body..].copy_from_slice(&crc.to_le_bytes());
            }
            let _ = SparseIndex::decode(&buf, 0);
        }
    }

    #[test]
    fn file_round_trip_and_rejects_damage() {
        let recs: Vec<(u64, i64)> = (0..50).map(|i| (60, i)).collect();
        let (idx, _) = build(200, &recs);
        let bytes = idx.encode(1000, 1050, 3000);
        let (back, next, len) = SparseIndex::decode(&bytes, 1000).unwrap();
        assert_eq!((next, len), (1050, 3000));
        assert_eq!(back.entries(), idx.entries());
        assert_eq!(back.max_timestamp(), 49);
        assert!(SparseIndex::decode(&bytes, 999).is_err());
        for cut in 0..bytes.len() {
            assert!(SparseIndex::decode(&bytes[..cut], 1000).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(SparseIndex::decode(&bad, 1000).is_err(), "byte {i}");
        }
    }
}
