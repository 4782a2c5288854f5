//! The owner task of a vhost's half messages (`ferrymq_core::half`). Connections hand it
//! half publishes (`x-transaction-id`) and decisions (publishes to
//! `amq.ferrymq.transactions`) in publish order through one inbox; it keeps the
//! `HalfBook` (the index: offsets and check schedules) and the `HalfLog` (bodies, check
//! states), sends check messages and expires transactions on its own timer.
//!
//! Durability: a half's publisher is confirmed once the half log is fsynced (under
//! `--fsync always`; off this task's loop, group commit as in `delayed`). A commit routes
//! the halves as ordinary publishes (CC/BCC, alternate exchange, delayed and
//! de-duplication exchanges as a publish at that moment would), and acks their records
//! only once every durable queue they reached has stored them; the decision's publisher
//! is confirmed when those acks are fsynced. A crash in between may deliver a committed
//! half twice (the producer re-commits after the restart), never lose it. Rollbacks and
//! expiries ack the records the same way (an expired half is first dead-lettered).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, LongString};
use ferrymq_core::deadletter::{self, Reason};
use ferrymq_core::half::{self, Action, CheckSpec, Decided, Due, HalfBook, HalfMeta};
use ferrymq_core::queue::Offset;
use ferrymq_core::Message;
use ferrymq_store::half_log::{HalfHead, HalfLog, Recovered};
use ferrymq_store::log::FsyncPolicy;
use tokio::sync::mpsc;

use crate::blocking::{self, sync_due, BlockingSync, SyncDone, ACK_SYNC};
use crate::delayed::now_ms;
use crate::queue_task::{
    send_confirms, Confirm, ConfirmTo, ConfirmToken, Outbound, QueueHandle, QueueOp, StoreWait,
};
use crate::routing;
use crate::vhost::VHost;

/// Commands taken from the inbox per round.
const BATCH: usize = 4096;

/// Where a decision's `basic.return` goes.
pub struct ReturnTo {
    pub outbound: mpsc::UnboundedSender<Outbound>,
    pub channel: u16,
}

pub enum HalfCmd {
    Half {
        msg: Arc<Message>,
        meta: HalfMeta,
        mandatory: bool,
        token: Option<ConfirmToken>,
    },
    Decide {
        /// The decision publish itself (returned if `mandatory` and the id is unknown).
        msg: Arc<Message>,
        action: Action,
        mandatory: bool,
        ret: ReturnTo,
        token: Option<ConfirmToken>,
    },
    Stop,
}

/// A reference to a vhost's half-message task.
#[derive(Clone)]
pub struct HalfHandle {
    tx: mpsc::UnboundedSender<HalfCmd>,
    pending: Arc<AtomicU64>,
}

impl HalfHandle {
    pub fn send(&self, cmd: HalfCmd) {
        if let Err(mpsc::error::SendError(cmd)) = self.tx.send(cmd) {
            // The task is gone (vhost stopping): nack rather than leave publishers waiting.
            let token = match cmd {
                HalfCmd::Half { token, .. } | HalfCmd::Decide { token, .. } => token,
                HalfCmd::Stop => None,
            };
            confirm(token, false);
        }
    }

    /// Half messages stored and not yet decided.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        let _ = self.tx.send(HalfCmd::Stop);
    }
}

/// Opens the vhost's half log (recovering its transactions) and returns the handle and the
/// task to spawn.
pub fn create(
    vhost: Arc<VHost>,
) -> anyhow::Result<(HalfHandle, impl std::future::Future<Output = ()>)> {
    let dir = ferrymq_store::half_log::half_dir(&vhost.dir);
    let (mut log, records) = HalfLog::open(&dir)?;
    let mut book = HalfBook::new();
    let now = now_ms();
    let mut superseded = Vec::new();
    for r in records {
        match r {
            Recovered::Half { offset, head } => {
                let check = (!head.check_queue.is_empty()).then_some(CheckSpec {
                    after_ms: head.check_after_ms,
                    max_checks: head.max_checks,
                });
                // The schedule restarts from the stored time (a half overdue at restart is
                // checked at once).
                book.add(&head.id, offset, check, head.stored_ms.min(now));
            }
            Recovered::Check {
                offset,
                id,
                count,
                next_due,
            } => superseded.extend(book.recover_check(&id, count, next_due, offset)),
        }
    }
    for o in superseded {
        log.ack(o)?;
    }
    log.sync()?;
    if !book.is_empty() {
        tracing::info!(
            vhost = %vhost.name,
            transactions = book.len(),
            halves = book.halves(),
            "recovered pending half messages"
        );
    }
    let pending = Arc::new(AtomicU64::new(book.halves() as u64));
    let (tx, rx) = mpsc::unbounded_channel();
    let (confirm_tx, confirm_rx) = mpsc::unbounded_channel();
    let policy = vhost.config.fsync_policy().unwrap_or_default();
    let task = HalfTask {
        vhost,
        log: Some(log),
        book,
        pending: pending.clone(),
        rx,
        confirm_tx,
        confirm_rx,
        waiting: HashMap::new(),
        next_wait: 1,
        policy,
        last_sync: Instant::now(),
        unsynced: Vec::new(),
        fsync: None,
        dir,
    };
    Ok((HalfHandle { tx, pending }, task.run()))
}

