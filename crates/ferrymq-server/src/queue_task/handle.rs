//! What the rest of the broker holds of a queue: its handle (commands, settles,
//! backpressure, live numbers) and the messages that travel between connections and the
//! queue task.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use ferrymq_core::queue::{ConsumerId, Delivery, Entry, Offset};
use ferrymq_core::{CoreError, Message};
use tokio::sync::{mpsc, oneshot, Notify};

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

    /// Records `n` deliveries handed out without asking (the channel had no limit).
    pub fn take_unchecked(&self, n: u32) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
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
    /// A publish returned to its publisher (`basic.return`, NO_ROUTE): a half-message
    /// decision for an unknown transaction, or a committed half that routed nowhere.
    Returned { channel: u16, msg: Arc<Message> },
    /// Publishes (by channel sequence number) that are now safely stored (`ok`) or that
    /// the store failed (`!ok`: nack them).
    Confirms {
        channel: u16,
        seqs: Vec<u64>,
        ok: bool,
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
    /// The queue task's tally for this consumer during one dispatch round (its own, never
    /// shared): the shared counters above are read once and written once per round.
    pub round: RoundTally,
}

/// What a dispatch round handed a consumer so far (see `QueueTask::dispatch`).
#[derive(Debug, Default)]
pub struct RoundTally {
    /// The connection's backlog when the round first looked at it.
    pub(super) backlog_seen: Cell<usize>,
    /// Deliveries handed out this round (added to `backlog` when they are sent).
    pub(super) delivered: Cell<usize>,
    /// The channel has no channel-wide limit (read once per round): its credit is taken
    /// in one go at the end of the round instead of one compare-and-swap per delivery.
    pub(super) unlimited: Cell<bool>,
    /// Credit to take at the end of the round (deliveries under `unlimited`).
    pub(super) credit_owed: Cell<u32>,
}

/// Deliveries a connection may have waiting in its inbox before queues hold back.
pub const CONNECTION_BACKLOG_HIGH: usize = 16_384;
/// The connection wakes its queues when its backlog drains to this.
pub const CONNECTION_BACKLOG_LOW: usize = 4_096;

/// Where to report that a publish is stored: the publishing channel's sequence number.
pub struct ConfirmToken {
    pub outbound: mpsc::UnboundedSender<Outbound>,
    pub channel: u16,
    pub seq: u64,
}

impl ConfirmToken {
    /// Sends this publish's confirm (`ok`: ack, else nack).
    pub fn send(self, ok: bool) {
        let _ = self.outbound.send(Outbound::Confirms {
            channel: self.channel,
            seqs: vec![self.seq],
            ok,
        });
    }
}

/// Sends publisher confirms (`ok`: ack, else nack): one message per (connection,
/// channel), sequence numbers in order.
pub fn send_confirms(confirms: Vec<ConfirmToken>, ok: bool) {
    let mut all = Confirms::default();
    for t in confirms {
        all.push_token(t);
    }
    all.send(ok);
}

/// Where the confirms of a batch's publishes go: the publishing connection's outbound.
/// A batch carries it once; its publishes carry only their [`Confirm`], so a publish
/// fanned out to many queues costs no sender clone per queue (each clone and drop is an
/// atomic on a line every queue task shares).
#[derive(Clone)]
pub struct ConfirmTo {
    pub outbound: mpsc::UnboundedSender<Outbound>,
}

impl ConfirmTo {
    /// Sends one confirm (`ok`: ack, else nack).
    pub fn send(&self, c: Confirm, ok: bool) {
        let _ = self.outbound.send(Outbound::Confirms {
            channel: c.channel,
            seqs: vec![c.seq],
            ok,
        });
    }
}

/// A message routed to several durable queues, waiting for each one's store confirm
/// (answers come in any order). It is stored only if every queue stored its copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreWait {
    remaining: u32,
    failed: bool,
}

impl StoreWait {
    /// Waits for `queues` answers.
    pub fn new(queues: u32) -> Self {
        StoreWait {
            remaining: queues,
            failed: false,
        }
    }

    /// Counts one queue's answer; once all have answered, whether all stored it.
    pub fn answer(&mut self, ok: bool) -> Option<bool> {
        self.remaining = self.remaining.saturating_sub(1);
        self.failed |= !ok;
        (self.remaining == 0).then_some(!self.failed)
    }
}

/// A publish waiting for its confirm: the publishing channel's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    pub channel: u16,
    pub seq: u64,
}

/// Confirms waiting for a store sync, grouped by destination in arrival order.
#[derive(Default)]
pub struct Confirms {
    groups: Vec<(ConfirmTo, Vec<Confirm>)>,
}

