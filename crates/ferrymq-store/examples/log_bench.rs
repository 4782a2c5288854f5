//! Measures the segmented log on the real file system: appends with group commit
//! (fsync before every commit completes), recovery time of a large log, and a full
//! drain by reading and acking. Run in release:
//!
//! ```text
//! cargo run --release -p ferrymq-store --example log_bench -- [records] [payload bytes] [writers] [dir] [records per request]
//! ```

use std::sync::Arc;
use std::time::Instant;

use ferrymq_store::log::{FileBackend, FsyncPolicy, GroupCommit, Log, LogConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let records = arg(1, 1_000_000);
    let size = arg(2, 16);
    let writers = arg(3, 64).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = args
        .get(4)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("log"));

    // 1. Group commit: `writers` threads, each waiting for the fsync of its own append;
    //    each request carries a batch of records so that the run ends in reasonable time.
    let log = Log::open(FileBackend, &dir, LogConfig::default()).expect("open");
    let gc = Arc::new(GroupCommit::start(log, FsyncPolicy::Always).expect("start"));
    let per_writer = records / writers;
    let per_request = arg(5, 100).clamp(1, per_writer.max(1));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..writers {
            let gc = gc.clone();
            s.spawn(move || {
                let mut left = per_writer;
                while left > 0 {
                    let n = per_request.min(left);
                    let batch = (0..n).map(|_| (vec![0x5A; size], 0)).collect();
                    gc.append_batch(batch).wait().expect("commit");
                    left -= n;
                }
            });
        }
    });
    let t = start.elapsed().as_secs_f64();
    let total = per_writer * writers;
    println!(
        "append, fsync before each commit: {total} x {size} B from {writers} writers \
         ({per_request}/request): {:.0} records/s, {:.1} MB/s",
        total as f64 / t,
        (total * size) as f64 / t / 1e6
    );
    let log = Arc::into_inner(gc)
        .expect("sole owner")
        .shutdown()
        .expect("shutdown");
    drop(log);

    // 2. Single writer, one record per commit: the latency-bound case.
    let log =
        Log::open(FileBackend, tmp.path().join("single"), LogConfig::default()).expect("open");
    let gc = GroupCommit::start(log, FsyncPolicy::Always).expect("start");
    let n = 2000;
    let start = Instant::now();
    for _ in 0..n {
        gc.append(vec![0x5A; size], 0).wait().expect("commit");
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "one writer, one record per fsync: {:.0} commits/s",
        n as f64 / t
    );
    drop(gc);

    // 3. Recovery of the big log.
    let start = Instant::now();
    let log = Log::open(FileBackend, &dir, LogConfig::default()).expect("reopen");
    let t = start.elapsed();
    println!(
        "recovery of {} records in {} segments: {:.3} s",
        log.next_offset(),
        log.segment_count(),
        t.as_secs_f64()
    );
    let start = Instant::now();
    let unacked = log.unacked().count();
    println!(
        "unacked() over them: {unacked} in {:.3} s",
        start.elapsed().as_secs_f64()
    );

    // 4. Drain: read everything from the files and ack it; segments are deleted as
    //    they empty.
    let mut log = log;
    let start = Instant::now();
    let mut bytes = 0usize;
    let mut offsets = Vec::new();
    for r in log.reader(0) {
        let r = r.expect("read");
        bytes += r.payload.len();
        offsets.push(r.offset);
    }
    let read_t = start.elapsed().as_secs_f64();
    for o in offsets {
        log.ack(o).expect("ack");
    }
    log.sync().expect("sync");
    let t = start.elapsed().as_secs_f64();
    println!(
        "drain: read {bytes} payload bytes in {read_t:.3} s ({:.0} records/s), read+ack+sync \
         {t:.3} s; {} segment(s) left",
        unacked as f64 / read_t,
        log.segment_count()
    );
}
