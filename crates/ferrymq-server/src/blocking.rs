//! Running a blocking step (an fsync the caller must wait for) from async code without
//! stalling the other tasks of the same worker thread, or off it altogether.

use ferrymq_store::log::{FileBackend, LogError, SyncJob};
use tokio::task::JoinHandle;

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

#[cfg(test)]
mod tests {
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
