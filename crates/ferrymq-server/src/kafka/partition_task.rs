//! One owner task per partition: it holds the [`Partition`] (the log) and the idempotent
//! producers' state, and serves appends, reads, offset lookups, DeleteRecords and
//! retention. Group commit: the task takes every command already queued (up to a cap),
//! applies the appends, fsyncs once (under `always`), then answers all the producers the
//! fsync covered and publishes the new high watermark, which wakes long-polling fetches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrymq_kafka::api::configs::TopicConfig;
use ferrymq_kafka::api::fetch::fits;
use ferrymq_kafka::api::produce::{ProducerEntry, SequenceCheck};
use ferrymq_kafka::batch::{self, BatchHeader};
use ferrymq_kafka::compaction;
use ferrymq_kafka::kafka_protocol::records::RecordBatchDecoder;
use ferrymq_kafka::kafka_protocol::ResponseError;
use ferrymq_store::log::{FileBackend, FsyncPolicy, LogConfig};
use ferrymq_store::partition::Partition;
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
}

/// The outcome of a produce to one partition: the base offset of its first batch.
pub type AppendResult = Result<i64, ResponseError>;

/// Batches read for a fetch.
#[derive(Debug)]
pub struct ReadResult {
    pub records: Vec<u8>,
    pub offsets: Offsets,
    pub error: Option<ResponseError>,
}

