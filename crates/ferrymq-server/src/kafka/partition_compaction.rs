//! `cleanup.policy=compact` off the produce path. On a tick the owner decides whether a
//! pass is due (Kafka's `LogCleanerManager`): the cleanable range is the sealed segments
//! up to the first dirty one holding a record younger than `min.compaction.lag.ms`; a
//! pass runs when its dirty bytes reach `min.cleanable.dirty.ratio` of the cleanable
//! bytes, or when the first dirty record is older than `max.compaction.lag.ms` (whatever
//! the ratio), or when a tombstone kept by the last pass is due (`delete.retention.ms`).
//! The owner snapshots what the pass needs (the sealed segments, the cleaner checkpoint,
//! the aborted-transaction index, the last stable offset) and runs [`run_pass`] on a
//! blocking thread while it keeps appending and answering. One pass runs at a time in
//! the broker ([`Cleaner`], as Kafka's one cleaner thread), with an offset map bounded by
//! `log.cleaner.dedupe.buffer.size`: it maps the dirty batches from the checkpoint on, up
//! to the last stable offset (open transactions are never judged) or until the map is
//! full, then writes cleaned copies (`.cmp`, synced) of the segments up to the last one
//! it mapped into. When it completes, the owner installs each copy (rename + index:
//! brief) and writes the checkpoint (the dirty part now starts after the last batch
//! mapped; a full map makes the next tick run the next pass). Aborted transactions'
//! records are dropped; a COMMIT marker goes once its transaction holds no record,
//! `delete.retention.ms` has passed and a later marker of its producer is in the log
//! (ABORT markers stay).

use std::collections::HashMap;

use ferrymq_kafka::batch;
use ferrymq_kafka::compaction::{self, OffsetMap};
use ferrymq_kafka::control;
use ferrymq_kafka::txn::index::TxnIndex;
use ferrymq_store::cleaner_state::CleanerState;
use ferrymq_store::log::{Backend, LogError, PreparedRewrite, SealedSegment};
use tracing::{info, warn};

use super::{now_ms, PartitionTask};

/// Test hook: a pass sleeps this long (milliseconds) before it starts, so a test can
/// produce while one runs.
pub const DELAY_ENV: &str = "FERRYMQ_TEST_COMPACTION_DELAY_MS";

