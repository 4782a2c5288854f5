//! The owner task of one `x-delayed-message` exchange. Publishes carrying a positive
//! `x-delay` are handed to it (`DelayedHandle::hold`); it appends them to the exchange's
//! `DelayLog`, keeps only `(due, offset)` in a `DelaySchedule`, sleeps until the earliest
//! due time, then reads the due messages back in one batch, routes each with the
//! exchange's bindings as they are at that moment (CC/BCC included) and hands them to the
//! queues. A held message is acked in the log once every durable queue it reached has
//! stored it (the queues' store confirms come back to this task), so a crash never loses a
//! message between the two logs; at worst it is delivered twice. Deleting the exchange
//! discards the log.
//!
//! The fsync never runs in this task's loop (group commit off the loop): at the end of a
//! round with new holds, the task starts one fsync of the log (`DelayLog::begin_sync`) on a
//! blocking thread and keeps taking holds and releasing due messages meanwhile; when it
//! completes, the publishers of exactly the holds it covered are confirmed (nacked if it
//! failed). Holds stored while it runs wait for the next one, started as soon as it
//! completes. Acks of released messages ride along with those fsyncs, or get one of their
//! own at most every `ACK_SYNC` (a lost ack only means a redelivery after a crash).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrymq_core::delay::DelaySchedule;
use ferrymq_core::queue::Offset;
use ferrymq_core::Message;
use ferrymq_store::delay_log::DelayLog;
use ferrymq_store::log::FsyncPolicy;
use tokio::sync::mpsc;

use crate::blocking::{self, sync_due, BlockingSync, SyncDone, ACK_SYNC};
use crate::queue_task::{
    send_confirms, Confirm, ConfirmTo, ConfirmToken, Outbound, QueueHandle, QueueOp, StoreWait,
};
use crate::routing;
use crate::vhost::VHost;

/// Due messages released per round before the inbox gets a turn.
const RELEASE_BATCH: usize = 4096;
/// Holds taken from the inbox per round.
const HOLD_BATCH: usize = 4096;

pub enum DelayCmd {
    Hold {
        msg: Arc<Message>,
        due: u64,
        token: Option<ConfirmToken>,
    },
    /// The exchange was deleted: drop every held message and the log.
    Discard,
    /// Broker shutdown: keep the log.
    Stop,
}

/// A reference to a delayed exchange's task.
#[derive(Clone)]
pub struct DelayedHandle {
    tx: mpsc::UnboundedSender<DelayCmd>,
    pending: Arc<AtomicU64>,
    pub durable: bool,
}

impl DelayedHandle {
    /// Holds `msg` until `due` (ms since the epoch); `token` asks for a confirm once the
    /// message is durably stored.
    pub fn hold(&self, msg: Arc<Message>, due: u64, token: Option<ConfirmToken>) {
        if let Err(mpsc::error::SendError(DelayCmd::Hold { token: Some(t), .. })) =
            self.tx.send(DelayCmd::Hold { msg, due, token })
        {
            // The exchange is gone: nack rather than leave the publisher waiting.
            let _ = t.outbound.send(Outbound::Confirms {
                channel: t.channel,
                seqs: vec![t.seq],
                ok: false,
            });
        }
    }

