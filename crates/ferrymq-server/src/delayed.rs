//! The owner task of one `x-delayed-message` exchange. Publishes carrying a positive
//! `x-delay` are handed to it (`DelayedHandle::hold`); it appends them to the exchange's
//! `DelayLog` (group commit: one fsync per round of holds, then the publishers' confirms),
//! keeps only `(due, offset)` in a `DelaySchedule`, sleeps until the earliest due time,
//! then reads each due message back, routes it with the exchange's bindings as they are at
//! that moment (CC/BCC included) and hands it to the queues. A held message is acked in
//! the log once every durable queue it reached has stored it (the queues' store confirms
//! come back to this task), so a crash never loses a message between the two logs; at
//! worst it is delivered twice. Deleting the exchange discards the log.

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

use crate::queue_task::{ConfirmToken, Outbound, QueueHandle, QueueOp};
use crate::routing;
use crate::vhost::VHost;

/// Due messages released per round before the inbox gets a turn.
const RELEASE_BATCH: usize = 4096;
/// Under `always`, acks of released messages are fsynced at most this often (a lost ack
/// only means a redelivery after a crash; fewer fsyncs keep releases on time).
const ACK_SYNC: Duration = Duration::from_millis(100);
/// While due messages wait to be released, ack fsyncs (which block this task) are put off,
/// but never for longer than this.
const ACK_SYNC_MAX: Duration = Duration::from_secs(1);
/// Holds taken from the inbox per round (one fsync covers them all).
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
    let (log, held) = DelayLog::open(&dir)?;
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
    /// Released messages waiting for this many queue store confirms before their ack.
    waiting: HashMap<Offset, u32>,
    policy: FsyncPolicy,
    last_sync: Instant,
    dir: PathBuf,
}

impl DelayTask {
    async fn run(mut self) {
        loop {
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
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
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
                    // A busy inbox must not starve releases: give due messages a batch.
                    if end.is_none() {
                        self.release();
                    }
                    match end {
                        Some(DelayCmd::Discard) => { self.discard(); return; }
                        Some(DelayCmd::Stop) => break,
                        _ => {}
                    }
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
            self.finish_round();
        }
        // Shutdown: make acks durable; what is still held stays in the log.
        if let Some(log) = &mut self.log {
            if let Err(e) = tokio::task::block_in_place(|| log.sync()) {
                tracing::warn!(exchange = &*self.exchange, "delay log sync on stop: {e}");
            }
        }
    }

    /// Stores a round of holds, makes them durable, confirms them, schedules them.
    fn hold(&mut self, holds: Vec<(Arc<Message>, u64, Option<ConfirmToken>)>) {
        if holds.is_empty() {
            return;
        }
        let Some(log) = &mut self.log else { return };
        let now = now_ms() as i64;
        let mut stored = Vec::with_capacity(holds.len());
        for (msg, due, token) in holds {
            match log.append(due, &msg, now) {
                Ok(offset) => stored.push((due, offset, token)),
                Err(e) => {
                    tracing::error!(exchange = &*self.exchange, "storing a delayed message: {e}");
                    confirm(token, false);
                }
            }
        }
        let wants_sync = stored.iter().any(|s| s.2.is_some());
        let ok = if wants_sync && self.policy == FsyncPolicy::Always {
            self.last_sync = Instant::now();
            tokio::task::block_in_place(|| log.sync())
        } else {
            log.flush()
        };
        if let Err(e) = &ok {
            tracing::error!(exchange = &*self.exchange, "delay log write failed: {e}");
        }
        for (due, offset, token) in stored {
            if ok.is_ok() {
                self.schedule.insert(due, offset);
            }
            confirm(token, ok.is_ok());
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
        for _ in 0..RELEASE_BATCH {
            let Some((_, offset)) = self.schedule.pop_due(now) else {
                break;
            };
            let mut msg = match log.read(offset) {
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
                let token = (msg.persistent && q.is_durable()).then(|| {
                    waits += 1;
                    ConfirmToken {
                        outbound: self.confirm_tx.clone(),
                        connection: 0,
                        channel: 0,
                        seq: offset,
                    }
                });
                let op = QueueOp::Publish(msg.clone(), token);
                match batches.iter_mut().find(|(h, _)| *h == q) {
                    Some((_, ops)) => ops.push(op),
                    None => batches.push((q, vec![op])),
                }
            }
            if waits == 0 {
                acks.push(offset);
            } else {
                self.waiting.insert(offset, waits);
            }
        }
        for (q, ops) in batches {
            q.send_batch(ops);
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
            let Some(n) = self.waiting.get_mut(&offset) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(&offset);
                if ok {
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

    fn sync_deadline(&self) -> Option<tokio::time::Instant> {
        let dirty = self.log.as_ref().is_some_and(|l| l.needs_sync());
        let every = match self.policy {
            FsyncPolicy::Always => ACK_SYNC,
            FsyncPolicy::Interval(d) => d,
            FsyncPolicy::Never => return None,
        };
        dirty.then(|| tokio::time::Instant::from_std(self.last_sync + every))
    }

    /// Acks become durable lazily: under `always` at the end of a round with work, else
    /// as the policy says. A lost ack only means a redelivery after a crash.
    fn finish_round(&mut self) {
        let behind = self.schedule.next_due().is_some_and(|d| d <= now_ms());
        let Some(log) = &mut self.log else { return };
        if !log.needs_sync() {
            return;
        }
        let due = ack_sync_due(self.policy, self.last_sync.elapsed(), behind);
        let r = if due {
            self.last_sync = Instant::now();
            tokio::task::block_in_place(|| log.sync())
        } else {
            log.flush()
        };
        if let Err(e) = r {
            tracing::warn!(exchange = &*self.exchange, "delay log: {e}");
        }
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

/// Whether the acks written since the last fsync (`since` ago) get one now. Under
/// `always` every [`ACK_SYNC`], except while released-but-due messages wait (`behind`):
/// the fsync blocks this task, and on a busy disk one takes up to seconds, so syncing
/// between every release batch would cap releases at one batch per fsync and let lateness
/// grow without bound. Then acks wait up to [`ACK_SYNC_MAX`].
fn ack_sync_due(policy: FsyncPolicy, since: Duration, behind: bool) -> bool {
    match policy {
        FsyncPolicy::Always if behind => since >= ACK_SYNC_MAX,
        FsyncPolicy::Always => since >= ACK_SYNC,
        FsyncPolicy::Interval(d) => since >= d,
        FsyncPolicy::Never => false,
    }
}

fn confirm(token: Option<ConfirmToken>, ok: bool) {
    if let Some(t) = token {
        let _ = t.outbound.send(Outbound::Confirms {
            channel: t.channel,
            seqs: vec![t.seq],
            ok,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_syncs_give_way_to_due_releases() {
        let ms = Duration::from_millis;
        let always = FsyncPolicy::Always;
        assert!(!ack_sync_due(always, ms(50), false));
        assert!(ack_sync_due(always, ms(100), false));
        // Behind schedule: releases first, acks at most a second late.
        assert!(!ack_sync_due(always, ms(100), true));
        assert!(!ack_sync_due(always, ms(999), true));
        assert!(ack_sync_due(always, ms(1000), true));
        let interval = FsyncPolicy::Interval(ms(200));
        assert!(!ack_sync_due(interval, ms(199), true));
        assert!(ack_sync_due(interval, ms(200), false));
        assert!(!ack_sync_due(FsyncPolicy::Never, ms(10_000), true));
    }
}
