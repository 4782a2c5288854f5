//! One owner task per queue. Connections send it commands over an unbounded inbox (batched:
//! a connection flushes all publishes and acks for a queue from one socket read as one
//! command); the task applies them to its `QueueState`, dispatches to consumers, and sends
//! each consumer's connection one batch of deliveries per round.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use ferrymq_core::args::{Overflow, QueueArgs, QueueType};
use ferrymq_core::budget::QueueMemoryShare;
use ferrymq_core::deadletter::{self, Reason};
use ferrymq_core::queue::HEAD_BYTES;
use ferrymq_core::queue::{ConsumerId, Delivery, Entry, Offset, QueueState, Removed};
use ferrymq_core::topology::QueueSpec;
use ferrymq_core::{CoreError, Message};
use ferrymq_store::log::FsyncPolicy;
use ferrymq_store::scratch::ScratchStore;
use ferrymq_store::SyncWork;
use ferrymq_store::{MemoryStore, QueueStore};
use tokio::sync::{mpsc, Notify};

use crate::vhost::VHost;

mod dispatch;
mod handle;
mod store;
use handle::Inner;
pub use handle::*;
use store::InFlightSync;

/// Creates a queue's handle and the future that runs its task.
pub fn create(
    vhost: Arc<VHost>,
    id: u64,
    spec: &QueueSpec,
) -> (
    QueueHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let durable = spec.durable && spec.exclusive_owner.is_none();
    let broker_policy = vhost.config.fsync_policy().unwrap_or_default();
    // Its own arguments, completed by the matching policy and capped by the operator policy.
    let effective = vhost.effective_arguments(spec);
    if effective.policy.is_some() || effective.operator_policy.is_some() {
        tracing::info!(
            queue = %spec.name,
            policy = effective.policy.as_deref().unwrap_or("-"),
            operator_policy = effective.operator_policy.as_deref().unwrap_or("-"),
            arguments = ?effective.arguments,
            "effective queue arguments"
        );
    }
    let args = QueueArgs::parse(&effective.arguments);
    let dedup_keys = args
        .deduplication
        .then(ferrymq_core::dedup::InQueueKeys::default);
    let consumer_timeout = args
        .consumer_timeout
        .or(match vhost.config.consumer_timeout {
            0 => None,
            ms => Some(ms),
        });
    let handle = QueueHandle(Arc::new(Inner {
        id,
        name: spec.name.clone(),
        durable,
        rejects_publish: AtomicBool::new(args.may_reject_publish()),
        stats: Default::default(),
        tx,
        settle_tx,
        backlog: AtomicUsize::new(0),
        drained: Notify::new(),
    }));
    let task = QueueTask {
        vhost: vhost.clone(),
        me: handle.clone(),
        auto_delete: spec.auto_delete,
        state: {
            let mut state = QueueState::new();
            state.set_single_active(args.single_active_consumer);
            if let Some(max) = args.max_priority {
                state.set_max_priority(max);
            }
            state
        },
        consumer_timeout,
        next_timeout_scan: 0,
        args,
        clock: now_ms(),
        last_used: std::time::Instant::now(),
        dead_letters: Vec::new(),
        dead_letters_paged: Vec::new(),
        dedup: dedup_keys,
        // A transient queue pages its backlog to a scratch log (written only when it
        // pages); a durable queue's log replaces this in `open_store`.
        store: Box::new(ScratchStore::new(
            crate::paths::scratch_dir(&vhost.config.data_dir).join(id.to_string()),
        )),
        memory: QueueMemoryShare::new(vhost.queue_memory.clone()),
        consumers: AHashMap::new(),
        had_consumer: false,
        confirms: Confirms::default(),
        policy: broker_policy,
        last_sync: std::time::Instant::now(),
        sync_worker: None,
        declared: spec.arguments.clone(),
        counts: Default::default(),
    };
    (handle, task.run(rx, settle_rx))
}

