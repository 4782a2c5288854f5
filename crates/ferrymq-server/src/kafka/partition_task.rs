//! One owner task per partition: it holds the [`Partition`] (the log) and the idempotent
//! producers' state, and serves appends, reads, offset lookups, DeleteRecords and
//! retention. Group commit, pipelined: each round the task takes every command already
//! queued (up to a cap) and appends; under `always` it then starts one fsync covering
//! everything appended so far ([`Partition::begin_sync`]) on a blocking thread, unless one
//! is running, and goes on taking commands and appending while it runs. When the fsync
//! completes ([`Partition::finish_sync`]) the high watermark moves to what it covered, the
//! producers whose batches it covered are answered, and the next fsync starts at once if
//! anything was appended meanwhile. A produce is answered only once the high watermark
//! (the durable end under `always`) has passed its batch — a duplicate of an idempotent
//! producer's batch waits for its original the same way. A failed fsync answers every
//! produce it or a later round held with KAFKA_STORAGE_ERROR and the partition refuses
//! appends until restart (the log is poisoned); the high watermark never moves past what
//! was synced.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrymq_kafka::api::configs::TopicConfig;
use ferrymq_kafka::api::fetch::fits;
use ferrymq_kafka::api::produce::{ProducerEntry, SequenceCheck};
use ferrymq_kafka::batch::{self, BatchHeader};
use ferrymq_kafka::control;
use ferrymq_kafka::kafka_protocol::records::RecordBatchDecoder;
use ferrymq_kafka::kafka_protocol::ResponseError;
use ferrymq_kafka::txn::index::TxnIndex;
use ferrymq_store::cleaner_state::CleanerState;
use ferrymq_store::log::{Backend, FileBackend, FsyncPolicy, LogConfig, LogError};
use ferrymq_store::partition::{Partition, PartitionSync};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// Commands a partition task takes per round before it syncs and answers.
const ROUND_CAP: usize = 512;
/// Inbox size: a full inbox makes producers' connections wait (backpressure).
const INBOX: usize = 1024;
/// How often retention runs.
pub const RETENTION_TICK: Duration = Duration::from_secs(1);

/// Offsets a partition publishes after each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offsets {
    pub high_watermark: i64,
    pub log_start: i64,
    /// The last stable offset: the first offset of the oldest open transaction, or the
    /// high watermark (read_committed consumers read below it).
    pub last_stable: i64,
}

/// The outcome of a produce to one partition: the base offset of its first batch.
pub type AppendResult = Result<i64, ResponseError>;

/// Batches read for a fetch.
#[derive(Debug)]
pub struct ReadResult {
    pub records: Vec<u8>,
    pub offsets: Offsets,
    pub error: Option<ResponseError>,
    /// read_committed: aborted transactions overlapping the records, (producer id, first
    /// offset).
    pub aborted: Vec<(i64, i64)>,
}

pub enum Command {
    /// The partition's records as received (validated: `headers` has one entry per
    /// batch, in order, sizes adding up to the whole).
    Append {
        records: Bytes,
        headers: Vec<BatchHeader>,
        reply: oneshot::Sender<AppendResult>,
    },
    Read {
        offset: i64,
        partition_max: usize,
        remaining: usize,
        first_in_response: bool,
        /// isolation_level=1: only below the last stable offset.
        committed: bool,
        reply: oneshot::Sender<ReadResult>,
    },
    /// Writes a transaction marker (control batch) for `producer_id`; answered after the
    /// fsync that covers it, with the marker's offset. `seq` (> 0) is the transaction's
    /// sequence number, stored as the marker's coordinator epoch: if this partition
    /// already holds the marker of that transaction (or a later one) of the producer,
    /// nothing is written and the answer comes once everything appended so far is
    /// durable. `appended` is told (before the fsync) once the marker is in the log.
    Marker {
        producer_id: i64,
        epoch: i16,
        commit: bool,
        seq: i32,
        appended: Option<oneshot::Sender<()>>,
        reply: oneshot::Sender<AppendResult>,
    },
    /// ListOffsets by timestamp (>= 0): (offset, timestamp) or None.
    OffsetForTime {
        timestamp: i64,
        reply: oneshot::Sender<Result<Option<(i64, i64)>, ResponseError>>,
    },
    DeleteRecords {
        offset: i64,
        reply: oneshot::Sender<Result<i64, ResponseError>>,
    },
    Configure(TopicConfig),
    /// ListOffsets -3 (KIP-734): the offset and timestamp of the record with the largest
    /// timestamp (the first such record), or None if the partition is empty.
    MaxTimestamp {
        reply: oneshot::Sender<Result<Option<(i64, i64)>, ResponseError>>,
    },
    /// DescribeLogDirs and DescribeProducers: size and producers' state.
    Describe {
        reply: oneshot::Sender<Description>,
    },
}