pub enum Command {
    Append {
        batches: Vec<(BatchHeader, Vec<u8>)>,
        reply: oneshot::Sender<AppendResult>,
    },
    Read {
        offset: i64,
        partition_max: usize,
        remaining: usize,
        first_in_response: bool,
        reply: oneshot::Sender<ReadResult>,
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
) -> Result<(PartitionHandle, tokio::task::JoinHandle<()>), ferrymq_store::log::LogError> {
    let mut producers: HashMap<i64, ProducerEntry> = HashMap::new();
    let log_config = LogConfig {
        max_segment_bytes: config.segment_bytes,
        max_record_bytes: 128 << 20,
        ..LogConfig::default()
    };
    let partition = tokio::task::block_in_place(|| {
        Partition::open(FileBackend, &dir, log_config, |bytes| {
            if let Ok(h) = batch::parse_header(bytes) {
                if h.is_idempotent() {
                    producers.entry(h.producer_id).or_default().record(&h);
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
    let offsets = Offsets {
        high_watermark: partition.high_watermark(),
        log_start: partition.start_offset(),
    };
    let (tx, rx) = mpsc::channel(INBOX);
    let (otx, orx) = watch::channel(offsets);
    let task = PartitionTask {
        partition,
        producers,
        config,
        policy,
        compacted_at: None,
        last_sync: Instant::now(),
        offsets: otx,
    };
    let join = tokio::spawn(task.run(rx));
    Ok((PartitionHandle { tx, offsets: orx }, join))
}

struct PartitionTask {
    partition: Partition<FileBackend>,
    producers: HashMap<i64, ProducerEntry>,
    config: TopicConfig,
    policy: FsyncPolicy,
    /// The active segment base at the last compaction pass (a pass runs once per newly
    /// sealed segment).
    compacted_at: Option<u64>,
    last_sync: Instant,
    offsets: watch::Sender<Offsets>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl PartitionTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(RETENTION_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => break,
                },
                _ = tick.tick() => {
                    self.retention();
                    self.compact();
                    self.maybe_interval_sync();
                    continue;
                }
            };
            let mut waiting: Vec<(oneshot::Sender<AppendResult>, AppendResult)> = Vec::new();
            let mut appended = false;
            self.handle(first, &mut waiting, &mut appended);
            for _ in 1..ROUND_CAP {
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd, &mut waiting, &mut appended),
                    Err(_) => break,
                }
            }
            if appended {
                if let Err(e) = self.commit() {
                    warn!(dir = %self.partition.dir().display(), error = %e, "partition append failed");
                    for (_, r) in waiting.iter_mut() {
                        if r.is_ok() {
                            *r = Err(ResponseError::KafkaStorageError);
                        }
                    }
                }
            }
            for (reply, result) in waiting {
                let _ = reply.send(result);
            }
            self.publish();
        }
        let _ = tokio::task::block_in_place(|| self.partition.sync());
        debug!(dir = %self.partition.dir().display(), "partition task stopped");
    }

    /// Makes this round's appends durable (or written, per policy) and visible.
    fn commit(&mut self) -> Result<(), ferrymq_store::log::LogError> {
        match self.policy {
            FsyncPolicy::Always => tokio::task::block_in_place(|| self.partition.sync()),
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => {
                self.last_sync = Instant::now();
                tokio::task::block_in_place(|| self.partition.sync())
            }
            _ => self.partition.flush(),
        }
    }

    fn maybe_interval_sync(&mut self) {
        if let FsyncPolicy::Interval(d) = self.policy {
            if self.last_sync.elapsed() >= d {
                self.last_sync = Instant::now();
                if let Err(e) = tokio::task::block_in_place(|| self.partition.sync()) {
                    warn!(error = %e, "partition fsync failed");
                }
            }
        }
    }

    fn publish(&self) {
        let o = Offsets {
            high_watermark: self.partition.high_watermark(),
            log_start: self.partition.start_offset(),
        };
        self.offsets.send_if_modified(|cur| {
            let changed = *cur != o;
            *cur = o;
            changed
        });
    }

    fn handle(
        &mut self,
        cmd: Command,
        waiting: &mut Vec<(oneshot::Sender<AppendResult>, AppendResult)>,
        appended: &mut bool,
    ) {
        match cmd {
            Command::Append { batches, reply } => {
                let r = self.append(batches, appended);
                waiting.push((reply, r));
            }
            Command::Read {
                offset,
                partition_max,
                remaining,
                first_in_response,
                reply,
            } => {
                let _ = reply.send(self.read(offset, partition_max, remaining, first_in_response));
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
                self.config = config;
            }
        }
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

    fn append(
        &mut self,
        batches: Vec<(BatchHeader, Vec<u8>)>,
        appended: &mut bool,
    ) -> AppendResult {
        // Idempotence: decide for every batch before appending any.
        let mut first_base = None;
        let mut todo = Vec::with_capacity(batches.len());
        for (h, bytes) in batches {
            if h.is_idempotent() {
                let check = self
                    .producers
                    .get(&h.producer_id)
                    .map_or(SequenceCheck::Append, |p| p.check(&h));
                match check {
                    SequenceCheck::Append => todo.push((h, bytes)),
                    SequenceCheck::Duplicate { base_offset } => {
                        // The producer state moves when a batch is appended, before the
                        // round's fsync: a retry of a batch whose round failed (or has
                        // not committed yet) is not acknowledged until the original is
                        // below the high watermark, which moves only once a commit
                        // (fsync under `always`) covered it. Found by the power-cut test.
                        if base_offset >= self.partition.high_watermark() {
                            debug!(
                                producer = h.producer_id,
                                seq = h.base_sequence,
                                base_offset,
                                "retry of a batch not yet committed"
                            );
                            return Err(ResponseError::KafkaStorageError);
                        }
                        debug!(
                            producer = h.producer_id,
                            seq = h.base_sequence,
                            "duplicate batch dropped"
                        );
                        first_base.get_or_insert(base_offset);
                    }
                    SequenceCheck::Reject(e) => return Err(e),
                }
            } else {
                todo.push((h, bytes));
            }
        }
        for (mut h, mut bytes) in todo {
            let base = self.partition.append(&mut bytes).map_err(|e| {
                warn!(error = %e, "append failed");
                ResponseError::KafkaStorageError
            })?;
            *appended = true;
            h.base_offset = base;
            if h.is_idempotent() {
                self.producers.entry(h.producer_id).or_default().record(&h);
            }
            first_base.get_or_insert(base);
        }
        first_base.ok_or(ResponseError::CorruptMessage)
    }

    fn read(
        &self,
        offset: i64,
        partition_max: usize,
        remaining: usize,
        first_in_response: bool,
    ) -> ReadResult {
        let offsets = Offsets {
            high_watermark: self.partition.high_watermark(),
            log_start: self.partition.start_offset(),
        };
        if offset < offsets.log_start || offset > offsets.high_watermark {
            return ReadResult {
                records: Vec::new(),
                offsets,
                error: Some(ResponseError::OffsetOutOfRange),
            };
        }
        let result = self.partition.read(offset, |size, so_far| {
            fits(size, so_far, partition_max, remaining, first_in_response)
        });
        match result {
            Ok(records) => ReadResult {
                records,
                offsets,
                error: None,
            },
            Err(e) => {
                warn!(error = %e, "partition read failed");
                ReadResult {
                    records: Vec::new(),
                    offsets,
                    error: Some(ResponseError::KafkaStorageError),
                }
            }
        }
    }

    /// `cleanup.policy=compact`: keeps the latest record of each key in the sealed
    /// segments (the active one is left alone, as in Kafka). Runs on the tick after a
    /// segment was sealed, in this task between produce rounds.
    fn compact(&mut self) {
        let active = self.partition.active_segment_base();
        if !self.config.compact || active == 0 || self.compacted_at == Some(active) {
            return;
        }
        self.compacted_at = Some(active);
        let partition = &mut self.partition;
        let result = tokio::task::block_in_place(|| {
            let batches = partition.batches()?;
            let latest = compaction::latest_offsets(batches.iter().map(|(_, b)| b.as_slice()));
            drop(batches);
            partition.rewrite_sealed(|b| compaction::compact_batch(b, &latest))
        });
        match result {
            Ok(0) => {}
            Ok(n) => info!(dir = %self.partition.dir().display(), segments = n, "compacted"),
            Err(e) => warn!(error = %e, "compaction failed"),
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
                info!(dir = %self.partition.dir().display(), segments = n, start = self.partition.start_offset(), "retention deleted segments");
                self.publish();
            }
            Err(e) => warn!(error = %e, "retention failed"),
        }
    }
}