    /// Messages held and not yet released.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn discard(&self) {
        let _ = self.tx.send(DelayCmd::Discard);
    }

    pub fn stop(&self) {
        let _ = self.tx.send(DelayCmd::Stop);
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Opens the exchange's log in `dir` (recovering what it holds) and returns the handle and
/// the task to spawn.
pub fn create(
    vhost: Arc<VHost>,
    exchange: Arc<str>,
    durable: bool,
    dir: PathBuf,
) -> anyhow::Result<(DelayedHandle, impl std::future::Future<Output = ()>)> {
    let (mut log, held) = DelayLog::open(&dir)?;
    let mut schedule = DelaySchedule::new();
    for (due, offset) in held {
        schedule.insert(due, offset);
    }
    let overdue = schedule
        .next_due()
        .map_or(0, |d| now_ms().saturating_sub(d));
    tracing::info!(
        exchange = &*exchange,
        pending = schedule.len(),
        most_overdue_ms = overdue,
        "delayed exchange: {} pending messages",
        schedule.len()
    );
    let pending = Arc::new(AtomicU64::new(schedule.len() as u64));
    let (tx, rx) = mpsc::unbounded_channel();
    let (confirm_tx, confirm_rx) = mpsc::unbounded_channel();
    // A transient exchange's log only needs to outlive nothing: never fsync it.
    let policy = if durable {
        vhost.config.fsync_policy().unwrap_or_default()
    } else {
        FsyncPolicy::Never
    };
    // Under `always` every round's sync job also fsyncs a segment sealed meanwhile, so a
    // roll never fsyncs on the release/append loop; a transient exchange's log needs no
    // fsync at all. (Under a durable `never` the roll's fsync is the only one: kept.)
    log.set_deferred_seal(policy == FsyncPolicy::Always || !durable);
    let task = DelayTask {
        vhost,
        exchange,
        log: Some(log),
        schedule,
        pending: pending.clone(),
        rx,
        confirm_tx,
        confirm_rx,
        waiting: HashMap::new(),
        policy,
        last_sync: Instant::now(),
        unsynced: Vec::new(),
        fsync: None,
        dir,
    };
    Ok((
        DelayedHandle {
            tx,
            pending,
            durable,
        },
        task.run(),
    ))
}

struct DelayTask {
    vhost: Arc<VHost>,
    exchange: Arc<str>,
    log: Option<DelayLog>,
    schedule: DelaySchedule,
    pending: Arc<AtomicU64>,
    rx: mpsc::UnboundedReceiver<DelayCmd>,
    /// Store confirms from durable queues for released messages (seq = log offset).
    confirm_tx: mpsc::UnboundedSender<Outbound>,
    confirm_rx: mpsc::UnboundedReceiver<Outbound>,
    /// Released messages waiting for their queues' store confirms before their ack.
    waiting: HashMap<Offset, StoreWait>,
    policy: FsyncPolicy,
    last_sync: Instant,
    /// Confirms of holds appended since the last fsync began (under `always`).
    unsynced: Vec<ConfirmToken>,
    /// The fsync running on a blocking thread, and the confirms it covers.
    fsync: Option<BlockingSync>,
    dir: PathBuf,
}

impl DelayTask {
    async fn run(mut self) {
        let end = loop {
            let sleep = match self.schedule.next_due() {
                Some(due) => {
                    let wait = due.saturating_sub(now_ms());
                    tokio::time::Instant::now() + Duration::from_millis(wait)
                }
                None => tokio::time::Instant::now() + Duration::from_secs(3600),
            };
            // Acks written since the last fsync get one soon even if nothing else happens.
            let sync_at = self.sync_deadline();
            tokio::select! {
                biased;
                // First, so a busy inbox never holds back the confirms of a finished fsync.
                done = async { (&mut self.fsync.as_mut().expect("guarded").work).await },
                    if self.fsync.is_some() => {
                    let confirms = self.fsync.take().expect("guarded").confirms;
                    self.fsync_done(confirms, done);
                }
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break DelayCmd::Stop };
                    let mut holds = Vec::new();
                    let mut end = None;
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        match cmd {
                            DelayCmd::Hold { msg, due, token } => holds.push((msg, due, token)),
                            other => { end = Some(other); break; }
                        }
                        if holds.len() < HOLD_BATCH {
                            next = self.rx.try_recv().ok();
                        }
                    }
                    self.hold(holds);
                    if let Some(end) = end {
                        break end;
                    }
                    // A busy inbox must not starve releases: give due messages a batch.
                    self.release();
                }
                Some(o) = self.confirm_rx.recv() => {
                    self.stored(o);
                    while let Ok(o) = self.confirm_rx.try_recv() {
                        self.stored(o);
                    }
                }
                _ = tokio::time::sleep_until(sleep) => self.release(),
                _ = tokio::time::sleep_until(sync_at.unwrap_or(sleep)), if sync_at.is_some() => {}
            }
            self.finish_round(false);
        };
        // Discard or stop: the running fsync's holds are confirmed (or nacked) first.
        if let Some(BlockingSync { confirms, work }) = self.fsync.take() {
            let done = work.await;
            self.fsync_done(confirms, done);
        }
        if matches!(end, DelayCmd::Discard) {
            self.discard();
            return;
        }
        // Shutdown: make holds and acks durable; what is still held stays in the log.
        self.finish_round(true);
        if let Some(BlockingSync { confirms, work }) = self.fsync.take() {
            let done = work.await;
            self.fsync_done(confirms, done);
        }
        // Acks of the records that fsync covered were written after it: one more.
        if let Some(mut log) = self.log.take() {
            let r = tokio::task::spawn_blocking(move || log.sync()).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(exchange = &*self.exchange, "delay log sync on stop: {e}");
            }
        }
    }

    /// Stores a round of holds and schedules them. Under `always` their confirms wait for
    /// the next fsync (`finish_round`); otherwise they go out once the holds are written
    /// to the OS.
    fn hold(&mut self, holds: Vec<(Arc<Message>, u64, Option<ConfirmToken>)>) {
        if holds.is_empty() {
            return;
        }
        let Some(log) = &mut self.log else {
            for (_, _, token) in holds {
                confirm(token, false);
            }
            return;
        };
        let now = now_ms() as i64;
        let mut stored = Vec::with_capacity(holds.len());
        for (msg, due, token) in holds {
            match log.append(due, &msg, now) {
                Ok(offset) => {
                    // Scheduled at once: a message due before its fsync completes is still
                    // released on time (its publisher is confirmed when the fsync is).
                    self.schedule.insert(due, offset);
                    stored.extend(token);
                }
                Err(e) => {
                    tracing::error!(exchange = &*self.exchange, "storing a delayed message: {e}");
                    confirm(token, false);
                }
            }
        }
        if self.policy == FsyncPolicy::Always {
            self.unsynced.extend(stored);
        } else {
            let ok = log.flush();
            if let Err(e) = &ok {
                tracing::error!(exchange = &*self.exchange, "delay log write failed: {e}");
            }
            for t in stored {
                confirm(Some(t), ok.is_ok());
            }
        }
        self.pending
            .store(self.schedule.len() as u64, Ordering::Relaxed);
    }

    /// Routes every due message (up to a batch) to the queues bound now.
    fn release(&mut self) {
        let Some(log) = &mut self.log else { return };
        let now = now_ms();
        let mut batches: Vec<(QueueHandle, Vec<QueueOp>)> = Vec::new();
        let mut acks = Vec::new();
        // Popped in due order (ties: publish order), which is the release order.
        let mut due = Vec::new();
        while due.len() < RELEASE_BATCH {
            let Some((_, offset)) = self.schedule.pop_due(now) else {
                break;
            };
            due.push(offset);
        }
        if due.is_empty() {
            return;
        }
        // One batch read (it sorts the offsets it reads).
        let mut by_offset = due.clone();
        let mut read: HashMap<Offset, _> = log.read_batch(&mut by_offset).into_iter().collect();
        for offset in due {
            let Some(read) = read.remove(&offset) else {
                continue;
            };
            let mut msg = match read {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(
                        exchange = &*self.exchange,
                        offset,
                        "reading a delayed message: {e}"
                    );
                    acks.push(offset);
                    continue;
                }
            };
            msg.headers =
                ferrymq_core::props::parse(&msg.raw_properties).and_then(|p| p.headers().clone());
            let routed = routing::route_now(&self.vhost, Arc::new(msg));
            let (msg, targets) = match routed {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(exchange = &*self.exchange, "delayed message dropped: {e}");
                    acks.push(offset);
                    continue;
                }
            };
            let mut waits = 0;
            for q in targets {
                let c = (msg.persistent && q.is_durable()).then(|| {
                    waits += 1;
                    Confirm {
                        channel: 0,
                        seq: offset,
                    }
                });
                let op = QueueOp::Publish(msg.clone(), c);
                match batches.iter_mut().find(|(h, _)| *h == q) {
                    Some((_, ops)) => ops.push(op),
                    None => batches.push((q, vec![op])),
                }
            }
            if waits == 0 {
                acks.push(offset);
            } else {
                self.waiting.insert(offset, StoreWait::new(waits));
            }
        }
        for (q, ops) in batches {
            q.send_batch(
                ops,
                Some(ConfirmTo {
                    outbound: self.confirm_tx.clone(),
                }),
            );
        }
        for offset in acks {
            if let Err(e) = log.ack(offset) {
                tracing::warn!(exchange = &*self.exchange, "delay log ack: {e}");
            }
        }
        self.schedule.shrink();
        self.pending
            .store(self.schedule.len() as u64, Ordering::Relaxed);
    }

    /// A durable queue stored (or failed to store) released messages.
    fn stored(&mut self, o: Outbound) {
        let Outbound::Confirms { seqs, ok, .. } = o else {
            return;
        };
        let Some(log) = &mut self.log else { return };
        for offset in seqs {
            let Some(w) = self.waiting.get_mut(&offset) else {
                continue;
            };
            if let Some(stored) = w.answer(ok) {
                self.waiting.remove(&offset);
                if stored {
                    if let Err(e) = log.ack(offset) {
                        tracing::warn!(exchange = &*self.exchange, "delay log ack: {e}");
                    }
                } else {
                    // Left unacked: it comes back (maybe twice) after a restart.
                    tracing::warn!(
                        exchange = &*self.exchange,
                        offset,
                        "a queue failed to store a delayed message"
                    );
                }
            }
        }
    }

    /// When the acks written since the last fsync get one of their own (none while an
    /// fsync runs: its completion ends a round, which starts the next).
    fn sync_deadline(&self) -> Option<tokio::time::Instant> {
        if self.fsync.is_some() {
            return None;
        }
        let dirty = self.log.as_ref().is_some_and(|l| l.needs_sync());
        let every = match self.policy {
            FsyncPolicy::Always => ACK_SYNC,
            FsyncPolicy::Interval(d) => d,
            FsyncPolicy::Never => return None,
        };
        dirty.then(|| tokio::time::Instant::from_std(self.last_sync + every))
    }

    /// Ends a round: starts an fsync on a blocking thread if none is running and the
    /// policy wants one (under `always` at once when holds wait for it, else when the ack
    /// interval is up; `last` at shutdown: whenever anything is unsynced).
    fn finish_round(&mut self, last: bool) {
        if self.fsync.is_some() {
            return;
        }
        let Some(log) = &mut self.log else { return };
        let due = last
            || sync_due(
                self.policy,
                self.last_sync.elapsed(),
                !self.unsynced.is_empty(),
            );
        if !due || !log.needs_sync() {
            if !self.unsynced.is_empty() && !log.needs_sync() {
                // Already covered (nothing left to write): confirm.
                send_confirms(std::mem::take(&mut self.unsynced), true);
            }
            return;
        }
        // Holds waiting and the ack interval not up: the records only (one fsync), so
        // confirms never wait on ack files; otherwise acks too.
        let acks_due = last || sync_due(self.policy, self.last_sync.elapsed(), false);
        let confirms = std::mem::take(&mut self.unsynced);
        let begun = if acks_due {
            self.last_sync = Instant::now();
            log.begin_sync()
        } else {
            log.begin_sync_holds()
        };
        match begun {
            Ok(None) => send_confirms(confirms, true),
            Ok(Some(job)) => {
                self.fsync = Some(BlockingSync::spawn(job, confirms));
            }
            Err(e) => {
                tracing::error!(exchange = &*self.exchange, "delay log write failed: {e}");
                send_confirms(confirms, false);
            }
        }
    }

    /// The fsync begun by `finish_round` completed: the holds it covered are confirmed,
    /// or nacked if it failed (the log then refuses writes, so no later hold is confirmed
    /// either).
    fn fsync_done(&mut self, confirms: Vec<ConfirmToken>, done: SyncDone) {
        let what = format!("delay log of exchange {}", &*self.exchange);
        let ok = blocking::finish_sync(&mut self.log, done, &what, |l, job, r| {
            l.finish_sync(job, r)
        });
        send_confirms(confirms, ok);
    }

    fn discard(&mut self) {
        let n = self.schedule.len();
        self.schedule.clear();
        self.pending.store(0, Ordering::Relaxed);
        self.log = None;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "removing a deleted delayed exchange's log: {e}");
        }
        tracing::info!(
            exchange = &*self.exchange,
            discarded = n,
            "delayed exchange deleted"
        );
    }
}

fn confirm(token: Option<ConfirmToken>, ok: bool) {
    if let Some(t) = token {
        t.send(ok);
    }
}