/// A partition's size and its idempotent / transactional producers (DescribeProducers).
#[derive(Debug, Clone, Default)]
pub struct Description {
    pub size_bytes: u64,
    pub producers: Vec<ProducerState>,
}

/// One producer's state on a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence appended (-1 if none).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// The first offset of its open transaction here, -1 if none.
    pub txn_start_offset: i64,
}

/// A cloneable handle on a partition task.
#[derive(Clone)]
pub struct PartitionHandle {
    pub tx: mpsc::Sender<Command>,
    pub offsets: watch::Receiver<Offsets>,
}

impl PartitionHandle {
    /// The latest published offsets.
    pub fn offsets(&self) -> Offsets {
        *self.offsets.borrow()
    }
}

/// Opens the partition in `dir` (recovering it and its producers' state) and starts its
/// task. The disk work runs under `block_in_place`.
pub fn start(
    dir: PathBuf,
    config: TopicConfig,
    policy: FsyncPolicy,
    cleaner: Arc<Cleaner>,
) -> Result<(PartitionHandle, tokio::task::JoinHandle<()>), LogError> {
    start_on(FileBackend, dir, config, policy, cleaner)
}

/// [`start`] on any storage backend (tests run the task on the fault-injecting one).
pub fn start_on<B>(
    backend: B,
    dir: PathBuf,
    config: TopicConfig,
    policy: FsyncPolicy,
    cleaner_shared: Arc<Cleaner>,
) -> Result<(PartitionHandle, tokio::task::JoinHandle<()>), LogError>
where
    B: Backend + Clone + Send + Sync + 'static,
    B::File: Send + Sync + 'static,
{
    let mut producers: HashMap<i64, ProducerEntry> = HashMap::new();
    let mut txns = TxnIndex::default();
    let log_config = LogConfig {
        max_segment_bytes: config.segment_bytes,
        max_record_bytes: 128 << 20,
        ..LogConfig::default()
    };
    let partition = tokio::task::block_in_place(|| {
        Partition::open(backend, &dir, log_config, |bytes| {
            if let Ok(h) = batch::parse_header(bytes) {
                if h.is_control() {
                    let marker = control::marker_info(bytes);
                    txns.on_batch(&h, marker.map(|(commit, _)| commit));
                    if let Some((_, seq)) = marker {
                        txns.note_marker_seq(h.producer_id, seq);
                    }
                    producers
                        .entry(h.producer_id)
                        .or_default()
                        .fence(h.producer_epoch);
                } else {
                    if h.is_idempotent() {
                        producers.entry(h.producer_id).or_default().record(&h);
                    }
                    // A batch compaction emptied holds nothing a transaction must
                    // cover: its COMMIT marker may be gone (compaction removes it once
                    // no record of the transaction is left).
                    if h.record_count > 0 {
                        txns.on_batch(&h, None);
                    }
                }
            }
        })
    })?;
    if partition.next_offset() > 0 {
        info!(
            dir = %dir.display(),
            start = partition.start_offset(),
            end = partition.next_offset(),
            producers = producers.len(),
            "recovered partition"
        );
    }
    txns.truncate_before(partition.start_offset());
    let offsets = Offsets {
        high_watermark: partition.high_watermark(),
        log_start: partition.start_offset(),
        last_stable: txns.last_stable(partition.high_watermark()),
    };
    let cleaner = if config.compact {
        tokio::task::block_in_place(|| partition.cleaner_state())
    } else {
        CleanerState::default()
    };
    // Tombstones a pass before the restart kept may be due: one pass finds out.
    let tombstone_due = cleaner
        .cleaned_at
        .values()
        .min()
        .map(|&t| t.saturating_add(config.delete_retention_ms.max(0)));
    let (tx, rx) = mpsc::channel(INBOX);
    let (otx, orx) = watch::channel(offsets);
    let task = PartitionTask {
        partition,
        producers,
        txns,
        config,
        policy,
        cleaner,
        last_pass: None,
        first_dirty_ts: None,
        active_since: None,
        shared_cleaner: cleaner_shared,
        tombstone_due,
        last_sync: Instant::now(),
        offsets: otx,
        waiting: VecDeque::new(),
        failed: false,
    };
    let join = tokio::spawn(task.run(rx));
    Ok((PartitionHandle { tx, offsets: orx }, join))
}

