//! Per-channel state of an AMQP connection: delivery tags and the deliveries awaiting ack,
//! consumers, prefetch, confirm and transaction modes, and the message being assembled from
//! method + header + body frames.

use std::collections::VecDeque;
use std::sync::Arc;

use ahash::AHashMap;
use amq_protocol::types::FieldTable;
use bytes::BytesMut;
use ferrymq_core::queue::{ConsumerId, Offset};
use ferrymq_core::Message;

use crate::queue_task::{ChannelCredit, QueueHandle};

/// A delivery the client has not settled yet.
pub struct Unacked {
    pub queue: QueueHandle,
    pub offset: Offset,
    /// The message's delivery count when delivered: the queue ignores a settle whose
    /// generation no longer matches (the delivery was taken back, e.g. by a consumer
    /// timeout, and perhaps delivered again).
    pub generation: u32,
    /// Delivered to a consumer (holds channel credit) rather than fetched by `basic.get`.
    pub consumed: bool,
}

/// Publishes waiting for their queues' answers before they can be confirmed, by sequence
/// number: how many queues still have to answer, and whether one failed. Sequence numbers
/// only grow, so this is a ring indexed by `seq - base` (a slot per publish since the
/// oldest waiting one; publishes that did not wait leave an empty slot): each of the N
/// answers to a publish routed to N queues is an index, not a tree search.
#[derive(Debug, Default)]
pub struct Unconfirmed {
    base: u64,
    slots: VecDeque<Option<(u32, bool)>>,
    len: usize,
}

impl Unconfirmed {
    /// Records publish `seq` (above every earlier one) waiting for `queues` answers.
    pub fn insert(&mut self, seq: u64, queues: u32) {
        if self.len == 0 {
            self.slots.clear();
            self.base = seq;
        }
        match seq.checked_sub(self.base) {
            Some(i) if i >= self.slots.len() as u64 => {
                self.slots.resize((i as usize) + 1, None);
                self.slots[i as usize] = Some((queues, false));
                self.len += 1;
            }
            // Not above the newest: sequence numbers only grow, so this is a bug; keep
            // the first record.
            _ => debug_assert!(false, "publish seq {seq} recorded out of order"),
        }
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut (u32, bool)> {
        let i = seq.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(i).ok()?)?.as_mut()
    }

    /// The oldest waiting publish.
    pub fn first(&mut self) -> Option<(u64, (u32, bool))> {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        self.slots
            .front()
            .copied()
            .flatten()
            .map(|v| (self.base, v))
    }

