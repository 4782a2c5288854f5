//! Log compaction (`cleanup.policy=compact`): keep only the latest record of each key.
//! Pure: the partition task's background pass feeds it stored batches. An [`OffsetMap`]
//! collects the last offset of each key over the batches being cleaned (skipping control
//! batches and aborted transactions' batches); [`clean_batch`] rebuilds one batch
//! without the records a later one supersedes, without an aborted transaction's records,
//! and without tombstones once their segment's `delete.retention.ms` has run out. A
//! rebuilt batch keeps its codec; one left with no records becomes a header-only batch
//! that keeps its base offset, last offset delta and producer fields (as Kafka keeps
//! empty batches), so offsets never move (recovery does not count an emptied batch as
//! part of a transaction). Records without a key are kept; markers are kept by [`clean_batch`] (the
//! pass replaces a COMMIT marker it may remove with [`removed_marker`]).
//! [`should_clean`] is `min.cleanable.dirty.ratio`, [`tombstones_expired`] the
//! `delete.retention.ms` rule. Batches are decoded with `kafka-protocol` (it allocates per
//! record: this runs on a background thread, never on the produce path).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::batch::{self, HEADER_LEN, LOG_OVERHEAD};

/// Dirty bytes over all bytes cleanable (clean + dirty); 0 with nothing.
pub fn dirty_ratio(clean_bytes: u64, dirty_bytes: u64) -> f64 {
    let total = clean_bytes + dirty_bytes;
    if total == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total as f64
    }
}

/// `min.cleanable.dirty.ratio`: whether a pass is due (some dirty bytes, and their share
/// at or above the ratio).
pub fn should_clean(clean_bytes: u64, dirty_bytes: u64, min_ratio: f64) -> bool {
    dirty_bytes > 0 && dirty_ratio(clean_bytes, dirty_bytes) >= min_ratio
}

/// `delete.retention.ms`: tombstones of a segment first cleaned at `first_cleaned_ms` may
/// be removed by a pass at `now_ms` (Kafka's rule: kept at least that long after the
/// segment holding them was cleaned, so a consumer reading from the start sees them).
pub fn tombstones_expired(first_cleaned_ms: i64, now_ms: i64, delete_retention_ms: i64) -> bool {
    now_ms >= first_cleaned_ms.saturating_add(delete_retention_ms.max(0))
}

/// Bytes one offset map entry costs (Kafka's `SkimpyOffsetMap`: a 16-byte MD5 of the key
/// and an 8-byte offset).
pub const ENTRY_BYTES: usize = 24;

/// Share of the slots a map fills before it counts as full (Kafka's
/// `log.cleaner.io.buffer.load.factor`).
pub const LOAD_FACTOR: f64 = 0.9;

/// Kafka's `log.cleaner.dedupe.buffer.size` default: the memory for the offset map of the
/// one pass that runs at a time.
pub const DEFAULT_DEDUPE_BUFFER_BYTES: usize = 128 << 20;

/// Slots a map starts with (it doubles up to its buffer as keys come).
const INITIAL_SLOTS: usize = 1024;

fn digest(key: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(key).into()
}

/// The last offset of each key among the batches added, aborted ones left out: an
/// open-addressing table of (MD5 of the key, offset) slots, as Kafka's, bounded by a
/// buffer of bytes. It starts small and doubles; once it holds `LOAD_FACTOR` of the
/// buffer's slots it is full and [`OffsetMap::add`] refuses further batches, so a pass
/// maps the dirty part of a log only as far as the buffer allows (the next pass goes on
/// from there). The first batch is always taken, even past the buffer, so a pass never
/// makes no progress.
#[derive(Debug, Clone)]
pub struct OffsetMap {
    digests: Vec<[u8; 16]>,
    /// Offset + 1 per slot; 0: an empty slot (so a new table is zeroed memory).
    offsets: Vec<i64>,
    len: usize,
    max_slots: usize,
}

impl Default for OffsetMap {
    fn default() -> OffsetMap {
        OffsetMap::new(DEFAULT_DEDUPE_BUFFER_BYTES)
    }
}