struct PartitionTask<B: Backend + Clone> {
    partition: Partition<B>,
    producers: HashMap<i64, ProducerEntry>,
    /// Open and aborted transactions (rebuilt from the log at start).
    txns: TxnIndex,
    config: TopicConfig,
    policy: FsyncPolicy,
    /// The compaction checkpoint (dirty part, when segments were first cleaned).
    cleaner: CleanerState,
    /// (active segment base, LSO, end of the cleanable range) when the last ratio- or
    /// lag-driven pass started: no new pass until one of them moves (or a pass's offset
    /// map filled).
    last_pass: Option<(u64, i64, u64)>,
    /// The first dirty segment's base and first record timestamp (`max.compaction.lag.ms`).
    first_dirty_ts: Option<(u64, i64)>,
    /// The active segment's base, when this task first saw it active, and its first
    /// record's timestamp once it has one (time-based roll of a compacted log).
    active_since: Option<(u64, i64, Option<i64>)>,
    /// The broker's compaction (offset map buffer, one pass at a time).
    shared_cleaner: Arc<compaction::Cleaner>,
    /// When a tombstone kept by the last pass may go (a pass is due then).
    tombstone_due: Option<i64>,
    last_sync: Instant,
    offsets: watch::Sender<Offsets>,
    /// Produces appended, answered once the high watermark reaches `needs`; in arrival
    /// order.
    waiting: VecDeque<Waiting>,
    /// A sync failed (or its thread died): nothing appended since the last good sync
    /// will ever be acknowledged.
    failed: bool,
}

/// A produce whose batches are stored, waiting for the sync that covers them.
struct Waiting {
    /// The Kafka offset the high watermark must reach.
    needs: i64,
    /// The base offset answered.
    base: i64,
    reply: oneshot::Sender<AppendResult>,
}

/// An fsync running on a blocking thread.
struct InFlight<B: Backend> {
    work: tokio::task::JoinHandle<(PartitionSync<B>, Result<(), LogError>)>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl<B> PartitionTask<B>
where
    B: Backend + Clone + Send + Sync + 'static,
    B::File: Send + Sync + 'static,
{
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(RETENTION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The fsync running off this loop, if any: one at a time.
        let mut fsync: Option<InFlight<B>> = None;
        // The compaction pass running off this loop, if any.
        let mut pass: Option<compaction::RunningPass> = None;
        loop {
            let first = tokio::select! {
                biased;
                done = async { (&mut fsync.as_mut().expect("checked").work).await }, if fsync.is_some() => {
                    fsync = None;
                    self.sync_done(done);
                    // Whatever was appended while it ran gets the next fsync at once.
                    self.start_sync(&mut fsync);
                    self.publish();
                    self.answer();
                    continue;
                }
                done = async { pass.as_mut().expect("checked").await }, if pass.is_some() => {
                    pass = None;
                    self.compaction_done(done);
                    continue;
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
                _ = tick.tick() => {
                    self.retention();
                    self.maybe_roll();
                    self.maybe_compact(&mut pass);
                    if matches!(self.policy, FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d) {
                        self.start_sync(&mut fsync);
                    }
                    continue;
                }
            };
            let mut appended = false;
            self.handle(first, &mut appended);
            for _ in 1..ROUND_CAP {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd, &mut appended),
                    Err(_) => break,
                }
            }
            if appended {
                self.commit(&mut fsync);
            }
            self.publish();
            self.answer();
        }
        if let Some(running) = pass.take() {
            // Its copies are not installed: remove them.
            if let Ok(Ok(out)) = running.await {
                for p in out.prepared {
                    self.partition.discard_rewrite(p);
                }
            }
        }
        if let Some(running) = fsync.take() {
            let done = running.work.await;
            self.sync_done(done);
        }
        if !self.failed {
            if let Err(e) = tokio::task::block_in_place(|| self.partition.sync()) {
                warn!(dir = %self.partition.dir().display(), error = %e, "partition fsync failed");
                self.fail();
            }
        }
        self.publish();
        self.answer();
        debug!(dir = %self.partition.dir().display(), "partition task stopped");
    }

