//! Running a blocking step (an fsync the caller must wait for) from async code without
//! stalling the other tasks of the same worker thread, or off it altogether.

use std::fmt::Display;
use std::time::Duration;

use ferrymq_core::queue::Offset;
use ferrymq_store::log::{FileBackend, FsyncPolicy, LogError, SyncJob};
use tokio::task::{JoinError, JoinHandle};

use crate::queue_task::ConfirmToken;

/// Runs `f`, which blocks (a journal's write and fsync), on the current thread after
/// handing this worker's other tasks to another worker (`block_in_place`), when called from
/// a multi-threaded runtime; anywhere else (a current-thread runtime, no runtime) it just
/// runs `f`.
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A log's fsync job ([`SyncJob::run`]) running on a tokio blocking thread, with the
/// publisher confirms it will release: the owner task awaits `work` in its select loop and
/// hands the job back to its log's `finish_sync`.
pub struct BlockingSync {
    pub confirms: Vec<ConfirmToken>,
    pub work: JoinHandle<(SyncJob<FileBackend>, Result<(), LogError>)>,
}

impl BlockingSync {
    pub fn spawn(job: SyncJob<FileBackend>, confirms: Vec<ConfirmToken>) -> BlockingSync {
        BlockingSync {
            confirms,
            work: tokio::task::spawn_blocking(move || {
                let r = job.run();
                (job, r)
            }),
        }
    }
}

/// How often, under `always`, a log whose only unsynced writes are acks gets an fsync (a
/// lost ack only means a redelivery after a crash): the queue logs' interval, for the
/// delay and half-message logs too.
pub const ACK_SYNC: Duration = ferrymq_store::queue_log::ACK_SYNC_INTERVAL;

/// Whether an owner starts an fsync now, `since` the last one began: under `always` at once
/// when publishers wait for it (`waiting`), else (only acks to make durable) every
/// [`ACK_SYNC`]; under `interval` when the interval is up; never under `never`.
pub fn sync_due(policy: FsyncPolicy, since: Duration, waiting: bool) -> bool {
    match policy {
        FsyncPolicy::Always => waiting || since >= ACK_SYNC,
        FsyncPolicy::Interval(d) => since >= d,
        FsyncPolicy::Never => false,
    }
}

/// What a [`BlockingSync`]'s thread returns.
pub type SyncDone = Result<(SyncJob<FileBackend>, Result<(), LogError>), JoinError>;

/// Hands a finished [`BlockingSync`] back to its log (`finish`, the log's `finish_sync`)
/// and says whether what it covered is durable. A failed fsync is logged (the log then
/// refuses writes); a thread that died takes the job with it, so the log is dropped
/// (`*log = None`): nothing it covered may be confirmed, and nothing later either. `what`
/// names the log in the messages.
pub fn finish_sync<L, E: Display>(
    log: &mut Option<L>,
    done: SyncDone,
    what: &dyn Display,
    finish: impl FnOnce(&mut L, SyncJob<FileBackend>, Result<(), LogError>) -> Result<Offset, E>,
) -> bool {
    match (done, log.as_mut()) {
        (Ok((job, result)), Some(l)) => match finish(l, job, result) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!("{what}: fsync failed: {e}");
                false
            }
        },
        (Ok(_), None) => false,
        (Err(e), _) => {
            tracing::error!("{what}: fsync thread failed: {e}");
            *log = None;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_publishers_sync_at_once_acks_every_interval() {
        let ms = Duration::from_millis;
        let always = FsyncPolicy::Always;
        assert!(sync_due(always, ms(0), true));
        assert!(!sync_due(always, ms(50), false));
        assert!(sync_due(always, ms(100), false));
        let interval = FsyncPolicy::Interval(ms(200));
        assert!(!sync_due(interval, ms(199), true));
        assert!(sync_due(interval, ms(200), false));
        assert!(!sync_due(FsyncPolicy::Never, ms(10_000), true));
    }

    #[test]
    fn runs_outside_a_runtime() {
        assert_eq!(super::run(|| 7), 7);
    }

    #[tokio::test]
    async fn runs_on_a_current_thread_runtime() {
        assert_eq!(super::run(|| 8), 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_a_multi_thread_runtime() {
        assert_eq!(super::run(|| 9), 9);
    }
}