/// Wall-clock milliseconds since the Unix epoch: message expiry deadlines are absolute, so
/// they survive restarts.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct QueueTask {
    vhost: Arc<VHost>,
    me: QueueHandle,
    auto_delete: bool,
    state: QueueState,
    args: QueueArgs,
    /// `now_ms()` at the start of the current round.
    clock: u64,
    /// Delivery acknowledgement timeout (ms), from `x-consumer-timeout` or the vhost.
    consumer_timeout: Option<u64>,
    /// When unacked deliveries are next checked against the timeout.
    next_timeout_scan: u64,
    /// Last consume, get or declare, or when the last consumer left (`x-expires`).
    last_used: std::time::Instant,
    /// `x-message-deduplication`: the dedup keys of the messages in the queue.
    dedup: Option<ferrymq_core::dedup::InQueueKeys>,
    /// Messages leaving this round for the dead-letter exchange.
    dead_letters: Vec<(Arc<Message>, Reason)>,
    /// The same for messages whose bodies are only in the store (read back, then acked).
    dead_letters_paged: Vec<(Offset, Reason)>,
    store: Box<dyn QueueStore>,
    /// This queue's part of the broker-wide queue memory budget.
    memory: QueueMemoryShare,
    consumers: AHashMap<ConsumerId, ConsumerLink>,
    had_consumer: bool,
    /// Publishes waiting for the next store sync to be confirmed.
    confirms: Confirms,
    policy: FsyncPolicy,
    last_sync: std::time::Instant,
    /// The disk's sync worker, once this queue has needed it.
    sync_worker: Option<std::sync::Arc<ferrymq_store::sync_worker::SyncWorker>>,
    /// The arguments the queue was declared with (policies apply on top).
    declared: amq_protocol::types::FieldTable,
    /// Counted this round, published into `QueueHandle::stats` at its end.
    counts: crate::stats::Counts,
}

enum Flow {
    Continue,
    /// The queue was deleted: its stored messages go too.
    Deleted,
    /// The vhost is stopping: keep what is stored.
    Stop,
}