    /// After a round that appended: under `always`, an fsync covering the round starts
    /// (or the round waits for the next one, if one is running); otherwise the appends go
    /// to the OS and are visible at once, and under `interval` an fsync starts when due.
    fn commit(&mut self, fsync: &mut Option<InFlight<B>>) {
        match self.policy {
            FsyncPolicy::Always => self.start_sync(fsync),
            policy => {
                if let Err(e) = self.partition.flush() {
                    warn!(dir = %self.partition.dir().display(), error = %e, "partition write failed");
                    self.fail();
                    return;
                }
                if matches!(policy, FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d) {
                    self.start_sync(fsync);
                }
            }
        }
    }

    /// Starts an fsync of everything appended so far on a blocking thread, unless one is
    /// running (the next one starts when it completes) or there is nothing to sync.
    fn start_sync(&mut self, fsync: &mut Option<InFlight<B>>) {
        if fsync.is_some() || self.failed {
            return;
        }
        match self.partition.begin_sync() {
            Ok(None) => {}
            Ok(Some(job)) => {
                self.last_sync = Instant::now();
                *fsync = Some(InFlight {
                    work: tokio::task::spawn_blocking(move || {
                        let result = job.run();
                        (job, result)
                    }),
                });
            }
            Err(e) => {
                warn!(dir = %self.partition.dir().display(), error = %e, "partition write failed");
                self.fail();
            }
        }
    }

    /// An fsync completed: on success the high watermark moves to what it covered.
    fn sync_done(
        &mut self,
        done: Result<(PartitionSync<B>, Result<(), LogError>), tokio::task::JoinError>,
    ) {
        let result = match done {
            Ok((job, result)) => self.partition.finish_sync(job, result).map(|_| ()),
            Err(e) => {
                // The job is lost with its thread: nothing it covered may be acknowledged.
                self.failed = true;
                Err(LogError::Io {
                    op: "fsync",
                    path: self.partition.dir().to_path_buf(),
                    source: std::io::Error::other(format!("fsync thread failed: {e}")),
                })
            }
        };
        if let Err(e) = result {
            warn!(dir = %self.partition.dir().display(), error = %e, "partition fsync failed");
            self.fail();
        }
    }

    /// A write or fsync failed: every produce not yet covered by a good sync is answered
    /// with KAFKA_STORAGE_ERROR. If the log is poisoned (a failed fsync, or a failed
    /// write it could not undo) so is every later one, until restart; a write that was
    /// undone (disk full) fails only the produces waiting now, and the bytes it kept are
    /// written, in order, by the next flush.
    fn fail(&mut self) {
        if self.partition.is_poisoned() {
            self.failed = true;
        }
        let hw = self.partition.high_watermark();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for w in self.waiting.drain(..) {
            if w.needs <= hw {
                kept.push_back(w);
            } else {
                let _ = w.reply.send(Err(ResponseError::KafkaStorageError));
            }
        }
        self.waiting = kept;
    }