impl Confirms {
    /// Adds a confirm for `to`; `to` is cloned only when it is not the last one added.
    pub fn push(&mut self, to: &ConfirmTo, c: Confirm) {
        match self.groups.last_mut() {
            Some((last, cs)) if last.outbound.same_channel(&to.outbound) => cs.push(c),
            _ => self.groups.push((to.clone(), vec![c])),
        }
    }

    /// Adds a confirm that carries its own destination.
    pub fn push_token(&mut self, t: ConfirmToken) {
        let c = Confirm {
            channel: t.channel,
            seq: t.seq,
        };
        self.push(
            &ConfirmTo {
                outbound: t.outbound,
            },
            c,
        );
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Sends them (`ok`: ack, else nack): one message per connection and channel, each
    /// channel's sequence numbers in the order they were added.
    pub fn send(self, ok: bool) {
        let mut merged: Vec<(ConfirmTo, Vec<Confirm>)> = Vec::new();
        for (to, cs) in self.groups {
            match merged
                .iter_mut()
                .find(|(m, _)| m.outbound.same_channel(&to.outbound))
            {
                Some((_, all)) => all.extend(cs),
                None => merged.push((to, cs)),
            }
        }
        for (to, cs) in merged {
            let mut channels: Vec<(u16, Vec<u64>)> = Vec::new();
            for c in cs {
                match channels.iter_mut().find(|(ch, _)| *ch == c.channel) {
                    Some((_, seqs)) => seqs.push(c.seq),
                    None => channels.push((c.channel, vec![c.seq])),
                }
            }
            for (channel, seqs) in channels {
                let _ = to.outbound.send(Outbound::Confirms { channel, seqs, ok });
            }
        }
    }
}

/// One operation in a batch from a connection.
pub enum QueueOp {
    /// A message to enqueue; a confirm, sent to the batch's [`ConfirmTo`], is asked for
    /// once it is durable.
    Publish(Arc<Message>, Option<Confirm>),
    /// Settles carry the delivery's generation (its delivery count when delivered): a
    /// settle for a delivery the queue already took back is ignored.
    Ack(Offset, u32),
    /// `basic.nack` / `basic.reject` with requeue: the consumer failed the message.
    Requeue(Offset, u32),
    /// Given back without a verdict (channel or connection closed, consumer gone,
    /// `basic.recover`).
    Return(Offset, u32),
    /// `basic.nack` / `basic.reject` without requeue: dead-lettered if the queue has a DLX.
    Drop(Offset, u32),
}

/// Result of `basic.get`.
pub type GetResult = Option<(Entry, usize)>;

/// Commands a queue task accepts.
pub enum QueueCmd {
    /// Operations in order; the confirms its publishes ask for go to the `ConfirmTo`.
    Batch(Vec<QueueOp>, Option<ConfirmTo>),
    Consume {
        link: ConsumerLink,
        prefetch: u32,
        exclusive: bool,
        /// `x-priority` of the consume.
        priority: i64,
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
    /// The queue was redeclared: it counts as used (`x-expires`).
    Touch,
    /// The vhost's policies changed: re-read the effective arguments and apply what can
    /// change on a running queue (see `QueueTask::reconfigure`).
    Reconfigure,
    /// Publish the queue's numbers now (after every command sent before this one) and
    /// answer: the management API's single-queue read, so a count read right after a
    /// publish includes it.
    Sync {
        reply: oneshot::Sender<()>,
    },
    Stop,
}

pub(super) struct Inner {
    pub(super) id: u64,
    pub(super) name: Arc<str>,
    /// Durable queues keep their messages in a log; publishers of persistent messages to
    /// them wait for its fsync before being confirmed.
    pub(super) durable: bool,
    /// The queue may refuse publishes (`x-overflow` reject-publish): confirming
    /// publishers wait for its verdict. Changes when a policy does.
    pub(super) rejects_publish: AtomicBool,
    /// Live numbers for the management API, published by the task once per round.
    pub(super) stats: crate::stats::QueueStats,
    pub(super) tx: mpsc::UnboundedSender<QueueCmd>,
    /// Acks, requeues and drops: applied ahead of queued publishes so that consumers are
    /// not starved behind a publisher's backlog (their relative order does not matter).
    /// One message per batch (a connection's settles for this queue from one socket read).
    pub(super) settle_tx: mpsc::UnboundedSender<Vec<QueueOp>>,
    /// Operations sent but not yet applied: the queue's backpressure signal.
    pub(super) backlog: AtomicUsize,
    /// Woken when the backlog falls back to `BACKLOG_LOW`.
    pub(super) drained: Notify,
}

/// Above this many unapplied operations a queue is congested: connections sending to it
/// stop reading their sockets until it drains to `BACKLOG_LOW`.
pub(super) const BACKLOG_HIGH: usize = 16_384;
pub(super) const BACKLOG_LOW: usize = 4_096;

/// A cheap, clonable reference to a queue's task.
#[derive(Clone)]
pub struct QueueHandle(pub(super) Arc<Inner>);

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