/// Halves routed to durable queues (commit) or dead-lettered (expiry), waiting for the
/// queues' store confirms before their records are acked and the decision confirmed.
struct Waiter {
    stores: StoreWait,
    acks: Vec<Offset>,
    token: Option<ConfirmToken>,
}

struct HalfTask {
    vhost: Arc<VHost>,
    log: Option<HalfLog>,
    book: HalfBook,
    pending: Arc<AtomicU64>,
    rx: mpsc::UnboundedReceiver<HalfCmd>,
    confirm_tx: mpsc::UnboundedSender<Outbound>,
    confirm_rx: mpsc::UnboundedReceiver<Outbound>,
    waiting: HashMap<u64, Waiter>,
    next_wait: u64,
    policy: FsyncPolicy,
    last_sync: Instant,
    /// Publishers (halves and decisions) waiting for the next fsync.
    unsynced: Vec<ConfirmToken>,
    fsync: Option<BlockingSync>,
    dir: PathBuf,
}

impl HalfTask {
    /// Where the queues send the store confirms of routed halves (this task's inbox).
    fn confirm_to(&self) -> ConfirmTo {
        ConfirmTo {
            outbound: self.confirm_tx.clone(),
        }
    }

    async fn run(mut self) {
        loop {
            let sleep = match self.book.next_due() {
                Some(due) => {
                    tokio::time::Instant::now()
                        + Duration::from_millis(due.saturating_sub(now_ms()))
                }
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            let sync_at = self.sync_deadline();
            tokio::select! {
                biased;
                done = async { (&mut self.fsync.as_mut().expect("guarded").work).await },
                    if self.fsync.is_some() => {
                    let confirms = self.fsync.take().expect("guarded").confirms;
                    self.fsync_done(confirms, done);
                }
                Some(o) = self.confirm_rx.recv() => {
                    self.stored(o);
                    while let Ok(o) = self.confirm_rx.try_recv() {
                        self.stored(o);
                    }
                }
                cmd = self.rx.recv() => {
                    let mut next = cmd;
                    let mut stop = false;
                    let mut n = 0;
                    while let Some(cmd) = next.take() {
                        match cmd {
                            HalfCmd::Half { msg, meta, mandatory, token } => {
                                self.half(&msg, meta, mandatory, token)
                            }
                            HalfCmd::Decide { msg, action, mandatory, ret, token } => {
                                self.decide(msg, action, mandatory, ret, token)
                            }
                            HalfCmd::Stop => { stop = true; break; }
                        }
                        n += 1;
                        if n < BATCH {
                            next = self.rx.try_recv().ok();
                        }
                    }
                    if stop {
                        break;
                    }
                    self.timers();
                }
                _ = tokio::time::sleep_until(sleep) => self.timers(),
                _ = tokio::time::sleep_until(sync_at.unwrap_or(sleep)), if sync_at.is_some() => {}
            }
            self.finish_round(false);
            self.pending
                .store(self.book.halves() as u64, Ordering::Relaxed);
        }
        if let Some(BlockingSync { confirms, work }) = self.fsync.take() {
            let done = work.await;
            self.fsync_done(confirms, done);
        }
        self.finish_round(true);
        if let Some(BlockingSync { confirms, work }) = self.fsync.take() {
            let done = work.await;
            self.fsync_done(confirms, done);
        }
        if let Some(mut log) = self.log.take() {
            let r = tokio::task::spawn_blocking(move || log.sync()).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(dir = %self.dir.display(), "half log sync on stop: {e}");
            }
        }
    }

