//! Group commit: many writers append to one log and wait for durability, and one fsync
//! covers everything that arrived meanwhile (RocksDB's write-group idea, without any
//! deliberate delay). A dedicated thread owns the [`Log`]; writers send requests on a
//! bounded channel (a full inbox is the backpressure signal) and get a [`Commit`] that
//! resolves once their records are durable. The thread takes the first request, then
//! everything already queued up to ~1 MiB of payload, appends it all, fsyncs once and
//! completes every waiter. The [`FsyncPolicy`] decides when that fsync happens.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrymq_core::queue::Offset;
use tokio::sync::oneshot;
use tracing::warn;

use super::{Backend, Log, LogError};

/// A batch stops growing once it holds this many payload bytes.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Requests the inbox holds before writers block (or get [`LogError::Busy`]).
pub const INBOX_CAPACITY: usize = 4096;

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every commit waits for an fsync covering it; concurrent commits share one.
    #[default]
    Always,
    /// Commits complete once written to the OS; an fsync runs at least this often.
    Interval(Duration),
    /// Commits complete once written to the OS; the log fsyncs only when a segment fills.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = LogError;

    /// Parses `always`, `never` or `interval:<ms>` (e.g. `interval:200`).
    fn from_str(s: &str) -> Result<Self, LogError> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => t
                .strip_prefix("interval:")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| FsyncPolicy::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| LogError::BadPolicy(s.to_owned())),
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

type Reply = oneshot::Sender<Result<Range<Offset>, LogError>>;
type LogCall<B> = Box<dyn FnOnce(&mut Log<B>) + Send>;

enum Request<B: Backend> {
    Append {
        records: Vec<(Vec<u8>, i64)>,
        reply: Reply,
    },
    Ack {
        offsets: Vec<Offset>,
        reply: Reply,
    },
    Call(LogCall<B>),
}

/// The outcome of a write sent to a [`GroupCommit`]: the offsets it got, available once
/// the policy is satisfied (durable under `always`, written under the others).
#[derive(Debug)]
pub struct Commit(oneshot::Receiver<Result<Range<Offset>, LogError>>);

impl Commit {
    /// Waits (blocking the thread) for the outcome. Not for use inside an async task.
    pub fn wait(self) -> Result<Range<Offset>, LogError> {
        self.0.blocking_recv().unwrap_or(Err(LogError::Closed))
    }

    /// Waits asynchronously for the outcome.
    pub async fn done(self) -> Result<Range<Offset>, LogError> {
        self.0.await.unwrap_or(Err(LogError::Closed))
    }
}

/// A log owned by a committer thread; see the module docs.
pub struct GroupCommit<B: Backend> {
    tx: Option<SyncSender<Request<B>>>,
    thread: Option<JoinHandle<Log<B>>>,
    durable: Arc<AtomicU64>,
    policy: FsyncPolicy,
}

impl<B: Backend> GroupCommit<B> {
    /// Moves `log` onto a new committer thread.
    pub fn start(log: Log<B>, policy: FsyncPolicy) -> Result<Self, LogError> {
        let (tx, rx) = mpsc::sync_channel(INBOX_CAPACITY);
        let durable = Arc::new(AtomicU64::new(log.durable_offset()));
        let shared = durable.clone();
        let dir = log.dir().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ferrymq-commit".into())
            .spawn(move || run(log, rx, policy, &shared))
            .map_err(|e| LogError::io("spawn committer for", dir, e))?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
            durable,
            policy,
        })
    }

    /// The policy this committer runs with.
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Every record below this offset is durable.
    pub fn durable_offset(&self) -> Offset {
        self.durable.load(Ordering::Acquire)
    }

    fn send(&self, req: Request<B>, block: bool) -> Result<(), LogError> {
        let tx = self.tx.as_ref().ok_or(LogError::Closed)?;
        if block {
            tx.send(req).map_err(|_| LogError::Closed)
        } else {
            tx.try_send(req).map_err(|e| match e {
                TrySendError::Full(_) => LogError::Busy,
                TrySendError::Disconnected(_) => LogError::Closed,
            })
        }
    }

    fn commit(&self, req: impl FnOnce(Reply) -> Request<B>, block: bool) -> Commit {
        let (reply, rx) = oneshot::channel();
        let (fail, fail_rx) = oneshot::channel();
        let req = req(reply);
        match self.send(req, block) {
            Ok(()) => Commit(rx),
            Err(e) => {
                let _ = fail.send(Err(e));
                Commit(fail_rx)
            }
        }
    }

    /// Appends records; blocks while the inbox is full.
    pub fn append_batch(&self, records: Vec<(Vec<u8>, i64)>) -> Commit {
        self.commit(|reply| Request::Append { records, reply }, true)
    }

    /// Appends one record; blocks while the inbox is full.
    pub fn append(&self, payload: Vec<u8>, timestamp: i64) -> Commit {
        self.append_batch(vec![(payload, timestamp)])
    }

    /// Like [`GroupCommit::append_batch`] but fails with [`LogError::Busy`] instead of
    /// blocking when the inbox is full (for async callers).
    pub fn try_append_batch(&self, records: Vec<(Vec<u8>, i64)>) -> Commit {
        self.commit(|reply| Request::Append { records, reply }, false)
    }

    /// Acks offsets; the commit resolves when the acks are durable under `always`.
    pub fn ack(&self, offsets: Vec<Offset>) -> Commit {
        self.commit(|reply| Request::Ack { offsets, reply }, true)
    }

    /// Runs `f` on the log in the committer thread, between batches (for reads and other
    /// operations); returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Log<B>) -> R + Send + 'static,
    ) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        let _ = self.send(
            Request::Call(Box::new(move |log| {
                let _ = tx.send(f(log));
            })),
            true,
        );
        rx
    }

    /// Stops the thread after it has handled every queued request and synced, and hands
    /// the log back.
    pub fn shutdown(mut self) -> Result<Log<B>, LogError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(log)) => Ok(log),
            _ => Err(LogError::Closed),
        }
    }
}

