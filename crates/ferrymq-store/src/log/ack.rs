//! Ack tracking for queue semantics. Each segment has an append-only `.ack` file listing
//! the offsets acked in it, one 8-byte self-checking entry per ack, in the order the acks
//! were written:
//!
//! ```text
//! 0  rel offset  u32 LE   offset - segment base
//! 4  crc32c      u32 LE   over base offset (u64 LE) ‖ rel offset (u32 LE)
//! ```
//!
//! Why a list and not a bitmap: acks arrive in any order, and a bitmap updated in place
//! rewrites bytes that were already durable, so a torn sector could lose acks that had
//! been synced long ago. An append-only list never touches durable bytes; a torn tail
//! only loses the unsynced entries at its end, which are detected by their CRC. It costs
//! 8 bytes per ack, and a segment's list dies with the segment once all of it is acked.
//! Mixing the base offset into the CRC catches an ack file paired with the wrong segment.
//!
//! In memory each segment keeps a bitmap (one bit per record) rebuilt from the list.

use ferrymq_core::queue::Offset;

/// Bytes per entry in a `.ack` file.
pub const ENTRY_LEN: usize = 8;

/// Encodes the entry for relative offset `rel` of the segment starting at `base`.
pub fn encode_entry(out: &mut Vec<u8>, base: Offset, rel: u32) {
    out.extend_from_slice(&rel.to_le_bytes());
    out.extend_from_slice(&entry_crc(base, rel).to_le_bytes());
}

fn entry_crc(base: Offset, rel: u32) -> u32 {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&base.to_le_bytes());
    b[8..].copy_from_slice(&rel.to_le_bytes());
    crc32c::crc32c(&b)
}

/// Decodes the valid prefix of a `.ack` file: the relative offsets, and the byte length
/// of the valid prefix (anything after it is a torn or corrupt tail). Never panics.
pub fn decode(buf: &[u8], base: Offset) -> (Vec<u32>, usize) {
    let mut rels = Vec::with_capacity(buf.len() / ENTRY_LEN);
    for chunk in buf.chunks_exact(ENTRY_LEN) {
        let rel = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let crc = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        if crc != entry_crc(base, rel) {
            break;
        }
        rels.push(rel);
    }
    let valid = rels.len() * ENTRY_LEN;
    (rels, valid)
}

/// Which records of one segment are acked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSet {
    bits: Vec<u64>,
    acked: u64,
}

impl AckSet {
    /// Marks `rel`; returns false if it already was.
    pub fn insert(&mut self, rel: u32) -> bool {
        let (word, bit) = ((rel / 64) as usize, rel % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let was = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        if !was {
            self.acked += 1;
        }
        !was
    }

    /// Whether `rel` is acked.
    pub fn contains(&self, rel: u32) -> bool {
        self.bits
            .get((rel / 64) as usize)
            .is_some_and(|w| w & (1 << (rel % 64)) != 0)
    }

    /// How many records are acked.
    pub fn len(&self) -> u64 {
        self.acked
    }

    /// True if nothing is acked.
    pub fn is_empty(&self) -> bool {
        self.acked == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_stop_at_damage() {
        let mut buf = Vec::new();
        for rel in [5, 0, 3, 1_000_000] {
            encode_entry(&mut buf, 77, rel);
        }
        assert_eq!(decode(&buf, 77), (vec![5, 0, 3, 1_000_000], 32));
        // Wrong segment: nothing is valid.
        assert_eq!(decode(&buf, 78).0, Vec::<u32>::new());
        // Torn tail.
        assert_eq!(decode(&buf[..29], 77), (vec![5, 0, 3], 24));
        // A flipped bit in the third entry hides it and everything after.
        let mut bad = buf.clone();
        bad[17] ^= 4;
        assert_eq!(decode(&bad, 77), (vec![5, 0], 16));
    }

    #[test]
    fn ack_set_counts_distinct() {
        let mut s = AckSet::default();
        assert!(s.insert(3));
        assert!(!s.insert(3));
        assert!(s.insert(200));
        assert!(s.contains(3) && s.contains(200) && !s.contains(4) && !s.contains(10_000));
        assert_eq!(s.len(), 2);
    }
}
