//! The broker's shared state: the (single, `/`) virtual host's topology, id generators and
//! the shutdown signal. Topology changes take the write lock briefly; publishes take the
//! read lock to route. Queue state is never behind a lock: each queue has its owner task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrymq_core::topology::{Declared, QueueSpec, Topology};
use ferrymq_core::CoreError;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::queue_task::{self, Outbound, QueueHandle};
use ahash::AHashMap;
use ferrymq_core::queue::ConsumerId;
use tokio::sync::mpsc;

/// Shared broker state.
pub struct Broker {
    pub config: Config,
    topology: RwLock<Topology<QueueHandle>>,
    /// Bumped on every topology change, so channels can cache routes.
    epoch: AtomicU64,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    queue_tasks: Mutex<JoinSet<()>>,
    /// Direct reply-to consumers by their pseudo-queue name (`amq.rabbitmq.reply-to.…`).
    reply_to: Mutex<AHashMap<String, ReplyConsumer>>,
}

/// Where replies addressed to a direct reply-to name go.
#[derive(Clone)]
pub struct ReplyConsumer {
    pub consumer: ConsumerId,
    pub outbound: mpsc::UnboundedSender<Outbound>,
}

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            topology: RwLock::new(Topology::new()),
            epoch: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            queue_tasks: Mutex::new(JoinSet::new()),
            reply_to: Mutex::new(AHashMap::new()),
        })
    }

    /// A fresh broker-wide id (connections, consumers, queues).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Reads the topology.
    pub fn read<R>(&self, f: impl FnOnce(&Topology<QueueHandle>) -> R) -> R {
        f(&self.topology.read())
    }

    /// Changes the topology (and invalidates cached routes).
    pub fn write<R>(&self, f: impl FnOnce(&mut Topology<QueueHandle>) -> R) -> R {
        let mut t = self.topology.write();
        let r = f(&mut t);
        self.epoch.fetch_add(1, Ordering::Release);
        r
    }

    /// Declares a queue, starting its owner task if it is new.
    pub fn declare_queue(
        self: &Arc<Self>,
        spec: QueueSpec,
        passive: bool,
        connection: u64,
    ) -> Result<Declared<QueueHandle>, CoreError> {
        let mut spawned = None;
        let r = self.write(|t| {
            t.declare_queue(spec, passive, connection, |spec| {
                let (handle, task) = queue_task::create(self.clone(), self.next_id(), spec);
                spawned = Some(task);
                handle
            })
        });
        if let Some(task) = spawned {
            self.queue_tasks.lock().spawn(task);
        }
        r
    }

    /// Removes a queue from the topology if `handle` is still the queue under that name.
    pub fn forget_queue(&self, handle: &QueueHandle) {
        self.write(|t| {
            if t.queue(handle.name()).is_some_and(|q| q.handle == *handle) {
                t.remove_queue(handle.name());
            }
        });
    }

    pub fn register_reply_to(&self, name: String, c: ReplyConsumer) {
        self.reply_to.lock().insert(name, c);
    }

    pub fn unregister_reply_to(&self, name: &str) {
        self.reply_to.lock().remove(name);
    }

    pub fn reply_consumer(&self, name: &str) -> Option<ReplyConsumer> {
        self.reply_to.lock().get(name).cloned()
    }

    /// A receiver that turns true when the broker shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops every queue task (after connections are gone) and waits for them.
    pub async fn stop_queues(&self) {
        let handles: Vec<QueueHandle> = self.write(|t| {
            let names: Vec<_> = t.queues().map(|q| q.spec.name.clone()).collect();
            names
                .iter()
                .filter_map(|n| t.remove_queue(n))
                .map(|q| q.handle)
                .collect()
        });
        for h in &handles {
            h.stop();
        }
        drop(handles);
        let mut set = std::mem::take(&mut *self.queue_tasks.lock());
        while set.join_next().await.is_some() {}
    }
}