    fn half(
        &mut self,
        msg: &Message,
        meta: HalfMeta,
        mandatory: bool,
        token: Option<ConfirmToken>,
    ) {
        let Some(log) = &mut self.log else {
            confirm(token, false);
            return;
        };
        let now = now_ms();
        let head = HalfHead {
            id: meta.id,
            check_queue: meta.check_queue.unwrap_or_default(),
            check_after_ms: meta.check.after_ms,
            max_checks: meta.check.max_checks,
            mandatory,
            stored_ms: now,
        };
        match log.append_half(&head, msg, now as i64) {
            Ok(offset) => {
                let check = (!head.check_queue.is_empty()).then_some(meta.check);
                self.book.add(&head.id, offset, check, now);
                self.wait_sync(token);
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "storing a half message: {e}");
                confirm(token, false);
            }
        }
    }

    /// Under `always` the publisher waits for the next fsync; otherwise it is confirmed
    /// once the write reached the OS.
    fn wait_sync(&mut self, token: Option<ConfirmToken>) {
        let Some(t) = token else { return };
        if self.policy == FsyncPolicy::Always {
            self.unsynced.push(t);
        } else {
            let ok = self.log.as_mut().is_some_and(|l| l.flush().is_ok());
            confirm(Some(t), ok);
        }
    }

    fn decide(
        &mut self,
        msg: Arc<Message>,
        action: Action,
        mandatory: bool,
        ret: ReturnTo,
        token: Option<ConfirmToken>,
    ) {
        let id = String::from_utf8_lossy(&msg.routing_key).into_owned();
        match self.book.decide(&id, action) {
            Decided::Unknown => {
                if mandatory {
                    let _ = ret.outbound.send(Outbound::Returned {
                        channel: ret.channel,
                        msg,
                    });
                }
                confirm(token, true);
            }
            Decided::Repeat(_) => confirm(token, true),
            Decided::Apply {
                halves,
                check_record,
            } => {
                let mut acks: Vec<Offset> = check_record.into_iter().collect();
                if action == Action::Rollback {
                    acks.extend(halves);
                    self.ack_all(&acks);
                    self.wait_sync(token);
                    return;
                }
                let wait = self.next_wait;
                self.next_wait += 1;
                let mut remaining = 0;
                for offset in halves {
                    acks.push(offset);
                    remaining += self.commit_one(offset, wait, mandatory, &ret);
                }
                self.after_routing(wait, remaining, acks, token);
            }
        }
    }

    /// Routes one committed half as a publish at this moment would be routed; returns how
    /// many store confirms it waits for (sent to this task with `seq = wait`).
    fn commit_one(&mut self, offset: Offset, wait: u64, mandatory: bool, ret: &ReturnTo) -> u32 {
        let Some(log) = &mut self.log else { return 0 };
        let (head, mut msg) = match log.read_half(offset) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), offset, "reading a half message: {e}");
                return 0;
            }
        };
        msg.headers =
            ferrymq_core::props::parse(&msg.raw_properties).and_then(|p| p.headers().clone());
        let msg = Arc::new(msg);
        let token = |tx: &mpsc::UnboundedSender<Outbound>| ConfirmToken {
            outbound: tx.clone(),
            channel: 0,
            seq: wait,
        };
        let (msg, targets) = match routing::classify_routed(&self.vhost, msg.clone()) {
            Ok(routing::Publish::Hold(h, due)) => {
                let durable = msg.persistent && h.durable;
                h.hold(msg, due, durable.then(|| token(&self.confirm_tx)));
                return u32::from(durable);
            }
            Ok(routing::Publish::Route(m, t)) => (m, t),
            Err(e) => {
                tracing::debug!(offset, "committed half message unroutable: {e}");
                (msg, Vec::new())
            }
        };
        if targets.is_empty() {
            if mandatory || head.mandatory {
                let _ = ret.outbound.send(Outbound::Returned {
                    channel: ret.channel,
                    msg: msg.clone(),
                });
            }
            return 0;
        }
        self.vhost
            .exchange_counters(&String::from_utf8_lossy(&msg.exchange))
            .add(1, targets.len() as u64);
        let mut waits = 0;
        for q in targets {
            let c = ((msg.persistent && q.is_durable()) || q.may_reject_publish()).then(|| {
                waits += 1;
                Confirm {
                    channel: 0,
                    seq: wait,
                }
            });
            q.send_batch(
                vec![QueueOp::Publish(msg.clone(), c)],
                Some(self.confirm_to()),
            );
        }
        waits
    }

    fn after_routing(
        &mut self,
        wait: u64,
        remaining: u32,
        acks: Vec<Offset>,
        token: Option<ConfirmToken>,
    ) {
        if remaining == 0 {
            self.ack_all(&acks);
            self.wait_sync(token);
        } else {
            self.waiting.insert(
                wait,
                Waiter {
                    stores: StoreWait::new(remaining),
                    acks,
                    token,
                },
            );
        }
    }

    fn ack_all(&mut self, offsets: &[Offset]) {
        let Some(log) = &mut self.log else { return };
        for &o in offsets {
            if let Err(e) = log.ack(o) {
                tracing::warn!(dir = %self.dir.display(), "half log ack: {e}");
            }
        }
    }

    /// Queues stored (or failed to store) committed or dead-lettered halves.
    fn stored(&mut self, o: Outbound) {
        let Outbound::Confirms { seqs, ok, .. } = o else {
            return;
        };
        for wait in seqs {
            let Some(w) = self.waiting.get_mut(&wait) else {
                continue;
            };
            let Some(stored) = w.stores.answer(ok) else {
                continue;
            };
            let w = self.waiting.remove(&wait).expect("present");
            if stored {
                self.ack_all(&w.acks);
                self.wait_sync(w.token);
            } else {
                // Left unacked: the transaction comes back after a restart.
                tracing::warn!("a queue failed to store a committed half message");
                confirm(w.token, false);
            }
        }
    }

    /// Sends due checks and expires transactions whose checks are exhausted.
    fn timers(&mut self) {
        let now = now_ms();
        let mut n = 0;
        while n < BATCH {
            let Some(due) = self.book.poll(now) else {
                break;
            };
            n += 1;
            match due {
                Due::Check {
                    id,
                    first,
                    count,
                    next_due,
                } => self.check(&id, first, count, next_due, now),
                Due::Expire {
                    id,
                    halves,
                    check_record,
                } => self.expire(&id, halves, check_record, now),
            }
        }
    }

    fn check(&mut self, id: &str, first: Offset, count: u16, next_due: u64, now: u64) {
        let Some(log) = &mut self.log else { return };
        match log.append_check(id, count, next_due, now as i64) {
            Ok(record) => {
                if let Some(old) = self.book.check_recorded(id, record) {
                    let _ = log.ack(old);
                }
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), "half log check state: {e}"),
        }
        let (head, msg) = match log.read_half(first) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "reading a half message: {e}");
                return;
            }
        };
        let Some(check) = check_message(&head, &msg, count) else {
            return;
        };
        let check = Arc::new(check);
        let mut targets: Vec<QueueHandle> = Vec::new();
        let _ = self
            .vhost
            .read(|t| t.route("", &head.check_queue, check.headers.as_ref(), &mut targets));
        for q in targets {
            q.send_batch(vec![QueueOp::Publish(check.clone(), None)], None);
        }
    }

    /// Checks exhausted: roll back, dead-lettering the halves through the check queue's
    /// dead-letter exchange (if it has one) with reason `transaction_expired`.
    fn expire(&mut self, id: &str, halves: Vec<Offset>, check_record: Option<Offset>, now: u64) {
        tracing::info!(vhost = %self.vhost.name, id, "half-message transaction expired");
        let mut acks: Vec<Offset> = check_record.into_iter().collect();
        let wait = self.next_wait;
        self.next_wait += 1;
        let mut remaining = 0;
        for offset in halves {
            acks.push(offset);
            remaining += self.dead_letter(offset, wait, now);
        }
        self.after_routing(wait, remaining, acks, None);
    }

    fn dead_letter(&mut self, offset: Offset, wait: u64, now: u64) -> u32 {
        let Some(log) = &mut self.log else { return 0 };
        let Ok((head, mut msg)) = log.read_half(offset) else {
            return 0;
        };
        msg.headers =
            ferrymq_core::props::parse(&msg.raw_properties).and_then(|p| p.headers().clone());
        let spec = self
            .vhost
            .read(|t| t.queue(&head.check_queue).map(|q| q.spec.clone()));
        let Some(spec) = spec else { return 0 };
        let args =
            ferrymq_core::args::QueueArgs::parse(&self.vhost.effective_arguments(&spec).arguments);
        let Some(dlx) = args.dead_letter_exchange else {
            return 0;
        };
        let (dead, keys) = deadletter::dead_letter(
            &msg,
            &head.check_queue,
            Reason::TransactionExpired,
            &dlx,
            args.dead_letter_routing_key.as_deref(),
            now / 1000,
        );
        let dead = Arc::new(dead);
        let mut targets: Vec<QueueHandle> = Vec::new();
        for key in &keys {
            let key = String::from_utf8_lossy(key);
            let _ = self
                .vhost
                .read(|t| t.route(&dlx, &key, dead.headers.as_ref(), &mut targets));
        }
        let mut waits = 0;
        for (i, q) in targets.iter().enumerate() {
            if targets[..i].contains(q) {
                continue;
            }
            let c = (dead.persistent && q.is_durable()).then(|| {
                waits += 1;
                Confirm {
                    channel: 0,
                    seq: wait,
                }
            });
            q.send_batch(
                vec![QueueOp::Publish(dead.clone(), c)],
                Some(self.confirm_to()),
            );
        }
        waits
    }

    fn sync_deadline(&self) -> Option<tokio::time::Instant> {
        if self.fsync.is_some() || self.policy != FsyncPolicy::Always {
            return None;
        }
        let dirty = self.log.as_ref().is_some_and(|l| l.needs_sync());
        dirty.then(|| tokio::time::Instant::from_std(self.last_sync + ACK_SYNC))
    }

    /// Ends a round: under `always`, starts an fsync (records and acks) on a blocking
    /// thread if publishers wait for one, or every `ACK_SYNC` for acks alone; under
    /// `interval` when it is up; `last` at shutdown.
    fn finish_round(&mut self, last: bool) {
        if self.fsync.is_some() {
            return;
        }
        let Some(log) = &mut self.log else { return };
        let since = self.last_sync.elapsed();
        let due = last || sync_due(self.policy, since, !self.unsynced.is_empty());
        if !due || !log.needs_sync() {
            if !self.unsynced.is_empty() && !log.needs_sync() {
                send_confirms(std::mem::take(&mut self.unsynced), true);
            }
            if self.policy != FsyncPolicy::Always {
                let _ = log.flush();
            }
            return;
        }
        let confirms = std::mem::take(&mut self.unsynced);
        self.last_sync = Instant::now();
        match log.begin_sync() {
            Ok(None) => send_confirms(confirms, true),
            Ok(Some(job)) => {
                self.fsync = Some(BlockingSync::spawn(job, confirms));
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "half log write failed: {e}");
                send_confirms(confirms, false);
            }
        }
    }

    fn fsync_done(&mut self, confirms: Vec<ConfirmToken>, done: SyncDone) {
        let what = format!("half log in {}", self.dir.display());
        let ok = blocking::finish_sync(&mut self.log, done, &what, |l, job, r| {
            l.finish_sync(job, r)
        });
        send_confirms(confirms, ok);
    }
}