/// What the broker's compaction shares: the offset map's memory, and the one pass at a
/// time that may use it (a slot a partition takes on its tick before it starts a pass,
/// trying again on the next tick if another partition holds it, so no blocking thread
/// ever waits for it).
#[derive(Debug)]
pub struct Cleaner {
    /// `log.cleaner.dedupe.buffer.size`: bytes of the pass's offset map.
    pub dedupe_buffer_bytes: usize,
    slot: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Cleaner {
    pub fn new(dedupe_buffer_bytes: usize) -> Cleaner {
        Cleaner {
            dedupe_buffer_bytes,
            slot: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// The one pass's slot, if free; held until dropped.
    pub fn try_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slot.clone().try_acquire_owned().ok()
    }
}

impl Default for Cleaner {
    fn default() -> Cleaner {
        Cleaner::new(compaction::DEFAULT_DEDUPE_BUFFER_BYTES)
    }
}

/// What a pass needs, taken on the owner.
pub struct PassInput<B: Backend> {
    /// The cleanable sealed segments (the min-lag boundary applied).
    pub segments: Vec<SealedSegment<B>>,
    pub state: CleanerState,
    pub txns: TxnIndex,
    pub last_stable: i64,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub cleaner: std::sync::Arc<Cleaner>,
}

/// What a pass made: copies to install, and the checkpoint to write after.
pub struct PassOutput {
    pub prepared: Vec<PreparedRewrite>,
    pub state: CleanerState,
    /// Segments the pass cleaned (rewritten or found clean).
    pub cleaned: usize,
    /// The earliest time a tombstone kept by this pass may be removed.
    pub tombstone_due: Option<i64>,
    /// The offset map filled before the dirty part's end: the next pass goes on.
    pub map_full: bool,
    /// COMMIT markers removed.
    pub markers_removed: usize,
}

/// A pass running on a blocking thread.
pub type RunningPass = tokio::task::JoinHandle<Result<PassOutput, LogError>>;

fn is_aborted(h: &batch::BatchHeader, txns: &TxnIndex) -> bool {
    h.is_transactional()
        && !h.is_control()
        && txns
            .aborted_between(h.base_offset, h.base_offset + 1)
            .iter()
            .any(|&(pid, _)| pid == h.producer_id)
}

/// One compaction pass (blocking: reads and writes segment files).
pub fn run_pass<B: Backend>(input: PassInput<B>) -> Result<PassOutput, LogError> {
    if let Some(ms) = std::env::var(DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let PassInput {
        segments,
        state,
        txns,
        last_stable,
        now_ms,
        delete_retention_ms,
        cleaner,
    } = input;
    // The offset map over the dirty batches, from the checkpoint on, below the LSO and
    // as far as the map's buffer allows. `end`: the log offset after the last batch
    // mapped (everything below it has been mapped by this pass or an earlier one).
    let mut map = OffsetMap::new(cleaner.dedupe_buffer_bytes);
    let mut end = state.dirty_from;
    let mut cleanable = Vec::new();
    let mut map_full = false;
    let mut stopped = false;
    for seg in segments {
        if stopped {
            break;
        }
        if seg.next > state.dirty_from {
            seg.for_each(|offset, _, payload| {
                if stopped || offset < state.dirty_from {
                    return Ok(());
                }
                if let Ok(h) = batch::parse_header(payload) {
                    if h.last_offset() >= last_stable {
                        stopped = true;
                        return Ok(());
                    }
                    if !map.add(payload, is_aborted(&h, &txns)) {
                        stopped = true;
                        map_full = true;
                        return Ok(());
                    }
                }
                end = offset + 1;
                Ok(())
            })?;
        }
        cleanable.push(seg);
    }
    let mut next_state = CleanerState {
        dirty_from: end,
        cleaned_at: Default::default(),
    };
    let mut prepared = Vec::new();
    let mut tombstone_due: Option<i64> = None;
    // Per producer: whether a batch of its transaction since its last marker still
    // holds records after this pass.
    let mut txn_data: HashMap<i64, bool> = HashMap::new();
    let mut markers_removed = 0;
    for seg in &cleanable {
        // Tombstones go only from segments wholly mapped: one the map did not reach may
        // still hide an older value the map did not see.
        let whole = seg.next <= end;
        let first_cleaned = state.cleaned_at.get(&seg.base).copied().unwrap_or(now_ms);
        let drop_tombstones =
            whole && compaction::tombstones_expired(first_cleaned, now_ms, delete_retention_ms);
        let mut kept_tombstones = 0;
        let result = seg.rewrite(|_, payload| {
            let Ok(h) = batch::parse_header(payload) else {
                return None;
            };
            let aborted = is_aborted(&h, &txns);
            let cleaned = compaction::clean_batch(payload, &map, aborted, drop_tombstones);
            kept_tombstones += cleaned.tombstones;
            if h.is_transactional() && !h.is_control() {
                *txn_data.entry(h.producer_id).or_default() |=
                    compaction::holds_records(payload, &cleaned);
            } else if h.is_control() {
                let data_left = txn_data.remove(&h.producer_id).unwrap_or(false);
                if !data_left && commit_marker_removable(&h, payload, &txns) {
                    if drop_tombstones {
                        markers_removed += 1;
                        return Some(compaction::removed_marker(payload));
                    }
                    // Due with the segment's tombstones.
                    kept_tombstones += 1;
                }
            }
            cleaned.batch
        });
        match result {
            Ok(Some(p)) => prepared.push(p),
            Ok(None) => {}
            Err(e) => {
                // Keep what is ready; the segments not reached stay as they are.
                warn!(error = %e, base = seg.base, "compacting a segment failed");
                next_state.dirty_from = next_state.dirty_from.min(seg.base).max(state.dirty_from);
                break;
            }
        }
        if !whole {
            continue;
        }
        if kept_tombstones > 0 {
            let due = first_cleaned.saturating_add(delete_retention_ms.max(0));
            tombstone_due = Some(tombstone_due.map_or(due, |t| t.min(due)));
        }
        next_state.cleaned_at.insert(seg.base, first_cleaned);
    }
    Ok(PassOutput {
        cleaned: next_state.cleaned_at.len(),
        prepared,
        state: next_state,
        tombstone_due,
        map_full,
        markers_removed,
    })
}

/// A COMMIT marker goes (Kafka's cleaner: once its transaction's records are gone and
/// `delete.retention.ms` has passed, checked by the caller) only if a later marker of
/// the same producer is in the log: that one keeps the producer's epoch fence and the
/// sequence that stops a retried marker from closing a later transaction across a
/// restart. ABORT markers stay: the aborted-transaction list read_committed fetches
/// return is built from them and is not pruned yet.
fn commit_marker_removable(h: &batch::BatchHeader, payload: &[u8], txns: &TxnIndex) -> bool {
    matches!(control::marker_info(payload), Some((true, seq))
        if seq > 0 && txns.has_marker(h.producer_id, seq.saturating_add(1)))
}

impl<B> PartitionTask<B>
where
    B: Backend + Clone + Send + Sync + 'static,
    B::File: Send + Sync + 'static,
{
    /// On a tick: starts a pass if none runs and one is due.
    pub(super) fn maybe_compact(&mut self, running: &mut Option<RunningPass>) {
        if !self.config.compact || running.is_some() || self.failed {
            return;
        }
        let mut segments = self.partition.sealed_segments();
        let now = now_ms();
        let dirty_from = self.cleaner.dirty_from;
        // min.compaction.lag.ms: the cleanable range ends at the first dirty segment
        // holding a record younger than the lag.
        let min_lag = self.config.min_compaction_lag_ms;
        if min_lag > 0 {
            let horizon = now.saturating_sub(min_lag);
            if let Some(i) = segments
                .iter()
                .position(|s| s.next > dirty_from && s.max_timestamp > horizon)
            {
                segments.truncate(i);
            }
        }
        if segments.is_empty() {
            return;
        }
        let (clean, dirty) = segments.iter().fold((0, 0), |(c, d), s| {
            if s.next <= dirty_from {
                (c + s.bytes, d)
            } else {
                (c, d + s.bytes)
            }
        });
        let last_stable = self.current_offsets().last_stable;
        let key = (
            self.partition.active_segment_base(),
            last_stable,
            segments.last().map_or(0, |s| s.next),
        );
        let fresh = self.last_pass != Some(key);
        let by_ratio =
            fresh && compaction::should_clean(clean, dirty, self.config.min_cleanable_dirty_ratio);
        let by_max_lag = fresh && dirty > 0 && self.first_dirty_overdue(&segments, now);
        let by_tombstones = self.tombstone_due.is_some_and(|t| t <= now);
        if !by_ratio && !by_max_lag && !by_tombstones {
            return;
        }
        // One pass (one offset map) at a time in the broker: busy, try on the next tick.
        let Some(slot) = self.shared_cleaner.try_slot() else {
            return;
        };
        self.last_pass = Some(key);
        self.tombstone_due = None;
        let input = PassInput {
            segments,
            state: self.cleaner.clone(),
            txns: self.txns.clone(),
            last_stable,
            now_ms: now,
            delete_retention_ms: self.config.delete_retention_ms,
            cleaner: self.shared_cleaner.clone(),
        };
        info!(dir = %self.partition.dir().display(), clean, dirty, by_max_lag, "compaction pass started");
        *running = Some(tokio::task::spawn_blocking(move || {
            let out = run_pass(input);
            drop(slot);
            out
        }));
    }

    /// On a tick, for a compacted log with `max.compaction.lag.ms` set: seals the active
    /// segment once it is older than that lag (or `segment.ms` if less), as Kafka rolls a
    /// compacted log so its records become cleanable in time. Its age counts from its
    /// first record's timestamp, but never from before this task first saw the segment
    /// active (records stamped long ago would otherwise roll a segment every tick).
    pub(super) fn maybe_roll(&mut self) {
        if self.failed || !self.config.compact || self.config.max_compaction_lag_ms == i64::MAX {
            return;
        }
        let roll_ms = self
            .config
            .segment_ms
            .min(self.config.max_compaction_lag_ms);
        let base = self.partition.active_segment_base();
        let now = now_ms();
        let (seen, first) = match self.active_since {
            Some((b, seen, first)) if b == base => (seen, first),
            _ => (now, None),
        };
        let first = match first {
            Some(ts) => Some(ts),
            None => match tokio::task::block_in_place(|| self.partition.active_first_timestamp()) {
                Ok(ts) => ts,
                Err(e) => {
                    warn!(error = %e, "reading the active segment's first timestamp failed");
                    None
                }
            },
        };
        self.active_since = Some((base, seen, first));
        let Some(first) = first else {
            return;
        };
        if first.max(seen) >= now.saturating_sub(roll_ms) {
            return;
        }
        match tokio::task::block_in_place(|| self.partition.roll()) {
            Ok(true) => {
                info!(dir = %self.partition.dir().display(), base, "segment rolled by time")
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "rolling the active segment failed"),
        }
    }

    /// `max.compaction.lag.ms`: whether the first dirty record (the first record of the
    /// first dirty segment, as Kafka's first batch timestamp) is older than the lag. Its
    /// timestamp is read once per segment.
    fn first_dirty_overdue(&mut self, segments: &[SealedSegment<B>], now: i64) -> bool {
        let max_lag = self.config.max_compaction_lag_ms;
        if max_lag == i64::MAX {
            return false;
        }
        let dirty_from = self.cleaner.dirty_from;
        let Some(first) = segments.iter().find(|s| s.next > dirty_from) else {
            return false;
        };
        let ts = match self.first_dirty_ts {
            Some((base, ts)) if base == first.base => ts,
            _ => match tokio::task::block_in_place(|| first.first_timestamp()) {
                Ok(Some(ts)) => {
                    self.first_dirty_ts = Some((first.base, ts));
                    ts
                }
                Ok(None) => return false,
                Err(e) => {
                    warn!(error = %e, "reading a segment's first timestamp failed");
                    return false;
                }
            },
        };
        ts < now.saturating_sub(max_lag)
    }

    /// The pass completed: installs its copies and writes the checkpoint (on the owner).
    pub(super) fn compaction_done(
        &mut self,
        done: Result<Result<PassOutput, LogError>, tokio::task::JoinError>,
    ) {
        let out = match done {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                warn!(dir = %self.partition.dir().display(), error = %e, "compaction failed");
                return;
            }
            Err(e) => {
                warn!(dir = %self.partition.dir().display(), error = %e, "compaction thread died");
                return;
            }
        };
        let mut installed = 0;
        let mut prepared = out.prepared.into_iter();
        let result = tokio::task::block_in_place(|| {
            for p in prepared.by_ref() {
                if self.partition.install_rewrite(p)? {
                    installed += 1;
                }
            }
            let live: Vec<u64> = self
                .partition
                .sealed_segments()
                .iter()
                .map(|s| s.base)
                .collect();
            let mut state = out.state;
            state.cleaned_at.retain(|base, _| live.contains(base));
            self.partition.write_cleaner_state(&state)?;
            self.cleaner = state;
            Ok::<_, LogError>(())
        });
        for p in prepared {
            self.partition.discard_rewrite(p);
        }
        self.tombstone_due = out.tombstone_due;
        if out.map_full {
            // The map filled: the next tick goes on from where this pass stopped.
            self.last_pass = None;
        }
        match result {
            Ok(()) => info!(
                dir = %self.partition.dir().display(),
                segments = out.cleaned,
                rewritten = installed,
                map_full = out.map_full,
                markers_removed = out.markers_removed,
                "compacted"
            ),
            Err(e) => {
                warn!(dir = %self.partition.dir().display(), error = %e, "installing compacted segments failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use ferrymq_kafka::kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use ferrymq_store::log::fault::FaultBackend;
    use ferrymq_store::log::LogConfig;
    use ferrymq_store::partition::Partition;

    use super::*;

    fn keyed(producer: Option<i64>, key: &str, value: Option<&str>) -> Vec<u8> {
        let record = Record {
            transactional: producer.is_some(),
            control: false,
            partition_leader_epoch: 0,
            producer_id: producer.unwrap_or(-1),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: if producer.is_some() { 0 } else { -1 },
            timestamp: 1_000,
            key: Some(Bytes::from(key.to_owned())),
            value: value.map(|v| Bytes::from(v.to_owned())),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &[record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    struct Fixture {
        p: Partition<FaultBackend>,
        txns: TxnIndex,
    }

    impl Fixture {
        fn append(&mut self, b: &[u8]) -> i64 {
            let base = self.p.append(b).unwrap();
            let mut h = batch::parse_header(b).unwrap();
            h.base_offset = base;
            let marker = h.is_control().then(|| control::marker_info(b)).flatten();
            self.txns.on_batch(&h, marker.map(|(commit, _)| commit));
            if let Some((_, seq)) = marker {
                self.txns.note_marker_seq(h.producer_id, seq);
            }
            base
        }

        /// (key, value) of every record, in offset order.
        fn records(&self) -> Vec<(String, Option<String>)> {
            let mut out = Vec::new();
            for (_, b) in self.p.batches().unwrap() {
                let h = batch::parse_header(&b).unwrap();
                if h.is_control() || h.record_count == 0 {
                    continue;
                }
                let set = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
                for r in set.records {
                    let s = |b: Option<Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
                    out.push((s(r.key).unwrap(), s(r.value)));
                }
            }
            out
        }

        fn pass(&mut self, state: &CleanerState, now_ms: i64) -> PassOutput {
            self.pass_with(state, now_ms, Default::default())
        }

        fn pass_with(
            &mut self,
            state: &CleanerState,
            now_ms: i64,
            cleaner: std::sync::Arc<Cleaner>,
        ) -> PassOutput {
            let input = PassInput {
                segments: self.p.sealed_segments(),
                state: state.clone(),
                txns: self.txns.clone(),
                last_stable: self.txns.last_stable(self.p.next_offset()),
                now_ms,
                delete_retention_ms: 500,
                cleaner,
            };
            let mut out = run_pass(input).unwrap();
            for p in std::mem::take(&mut out.prepared) {
                assert!(self.p.install_rewrite(p).unwrap());
            }
            out
        }
    }

    fn values(recs: &[(String, Option<String>)], key: &str) -> Vec<Option<String>> {
        recs.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn fixture() -> Fixture {
        let disk = FaultBackend::new(1);
        let config = LogConfig {
            max_segment_bytes: 300,
            index_interval_bytes: 64,
            max_record_bytes: 1 << 20,
            write_buffer_bytes: 0,
        };
        let p = Partition::open(disk, "p", config, |_| {}).unwrap();
        Fixture {
            p,
            txns: TxnIndex::default(),
        }
    }

    #[test]
    fn a_full_map_ends_the_pass_and_the_next_goes_on() {
        let mut f = fixture();
        for round in 0..3 {
            for k in 0..10 {
                f.append(&keyed(None, &format!("k{k}"), Some(&format!("v{round}"))));
            }
        }
        for i in 0..6 {
            f.append(&keyed(None, &format!("fill{i}"), Some("f")));
        }
        f.p.sync().unwrap();
        // 10 slots: 9 keys a pass.
        let cleaner = std::sync::Arc::new(Cleaner::new(10 * compaction::ENTRY_BYTES));
        let mut state = CleanerState::default();
        let mut passes = 0;
        loop {
            let out = f.pass_with(&state, 1_000, cleaner.clone());
            passes += 1;
            assert!(
                out.state.dirty_from > state.dirty_from,
                "every pass goes on"
            );
            state = out.state;
            if !out.map_full {
                break;
            }
            assert!(passes < 20);
        }
        assert!(passes >= 4, "36 keyed records, 9 a pass: {passes} passes");
        let recs = f.records();
        for k in 0..10 {
            assert_eq!(
                values(&recs, &format!("k{k}")),
                [Some("v2".to_owned())],
                "k{k}"
            );
        }
        assert_eq!(recs.len(), 10 + 6);
    }

    #[test]
    fn a_commit_marker_goes_once_its_records_are_gone_and_not_the_last() {
        let mut f = fixture();
        let mut markers = Vec::new();
        for (seq, v) in [(1, "t1"), (2, "t2")] {
            f.append(&keyed(Some(7), "k", Some(v)));
            markers.push(f.append(&control::marker_batch_seq(7, 0, true, 1_000, seq)));
        }
        for i in 0..10 {
            f.append(&keyed(None, &format!("fill{i}"), Some("f")));
        }
        f.p.sync().unwrap();
        let control_at = |f: &Fixture, at: i64| {
            f.p.batches()
                .unwrap()
                .iter()
                .map(|(_, b)| batch::parse_header(b).unwrap())
                .find(|h| h.base_offset == at)
                .map(|h| (h.is_control(), h.producer_id))
                .unwrap()
        };
        // First pass: t1's record goes (t2 supersedes it); the markers stay until
        // delete.retention.ms (500) has passed.
        let first = f.pass(&CleanerState::default(), 1_000);
        assert_eq!(values(&f.records(), "k"), [Some("t2".to_owned())]);
        assert_eq!(first.markers_removed, 0);
        assert_eq!(
            first.tombstone_due,
            Some(1_500),
            "the marker makes a pass due"
        );
        // Then t1's marker goes; t2's (the producer's last) stays.
        let late = f.pass(&first.state, 1_500);
        assert_eq!(late.markers_removed, 1);
        assert_eq!(control_at(&f, markers[0]), (false, -1));
        assert_eq!(control_at(&f, markers[1]), (true, 7));
        assert_eq!(values(&f.records(), "k"), [Some("t2".to_owned())]);
        // Recovery of the transaction index from the compacted log: nothing open.
        let mut rebuilt = TxnIndex::default();
        for (_, b) in f.p.batches().unwrap() {
            let h = batch::parse_header(&b).unwrap();
            if h.is_control() {
                rebuilt.on_batch(&h, control::marker_type(&b));
            } else if h.record_count > 0 {
                rebuilt.on_batch(&h, None);
            }
        }
        assert_eq!(rebuilt.last_stable(f.p.next_offset()), f.p.next_offset());
    }

    #[test]
    fn a_pass_drops_aborted_and_superseded_records_and_stops_at_the_lso() {
        let mut f = fixture();
        f.append(&keyed(None, "k", Some("v1")));
        f.append(&keyed(Some(7), "k", Some("aborted")));
        f.append(&control::marker_batch(7, 0, false, 1_000));
        f.append(&keyed(None, "t", Some("old")));
        f.append(&keyed(None, "t", None));
        f.append(&keyed(None, "j", Some("x")));
        for i in 0..6 {
            f.append(&keyed(None, &format!("fill{i}"), Some("f")));
        }
        // An open transaction: nothing from its segment on is judged.
        let open_at = f.append(&keyed(Some(9), "j", Some("open")));
        f.append(&keyed(None, "j", Some("late")));
        for i in 0..6 {
            f.append(&keyed(None, &format!("more{i}"), Some("f")));
        }
        f.p.sync().unwrap();
        assert_eq!(f.txns.last_stable(f.p.next_offset()), open_at);
        assert!(f.p.sealed_segments().len() >= 4);

        let first = f.pass(&CleanerState::default(), 1_000);
        let recs = f.records();
        assert_eq!(
            values(&recs, "k"),
            [Some("v1".to_owned())],
            "aborted dropped"
        );
        assert_eq!(values(&recs, "t"), [None], "the tombstone is kept for now");
        assert_eq!(
            values(&recs, "j"),
            [Some("x".into()), Some("open".into()), Some("late".into())],
            "past the LSO nothing is judged"
        );
        assert_eq!(first.tombstone_due, Some(1_500));
        assert!(first.cleaned > 0);
        assert!(first.state.dirty_from > 0);
        assert!(first.state.cleaned_at.values().all(|&t| t == 1_000));
        // Every offset is still there (batches are kept, emptied ones as headers).
        let offsets: Vec<i64> =
            f.p.batches()
                .unwrap()
                .iter()
                .map(|(_, b)| batch::parse_header(b).unwrap().base_offset)
                .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());

        // Before the retention ran out the tombstone stays; after, it goes.
        let early = f.pass(&first.state, 1_499);
        assert_eq!(values(&f.records(), "t"), [None]);
        assert_eq!(
            early.tombstone_due,
            Some(1_500),
            "counted from the first clean"
        );
        let late = f.pass(&early.state, 1_500);
        assert_eq!(values(&f.records(), "t"), Vec::<Option<String>>::new());
        assert_eq!(late.tombstone_due, None);
        assert_eq!(values(&f.records(), "k"), [Some("v1".to_owned())]);
    }
}