impl QueueTask {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<QueueCmd>,
        mut settle_rx: mpsc::UnboundedReceiver<Vec<QueueOp>>,
    ) {
        if self.me.is_durable() {
            self.open_store();
        }
        // Start empty: an idle queue should cost next to nothing.
        let mut cmds = Vec::new();
        let mut settles = Vec::new();
        let mut deliveries = Vec::new();
        let mut deleted = false;
        // The fsync running off this loop under `always`, if any (see `sync_and_confirm`).
        let mut fsync: Option<InFlightSync> = None;
        'outer: loop {
            // Under `interval`, unsynced writes get their fsync even if the queue goes idle.
            let sync_timer = match self.policy {
                FsyncPolicy::Interval(d) if self.store.needs_sync() => Some(self.last_sync + d),
                // Acks written but not fsynced get their fsync when due, even if the queue
                // goes idle (never while an fsync runs: its completion wakes the loop).
                FsyncPolicy::Always if fsync.is_none() => self.store.sync_deadline(),
                _ => None,
            };
            let wake = self.next_wake(sync_timer);
            tokio::select! {
                biased;
                work = async { (&mut fsync.as_mut().expect("checked").work).await }, if fsync.is_some() => {
                    if let Some(done) = fsync.take() {
                        self.fsync_done(done.confirms, work);
                    }
                }
                _ = settle_rx.recv_many(&mut settles, 64) => {}
                n = rx.recv_many(&mut cmds, 256) => if n == 0 { break },
                _ = async { tokio::time::sleep_until(wake.unwrap().into()).await }, if wake.is_some() => {}
            }
            self.clock = now_ms();
            self.state.set_now(self.clock);
            self.store.set_clock(self.clock);
            if self.unused_expired() {
                tracing::info!(queue = self.me.name(), "queue expired (x-expires)");
                self.vhost.forget_queue(&self.me);
                deleted = true;
                break 'outer;
            }
            while let Ok(ops) = settle_rx.try_recv() {
                settles.push(ops);
            }
            self.settle(&mut settles);
            self.check_consumer_timeouts();
            // Expired messages leave before anything else can take them; a message whose
            // TTL runs out this very millisecond (TTL 0) may still go to a waiting consumer.
            self.state.release_delayed(self.clock);
            self.expire(self.clock.saturating_sub(1));
            let mut exit = Flow::Continue;
            let mut round = cmds.drain(..);
            for cmd in round.by_ref() {
                exit = self.handle(cmd);
                if !matches!(exit, Flow::Continue) {
                    break;
                }
            }
            // Commands after a delete or stop stay in `cmds`, for the unapplied-publish
            // confirms below (empty, and no allocation, in every other round).
            let rest: Vec<QueueCmd> = round.collect();
            cmds.extend(rest);
            match exit {
                Flow::Continue => {}
                Flow::Deleted => {
                    deleted = true;
                    break 'outer;
                }
                Flow::Stop => break 'outer,
            }
            self.flush_dead_letters();
            self.dispatch(&mut deliveries);
            self.expire(self.clock);
            self.flush_dead_letters();
            self.balance_memory();
            self.sync_and_confirm(Some(&mut fsync));
            self.publish_stats();
        }
        if let Some(running) = fsync.take() {
            let work = running.work.await;
            self.fsync_done(running.confirms, work);
        }
        // Anything still queued is answered by dropping its reply channel; senders waiting
        // for the backlog to drain are released.
        rx.close();
        self.me.0.drained.notify_waiters();
        // Publishes that reached the queue but will not be applied are still answered, so
        // no publisher waits forever: after a delete with an ack (they were routed and the
        // queue went away, as RabbitMQ confirms them), after a stop with a nack (they were
        // not stored; the delay and half-message tasks keep their copy for the restart).
        let mut unapplied: Vec<QueueCmd> = std::mem::take(&mut cmds);
        while let Ok(cmd) = rx.try_recv() {
            unapplied.push(cmd);
        }
        let mut refused = Confirms::default();
        for cmd in unapplied {
            if let QueueCmd::Batch(ops, to) = cmd {
                self.me.applied(ops.len());
                let answers = if deleted {
                    &mut self.confirms
                } else {
                    &mut refused
                };
                for op in ops {
                    if let (QueueOp::Publish(_, Some(c)), Some(to)) = (op, &to) {
                        answers.push(to, c);
                    }
                }
            }
        }
        refused.send(false);
        if deleted {
            if let Err(e) = self.store.destroy() {
                tracing::error!(queue = self.me.name(), "removing stored messages: {e}");
            }
            self.store = Box::new(MemoryStore);
        }
        self.sync_and_confirm(None);
        self.publish_stats();
    }

    /// Publishes the round's counts and the current lengths for the management API:
    /// a few relaxed stores per round, nothing per message.
    fn publish_stats(&mut self) {
        let s = &self.me.0.stats;
        if !self.counts.is_zero() {
            s.counters.add(&self.counts);
            self.counts = Default::default();
        }
        s.ready
            .store(self.state.message_count() as u64, Ordering::Relaxed);
        s.unacked
            .store(self.state.unacked_count() as u64, Ordering::Relaxed);
        s.ready_bytes
            .store(self.state.ready_bytes() as u64, Ordering::Relaxed);
        s.consumers
            .store(self.state.consumer_count() as u64, Ordering::Relaxed);
        s.delayed
            .store(self.state.delayed_count() as u64, Ordering::Relaxed);
    }

    /// Applies the vhost's current policies to the running queue: message TTL (for
    /// messages published from now on), expiry, length limits and overflow (a lower
    /// limit drops from the head at once under drop-head), dead-lettering, delivery limit,
    /// consumer timeout, delayed retries and de-duplication (keys of messages published
    /// from now on). What a queue is declared as (type, max priority, single active
    /// consumer) does not change, as in RabbitMQ.
    fn reconfigure(&mut self) {
        let spec = QueueSpec {
            name: self.me.0.name.clone(),
            durable: self.me.0.durable,
            exclusive_owner: None,
            auto_delete: self.auto_delete,
            arguments: self.declared.clone(),
        };
        let effective = self.vhost.effective_arguments(&spec);
        let mut args = QueueArgs::parse(&effective.arguments);
        args.queue_type = self.args.queue_type;
        args.max_priority = self.args.max_priority;
        args.single_active_consumer = self.args.single_active_consumer;
        self.consumer_timeout =
            args.consumer_timeout
                .or(match self.vhost.config.consumer_timeout {
                    0 => None,
                    ms => Some(ms),
                });
        self.me
            .0
            .rejects_publish
            .store(args.may_reject_publish(), Ordering::Relaxed);
        match (args.deduplication, self.dedup.is_some()) {
            (true, false) => self.dedup = Some(ferrymq_core::dedup::InQueueKeys::default()),
            (false, true) => self.dedup = None,
            _ => {}
        }
        tracing::info!(
            queue = self.me.name(),
            policy = effective.policy.as_deref().unwrap_or("-"),
            operator_policy = effective.operator_policy.as_deref().unwrap_or("-"),
            arguments = ?effective.arguments,
            "policies changed: effective queue arguments"
        );
        self.args = args;
        self.enforce_limits();
    }

    /// Records that messages left the queue: acked in the store, their dedup keys freed.
    fn forget(&mut self, offsets: &[Offset]) {
        if let Some(d) = &mut self.dedup {
            for &o in offsets {
                d.remove(o);
            }
        }
        let _ = self.store.remove(offsets);
    }

    /// When the task must wake without a command: the fsync interval, the next message
    /// expiry or delayed retry, or the queue's own `x-expires`.
    fn next_wake(&self, sync_timer: Option<std::time::Instant>) -> Option<std::time::Instant> {
        let now = std::time::Instant::now();
        let timer = self.state.next_timer().map(|at| {
            let wall = now_ms();
            now + std::time::Duration::from_millis(at.saturating_sub(wall))
        });
        let expires = self
            .args
            .expires
            .filter(|_| self.state.consumer_count() == 0)
            .map(|ms| self.last_used + std::time::Duration::from_millis(ms));
        let scan = self
            .consumer_timeout
            .filter(|_| self.state.unacked_count() > 0)
            .map(|_| {
                now + std::time::Duration::from_millis(
                    self.next_timeout_scan.saturating_sub(now_ms()),
                )
            });
        [sync_timer, timer, expires, scan]
            .into_iter()
            .flatten()
            .min()
    }

    /// Delivery acknowledgement timeout: a consumer holding a delivery longer than the
    /// timeout is cancelled (`basic.cancel` to the client; its channel stays open) and its
    /// deliveries are given back. Acks it sends later for them are stale and ignored.
    fn check_consumer_timeouts(&mut self) {
        let Some(timeout) = self.consumer_timeout else {
            return;
        };
        if self.clock < self.next_timeout_scan || self.state.unacked_count() == 0 {
            return;
        }
        self.next_timeout_scan = self.clock + (timeout / 2).clamp(10, 1000);
        let overdue = self
            .state
            .overdue_consumers(self.clock.saturating_sub(timeout));
        let mut removed = Vec::new();
        for id in overdue {
            tracing::warn!(
                queue = self.me.name(),
                consumer = id.0,
                timeout_ms = timeout,
                "delivery acknowledgement timed out: consumer cancelled, its deliveries requeued"
            );
            let offsets = self.state.unacked_of(id);
            self.state.remove_consumer(id);
            if let Some(link) = self.consumers.remove(&id) {
                let _ = link.outbound.send(Outbound::Cancelled { consumer: id });
            }
            for o in offsets {
                self.give_back(o, false, &mut removed);
            }
        }
        if !removed.is_empty() {
            self.forget(&removed);
        }
    }

    /// `x-expires`: unused (no consumers, no get, no redeclare) for that long.
    fn unused_expired(&self) -> bool {
        self.args.expires.is_some_and(|ms| {
            self.state.consumer_count() == 0
                && self.last_used.elapsed() >= std::time::Duration::from_millis(ms)
        })
    }

    /// The expiry deadline of a message published now: the shorter of the queue's and the
    /// message's TTL (0 = never).
    fn expires_at(&self, msg: &Message) -> u64 {
        self.args
            .ttl_for(msg.ttl_ms)
            .map_or(0, |t| self.clock.saturating_add(t).max(1))
    }

    /// Removes the messages whose TTL ran out by `now` and dead-letters them.
    fn expire(&mut self, now: u64) {
        let mut gone = Vec::new();
        self.state.expire(now, &mut gone);
        self.removed_ready(gone, Reason::Expired);
    }

    /// Messages taken out of the ready set (expiry, max-length): acked in the store and,
    /// with a dead-letter exchange, republished there.
    fn removed_ready(&mut self, gone: Vec<Removed>, reason: Reason) {
        if gone.is_empty() {
            return;
        }
        let dlx = self.args.dead_letter_exchange.is_some();
        let mut removed = Vec::with_capacity(gone.len());
        for r in gone {
            match r {
                Removed::InMemory(e) => {
                    removed.push(e.offset);
                    if dlx {
                        self.dead_letters.push((e.msg, reason));
                    }
                }
                // Its body is read back before its record is acked.
                Removed::Paged(o) if dlx => self.dead_letters_paged.push((o, reason)),
                Removed::Paged(o) => removed.push(o),
            }
        }
        if !removed.is_empty() {
            self.forget(&removed);
        }
    }

    /// `x-overflow = drop-head`: drops from the head while the queue is over its limits.
    fn enforce_limits(&mut self) {
        if self.args.overflow != Overflow::DropHead {
            return;
        }
        let (len, bytes) = (self.args.max_length, self.args.max_length_bytes);
        if len.is_none() && bytes.is_none() {
            return;
        }
        let mut gone = Vec::new();
        while len.is_some_and(|m| self.state.message_count() as u64 > m)
            || bytes.is_some_and(|m| self.state.ready_bytes() as u64 > m)
        {
            if self.state.next_is_paged() {
                self.page_in();
            }
            match self.state.drop_head() {
                Some(r) => gone.push(r),
                None => break,
            }
        }
        self.removed_ready(gone, Reason::Maxlen);
    }

    /// Whether a new message does not fit (`x-overflow = reject-publish[-dlx]`).
    fn is_full_for(&self, msg: &Message) -> bool {
        self.args
            .max_length
            .is_some_and(|m| self.state.message_count() as u64 >= m)
            || self
                .args
                .max_length_bytes
                .is_some_and(|m| (self.state.ready_bytes() + msg.size()) as u64 > m)
    }

    /// Publishes this round's dead letters to the dead-letter exchange: each with its
    /// `x-death` history, routed with the dead-letter routing key or its own keys, never
    /// into a queue it already died in without a rejection on the way.
    fn flush_dead_letters(&mut self) {
        if !self.dead_letters_paged.is_empty() {
            let paged = std::mem::take(&mut self.dead_letters_paged);
            let mut offsets: Vec<Offset> = paged.iter().map(|(o, _)| *o).collect();
            offsets.sort_unstable();
            match tokio::task::block_in_place(|| self.store.read(&offsets)) {
                Ok(msgs) => {
                    for (o, msg) in msgs {
                        if let Some((_, reason)) = paged.iter().find(|(p, _)| *p == o) {
                            self.dead_letters.push((msg, *reason));
                        }
                    }
                }
                Err(e) => tracing::error!(queue = self.me.name(), "reading dead letters: {e}"),
            }
            self.forget(&offsets);
        }
        if self.dead_letters.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.dead_letters);
        let Some(dlx) = self.args.dead_letter_exchange.clone() else {
            return;
        };
        let dlrk = self.args.dead_letter_routing_key.clone();
        let now_secs = self.clock / 1000;
        let mut batches: Vec<(QueueHandle, Vec<QueueOp>)> = Vec::new();
        let mut targets: Vec<QueueHandle> = Vec::new();
        for (msg, reason) in items {
            let (dead, keys) = deadletter::dead_letter(
                &msg,
                self.me.name(),
                reason,
                &dlx,
                dlrk.as_deref(),
                now_secs,
            );
            let dead = Arc::new(dead);
            targets.clear();
            for key in &keys {
                let key = String::from_utf8_lossy(key);
                // A missing dead-letter exchange drops the message, as in RabbitMQ.
                let _ = self
                    .vhost
                    .read(|t| t.route(&dlx, &key, dead.headers.as_ref(), &mut targets));
            }
            for (i, q) in targets.iter().enumerate() {
                if targets[..i].contains(q)
                    || deadletter::is_cycle(reason, dead.headers.as_ref(), q.name())
                {
                    continue;
                }
                let op = QueueOp::Publish(dead.clone(), None);
                match batches.iter_mut().find(|(h, _)| h == q) {
                    Some((_, ops)) => ops.push(op),
                    None => batches.push((q.clone(), vec![op])),
                }
            }
        }
        for (q, ops) in batches {
            q.send_batch(ops, None);
        }
    }

    /// Quorum queues tell consumers how often a message came back (`x-delivery-count`).
    fn annotate(&self, e: &mut Entry) {
        if self.args.queue_type != QueueType::Quorum || e.delivery_count == 0 {
            return;
        }
        let count = i64::from(e.delivery_count);
        let rewritten = ferrymq_core::props::rewrite(&e.msg.raw_properties, false, |h| {
            h.insert(
                "x-delivery-count".into(),
                amq_protocol::types::AMQPValue::LongLongInt(count),
            );
        });
        if let Some((raw, headers)) = rewritten {
            let mut m = (*e.msg).clone();
            m.raw_properties = raw;
            m.headers = Some(headers);
            e.msg = Arc::new(m);
        }
    }
}

