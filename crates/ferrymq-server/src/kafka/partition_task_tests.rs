//! The partition task on the fault-injecting disk, with a slow fsync: a produce is never
//! answered before the fsync covering it has completed (a power cut right after any
//! answer keeps the answered batch), the task keeps appending and reading while an fsync
//! runs, and a failed fsync fails every produce it or a later round held.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrymq_kafka::api::configs::TopicConfig;
use ferrymq_kafka::batch;
use ferrymq_kafka::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use ferrymq_kafka::kafka_protocol::ResponseError;
use ferrymq_store::log::fault::{CrashMode, FaultBackend};
use ferrymq_store::log::{FsyncPolicy, LogConfig};
use ferrymq_store::partition::Partition;
use tokio::sync::oneshot;

use super::{start_on, AppendResult, Command, PartitionHandle};

/// A batch of `n` records tagged `tag` (values `tag:i`); idempotent if `producer` is
/// given as (id, first sequence).
fn records(tag: u32, n: usize, producer: Option<(i64, i32)>) -> Bytes {
    encode(tag, n, false, producer)
}

/// `n` records `tag:i` in one batch, transactional or not, of `producer` (id, first
/// sequence) at epoch 0 if given.
fn encode(tag: u32, n: usize, transactional: bool, producer: Option<(i64, i32)>) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            delete_horizon: false,
            producer_id: producer.map_or(-1, |p| p.0),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: producer.map_or(-1, |p| p.1 + i as i32),
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from(format!("{tag}:{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn dir() -> PathBuf {
    PathBuf::from("/data/kafka/t/0")
}

fn start(disk: &FaultBackend) -> PartitionHandle {
    let (handle, _join) = start_on(
        disk.clone(),
        dir(),
        TopicConfig::resolve(&Default::default()),
        FsyncPolicy::Always,
        Default::default(),
    )
    .expect("start");
    handle
}

async fn send(p: &PartitionHandle, records: Bytes) -> oneshot::Receiver<AppendResult> {
    let headers = batch::validate(&records).expect("valid batch");
    let (reply, rx) = oneshot::channel();
    p.tx.send(Command::Append {
        records,
        headers,
        reply,
    })
    .await
    .expect("task running");
    rx
}

/// The Kafka base offsets of the batches stored in the partition at `dir` (after a
/// crash: what survived).
fn stored(disk: &FaultBackend, dir: &Path) -> Vec<i64> {
    let mut bases = Vec::new();
    Partition::open(disk.clone(), dir, LogConfig::default(), |b| {
        bases.push(batch::parse_header(b).unwrap().base_offset)
    })
    .expect("reopen");
    bases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_never_precedes_the_fsync_covering_it() {
    for seed in 0..6u64 {
        let disk = FaultBackend::new(seed);
        disk.set_sync_delay(Some(Duration::from_millis(15)));
        let p = start(&disk);
        // Produces keep arriving (several per fsync); the power is cut right after the
        // `cut_after`th answer.
        let cut_after = 3 + seed as usize * 2;
        let mut pending = std::collections::VecDeque::new();
        let mut answered = Vec::new();
        let mut tag = 0u32;
        while answered.len() < cut_after {
            while pending.len() < 4 {
                pending.push_back(send(&p, records(tag, 3, None)).await);
                tag += 1;
            }
            let base = pending
                .pop_front()
                .unwrap()
                .await
                .expect("answered")
                .expect("stored");
            answered.push(base);
        }
        disk.crash(CrashMode::all());
        drop(p);
        let survived = stored(&disk, &dir());
        for base in &answered {
            assert!(
                survived.contains(base),
                "seed {seed}: batch at {base} was answered but lost ({survived:?})"
            );
        }
        // Group commit: fewer fsyncs than produces answered.
        assert!(disk.sync_count() < tag as u64 + 2, "seed {seed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_appends_and_reads_while_an_fsync_runs() {
    let disk = FaultBackend::new(7);
    let p = start(&disk);
    // Something to read, durable.
    send(&p, records(0, 2, None)).await.await.unwrap().unwrap();
    disk.set_sync_delay(Some(Duration::from_millis(300)));
    let first = send(&p, records(1, 2, None)).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The fsync covering `first` is running: the next produce is taken and appended,
    // and a read is served at once, both long before that fsync completes.
    let second = send(&p, records(2, 2, None)).await;
    let (reply, rx) = oneshot::channel();
    let asked = std::time::Instant::now();
    p.tx.send(Command::Read {
        offset: 0,
        partition_max: 1 << 20,
        remaining: 1 << 20,
        first_in_response: true,
        committed: false,
        reply,
    })
    .await
    .unwrap();
    let read = rx.await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(200),
        "read waited on the fsync"
    );
    // Only what a completed fsync covered is visible.
    assert_eq!(read.offsets.high_watermark, 2);
    let got: Vec<(i64, i32)> = batch::validate(&read.records)
        .unwrap()
        .iter()
        .map(|h| (h.base_offset, h.record_count))
        .collect();
    // (The encoder writes a non-idempotent producer's records one batch each.)
    assert_eq!(got, [(0, 1), (1, 1)]);
    assert_eq!(first.await.unwrap(), Ok(2));
    assert_eq!(second.await.unwrap(), Ok(4));
    assert_eq!(p.offsets().high_watermark, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_its_round_and_the_next_and_acks_nothing_later() {
    let disk = FaultBackend::new(11);
    let p = start(&disk);
    let durable = send(&p, records(0, 1, Some((5, 0)))).await.await.unwrap();
    assert_eq!(durable, Ok(0));
    disk.set_sync_delay(Some(Duration::from_millis(100)));
    disk.fail_next_sync();
    // Round N: its fsync will fail. Round N+1 appends while it runs.
    let failing = send(&p, records(1, 2, Some((5, 1)))).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let next_round = send(&p, records(2, 2, Some((5, 3)))).await;
    assert_eq!(
        failing.await.unwrap(),
        Err(ResponseError::KafkaStorageError)
    );
    assert_eq!(
        next_round.await.unwrap(),
        Err(ResponseError::KafkaStorageError)
    );
    // Nothing after the failure is acknowledged: not a new batch, not a retry of the
    // failed one (which the producer state has seen), and nothing becomes visible.
    let later = send(&p, records(3, 1, None)).await;
    assert_eq!(later.await.unwrap(), Err(ResponseError::KafkaStorageError));
    let retry = send(&p, records(1, 2, Some((5, 1)))).await;
    assert_eq!(retry.await.unwrap(), Err(ResponseError::KafkaStorageError));
    assert_eq!(p.offsets().high_watermark, 1);
    // After a power cut the acknowledged batch is there.
    disk.crash(CrashMode::all());
    drop(p);
    assert!(stored(&disk, &dir()).contains(&0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_waits_for_its_original_to_be_durable() {
    let disk = FaultBackend::new(3);
    let p = start(&disk);
    disk.set_sync_delay(Some(Duration::from_millis(150)));
    let original = send(&p, records(0, 2, Some((9, 0)))).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The producer retries while the original's fsync runs: the retry is a duplicate,
    // answered with the original's offset, but not before the original is durable.
    let retry = send(&p, records(0, 2, Some((9, 0)))).await;
    let hw_seen = tokio::spawn({
        let p = p.clone();
        async move {
            let answer = retry.await.unwrap();
            (answer, p.offsets().high_watermark)
        }
    });
    assert_eq!(original.await.unwrap(), Ok(0));
    let (answer, hw) = hw_seen.await.unwrap();
    assert_eq!(answer, Ok(0));
    assert_eq!(
        hw, 2,
        "the duplicate was answered before its original was durable"
    );
}

/// A transactional batch of producer `pid` (epoch 0) from sequence `seq`.
fn txn_records(tag: u32, n: usize, pid: i64, seq: i32) -> Bytes {
    encode(tag, n, true, Some((pid, seq)))
}

/// Writes a marker of transaction `seq`; true once it was appended (or already held).
async fn marker(p: &PartitionHandle, pid: i64, commit: bool, seq: i32) -> bool {
    let (reply, rx) = oneshot::channel();
    let (appended, arx) = oneshot::channel();
    p.tx.send(Command::Marker {
        producer_id: pid,
        epoch: 0,
        commit,
        seq,
        appended: Some(appended),
        reply,
    })
    .await
    .expect("task running");
    let appended = arx.await.is_ok();
    rx.await.expect("answered").expect("durable");
    appended
}

/// The first offset of `pid`'s open transaction, -1 if none.
async fn open_since(p: &PartitionHandle, pid: i64) -> i64 {
    let (reply, rx) = oneshot::channel();
    p.tx.send(Command::Describe { reply })
        .await
        .expect("task running");
    let d = rx.await.expect("described");
    d.producers
        .iter()
        .find(|s| s.producer_id == pid)
        .map_or(-1, |s| s.txn_start_offset)
}

/// Recovery writes the markers of a transaction whose completion was not yet known
/// durable again: a partition that already holds that transaction's marker (by its
/// sequence, also after a restart) must not let it close the producer's next
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_written_again_is_skipped_by_its_sequence() {
    let disk = FaultBackend::new(3);
    let p = start(&disk);
    let pid = 7;
    send(&p, txn_records(1, 2, pid, 0))
        .await
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open_since(&p, pid).await, 0);
    assert!(marker(&p, pid, true, 5).await);
    assert_eq!(open_since(&p, pid).await, -1, "transaction 5 committed");
    // Transaction 6 writes (offsets 3, 4), then transaction 5's marker comes again.
    send(&p, txn_records(2, 2, pid, 2))
        .await
        .await
        .unwrap()
        .unwrap();
    assert!(marker(&p, pid, true, 5).await);
    assert_eq!(open_since(&p, pid).await, 3, "transaction 6 still open");
    // A restart reads the sequence back from the stored marker.
    disk.crash(CrashMode::all());
    let p = start(&disk);
    assert_eq!(open_since(&p, pid).await, 3);
    assert!(marker(&p, pid, true, 5).await);
    assert_eq!(open_since(&p, pid).await, 3, "still open after the restart");
    // Its own marker closes it; a marker without a sequence is always written.
    assert!(marker(&p, pid, false, 6).await);
    assert_eq!(open_since(&p, pid).await, -1);
    send(&p, txn_records(3, 1, pid, 4))
        .await
        .await
        .unwrap()
        .unwrap();
    assert!(marker(&p, pid, false, 0).await);
    assert_eq!(open_since(&p, pid).await, -1);
}