    /// Forgets the oldest waiting publish.
    pub fn pop_first(&mut self) {
        if self.first().is_some() {
            self.slots.pop_front();
            self.base += 1;
            self.len -= 1;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A consumer registered on this channel.
pub struct ChannelConsumer {
    pub id: ConsumerId,
    /// `None` for the direct reply-to pseudo consumer.
    pub queue: Option<QueueHandle>,
}

/// A message whose frames are still arriving. Its exchange, routing key and properties
/// (and the body, for small messages) accumulate in the channel's `asm` buffer.
pub struct Partial {
    pub mandatory: bool,
    pub exchange_len: usize,
    pub routing_key_len: usize,
    /// Set once the content header arrived.
    pub header: Option<HeaderInfo>,
    pub received: u64,
    /// Bodies above the copy limit are assembled here instead of in `asm`.
    pub big_body: Option<BytesMut>,
}

/// What the content header told us.
pub struct HeaderInfo {
    pub properties_len: usize,
    pub body_size: u64,
    pub persistent: bool,
    pub priority: Option<u8>,
    pub headers: Option<FieldTable>,
    /// Per-message TTL (`expiration`), validated.
    pub ttl_ms: Option<u64>,
}

/// Work held back by `tx.select` until `tx.commit`.
#[derive(Default)]
pub struct TxBuffer {
    /// (mandatory, message)
    pub publishes: Vec<(bool, Arc<Message>)>,
    /// (tag, multiple, settle kind)
    pub settles: Vec<(u64, bool, Settle)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Settle {
    Ack,
    Requeue,
    Drop,
}

#[derive(PartialEq, Eq)]
pub enum ChannelState {
    Open,
    /// We sent `channel.close` and wait for `close-ok`; everything else is dropped.
    Closing,
}

pub struct Channel {
    pub state: ChannelState,
    /// Tag of `unacked[0]`.
    pub unacked_base: u64,
    pub unacked: VecDeque<Option<Unacked>>,
    pub consumers: AHashMap<String, ChannelConsumer>,
    /// `basic.qos global=false`: prefetch for consumers created afterwards.
    pub consumer_prefetch: u32,
    pub credit: Arc<ChannelCredit>,
    pub confirm: bool,
    pub publish_seq: u64,
    /// Publishes waiting for queues to store them: sequence number → (queues still to
    /// answer, whether any store failed).
    pub unconfirmed: Unconfirmed,
    /// Every sequence number up to this one has been acked or nacked to the client.
    pub confirmed: u64,
    pub tx: Option<TxBuffer>,
    pub partial: Option<Partial>,
    /// Reused buffer for assembling the message in `partial`.
    pub asm: Vec<u8>,
    pub flow_active: bool,
    /// The channel's direct reply-to name while it consumes from `amq.rabbitmq.reply-to`.
    pub reply_name: Option<String>,
    /// Deliveries in `unacked` still waiting for a settle.
    pub unacked_live: usize,
    /// Counted since the last `sync_stats`.
    pub counts: crate::stats::Counts,
    /// What the management API sees of this channel.
    pub stats: Arc<crate::stats::ChannelStats>,
}

impl Channel {
    pub fn new(number: u16) -> Self {
        Channel {
            state: ChannelState::Open,
            unacked_base: 1,
            unacked: VecDeque::new(),
            consumers: AHashMap::new(),
            consumer_prefetch: 0,
            credit: Arc::new(ChannelCredit::default()),
            confirm: false,
            publish_seq: 0,
            unconfirmed: Unconfirmed::default(),
            confirmed: 0,
            tx: None,
            partial: None,
            asm: Vec::new(),
            flow_active: true,
            reply_name: None,
            unacked_live: 0,
            counts: Default::default(),
            stats: Arc::new(crate::stats::ChannelStats::new(number)),
        }
    }

    /// Publishes the counts of this batch and the channel's current numbers (called once
    /// per socket read, with the broker's totals).
    pub fn sync_stats(&mut self, global: &crate::stats::MessageCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.counts.is_zero() {
            self.stats.counters.add(&self.counts);
            global.add(&self.counts);
            self.counts = Default::default();
        }
        self.stats.unacked.store(self.unacked_live as u64, Relaxed);
        self.stats
            .unconfirmed
            .store(self.publish_seq.saturating_sub(self.confirmed), Relaxed);
        self.stats
            .global_prefetch_count
            .store(self.credit.limit(), Relaxed);
        self.stats
            .prefetch_count
            .store(self.consumer_prefetch, Relaxed);
    }

    /// Appends the publisher confirms that are due: `basic.ack multiple` up to the first
    /// publish still waiting for a queue, with a `basic.nack` for each publish a store
    /// failed, in sequence order.
    pub fn emit_confirms(&mut self, ch: u16, out: &mut Vec<u8>) {
        if !self.confirm {
            return;
        }
        let before = self.confirmed;
        let nacked = self.emit_confirms_inner(ch, out);
        self.counts.confirm += (self.confirmed - before).saturating_sub(nacked);
    }

    /// Returns how many of the confirms sent were nacks.
    fn emit_confirms_inner(&mut self, ch: u16, out: &mut Vec<u8>) -> u64 {
        let mut nacked = 0;
        let ack_upto = |upto: u64, confirmed: &mut u64, out: &mut Vec<u8>| {
            if upto > *confirmed {
                ferrymq_amqp::encode::confirm(out, ch, upto, upto > *confirmed + 1, true);
                *confirmed = upto;
            }
        };
        while let Some((seq, (remaining, failed))) = self.unconfirmed.first() {
            if remaining > 0 {
                ack_upto(seq - 1, &mut self.confirmed, out);
                return nacked;
            }
            self.unconfirmed.pop_first();
            if failed {
                ack_upto(seq - 1, &mut self.confirmed, out);
                ferrymq_amqp::encode::confirm(out, ch, seq, false, false);
                self.confirmed = seq;
                nacked += 1;
            }
        }
        ack_upto(self.publish_seq, &mut self.confirmed, out);
        nacked
    }

    /// Records queue answers for publishes waiting to be confirmed.
    pub fn queue_confirmed(&mut self, seqs: &[u64], ok: bool) {
        for seq in seqs {
            if let Some((remaining, failed)) = self.unconfirmed.get_mut(*seq) {
                *remaining = remaining.saturating_sub(1);
                *failed |= !ok;
            }
        }
    }

    /// Next delivery tag to hand out.
    pub fn next_tag(&self) -> u64 {
        self.unacked_base + self.unacked.len() as u64
    }

    /// Records a delivery that needs ack; returns its tag.
    pub fn push_unacked(&mut self, u: Unacked) -> u64 {
        let tag = self.next_tag();
        self.unacked.push_back(Some(u));
        self.unacked_live += 1;
        tag
    }

    /// Records a delivery that needs no ack (still consumes a tag).
    pub fn skip_tag(&mut self) -> u64 {
        let tag = self.next_tag();
        if self.unacked.is_empty() {
            self.unacked_base += 1;
        } else {
            self.unacked.push_back(None);
        }
        tag
    }

    fn compact(&mut self) {
        while let Some(None) = self.unacked.front() {
            self.unacked.pop_front();
            self.unacked_base += 1;
        }
    }

    /// Takes the deliveries a settle (`ack`/`nack`/`reject`) refers to. `None` if the tag
    /// is not outstanding (a 406 for the client). Tag 0 with `multiple` means all.
    pub fn take_settled(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if multiple && tag == 0 {
            return Some(self.take_all_unacked());
        }
        if tag < self.unacked_base {
            return None;
        }
        let idx = (tag - self.unacked_base) as usize;
        match self.unacked.get(idx) {
            Some(Some(_)) => {}
            _ => return None,
        }
        let mut out = Vec::with_capacity(if multiple { idx + 1 } else { 1 });
        if multiple {
            for slot in self.unacked.iter_mut().take(idx + 1) {
                if let Some(u) = slot.take() {
                    out.push(u);
                }
            }
        } else if let Some(u) = self.unacked[idx].take() {
            out.push(u);
        }
        self.unacked_live = self.unacked_live.saturating_sub(out.len());
        self.compact();
        Some(out)
    }

    /// Takes every outstanding delivery (channel close, `basic.recover`).
    pub fn take_all_unacked(&mut self) -> Vec<Unacked> {
        let base = self.next_tag();
        let all: Vec<Unacked> = self.unacked.drain(..).flatten().collect();
        self.unacked_base = base;
        self.unacked_live = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(c: &mut Channel, tag: u64, multiple: bool) -> Option<Vec<u64>> {
        c.take_settled(tag, multiple)
            .map(|v| v.into_iter().map(|u| u.offset).collect())
    }

    /// Unacked deliveries need a queue handle; the tests only look at offsets, so they use
    /// a handle whose task never runs.
    fn push(c: &mut Channel, offset: u64) -> u64 {
        let (queue, _task) = crate::queue_task::test_queue("t");
        c.push_unacked(Unacked {
            queue,
            offset,
            generation: 0,
            consumed: true,
        })
    }

    #[test]
    fn delivery_tags_single_multiple_and_unknown() {
        let mut c = Channel::new(1);
        let tags: Vec<u64> = (10..15).map(|o| push(&mut c, o)).collect();
        assert_eq!(tags, vec![1, 2, 3, 4, 5]);
        assert_eq!(take(&mut c, 2, false), Some(vec![11]));
        assert_eq!(take(&mut c, 2, false), None, "double ack is unknown");
        assert_eq!(take(&mut c, 4, true), Some(vec![10, 12, 13]));
        assert_eq!(take(&mut c, 3, true), None, "already settled");
        assert_eq!(c.skip_tag(), 6, "no-ack deliveries still use tags");
        assert_eq!(push(&mut c, 20), 7);
        assert_eq!(take(&mut c, 0, true), Some(vec![14, 20]));
        assert_eq!(c.next_tag(), 8);
        assert_eq!(take(&mut c, 99, false), None);
        assert!(c.unacked.is_empty());
    }

    #[test]
    fn unconfirmed_publishes_are_found_by_sequence_number() {
        let mut u = Unconfirmed::default();
        assert_eq!(u.first(), None);
        u.insert(5, 2);
        u.insert(6, 1);
        // 7 and 8 did not wait for a queue.
        u.insert(9, 3);
        assert_eq!(u.len(), 3);
        assert_eq!(u.get_mut(7), None);
        assert_eq!(u.get_mut(4), None);
        assert_eq!(u.get_mut(10), None);
        u.get_mut(6).unwrap().0 -= 1;
        u.get_mut(9).unwrap().1 = true;
        assert_eq!(u.first(), Some((5, (2, false))));
        u.pop_first();
        assert_eq!(u.first(), Some((6, (0, false))));
        u.pop_first();
        // The empty slots of 7 and 8 are skipped.
        assert_eq!(u.first(), Some((9, (3, true))));
        u.pop_first();
        assert!(u.is_empty());
        assert_eq!(u.first(), None);
        // Empty again: the next publish starts the ring over, far beyond the old base.
        u.insert(1_000_000, 1);
        assert_eq!(u.first(), Some((1_000_000, (1, false))));
        assert_eq!(u.slots.len(), 1);
    }

    /// A publish routed to N durable queues is confirmed only when all N queue fsyncs that
    /// cover it have completed (each queue's `Outbound::Confirms` after its own fsync);
    /// one failed fsync among them makes it a nack.
    #[test]
    fn a_confirm_waits_for_every_queue_fsync() {
        const N: u32 = 100;
        let mut c = Channel::new(1);
        c.confirm = true;
        for seq in 1..=2 {
            c.publish_seq = seq;
            c.unconfirmed.insert(seq, N);
        }
        let mut out = Vec::new();
        for q in 0..N {
            c.emit_confirms(1, &mut out);
            assert!(out.is_empty(), "confirmed after {q} of {N} fsyncs");
            c.queue_confirmed(&[1], true);
            if q == 7 {
                c.queue_confirmed(&[2], false);
            } else if q < N - 1 {
                c.queue_confirmed(&[2], true);
            }
        }
        // Seq 1: all N fsyncs done, acked; seq 2 still waits for its last queue.
        c.emit_confirms(1, &mut out);
        assert!(!out.is_empty());
        assert_eq!(c.confirmed, 1);
        out.clear();
        c.queue_confirmed(&[2], true);
        c.emit_confirms(1, &mut out);
        assert_eq!(c.confirmed, 2);
        // Method frame payload: class 60, method 120 (basic.nack).
        assert_eq!(
            &out[7..11],
            &[0, 60, 0, 120],
            "one failed fsync of N nacks it"
        );
    }
}