    /// Answers the produces the high watermark has passed (all of them, failed or not,
    /// once the partition has failed).
    fn answer(&mut self) {
        let hw = self.partition.high_watermark();
        let failed = self.failed;
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            if w.needs <= hw {
                if let Some(w) = self.waiting.remove(i) {
                    let _ = w.reply.send(Ok(w.base));
                }
            } else if failed {
                if let Some(w) = self.waiting.remove(i) {
                    let _ = w.reply.send(Err(ResponseError::KafkaStorageError));
                }
            } else {
                i += 1;
            }
        }
    }

    fn current_offsets(&self) -> Offsets {
        let hw = self.partition.high_watermark();
        Offsets {
            high_watermark: hw,
            log_start: self.partition.start_offset(),
            last_stable: self.txns.last_stable(hw),
        }
    }

    fn publish(&self) {
        let o = self.current_offsets();
        self.offsets.send_if_modified(|cur| {
            let changed = *cur != o;
            *cur = o;
            changed
        });
    }

    fn handle(&mut self, cmd: Command, appended: &mut bool) {
        match cmd {
            Command::Append {
                records,
                headers,
                reply,
            } => match self.append(&records, headers, appended) {
                Ok((base, needs)) => self.waiting.push_back(Waiting { needs, base, reply }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Read {
                offset,
                partition_max,
                remaining,
                first_in_response,
                committed,
                reply,
            } => {
                let _ = reply.send(self.read(
                    offset,
                    partition_max,
                    remaining,
                    first_in_response,
                    committed,
                ));
            }
            Command::Marker {
                producer_id,
                epoch,
                commit,
                seq,
                appended: on_appended,
                reply,
            } => {
                if self.txns.has_marker(producer_id, seq) {
                    let end = self.partition.next_offset();
                    if let Some(tx) = on_appended {
                        let _ = tx.send(());
                    }
                    if self.partition.high_watermark() >= end {
                        let _ = reply.send(Ok(end - 1));
                    } else {
                        self.waiting.push_back(Waiting {
                            needs: end,
                            base: end - 1,
                            reply,
                        });
                    }
                    return;
                }
                match self.write_marker(producer_id, epoch, commit, seq, appended) {
                    // Answered once the sync covering the marker completes.
                    Ok(base) => {
                        if let Some(tx) = on_appended {
                            let _ = tx.send(());
                        }
                        self.waiting.push_back(Waiting {
                            needs: base + 1,
                            base,
                            reply,
                        })
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::OffsetForTime { timestamp, reply } => {
                let r = self
                    .partition
                    .offset_for_timestamp(timestamp)
                    .map_err(|_| ResponseError::KafkaStorageError)
                    .and_then(|o| match o {
                        None => Ok(None),
                        Some(base) => self.record_at_time(base, timestamp).map(Some),
                    });
                let _ = reply.send(r);
            }
            Command::DeleteRecords { offset, reply } => {
                let hw = self.partition.high_watermark();
                let offset = if offset == -1 { hw } else { offset };
                let r = if offset < 0 || offset > hw {
                    Err(ResponseError::OffsetOutOfRange)
                } else {
                    tokio::task::block_in_place(|| self.partition.delete_before(offset))
                        .map_err(|_| ResponseError::KafkaStorageError)
                };
                let _ = reply.send(r);
                self.publish();
            }
            Command::Configure(config) => {
                self.partition.set_segment_bytes(config.segment_bytes);
                if config.compact && !self.config.compact {
                    self.cleaner = tokio::task::block_in_place(|| self.partition.cleaner_state());
                }
                self.config = config;
            }
            Command::MaxTimestamp { reply } => {
                let _ = reply.send(tokio::task::block_in_place(|| self.max_timestamp()));
            }
            Command::Describe { reply } => {
                let mut producers: Vec<ProducerState> = self
                    .producers
                    .iter()
                    .filter(|(_, p)| !p.batches.is_empty() || p.epoch > 0)
                    .map(|(&id, p)| ProducerState {
                        producer_id: id,
                        epoch: p.epoch,
                        last_sequence: p.batches.back().map_or(-1, |b| b.last_seq),
                        last_timestamp: if p.batches.is_empty() {
                            -1
                        } else {
                            p.last_timestamp
                        },
                        txn_start_offset: self.txns.open_since(id).unwrap_or(-1),
                    })
                    .collect();
                producers.sort_by_key(|p| p.producer_id);
                let _ = reply.send(Description {
                    size_bytes: self.partition.size_bytes(),
                    producers,
                });
            }
        }
    }

    /// KIP-734: the batch with the largest max timestamp (the first on ties), then the
    /// first of its records carrying it (its base offset for LogAppendTime batches).
    fn max_timestamp(&self) -> Result<Option<(i64, i64)>, ResponseError> {
        let batches = self
            .partition
            .batches()
            .map_err(|_| ResponseError::KafkaStorageError)?;
        let hw = self.partition.high_watermark();
        let mut best: Option<(BatchHeader, &[u8])> = None;
        for (_, b) in &batches {
            let Ok(h) = batch::parse_header(b) else {
                continue;
            };
            if h.is_control() || h.base_offset >= hw {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(x, _)| h.max_timestamp > x.max_timestamp)
            {
                best = Some((h, b.as_slice()));
            }
        }
        let Some((h, bytes)) = best else {
            return Ok(None);
        };
        if h.attributes & 0x08 != 0 {
            return Ok(Some((h.base_offset, h.max_timestamp)));
        }
        let mut buf = bytes::Bytes::copy_from_slice(bytes);
        let found = RecordBatchDecoder::decode(&mut buf).ok().and_then(|set| {
            set.records
                .iter()
                .find(|r| r.timestamp == h.max_timestamp)
                .map(|r| (r.offset, r.timestamp))
        });
        Ok(Some(found.unwrap_or((h.last_offset(), h.max_timestamp))))
    }

    /// The first record at or after `timestamp` in the batch at `base` (the batch whose
    /// max timestamp reaches it): its offset and timestamp. The batch is decoded
    /// (decompressed if need be) here, off the produce path; ListOffsets is rare.
    fn record_at_time(&self, base: i64, timestamp: i64) -> Result<(i64, i64), ResponseError> {
        let bytes = self
            .partition
            .read(base, |_, so_far| so_far == 0)
            .map_err(|_| ResponseError::KafkaStorageError)?;
        let fallback = batch::parse_header(&bytes).map_or((base, -1), |h| (base, h.max_timestamp));
        let mut buf = bytes::Bytes::from(bytes);
        let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
            return Ok(fallback);
        };
        Ok(set
            .records
            .iter()
            .find(|r| r.timestamp >= timestamp && r.offset >= self.partition.start_offset())
            .map_or(fallback, |r| (r.offset, r.timestamp)))
    }

    /// Appends a produce's batches (after the idempotence checks): the base offset to
    /// answer and the offset the high watermark must reach before answering.
    fn append(
        &mut self,
        records: &[u8],
        headers: Vec<BatchHeader>,
        appended: &mut bool,
    ) -> Result<(i64, i64), ResponseError> {
        if self.failed {
            return Err(ResponseError::KafkaStorageError);
        }
        // Idempotence: decide for every batch before appending any.
        let mut first_base = None;
        let mut needs = 0;
        let mut todo = Vec::with_capacity(headers.len());
        let mut at = 0;
        for h in headers {
            let bytes = records
                .get(at..at + h.size)
                .ok_or(ResponseError::CorruptMessage)?;
            at += h.size;
            if h.is_idempotent() {
                let check = self
                    .producers
                    .get(&h.producer_id)
                    .map_or(SequenceCheck::Append, |p| p.check(&h));
                match check {
                    SequenceCheck::Append => todo.push((h, bytes)),
                    SequenceCheck::Duplicate { base_offset } => {
                        debug!(
                            producer = h.producer_id,
                            seq = h.base_sequence,
                            "duplicate batch dropped"
                        );
                        // Answered only once the original is durable too.
                        needs = needs.max(base_offset + 1);
                        first_base.get_or_insert(base_offset);
                    }
                    SequenceCheck::Reject(e) => return Err(e),
                }
            } else {
                todo.push((h, bytes));
            }
        }
        for (mut h, bytes) in todo {
            let base = self.partition.append(bytes).map_err(|e| {
                warn!(error = %e, "append failed");
                ResponseError::KafkaStorageError
            })?;
            *appended = true;
            h.base_offset = base;
            if h.is_idempotent() {
                self.producers.entry(h.producer_id).or_default().record(&h);
            }
            self.txns.on_batch(&h, None);
            needs = needs.max(h.last_offset() + 1);
            first_base.get_or_insert(base);
        }
        first_base
            .map(|b| (b, needs))
            .ok_or(ResponseError::CorruptMessage)
    }

    /// Appends a transaction marker for `producer_id` (Kafka writes one even for a
    /// partition where the producer wrote nothing since its last marker) and fences older
    /// epochs of that producer.
    fn write_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        seq: i32,
        appended: &mut bool,
    ) -> AppendResult {
        if self.failed {
            return Err(ResponseError::KafkaStorageError);
        }
        let bytes = control::marker_batch_seq(producer_id, epoch, commit, now_ms(), seq);
        let base = self.partition.append(&bytes).map_err(|e| {
            warn!(error = %e, "marker append failed");
            ResponseError::KafkaStorageError
        })?;
        *appended = true;
        let mut h = batch::parse_header(&bytes).map_err(|_| ResponseError::CorruptMessage)?;
        h.base_offset = base;
        self.txns.on_batch(&h, Some(commit));
        self.txns.note_marker_seq(producer_id, seq);
        self.producers.entry(producer_id).or_default().fence(epoch);
        Ok(base)
    }

    fn read(
        &self,
        offset: i64,
        partition_max: usize,
        remaining: usize,
        first_in_response: bool,
        committed: bool,
    ) -> ReadResult {
        let offsets = self.current_offsets();
        if offset < offsets.log_start || offset > offsets.high_watermark {
            return ReadResult {
                records: Vec::new(),
                offsets,
                error: Some(ResponseError::OffsetOutOfRange),
                aborted: Vec::new(),
            };
        }
        let upper = if committed {
            offsets.last_stable
        } else {
            offsets.high_watermark
        };
        if offset >= upper {
            return ReadResult {
                records: Vec::new(),
                offsets,
                error: None,
                aborted: Vec::new(),
            };
        }
        let result = self.partition.read(offset, |size, so_far| {
            fits(size, so_far, partition_max, remaining, first_in_response)
        });
        match result {
            Ok(mut records) => {
                // Whole batches only, none starting at or past the bound.
                let mut end = offset;
                let mut at = 0;
                while let Ok(h) = batch::parse_header(&records[at..]) {
                    if h.base_offset >= upper {
                        break;
                    }
                    end = end.max(h.last_offset() + 1);
                    at += h.size;
                }
                records.truncate(at);
                let aborted = if committed {
                    self.txns.aborted_between(offset, end)
                } else {
                    Vec::new()
                };
                ReadResult {
                    records,
                    offsets,
                    error: None,
                    aborted,
                }
            }
            Err(e) => {
                warn!(error = %e, "partition read failed");
                ReadResult {
                    records: Vec::new(),
                    offsets,
                    error: Some(ResponseError::KafkaStorageError),
                    aborted: Vec::new(),
                }
            }
        }
    }

    fn retention(&mut self) {
        if !self.config.delete {
            return;
        }
        let (ms, bytes) = (self.config.retention_ms, self.config.retention_bytes);
        if ms < 0 && bytes < 0 {
            return;
        }
        match tokio::task::block_in_place(|| self.partition.enforce_retention(now_ms(), ms, bytes))
        {
            Ok(0) => {}
            Ok(n) => {
                self.txns.truncate_before(self.partition.start_offset());
                info!(dir = %self.partition.dir().display(), segments = n, start = self.partition.start_offset(), "retention deleted segments");
                self.publish();
            }
            Err(e) => warn!(error = %e, "retention failed"),
        }
    }
}

#[path = "partition_compaction.rs"]
mod compaction;
pub use compaction::Cleaner;

#[cfg(test)]
#[path = "partition_task_tests.rs"]
mod tests;