/// The check message for check number `count` of the transaction whose first half is
/// `msg`: the half's properties and body, with headers `x-transaction-id`,
/// `x-transaction-check-count`, `x-original-exchange` and `x-original-routing-key` added,
/// published to the default exchange with the check queue's name as routing key.
fn check_message(head: &HalfHead, msg: &Message, count: u16) -> Option<Message> {
    let exchange = msg.exchange.clone();
    let rk = msg.routing_key.clone();
    let (raw, headers) = ferrymq_core::props::rewrite(&msg.raw_properties, true, |h| {
        let s = |b: &[u8]| AMQPValue::LongString(LongString::from(b.to_vec()));
        h.insert(half::ID_HEADER.into(), s(head.id.as_bytes()));
        h.insert(
            half::CHECK_COUNT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(count)),
        );
        h.insert("x-original-exchange".into(), s(&exchange));
        h.insert("x-original-routing-key".into(), s(&rk));
    })?;
    Some(Message {
        exchange: bytes::Bytes::new(),
        routing_key: bytes::Bytes::copy_from_slice(head.check_queue.as_bytes()),
        raw_properties: raw,
        body: msg.body.clone(),
        persistent: msg.persistent,
        priority: msg.priority,
        headers: Some(headers),
        ttl_ms: None,
    })
}

fn confirm(token: Option<ConfirmToken>, ok: bool) {
    if let Some(t) = token {
        t.send(ok);
    }
}