impl OffsetMap {
    /// An empty map that may use `buffer_bytes` (at least one slot).
    pub fn new(buffer_bytes: usize) -> OffsetMap {
        let max_slots = (buffer_bytes / ENTRY_BYTES).max(1);
        let slots = INITIAL_SLOTS.min(max_slots);
        OffsetMap {
            digests: vec![[0; 16]; slots],
            offsets: vec![0; slots],
            len: 0,
            max_slots,
        }
    }

    /// Keys the map holds at most (before the first batch's exception).
    pub fn capacity(&self) -> usize {
        ((self.max_slots as f64 * LOAD_FACTOR) as usize).max(1)
    }

    /// Bytes of its slots now.
    pub fn memory_bytes(&self) -> usize {
        self.digests.len() * ENTRY_BYTES
    }

    /// Takes one stored batch (in log order). `aborted`: it belongs to an aborted
    /// transaction, so none of its records supersedes anything. Returns false, adding
    /// nothing, if the map is not empty and the batch's keys might not fit: the map is full.
    pub fn add(&mut self, stored: &[u8], aborted: bool) -> bool {
        let Ok(header) = batch::parse_header(stored) else {
            return true;
        };
        if aborted || header.is_control() || header.record_count == 0 {
            return true;
        }
        let mut buf = Bytes::copy_from_slice(stored);
        let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
            return true;
        };
        let keyed = set.records.iter().filter(|r| r.key.is_some()).count();
        if self.len > 0 && self.len + keyed > self.capacity() {
            return false;
        }
        for r in set.records {
            if let Some(key) = r.key {
                self.put(&digest(&key), r.offset);
            }
        }
        true
    }

    fn slot_of(&self, d: &[u8; 16]) -> usize {
        let n = self.digests.len();
        let h = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let mut i = (h % n as u64) as usize;
        // The load stays under LOAD_FACTOR, so an empty slot ends the probe.
        while self.offsets[i] != 0 && &self.digests[i] != d {
            i = (i + 1) % n;
        }
        i
    }

    fn put(&mut self, d: &[u8; 16], offset: i64) {
        // Grow (doubling) before the load passes the factor; past the buffer only for the
        // first batch (`add` refuses batches that do not fit otherwise).
        if (self.len + 1) as f64 > self.digests.len() as f64 * LOAD_FACTOR {
            self.grow();
        }
        let i = self.slot_of(d);
        if self.offsets[i] == 0 {
            self.len += 1;
            self.digests[i] = *d;
        }
        self.offsets[i] = offset + 1;
    }

    fn grow(&mut self) {
        let now = self.digests.len();
        let slots = if now < self.max_slots {
            (now * 2).min(self.max_slots)
        } else {
            now * 2
        };
        let old_d = std::mem::replace(&mut self.digests, vec![[0; 16]; slots]);
        let old_o = std::mem::replace(&mut self.offsets, vec![0; slots]);
        for (d, o) in old_d.iter().zip(old_o) {
            if o != 0 {
                let i = self.slot_of(d);
                self.digests[i] = *d;
                self.offsets[i] = o;
            }
        }
    }

    /// The last offset of `key`, if seen.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        let i = self.slot_of(&digest(key));
        (self.offsets[i] != 0).then(|| self.offsets[i] - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The last offset of each key in `batches` (none aborted; the default buffer).
pub fn latest_offsets<'a>(batches: impl IntoIterator<Item = &'a [u8]>) -> OffsetMap {
    let mut map = OffsetMap::default();
    for b in batches {
        map.add(b, false);
    }
    map
}

/// What [`clean_batch`] made of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cleaned {
    /// The replacement, `None` to keep the batch as it is.
    pub batch: Option<Vec<u8>>,
    /// Tombstones still in the batch after cleaning.
    pub tombstones: usize,
}

