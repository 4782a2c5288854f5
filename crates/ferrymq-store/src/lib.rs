//! Storage behind the queues: each queue's owner task holds a `QueueStore` and tells it
//! about every enqueue and settle (ack or drop), and asks it to make writes durable before
//! publisher confirms go out. Transient queues use `scratch::ScratchStore` (a scratch log
//! their backlog pages to, never fsynced, gone at restart); durable queues use
//! `queue_log::LogStore` over the segmented log in `log`. The durable definitions
//! (exchanges, queues, bindings) live in `definitions`.

pub mod cleaner_state;
pub mod dedup_journal;
pub mod definitions;
pub mod delay_log;
pub mod framing;
pub mod half_log;
pub mod io_stats;
pub mod log;
pub mod offsets;
pub mod partition;
pub mod queue_log;
pub mod scratch;
pub mod sync_worker;
pub mod topics;
pub mod txn_log;

use std::sync::Arc;

use ferrymq_core::queue::Offset;
use ferrymq_core::Message;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage is full")]
    Full,
}

/// What a queue finds in its store when it starts.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The offset the next enqueued message gets.
    pub next_offset: Offset,
    /// The first messages still in the queue, in offset order (at most `HEAD_BYTES`' worth).
    pub messages: Vec<(Offset, Arc<Message>)>,
    /// The rest of the messages still in the queue, as offsets to page in later.
    pub paged: Vec<Offset>,
    /// The priority of each paged message (0 when it has none), parallel to `paged`.
    pub paged_priority: Vec<u8>,
    /// Total size of the paged messages.
    pub paged_bytes: usize,
    /// Non-persistent messages found and discarded.
    pub dropped_transient: usize,
    /// `(offset, enqueued at (ms since the epoch), per-message TTL, size)` of recovered
    /// messages, in offset order: of every message if the store was asked to track times
    /// (the queue has a TTL), else only of messages with their own TTL.
    pub times: Vec<(Offset, i64, Option<u64>, u32)>,
}

/// An fsync started by [`QueueStore::begin_sync`]: [`SyncWork::run`] it on any thread
/// (it blocks), then hand it back to [`QueueStore::finish_sync`].
pub trait SyncWork: Send + 'static {
    /// Runs the fsync(s); the outcome is kept for `finish_sync`.
    fn run(&mut self);
    /// For the store to take its own job back.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

/// What a queue remembers across restarts.
pub trait QueueStore: Send + 'static {
    /// Records a message enqueued at `offset` (offsets are consecutive).
    fn append(&mut self, offset: Offset, msg: &Arc<Message>) -> Result<(), StoreError>;
    /// The owner's clock (ms since the epoch) for the appends that follow: a store that
    /// stamps records uses it instead of reading the clock per message. 0 = read it.
    fn set_clock(&mut self, now_ms: u64) {
        let _ = now_ms;
    }
    /// Records that messages left the queue (acked, dropped or purged).
    fn remove(&mut self, offsets: &[Offset]) -> Result<(), StoreError>;
    /// Hands buffered writes to the OS (no fsync).
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Makes every earlier call durable. Returns once it is.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Whether anything was written since the last `sync`.
    fn needs_sync(&self) -> bool;
    /// Starts making every earlier `append` durable without waiting: the returned work does
    /// the fsync off the caller's loop, and every earlier append is durable once
    /// [`QueueStore::finish_sync`] accepts it. Calls made meanwhile are not covered. `None`:
    /// already durable (stores that cannot split a sync do it here). Earlier `remove`s are
    /// handed to the OS but a store may leave their fsync to a later `begin_sync` (a lost
    /// remove is a redelivery, never a lost message); it then says by when with
    /// [`QueueStore::sync_deadline`].
    fn begin_sync(&mut self) -> Result<Option<Box<dyn SyncWork>>, StoreError> {
        self.sync().map(|()| None)
    }
    /// When the owner should run a `begin_sync` even if nothing else happens: removes
    /// written but not fsynced are due then. `None`: nothing is waiting.
    fn sync_deadline(&self) -> Option<std::time::Instant> {
        None
    }
    /// Ends a sync begun by [`QueueStore::begin_sync`] after its work ran: `Ok` means every
    /// call made before `begin_sync` is durable.
    fn finish_sync(&mut self, work: Box<dyn SyncWork>) -> Result<(), StoreError> {
        drop(work);
        Ok(())
    }
    /// What survived the last run.
    fn recover(&mut self) -> Result<Recovered, StoreError>;
    /// Whether messages can be dropped from memory and read back (`read`).
    fn can_page(&self) -> bool;
    /// Makes sure the store holds these messages (offset order) before the queue drops
    /// them from memory. A store that records every append has nothing to do.
    fn spill(&mut self, msgs: &[(Offset, Arc<Message>)]) -> Result<(), StoreError> {
        let _ = msgs;
        Ok(())
    }
    /// Reads back stored messages by offset (ascending); missing ones are left out.
    fn read(&mut self, offsets: &[Offset]) -> Result<Vec<(Offset, Arc<Message>)>, StoreError>;
    /// The queue was deleted: drop everything.
    fn destroy(&mut self) -> Result<(), StoreError>;
}