impl QueueTask {
    fn settle(&mut self, batches: &mut Vec<Vec<QueueOp>>) {
        if batches.is_empty() {
            return;
        }
        let mut removed = Vec::new();
        for op in batches.drain(..).flatten() {
            self.apply(op, None, &mut removed);
        }
        if !removed.is_empty() {
            self.forget(&removed);
        }
    }

    /// Applies one operation of a batch whose confirms go to `to`.
    fn apply(&mut self, op: QueueOp, to: Option<&ConfirmTo>, removed: &mut Vec<Offset>) {
        match op {
            QueueOp::Publish(msg, confirm) => {
                // A confirm is only asked for in a batch that says where it goes.
                debug_assert!(
                    confirm.is_none() || to.is_some(),
                    "a publish asks for a confirm in a batch with no ConfirmTo"
                );
                let confirm = confirm.and_then(|c| Some((to?, c)));
                if self.args.may_reject_publish() && self.is_full_for(&msg) {
                    // Refused: never stored, the publisher gets a nack.
                    if let Some((to, c)) = confirm {
                        to.send(c, false);
                    }
                    if self.args.overflow == Overflow::RejectPublishDlx {
                        self.dead_letters.push((msg, Reason::Maxlen));
                    }
                    return;
                }
                let dedup_key = self
                    .dedup
                    .as_ref()
                    .and_then(|_| ferrymq_core::dedup::dedup_key(msg.headers.as_ref()));
                if let (Some(d), Some(k)) = (&self.dedup, &dedup_key) {
                    if d.contains(k) {
                        // A duplicate of a message in the queue: dropped, still confirmed.
                        if let Some((to, c)) = confirm {
                            self.confirms.push(to, c);
                        }
                        return;
                    }
                }
                let expires_at = self.expires_at(&msg);
                let offset = self.state.next_offset();
                let stored = match self.store.append(offset, &msg) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(queue = self.me.name(), "store append failed: {e}");
                        false
                    }
                };
                // Only a stored message claims its key: a publisher retrying after the
                // nack of a failed write must be stored again, not confirmed as a duplicate.
                if let (true, Some(d), Some(k)) = (stored, &mut self.dedup, dedup_key) {
                    d.insert(offset, k);
                }
                self.counts.publish += 1;
                self.counts.publish_bytes += msg.size() as u64;
                // Beyond the in-memory head a message is paged: kept only by the store
                // (a durable queue's log has it already; a transient queue writes it to
                // its scratch log now) and read back when its turn comes.
                if stored && self.store.can_page() && !self.state.head_has_room(&msg) {
                    match self.store.spill(&[(offset, msg.clone())]) {
                        Ok(()) => {
                            self.state.publish_paged(&msg, expires_at);
                        }
                        Err(e) => {
                            tracing::error!(
                                queue = self.me.name(),
                                "paging to disk failed, keeping the message in memory: {e}"
                            );
                            self.state.publish_until(msg, expires_at);
                        }
                    }
                } else {
                    self.state.publish_until(msg, expires_at);
                }
                self.enforce_limits();
                if let Some((to, c)) = confirm {
                    if stored {
                        self.confirms.push(to, c);
                    } else {
                        // Not stored: the publisher gets a nack, never an ack.
                        to.send(c, false);
                    }
                }
            }
            QueueOp::Ack(o, g)
            | QueueOp::Requeue(o, g)
            | QueueOp::Return(o, g)
            | QueueOp::Drop(o, g)
                if self.state.delivery_generation(o) != Some(g) =>
            {
                // A stale settle: the delivery was taken back (consumer timeout) and may
                // belong to another consumer now.
            }
            QueueOp::Ack(o, _) => {
                self.state.ack(&[o]);
                self.counts.ack += 1;
                removed.push(o);
            }
            QueueOp::Requeue(o, _) => self.give_back(o, true, removed),
            QueueOp::Return(o, _) => self.give_back(o, false, removed),
            QueueOp::Drop(o, _) => {
                for e in self.state.reject(&[o], false) {
                    if self.args.dead_letter_exchange.is_some() {
                        self.dead_letters.push((e.msg, Reason::Rejected));
                    }
                }
                removed.push(o);
            }
        }
    }

    /// A delivery comes back (`failed`: the consumer rejected it with requeue; else it
    /// was returned unsettled): dead-lettered past the delivery limit, held back by a
    /// delayed retry, or put back at its place.
    fn give_back(&mut self, o: Offset, failed: bool, removed: &mut Vec<Offset>) {
        {
            {
                let Some(e) = self.state.take_returned(o) else {
                    return;
                };
                if self
                    .args
                    .delivery_limit
                    .is_some_and(|limit| e.delivery_count > limit)
                {
                    removed.push(o);
                    if self.args.dead_letter_exchange.is_some() {
                        self.dead_letters.push((e.msg, Reason::DeliveryLimit));
                    }
                    return;
                }
                match self.args.delayed_retry.filter(|r| r.applies(failed)) {
                    Some(r) => {
                        let due = self.clock.saturating_add(r.delay_ms(e.delivery_count));
                        self.state.delay_entry(e, due);
                    }
                    None => self.state.requeue_entry(e),
                }
            }
        }
    }

    fn handle(&mut self, cmd: QueueCmd) -> Flow {
        match cmd {
            QueueCmd::Batch(ops, to) => {
                let n = ops.len();
                let mut removed = Vec::new();
                for op in ops {
                    self.apply(op, to.as_ref(), &mut removed);
                }
                if !removed.is_empty() {
                    self.forget(&removed);
                }
                self.me.applied(n);
            }
            QueueCmd::Consume {
                link,
                prefetch,
                exclusive,
                priority,
                reply,
            } => {
                let r =
                    self.state
                        .add_consumer(link.id, prefetch, link.no_ack, exclusive, priority);
                if r.is_ok() {
                    self.had_consumer = true;
                    self.consumers.insert(link.id, link);
                }
                self.last_used = std::time::Instant::now();
                let _ = reply.send(r);
            }
            QueueCmd::Cancel { consumer, reply } => {
                self.state.remove_consumer(consumer);
                self.consumers.remove(&consumer);
                self.last_used = std::time::Instant::now();
                if let Some(r) = reply {
                    let _ = r.send(());
                }
                if self.auto_delete && self.had_consumer && self.consumers.is_empty() {
                    self.vhost.forget_queue(&self.me);
                    return Flow::Deleted;
                }
            }
            QueueCmd::Get { no_ack, reply } => {
                self.last_used = std::time::Instant::now();
                self.page_in();
                let mut r = self.state.get(no_ack);
                match &mut r {
                    Some((e, _)) => {
                        if no_ack {
                            self.counts.get_no_ack += 1;
                        } else {
                            self.counts.get += 1;
                        }
                        if e.redelivered() {
                            self.counts.redeliver += 1;
                        }
                        self.annotate(e);
                    }
                    None => self.counts.get_empty += 1,
                }
                if no_ack {
                    if let Some((e, _)) = &r {
                        self.forget(&[e.offset]);
                    }
                }
                let _ = reply.send(r);
            }
            QueueCmd::Purge { reply } => {
                let purged = self.state.purge();
                self.forget(&purged);
                let _ = reply.send(purged.len());
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
                        "queue '{}' in vhost '{}' in use",
                        self.me.name(),
                        self.vhost.name
                    ))));
                    return Flow::Continue;
                }
                if if_empty && self.state.message_count() > 0 {
                    let _ = reply.send(Err(CoreError::Precondition(format!(
                        "queue '{}' in vhost '{}' is not empty",
                        self.me.name(),
                        self.vhost.name
                    ))));
                    return Flow::Continue;
                }
                for (id, link) in self.consumers.drain() {
                    let _ = link.outbound.send(Outbound::Cancelled { consumer: id });
                }
                self.vhost.forget_queue(&self.me);
                let _ = reply.send(Ok(self.state.message_count()));
                return Flow::Deleted;
            }
            QueueCmd::Kick => {}
            QueueCmd::Touch => self.last_used = std::time::Instant::now(),
            QueueCmd::Reconfigure => self.reconfigure(),
            QueueCmd::Sync { reply } => {
                self.publish_stats();
                let _ = reply.send(());
            }
            QueueCmd::Stop => return Flow::Stop,
        }
        Flow::Continue
    }
}

