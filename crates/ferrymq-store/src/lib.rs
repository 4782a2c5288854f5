//! Queue storage behind one interface. Each queue's owner task holds a `QueueStore` and
//! tells it about every enqueue, settle (ack or drop) and requeue, and asks it to make
//! writes durable before confirming them. This issue ships `MemoryStore` (nothing survives
//! a restart); the segmented on-disk log implements the same trait.

pub mod definitions;
pub mod log;

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

/// What a queue remembers across restarts.
pub trait QueueStore: Send + 'static {
    /// Records a message enqueued at `offset`.
    fn append(&mut self, offset: Offset, msg: &Arc<Message>) -> Result<(), StoreError>;
    /// Records that messages left the queue (acked, dropped or purged).
    fn remove(&mut self, offsets: &[Offset]) -> Result<(), StoreError>;
    /// Makes every earlier call durable. Returns once it is.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Messages that survived the last restart, in offset order.
    fn recover(&mut self) -> Result<Vec<(Offset, Arc<Message>)>, StoreError>;
    /// The queue was deleted: drop everything.
    fn destroy(&mut self) -> Result<(), StoreError>;
}

/// Storage that keeps nothing: for transient queues, and for all queues until the on-disk
/// log lands.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl QueueStore for MemoryStore {
    fn append(&mut self, _offset: Offset, _msg: &Arc<Message>) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove(&mut self, _offsets: &[Offset]) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn recover(&mut self) -> Result<Vec<(Offset, Arc<Message>)>, StoreError> {
        Ok(Vec::new())
    }
    fn destroy(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
