//! Process-wide fsync counters: every `fdatasync`/`fsync` the broker issues (logs,
//! journals, directories, metadata files) goes through [`sync_data`] or [`sync_all`], which
//! count the call and the time it took. Exported as RabbitMQ's `rabbitmq_io_sync_ops_total`
//! and `rabbitmq_io_sync_time_seconds_total`, so an operator sees how many fsyncs group
//! commit costs and how long the disk takes to answer them.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static SYNC_OPS: AtomicU64 = AtomicU64::new(0);
static SYNC_NANOS: AtomicU64 = AtomicU64::new(0);

fn timed(f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let start = Instant::now();
    let r = f();
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    SYNC_OPS.fetch_add(1, Ordering::Relaxed);
    SYNC_NANOS.fetch_add(nanos, Ordering::Relaxed);
    r
}

/// `fdatasync`, counted.
pub fn sync_data(file: &File) -> io::Result<()> {
    timed(|| file.sync_data())
}

/// `fsync`, counted (new files and directories: metadata included).
pub fn sync_all(file: &File) -> io::Result<()> {
    timed(|| file.sync_all())
}

/// Fsyncs issued since the process started, failed ones included.
pub fn sync_ops() -> u64 {
    SYNC_OPS.load(Ordering::Relaxed)
}

/// Seconds spent inside those fsyncs.
pub fn sync_seconds() -> f64 {
    SYNC_NANOS.load(Ordering::Relaxed) as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_are_counted_with_their_time() {
        let dir = std::env::temp_dir().join(format!("ferrymq-io-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = File::create(dir.join("f")).expect("file");
        let (ops, secs) = (sync_ops(), sync_seconds());
        sync_data(&f).expect("fdatasync");
        sync_all(&File::open(&dir).expect("open dir")).expect("fsync dir");
        // Other tests in this process may sync too: at least ours were counted.
        assert!(sync_ops() >= ops + 2);
        assert!(sync_seconds() > secs);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