impl<B: Backend> Drop for GroupCommit<B> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The committer loop.
fn run<B: Backend>(
    mut log: Log<B>,
    rx: Receiver<Request<B>>,
    policy: FsyncPolicy,
    durable: &AtomicU64,
) -> Log<B> {
    let mut deadline = match policy {
        FsyncPolicy::Interval(d) => Some(Instant::now() + d),
        _ => None,
    };
    let mut open = true;
    while open {
        // Wait for work (or, under `interval`, for the next fsync time).
        let first = match deadline {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(req) => Some(req),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            },
            None => match rx.recv() {
                Ok(req) => Some(req),
                Err(_) => {
                    open = false;
                    None
                }
            },
        };
        // Take whatever else is already queued, up to the batch cap.
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        if let Some(req) = first {
            bytes += request_bytes(&req);
            batch.push(req);
            while bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(req) => {
                        bytes += request_bytes(&req);
                        batch.push(req);
                    }
                    Err(_) => break,
                }
            }
        }
        let mut done: Vec<(Reply, Result<Range<Offset>, LogError>)> = Vec::new();
        for req in batch {
            match req {
                Request::Append { records, reply } => {
                    let r = log.append_batch(records.iter().map(|(p, t)| (p.as_slice(), *t)));
                    done.push((reply, r));
                }
                Request::Ack { offsets, reply } => {
                    let r = offsets
                        .iter()
                        .try_for_each(|&o| log.ack(o).map(drop))
                        .map(|()| 0..0);
                    done.push((reply, r));
                }
                Request::Call(f) => f(&mut log),
            }
        }
        let due = deadline.is_some_and(|at| Instant::now() >= at);
        let outcome = match policy {
            FsyncPolicy::Always => {
                if done.is_empty() && open {
                    Ok(())
                } else {
                    log.sync().map(drop)
                }
            }
            _ if due || !open => {
                if let (Some(at), FsyncPolicy::Interval(d)) = (deadline.as_mut(), policy) {
                    *at = Instant::now() + d;
                }
                log.sync().map(drop)
            }
            _ => log.flush(),
        };
        durable.store(log.durable_offset(), Ordering::Release);
        let failure = match outcome {
            Ok(()) => None,
            Err(e) => {
                warn!(dir = %log.dir().display(), error = %e, "group commit failed");
                Some(Arc::new(e))
            }
        };
        for (reply, result) in done {
            let result = match (&failure, result) {
                (Some(e), Ok(_)) => Err(LogError::Batch(e.clone())),
                (_, r) => r,
            };
            let _ = reply.send(result);
        }
    }
    log
}

fn request_bytes<B: Backend>(req: &Request<B>) -> usize {
    match req {
        Request::Append { records, .. } => records.iter().map(|(p, _)| p.len() + 24).sum(),
        Request::Ack { offsets, .. } => offsets.len() * 8,
        Request::Call(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_and_prints() {
        for (text, policy) in [
            ("always", FsyncPolicy::Always),
            ("never", FsyncPolicy::Never),
            (
                "interval:250",
                FsyncPolicy::Interval(Duration::from_millis(250)),
            ),
        ] {
            assert_eq!(text.parse::<FsyncPolicy>().unwrap(), policy);
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            " Always ".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        for bad in [
            "",
            "sometimes",
            "interval:",
            "interval:0",
            "interval:-5",
            "interval:1.5",
        ] {
            assert!(
                matches!(bad.parse::<FsyncPolicy>(), Err(LogError::BadPolicy(_))),
                "{bad}"
            );
        }
        assert_eq!(FsyncPolicy::default(), FsyncPolicy::Always);
    }
}