    pub fn is_durable(&self) -> bool {
        self.0.durable
    }

    /// Whether a publish to this queue may be refused (then nacked to the publisher).
    pub fn may_reject_publish(&self) -> bool {
        self.0.rejects_publish.load(Ordering::Relaxed)
    }

    /// The queue's live numbers (message counts, consumers, counters).
    pub fn stats(&self) -> &crate::stats::QueueStats {
        &self.0.stats
    }

    /// Sends a command; a queue that is gone ignores it (its replies never come, which
    /// callers treat as "queue deleted").
    pub fn send(&self, cmd: QueueCmd) {
        let _ = self.0.tx.send(cmd);
    }

    /// Sends a batch of operations, counting them towards the queue's backlog. The
    /// confirms its publishes ask for go to `confirm_to`.
    pub fn send_batch(&self, ops: Vec<QueueOp>, confirm_to: Option<ConfirmTo>) {
        self.0.backlog.fetch_add(ops.len(), Ordering::AcqRel);
        self.send(QueueCmd::Batch(ops, confirm_to));
    }

    /// Sends acks / requeues / drops (never publishes) on the priority inbox.
    pub fn send_settles(&self, ops: Vec<QueueOp>) {
        if !ops.is_empty() {
            let _ = self.0.settle_tx.send(ops);
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
    pub(super) fn applied(&self, n: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn to(tx: &mpsc::UnboundedSender<Outbound>) -> ConfirmTo {
        ConfirmTo {
            outbound: tx.clone(),
        }
    }

    fn received(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Vec<(u16, Vec<u64>, bool)> {
        let mut got = Vec::new();
        while let Ok(o) = rx.try_recv() {
            if let Outbound::Confirms { channel, seqs, ok } = o {
                got.push((channel, seqs, ok));
            }
        }
        got
    }

    #[test]
    fn confirms_go_once_per_connection_and_channel_in_order() {
        let (a_tx, mut a_rx) = mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = mpsc::unbounded_channel();
        let (a, b) = (to(&a_tx), to(&b_tx));
        let mut cs = Confirms::default();
        assert!(cs.is_empty());
        let c = |channel, seq| Confirm { channel, seq };
        cs.push(&a, c(1, 1));
        cs.push(&a, c(2, 1));
        cs.push(&b, c(1, 7));
        cs.push(&a, c(1, 2));
        cs.push_token(ConfirmToken {
            outbound: a_tx.clone(),
            channel: 1,
            seq: 3,
        });
        cs.push(&b, c(1, 8));
        assert!(!cs.is_empty());
        cs.send(true);
        assert_eq!(
            received(&mut a_rx),
            vec![(1, vec![1, 2, 3], true), (2, vec![1], true)]
        );
        assert_eq!(received(&mut b_rx), vec![(1, vec![7, 8], true)]);
    }

    #[test]
    fn tasks_sharing_connection_id_zero_each_get_their_own_confirms() {
        // The delay task, the half-message task and an HTTP publish all use connection
        // 0, channel 0: confirms go by sender, never by those numbers.
        let (d_tx, mut d_rx) = mpsc::unbounded_channel();
        let (h_tx, mut h_rx) = mpsc::unbounded_channel();
        let mut cs = Confirms::default();
        cs.push(
            &to(&d_tx),
            Confirm {
                channel: 0,
                seq: 40,
            },
        );
        cs.push(&to(&h_tx), Confirm { channel: 0, seq: 3 });
        cs.push(
            &to(&d_tx),
            Confirm {
                channel: 0,
                seq: 41,
            },
        );
        cs.send(true);
        assert_eq!(received(&mut d_rx), vec![(0, vec![40, 41], true)]);
        assert_eq!(received(&mut h_rx), vec![(0, vec![3], true)]);
    }

    #[test]
    fn a_store_wait_is_stored_only_if_every_queue_stored_it_whatever_the_order() {
        for answers in [[true, true, true], [false, true, true], [true, true, false]] {
            let mut w = StoreWait::new(3);
            assert_eq!(w.answer(answers[0]), None);
            assert_eq!(w.answer(answers[1]), None);
            assert_eq!(
                w.answer(answers[2]),
                Some(!answers.contains(&false)),
                "{answers:?}"
            );
        }
    }

    #[test]
    fn a_run_of_confirms_to_one_connection_holds_one_sender() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let batch = to(&tx);
        let mut cs = Confirms::default();
        for seq in 1..=1000 {
            cs.push(&batch, Confirm { channel: 1, seq });
        }
        // One group: the run holds one sender, not one per confirm.
        assert_eq!(cs.groups.len(), 1);
        cs.send(false);
        assert_eq!(received(&mut rx), vec![(1, (1..=1000).collect(), false)]);
    }
}