/// Storage that keeps nothing: for transient queues.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl QueueStore for MemoryStore {
    fn append(&mut self, _offset: Offset, _msg: &Arc<Message>) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove(&mut self, _offsets: &[Offset]) -> Result<(), StoreError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn needs_sync(&self) -> bool {
        false
    }
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }
    fn can_page(&self) -> bool {
        false
    }
    fn read(&mut self, _offsets: &[Offset]) -> Result<Vec<(Offset, Arc<Message>)>, StoreError> {
        Ok(Vec::new())
    }
    fn destroy(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The store of a durable queue whose log could not be opened: every append fails, so
/// the queue nacks publishes that asked for a confirm instead of confirming messages it
/// cannot keep (found by the power-cut test: a queue whose directory could not be
/// created kept running in memory and confirmed persistent messages that a restart
/// lost). Settles succeed (nothing durable to settle).
#[derive(Debug)]
pub struct FailedStore {
    path: String,
    reason: String,
}

impl FailedStore {
    /// A store for the log at `path` that failed to open with `reason`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> FailedStore {
        FailedStore {
            path: path.into(),
            reason: reason.into(),
        }
    }

    fn error(&self) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!(
                "the queue's log could not be opened ({}); restart to retry",
                self.reason
            )),
        }
    }
}

impl QueueStore for FailedStore {
    fn append(&mut self, _offset: Offset, _msg: &Arc<Message>) -> Result<(), StoreError> {
        Err(self.error())
    }
    fn remove(&mut self, _offsets: &[Offset]) -> Result<(), StoreError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn needs_sync(&self) -> bool {
        false
    }
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }
    fn can_page(&self) -> bool {
        false
    }
    fn read(&mut self, _offsets: &[Offset]) -> Result<Vec<(Offset, Arc<Message>)>, StoreError> {
        Ok(Vec::new())
    }
    fn destroy(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_store_refuses_every_append() {
        let mut s = FailedStore::new("/data/queues/x", "Input/output error");
        let msg = Arc::new(Message {
            exchange: bytes::Bytes::new(),
            routing_key: bytes::Bytes::from_static(b"x"),
            raw_properties: bytes::Bytes::from_static(&[0x10, 0x00, 2]),
            body: bytes::Bytes::from_static(b"m"),
            persistent: true,
            priority: None,
            headers: None,
            ttl_ms: None,
        });
        for offset in 0..3 {
            let e = s.append(offset, &msg).unwrap_err().to_string();
            assert!(
                e.contains("/data/queues/x") && e.contains("could not be opened"),
                "{e}"
            );
        }
        assert!(!s.needs_sync());
        assert!(s.sync().is_ok() && s.remove(&[0]).is_ok());
    }
}