/// For tests: a transient queue `name` in a vhost of its own, and its task (not started:
/// commands sent before it is awaited are all taken in its first round).
#[cfg(test)]
pub(crate) fn test_queue(
    name: &str,
) -> (
    QueueHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let auth = ferrymq_auth::AuthStore::in_memory(Default::default()).unwrap();
    let broker = crate::broker::Broker::new(crate::Config::default(), Arc::new(auth));
    let vhost = VHost::new(
        "/",
        broker.config.clone(),
        Default::default(),
        Default::default(),
        Default::default(),
        broker.queue_memory.clone(),
    );
    let spec = QueueSpec {
        name: name.into(),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    create(vhost, 1, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(q: &QueueHandle, seq: u64) -> mpsc::UnboundedReceiver<Outbound> {
        let (tx, rx) = mpsc::unbounded_channel();
        let msg = Arc::new(Message {
            exchange: Default::default(),
            routing_key: "q".into(),
            raw_properties: Default::default(),
            body: "behind the delete or stop".into(),
            persistent: true,
            priority: None,
            headers: None,
            ttl_ms: None,
        });
        q.send_batch(
            vec![QueueOp::Publish(msg, Some(Confirm { channel: 1, seq }))],
            Some(ConfirmTo { outbound: tx }),
        );
        rx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_behind_a_stop_in_the_same_round_are_nacked() {
        let (q, task) = test_queue("q");
        q.stop();
        let mut rx = publish(&q, 9);
        // Both wait in the inbox before the task first runs: one round takes them both.
        task.await;
        match rx.try_recv() {
            Ok(Outbound::Confirms { channel, seqs, ok }) => {
                assert_eq!(
                    (channel, seqs, ok),
                    (1, vec![9], false),
                    "never stored: a nack"
                );
            }
            Ok(_) => panic!("not a confirm"),
            Err(e) => panic!("the publish behind the stop got no answer: {e}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_behind_a_delete_in_the_same_round_are_still_confirmed() {
        let (q, task) = test_queue("q");
        let (reply, deleted) = tokio::sync::oneshot::channel();
        q.send(QueueCmd::Delete {
            if_unused: false,
            if_empty: false,
            reply,
        });
        let mut rx = publish(&q, 7);
        // Both wait in the inbox before the task first runs: one round takes them both.
        task.await;
        assert_eq!(deleted.await.unwrap().unwrap(), 0);
        match rx.try_recv() {
            Ok(Outbound::Confirms { channel, seqs, ok }) => {
                assert_eq!((channel, seqs, ok), (1, vec![7], true));
            }
            Ok(_) => panic!("not a confirm"),
            Err(e) => panic!("the publish behind the delete got no confirm: {e}"),
        }
    }
}