fn compression_of(attributes: i16) -> Compression {
    match attributes & 0x7 {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Cleans one stored batch: drops records a later one of their key supersedes, every
/// record of an `aborted` transaction's batch, and tombstones if `drop_tombstones`.
/// Control batches are kept. A batch that cannot be decoded is kept as it is.
pub fn clean_batch(
    stored: &[u8],
    map: &OffsetMap,
    aborted: bool,
    drop_tombstones: bool,
) -> Cleaned {
    let Ok(header) = batch::parse_header(stored) else {
        return Cleaned::default();
    };
    if header.is_control() || header.record_count == 0 {
        return Cleaned::default();
    }
    if aborted {
        return Cleaned {
            batch: Some(empty_batch(stored)),
            tombstones: 0,
        };
    }
    let mut buf = Bytes::copy_from_slice(stored);
    let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
        return Cleaned::default();
    };
    let total = set.records.len();
    let mut kept: Vec<_> = set
        .records
        .into_iter()
        .filter(|r| match &r.key {
            Some(k) => {
                map.latest(k).map_or(true, |o| o <= r.offset)
                    && !(drop_tombstones && r.value.is_none())
            }
            None => true,
        })
        .collect();
    let tombstones = kept
        .iter()
        .filter(|r| r.key.is_some() && r.value.is_none())
        .count();
    if kept.len() == total {
        return Cleaned {
            batch: None,
            tombstones,
        };
    }
    if kept.is_empty() {
        return Cleaned {
            batch: Some(empty_batch(stored)),
            tombstones: 0,
        };
    }
    // The encoder keeps records in one batch only while offset - sequence is constant.
    let first_offset = kept[0].offset;
    let first_seq = kept[0].sequence;
    for r in kept.iter_mut() {
        r.sequence = first_seq.wrapping_add((r.offset - first_offset) as i32);
    }
    let mut out = BytesMut::new();
    let encoded = RecordBatchEncoder::encode(
        &mut out,
        &kept,
        &RecordEncodeOptions {
            version: 2,
            compression: compression_of(header.attributes),
        },
    );
    // Exactly one batch came out (guarded, since the store keeps one batch per record).
    let out = out.to_vec();
    let one = encoded.is_ok() && batch::parse_header(&out).is_ok_and(|h| h.size == out.len());
    if !one {
        return Cleaned {
            batch: None,
            tombstones,
        };
    }
    Cleaned {
        batch: Some(out),
        tombstones,
    }
}

/// The batch without superseded records, or `None` if nothing is to be removed.
pub fn compact_batch(stored: &[u8], map: &OffsetMap) -> Option<Vec<u8>> {
    clean_batch(stored, map, false, false).batch
}

/// What a removed transaction marker becomes: a header-only batch with the marker's
/// offsets and timestamps that is neither control nor transactional and names no
/// producer, so neither readers nor the recovery of the transaction index or of producer
/// state take it for anything.
pub fn removed_marker(stored: &[u8]) -> Vec<u8> {
    let mut b = empty_batch(stored);
    let attributes = i16::from_be_bytes([b[21], b[22]]) & !0x30;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Whether a stored batch, after [`clean_batch`] made `cleaned` of it, still holds
/// records.
pub fn holds_records(stored: &[u8], cleaned: &Cleaned) -> bool {
    let bytes = cleaned.batch.as_deref().unwrap_or(stored);
    batch::parse_header(bytes).is_ok_and(|h| h.record_count > 0)
}

/// A batch with the stored one's header (base offset, last offset delta, producer fields)
/// and no records.
fn empty_batch(stored: &[u8]) -> Vec<u8> {
    let mut b = stored[..HEADER_LEN].to_vec();
    b[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
    let attributes = i16::from_be_bytes([b[21], b[22]]) & !0x7;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Record, TimestampType};

    /// Records `k@offset` for each key, from `base`.
    fn batch(base: i64, keys: &[&str], compression: Compression) -> Vec<u8> {
        let recs = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, Some(format!("{k}@{}", base + i as i64))));
        encode(base, recs, compression)
    }

    fn encode<'a>(
        base: i64,
        recs: impl Iterator<Item = (&'a str, Option<String>)>,
        compression: Compression,
    ) -> Vec<u8> {
        let records: Vec<Record> = recs
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1 + i as i32,
                timestamp: 1000,
                key: Some(Bytes::from(k.to_owned())),
                value: v.map(Bytes::from),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn values(b: &[u8]) -> Vec<(i64, String)> {
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b)).unwrap();
        set.records
            .iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn keeps_the_latest_record_per_key() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let b1 = batch(0, &["a", "b", "c"], c);
            let b2 = batch(3, &["a", "d"], c);
            let b3 = batch(5, &["b", "a"], c);
            let latest = latest_offsets([&b1[..], &b2[..], &b3[..]]);
            assert_eq!(latest.latest(b"a"), Some(6));
            let c1 = compact_batch(&b1, &latest).expect("a and b superseded");
            assert_eq!(values(&c1), [(2, "c@2".to_owned())]);
            let h = batch::validate(&c1).unwrap()[0];
            assert_eq!(h.compression(), c as i16);
            // A gap inside a batch: offsets 0 and 2 kept, one batch.
            let b4 = batch(0, &["x", "y", "z"], c);
            let b5 = batch(3, &["y"], c);
            let gap = latest_offsets([&b4[..], &b5[..]]);
            let c4 = compact_batch(&b4, &gap).expect("y superseded");
            assert_eq!(values(&c4), [(0, "x@0".to_owned()), (2, "z@2".to_owned())]);
            let h = batch::parse_header(&c4).unwrap();
            assert_eq!((h.size, h.base_offset, h.last_offset()), (c4.len(), 0, 2));
            // b2 keeps only d; b3 is all latest.
            assert_eq!(
                values(&compact_batch(&b2, &latest).unwrap()),
                [(4, "d@4".to_owned())]
            );
            assert_eq!(compact_batch(&b3, &latest), None);
        }
    }

    #[test]
    fn an_emptied_batch_keeps_its_offsets() {
        let b1 = batch(10, &["a", "a"], Compression::Gzip);
        let b2 = batch(12, &["a"], Compression::None);
        let latest = latest_offsets([&b1[..], &b2[..]]);
        let c1 = compact_batch(&b1, &latest).unwrap();
        let h = batch::validate(&c1).expect("valid CRC")[0];
        assert_eq!(
            (h.base_offset, h.last_offset(), h.record_count),
            (10, 11, 0)
        );
        assert_eq!(h.compression(), 0);
    }

    fn with_values(base: i64, recs: &[(&str, Option<&str>)]) -> Vec<u8> {
        encode(
            base,
            recs.iter().map(|&(k, v)| (k, v.map(str::to_owned))),
            Compression::None,
        )
    }

    #[test]
    fn a_removed_marker_belongs_to_nobody() {
        let marker = crate::control::marker_batch(7, 3, true, 1_000);
        let mut m = marker.clone();
        batch::set_base_offset(&mut m, 40);
        let gone = removed_marker(&m);
        let h = batch::validate(&gone).expect("valid CRC")[0];
        assert_eq!(
            (h.base_offset, h.last_offset(), h.record_count),
            (40, 40, 0)
        );
        assert!(!h.is_control() && !h.is_transactional() && !h.is_idempotent());
        assert_eq!(crate::control::marker_type(&gone), None);
        let data = with_values(0, &[("k", Some("v"))]);
        assert!(holds_records(&data, &Cleaned::default()));
        let emptied = Cleaned {
            batch: Some(empty_batch(&data)),
            tombstones: 0,
        };
        assert!(!holds_records(&data, &emptied));
    }

    #[test]
    fn dirty_ratio_decides_a_pass() {
        assert_eq!(dirty_ratio(0, 0), 0.0);
        assert_eq!(dirty_ratio(0, 10), 1.0);
        assert_eq!(dirty_ratio(30, 10), 0.25);
        assert!(!should_clean(0, 0, 0.0), "nothing dirty, nothing to do");
        assert!(should_clean(0, 1, 1.0), "all dirty reaches 1");
        assert!(should_clean(50, 50, 0.5));
        assert!(!should_clean(51, 49, 0.5));
        assert!(
            !should_clean(1, 1_000_000, 1.0),
            "a clean part keeps it below 1"
        );
        assert!(should_clean(1_000_000, 1, 0.0));
    }

    #[test]
    fn tombstones_expire_after_the_retention() {
        assert!(!tombstones_expired(1_000, 1_000, 500));
        assert!(!tombstones_expired(1_000, 1_499, 500));
        assert!(tombstones_expired(1_000, 1_500, 500));
        assert!(
            tombstones_expired(1_000, 1_000, 0),
            "0 removes them at the next pass"
        );
        assert!(!tombstones_expired(1_000, 2_000, i64::MAX), "no overflow");
    }

    #[test]
    fn tombstones_are_kept_until_told_and_counted() {
        let b1 = with_values(0, &[("a", Some("1")), ("a", None), ("b", Some("2"))]);
        let map = latest_offsets([&b1[..]]);
        let kept = clean_batch(&b1, &map, false, false);
        assert_eq!(kept.tombstones, 1);
        let set = RecordBatchDecoder::decode(&mut Bytes::from(kept.batch.unwrap())).unwrap();
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [1, 2], "a's older value goes, its tombstone stays");
        let dropped = clean_batch(&b1, &map, false, true);
        assert_eq!(dropped.tombstones, 0);
        let set = RecordBatchDecoder::decode(&mut Bytes::from(dropped.batch.unwrap())).unwrap();
        assert_eq!(set.records.len(), 1);
        assert_eq!(set.records[0].key.as_deref(), Some(&b"b"[..]));
        // A batch with only a latest tombstone is untouched while it is kept.
        let b2 = with_values(3, &[("c", None)]);
        let map = latest_offsets([&b2[..]]);
        assert_eq!(
            clean_batch(&b2, &map, false, false),
            Cleaned {
                batch: None,
                tombstones: 1
            }
        );
    }

    #[test]
    fn aborted_batches_neither_supersede_nor_stay() {
        let committed = with_values(0, &[("k", Some("committed"))]);
        let aborted = with_values(1, &[("k", Some("aborted"))]);
        let mut map = OffsetMap::default();
        map.add(&committed, false);
        map.add(&aborted, true);
        assert_eq!(
            map.latest(b"k"),
            Some(0),
            "an aborted record supersedes nothing"
        );
        assert_eq!(clean_batch(&committed, &map, false, false).batch, None);
        let emptied = clean_batch(&aborted, &map, true, false).batch.unwrap();
        let h = batch::validate(&emptied).expect("valid CRC")[0];
        assert_eq!((h.base_offset, h.last_offset(), h.record_count), (1, 1, 0));
        // A later batch wins.
        let mut early = latest_offsets([&committed[..]]);
        early.add(&with_values(5, &[("k", Some("late"))]), false);
        assert_eq!(early.latest(b"k"), Some(5));
        assert_eq!(early.len(), 1);
    }

    #[test]
    fn a_map_is_bounded_by_its_buffer() {
        // 100 slots: 90 keys fit.
        let mut map = OffsetMap::new(100 * ENTRY_BYTES);
        assert_eq!(map.capacity(), 90);
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        let mut added = 0;
        for (i, chunk) in keys.chunks(10).enumerate() {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            if !map.add(&batch(i as i64 * 10, &refs, Compression::None), false) {
                break;
            }
            added += 1;
        }
        assert_eq!(added, 9, "nine batches of ten keys fill 90% of 100 slots");
        assert_eq!(map.len(), 90);
        assert_eq!(
            map.memory_bytes(),
            100 * ENTRY_BYTES,
            "never past the buffer"
        );
        assert_eq!(map.latest(b"key-89"), Some(89));
        assert_eq!(map.latest(b"key-90"), None);
        // A key seen again keeps one entry with its later offset.
        let mut again = OffsetMap::new(100 * ENTRY_BYTES);
        assert!(again.add(&batch(0, &["a", "b", "a"], Compression::None), false));
        assert_eq!((again.len(), again.latest(b"a")), (2, Some(2)));
        // The first batch always goes in, even past the buffer.
        let mut tiny = OffsetMap::new(ENTRY_BYTES);
        let refs: Vec<&str> = keys[..50].iter().map(String::as_str).collect();
        assert!(tiny.add(&batch(0, &refs, Compression::None), false));
        assert_eq!(tiny.len(), 50);
        assert!(!tiny.add(&batch(50, &["x"], Compression::None), false));
        for (i, k) in keys[..50].iter().enumerate() {
            assert_eq!(tiny.latest(k.as_bytes()), Some(i as i64));
        }
    }
}
