//! One owner task per queue. Connections send it commands over an unbounded inbox (batched:
//! a connection flushes all publishes and acks for a queue from one socket read as one
//! command); the task applies them to its `QueueState`, dispatches to consumers, and sends
//! each consumer's connection one batch of deliveries per round.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use ferrymq_core::queue::{ConsumerId, Delivery, Entry, Offset, QueueState};
use ferrymq_core::topology::QueueSpec;
use ferrymq_core::{CoreError, Message};
use ferrymq_store::{MemoryStore, QueueStore};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::broker::Broker;

/// Channel-wide prefetch (`basic.qos global=true`), shared by the channel and the queues
/// its consumers read from.
#[derive(Debug, Default)]
pub struct ChannelCredit {
    limit: AtomicU32,
    in_flight: AtomicU32,
}

impl ChannelCredit {
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Reserves room for one unacked delivery, if the channel has any.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut cur = self.in_flight.load(Ordering::Relaxed);
        loop {
            if limit != 0 && cur >= limit {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Frees `n` reservations; returns true if the channel was at its limit before.
    pub fn release(&self, n: u32) -> bool {
        let before = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        let limit = self.limit();
        limit != 0 && before >= limit
    }
}

/// What queue tasks send to a connection.
pub enum Outbound {
    /// Messages for consumers of this connection.
    Deliveries {
        queue: QueueHandle,
        items: Vec<Delivery>,
    },
    /// The queue cancelled this consumer (the queue was deleted).
    Cancelled { consumer: ConsumerId },
    /// A reply for a direct reply-to consumer (delivered without ack).
    Reply {
        consumer: ConsumerId,
        msg: Arc<Message>,
    },
}

/// Where a consumer's deliveries go.
pub struct ConsumerLink {
    pub id: ConsumerId,
    pub connection: u64,
    pub outbound: mpsc::UnboundedSender<Outbound>,
    pub credit: Arc<ChannelCredit>,
    /// Deliveries sent to the connection that it has not written out yet, shared by all
    /// queues feeding it: above `CONNECTION_BACKLOG_HIGH` queues stop dispatching to it
    /// (a slow reader with unlimited prefetch or no-ack must not grow memory without bound).
    pub backlog: Arc<AtomicUsize>,
    pub no_ack: bool,
}

/// Deliveries a connection may have waiting in its inbox before queues hold back.
pub const CONNECTION_BACKLOG_HIGH: usize = 16_384;
/// The connection wakes its queues when its backlog drains to this.
pub const CONNECTION_BACKLOG_LOW: usize = 4_096;

/// One operation in a batch from a connection.
pub enum QueueOp {
    Publish(Arc<Message>),
    Ack(Offset),
    Requeue(Offset),
    Drop(Offset),
}

/// Result of `basic.get`.
pub type GetResult = Option<(Entry, usize)>;

/// Commands a queue task accepts.
pub enum QueueCmd {
    Batch(Vec<QueueOp>),
    Consume {
        link: ConsumerLink,
        prefetch: u32,
        exclusive: bool,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    Cancel {
        consumer: ConsumerId,
        reply: Option<oneshot::Sender<()>>,
    },
    Get {
        no_ack: bool,
        reply: oneshot::Sender<GetResult>,
    },
    Purge {
        reply: oneshot::Sender<usize>,
    },
    /// (ready messages, consumers)
    Stats {
        reply: oneshot::Sender<(usize, usize)>,
    },
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<usize, CoreError>>,
    },
    /// Channel-wide credit was freed: try dispatching again.
    Kick,
    Stop,
}

struct Inner {
    id: u64,
    name: Arc<str>,
    tx: mpsc::UnboundedSender<QueueCmd>,
    /// Acks, requeues and drops: applied ahead of queued publishes so that consumers are
    /// not starved behind a publisher's backlog (their relative order does not matter).
    settle_tx: mpsc::UnboundedSender<QueueOp>,
    /// Operations sent but not yet applied: the queue's backpressure signal.
    backlog: AtomicUsize,
    /// Woken when the backlog falls back to `BACKLOG_LOW`.
    drained: Notify,
}

/// Above this many unapplied operations a queue is congested: connections sending to it
/// stop reading their sockets until it drains to `BACKLOG_LOW`.
const BACKLOG_HIGH: usize = 16_384;
const BACKLOG_LOW: usize = 4_096;

/// A cheap, clonable reference to a queue's task.
#[derive(Clone)]
pub struct QueueHandle(Arc<Inner>);

impl PartialEq for QueueHandle {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue({}#{})", self.0.name, self.0.id)
    }
}

impl QueueHandle {
    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Sends a command; a queue that is gone ignores it (its replies never come, which
    /// callers treat as "queue deleted").
    pub fn send(&self, cmd: QueueCmd) {
        let _ = self.0.tx.send(cmd);
    }

    /// Sends a batch of operations, counting them towards the queue's backlog.
    pub fn send_batch(&self, ops: Vec<QueueOp>) {
        self.0.backlog.fetch_add(ops.len(), Ordering::AcqRel);
        self.send(QueueCmd::Batch(ops));
    }

    /// Sends acks / requeues / drops (never publishes) on the priority inbox.
    pub fn send_settles(&self, ops: Vec<QueueOp>) {
        for op in ops {
            let _ = self.0.settle_tx.send(op);
        }
    }

    /// True while the queue has more unapplied operations than it should.
    pub fn is_congested(&self) -> bool {
        self.0.backlog.load(Ordering::Acquire) > BACKLOG_HIGH
    }

    /// Waits until the queue's backlog is back to its low-water mark.
    pub async fn uncongested(&self) {
        loop {
            let notified = self.0.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.backlog.load(Ordering::Acquire) <= BACKLOG_LOW || self.0.tx.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Called by the queue task after applying `n` operations.
    fn applied(&self, n: usize) {
        let before = self.0.backlog.fetch_sub(n, Ordering::AcqRel);
        if before > BACKLOG_LOW && before - n <= BACKLOG_LOW {
            self.0.drained.notify_waiters();
        }
    }

    pub fn stop(&self) {
        self.send(QueueCmd::Stop);
    }

    /// Sends a command that carries a reply channel and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> QueueCmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        rx.await.ok()
    }
}

/// Creates a queue's handle and the future that runs its task.
pub fn create(
    broker: Arc<Broker>,
    id: u64,
    spec: &QueueSpec,
) -> (
    QueueHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let handle = QueueHandle(Arc::new(Inner {
        id,
        name: spec.name.clone(),
        tx,
        settle_tx,
        backlog: AtomicUsize::new(0),
        drained: Notify::new(),
    }));
    let task = QueueTask {
        broker,
        me: handle.clone(),
        auto_delete: spec.auto_delete,
        state: QueueState::new(),
        store: Box::new(MemoryStore),
        consumers: AHashMap::new(),
        had_consumer: false,
    };
    (handle, task.run(rx, settle_rx))
}

struct QueueTask {
    broker: Arc<Broker>,
    me: QueueHandle,
    auto_delete: bool,
    state: QueueState,
    store: Box<dyn QueueStore>,
    consumers: AHashMap<ConsumerId, ConsumerLink>,
    had_consumer: bool,
}

enum Flow {
    Continue,
    Exit,
}

impl QueueTask {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<QueueCmd>,
        mut settle_rx: mpsc::UnboundedReceiver<QueueOp>,
    ) {
        // Start empty: an idle queue should cost next to nothing.
        let mut cmds = Vec::new();
        let mut settles = Vec::new();
        let mut deliveries = Vec::new();
        'outer: loop {
            tokio::select! {
                biased;
                _ = settle_rx.recv_many(&mut settles, 1024) => {}
                n = rx.recv_many(&mut cmds, 256) => if n == 0 { break },
            }
            while let Ok(op) = settle_rx.try_recv() {
                settles.push(op);
            }
            self.settle(&mut settles);
            for cmd in cmds.drain(..) {
                if let Flow::Exit = self.handle(cmd) {
                    break 'outer;
                }
            }
            self.dispatch(&mut deliveries);
        }
        // Anything still queued is answered by dropping its reply channel; senders waiting
        // for the backlog to drain are released.
        rx.close();
        self.me.0.drained.notify_waiters();
        let _ = self.store.destroy();
    }

    fn settle(&mut self, ops: &mut Vec<QueueOp>) {
        if ops.is_empty() {
            return;
        }
        let mut removed = Vec::new();
        for op in ops.drain(..) {
            self.apply(op, &mut removed);
        }
        if !removed.is_empty() {
            let _ = self.store.remove(&removed);
        }
    }

    fn apply(&mut self, op: QueueOp, removed: &mut Vec<Offset>) {
        match op {
            QueueOp::Publish(msg) => {
                let offset = self.state.publish(msg.clone());
                if let Err(e) = self.store.append(offset, &msg) {
                    tracing::error!(queue = self.me.name(), "store append failed: {e}");
                }
            }
            QueueOp::Ack(o) => {
                self.state.ack(&[o]);
                removed.push(o);
            }
            QueueOp::Requeue(o) => {
                self.state.reject(&[o], true);
            }
            QueueOp::Drop(o) => {
                // Dead-lettering arrives with its own issue; for now a rejected message
                // without requeue is discarded, as without a DLX.
                self.state.reject(&[o], false);
                removed.push(o);
            }
        }
    }

    fn handle(&mut self, cmd: QueueCmd) -> Flow {
        match cmd {
            QueueCmd::Batch(ops) => {
                let n = ops.len();
                let mut removed = Vec::new();
                for op in ops {
                    self.apply(op, &mut removed);
                }
                if !removed.is_empty() {
                    let _ = self.store.remove(&removed);
                }
                self.me.applied(n);
            }
            QueueCmd::Consume {
                link,
                prefetch,
                exclusive,
                reply,
            } => {
                let r = self
                    .state
                    .add_consumer(link.id, prefetch, link.no_ack, exclusive);
                if r.is_ok() {
                    self.had_consumer = true;
                    self.consumers.insert(link.id, link);
                }
                let _ = reply.send(r);
            }
            QueueCmd::Cancel { consumer, reply } => {
                self.state.remove_consumer(consumer);
                self.consumers.remove(&consumer);
                if let Some(r) = reply {
                    let _ = r.send(());
                }
                if self.auto_delete && self.had_consumer && self.consumers.is_empty() {
                    self.broker.forget_queue(&self.me);
                    return Flow::Exit;
                }
            }
            QueueCmd::Get { no_ack, reply } => {
                let r = self.state.get(no_ack);
                if no_ack {
                    if let Some((e, _)) = &r {
                        let _ = self.store.remove(&[e.offset]);
                    }
                }
                let _ = reply.send(r);
            }
            QueueCmd::Purge { reply } => {
                let _ = reply.send(self.state.purge());
            }
            QueueCmd::Stats { reply } => {
                let _ = reply.send((self.state.message_count(), self.state.consumer_count()));
            }
            QueueCmd::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                if if_unused && self.state.consumer_count() > 0 {
                    let _ = reply.send(Err(CoreError::Precondition(format!(
                        "queue '{}' in vhost '/' in use",
                        self.me.name()
                    ))));
                    return Flow::Continue;
                }
                if if_empty && self.state.message_count() > 0 {
                    let _ = reply.send(Err(CoreError::Precondition(format!(
                        "queue '{}' in vhost '/' is not empty",
                        self.me.name()
                    ))));
                    return Flow::Continue;
                }
                for (id, link) in self.consumers.drain() {
                    let _ = link.outbound.send(Outbound::Cancelled { consumer: id });
                }
                self.broker.forget_queue(&self.me);
                let _ = reply.send(Ok(self.state.message_count()));
                return Flow::Exit;
            }
            QueueCmd::Kick => {}
            QueueCmd::Stop => return Flow::Exit,
        }
        Flow::Continue
    }

    fn dispatch(&mut self, out: &mut Vec<Delivery>) {
        if self.consumers.is_empty() {
            return;
        }
        let consumers = &self.consumers;
        self.state.dispatch(
            |id| match consumers.get(&id) {
                Some(link) => {
                    if link.backlog.load(Ordering::Relaxed) >= CONNECTION_BACKLOG_HIGH {
                        return false;
                    }
                    let ok = link.no_ack || link.credit.try_acquire();
                    if ok {
                        link.backlog.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
                None => false,
            },
            out,
        );
        if out.is_empty() {
            return;
        }
        // One batch per connection, in delivery order.
        let mut batches: Vec<(u64, Vec<Delivery>)> = Vec::new();
        for d in out.drain(..) {
            let Some(link) = self.consumers.get(&d.consumer) else {
                continue;
            };
            match batches.iter_mut().find(|(c, _)| *c == link.connection) {
                Some((_, v)) => v.push(d),
                None => batches.push((link.connection, vec![d])),
            }
        }
        let mut undelivered = Vec::new();
        for (_, items) in batches {
            let link = &self.consumers[&items[0].consumer];
            let sent = link.outbound.send(Outbound::Deliveries {
                queue: self.me.clone(),
                items,
            });
            if let Err(mpsc::error::SendError(Outbound::Deliveries { items, .. })) = sent {
                undelivered.extend(items);
            }
        }
        if undelivered.is_empty() {
            return;
        }
        // The consumer's connection is gone (its cancel is still on the way): take the
        // messages back, drop its consumers, and offer the messages to the others.
        for d in &undelivered {
            if let Some(link) = self.consumers.remove(&d.consumer) {
                self.state.remove_consumer(link.id);
            }
        }
        let offsets: Vec<Offset> = undelivered
            .iter()
            .filter(|d| d.needs_ack)
            .map(|d| d.entry.offset)
            .collect();
        self.state.reject(&offsets, true);
        self.dispatch(out);
    }
}
