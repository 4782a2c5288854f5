//! A partition's transaction state (Kafka's `ProducerStateManager` open transactions and
//! `.txnindex`): the first offset of each producer's open transaction, which bounds the
//! last stable offset (LSO), and the aborted transactions (producer, first offset, marker
//! offset) that Fetch at read_committed reports. Fed every batch in log order, at append
//! and when the partition is recovered, so it is rebuilt from the log itself.

use std::collections::BTreeMap;

use crate::batch::BatchHeader;

/// An aborted transaction on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
}

/// One partition's open and aborted transactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnIndex {
    /// Producer id → first offset of its open transaction.
    open: BTreeMap<i64, i64>,
    /// Oldest first (ordered by marker offset).
    aborted: Vec<AbortedTxn>,
    /// Producer id → the transaction sequence (coordinator epoch) of its last marker
    /// here, when it carried one (> 0).
    marker_seq: BTreeMap<i64, i32>,
}

impl TxnIndex {
    /// Takes one stored batch (base offset assigned). `marker` is the control batch's
    /// decision (`Some(true)` COMMIT, `Some(false)` ABORT) for control batches.
    pub fn on_batch(&mut self, h: &BatchHeader, marker: Option<bool>) {
        if !h.is_transactional() {
            return;
        }
        if h.is_control() {
            let first = self.open.remove(&h.producer_id);
            if let (Some(first_offset), Some(false)) = (first, marker) {
                self.aborted.push(AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset,
                    last_offset: h.base_offset,
                });
            }
            return;
        }
        self.open.entry(h.producer_id).or_insert(h.base_offset);
    }

    /// Notes the sequence a marker of `producer_id` carried (0: none, ignored).
    pub fn note_marker_seq(&mut self, producer_id: i64, seq: i32) {
        if seq > 0 {
            self.marker_seq.insert(producer_id, seq);
        }
    }

    /// Whether this partition already holds the marker of `producer_id`'s transaction
    /// `seq` (or a later one): writing it again would close a later transaction.
    pub fn has_marker(&self, producer_id: i64, seq: i32) -> bool {
        seq > 0 && self.marker_seq.get(&producer_id).is_some_and(|&s| s >= seq)
    }

    /// The first offset of `producer_id`'s open transaction here, if one is open.
    pub fn open_since(&self, producer_id: i64) -> Option<i64> {
        self.open.get(&producer_id).copied()
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// The last stable offset for a high watermark: the first offset of the oldest open
    /// transaction, or the high watermark if none is open (never above it).
    pub fn last_stable(&self, high_watermark: i64) -> i64 {
        self.open
            .values()
            .min()
            .map_or(high_watermark, |&f| f.min(high_watermark))
    }

    /// Aborted transactions overlapping `[from, to)`: (producer id, first offset), what
    /// Fetch returns in `aborted_transactions`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Forgets aborted transactions wholly before `log_start` (their data is gone).
    pub fn truncate_before(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    pub fn aborted_count(&self) -> usize {
        self.aborted.len()
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, base: i64, n: i32, attrs: i16) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            size: 100,
            attributes: attrs,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: n,
        }
    }
    const TXN: i16 = 0x10;
    const CTRL: i16 = 0x30;

    #[test]
    fn lso_and_aborted_index() {
        let mut ix = TxnIndex::default();
        ix.on_batch(&h(-1, 0, 2, 0), None);
        assert_eq!(ix.last_stable(2), 2, "no transaction: LSO = HW");
        ix.on_batch(&h(7, 2, 3, TXN), None);
        ix.on_batch(&h(8, 5, 1, TXN), None);
        ix.on_batch(&h(7, 6, 1, TXN), None);
        assert_eq!(ix.last_stable(7), 2);
        ix.on_batch(&h(7, 7, 1, CTRL), Some(false));
        assert_eq!(ix.last_stable(8), 5, "pid 8 still open");
        ix.on_batch(&h(8, 8, 1, CTRL), Some(true));
        assert_eq!(ix.last_stable(9), 9);
        assert_eq!(ix.aborted_between(0, 9), vec![(7, 2)]);
        assert_eq!(ix.aborted_between(8, 9), vec![], "ends before");
        assert_eq!(ix.aborted_between(0, 2), vec![], "starts after");
        // An empty transaction's marker opens nothing and indexes nothing.
        ix.on_batch(&h(9, 9, 1, CTRL), Some(false));
        assert_eq!(ix.aborted_count(), 1);
        ix.truncate_before(8);
        assert_eq!(ix.aborted_count(), 0);
        // LSO is capped at the high watermark.
        ix.on_batch(&h(3, 10, 1, TXN), None);
        assert_eq!(ix.last_stable(10), 10);
        assert!(ix.is_open(3) && ix.open_count() == 1);
    }
}
