//! The queue state machine: ready messages in FIFO order, deliveries awaiting ack, and the
//! consumers that compete for messages with per-consumer prefetch. Messages keep the offset
//! they were enqueued at; a requeued message goes back to its original position (ahead of
//! everything enqueued after it) with its delivery count raised, so it is redelivered with
//! `redelivered` set.
//!
//! The state is pure: the owner task feeds it commands and turns the returned deliveries
//! into frames. Channel-wide (global) prefetch is asked of the caller through a credit
//! callback, because it spans queues.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ahash::AHashMap;

use crate::error::CoreError;
use crate::message::Message;

/// Position of a message in its queue; increases by one per enqueued message.
pub type Offset = u64;

/// Identifies a consumer broker-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

/// A message held by the queue.
#[derive(Debug, Clone)]
pub struct Entry {
    pub offset: Offset,
    pub msg: Arc<Message>,
    /// How many times it was handed out and came back.
    pub delivery_count: u32,
}

impl Entry {
    pub fn redelivered(&self) -> bool {
        self.delivery_count > 0
    }
}

/// One message handed to a consumer by `dispatch`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub consumer: ConsumerId,
    pub entry: Entry,
    /// Auto-ack consumers get messages that are already settled.
    pub needs_ack: bool,
}

#[derive(Debug, Clone)]
struct Consumer {
    id: ConsumerId,
    prefetch: u32,
    in_flight: u32,
    no_ack: bool,
    /// `x-priority` of `basic.consume`: higher priorities are served first.
    priority: i64,
}

#[derive(Debug)]
struct Unacked {
    entry: Entry,
    consumer: Option<ConsumerId>,
}

/// The state of one queue.
#[derive(Debug, Default)]
pub struct QueueState {
    next_offset: Offset,
    ready: VecDeque<Entry>,
    /// Messages put back after delivery; their offsets are all below `ready`'s.
    requeued: BTreeMap<Offset, Entry>,
    unacked: AHashMap<Offset, Unacked>,
    consumers: Vec<Consumer>,
    exclusive_consumer: bool,
    /// `x-single-active-consumer`: only the earliest registered consumer gets messages.
    single_active: bool,
    next_rr: usize,
    ready_bytes: usize,
    /// Ready messages whose bodies are only in the store (a durable queue's backlog beyond
    /// `PAGE_HEAD` messages), in offset order, all after `ready`.
    paged: VecDeque<Offset>,
    /// Bytes of the paged messages.
    paged_bytes: usize,
    /// Offsets below this were recovered after a restart (delivered as redelivered).
    recovered_below: Offset,
}

/// A durable queue keeps at most this many ready messages in memory; the rest are read
/// back from its store as the head drains.
pub const PAGE_HEAD: usize = 8192;
/// The head is refilled from the store when it falls below this.
pub const PAGE_REFILL: usize = 2048;

impl QueueState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages ready for delivery.
    pub fn message_count(&self) -> usize {
        self.ready.len() + self.requeued.len() + self.paged.len()
    }

    /// Bytes of ready messages (bodies and properties).
    pub fn ready_bytes(&self) -> usize {
        self.ready_bytes + self.paged_bytes
    }

    /// Ready messages held in memory.
    pub fn in_memory_count(&self) -> usize {
        self.ready.len() + self.requeued.len()
    }

    /// Appends a message that is safely in the store: once the in-memory head is full it is
    /// kept as an offset only and read back later (`page_in_request` / `page_in`).
    pub fn publish_stored(&mut self, msg: Arc<Message>) -> Offset {
        if self.paged.is_empty() && self.ready.len() < PAGE_HEAD {
            return self.publish(msg);
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        self.paged_bytes += msg.size();
        self.paged.push_back(offset);
        offset
    }

    /// The offsets to read back from the store when the in-memory head runs low.
    pub fn page_in_request(&self) -> Option<Vec<Offset>> {
        if self.paged.is_empty() || self.ready.len() >= PAGE_REFILL {
            return None;
        }
        let n = PAGE_HEAD
            .saturating_sub(self.ready.len())
            .min(self.paged.len());
        Some(self.paged.iter().take(n).copied().collect())
    }

    /// Takes back the messages read from the store for a `page_in_request` (`requested`,
    /// in offset order). A requested message the store could not return is dropped from
    /// the queue (its record is gone or corrupt); returns how many were.
    pub fn page_in(&mut self, requested: &[Offset], msgs: Vec<(Offset, Arc<Message>)>) -> usize {
        let mut lost = 0;
        let mut msgs = msgs.into_iter().peekable();
        for &want in requested {
            if self.paged.front() != Some(&want) {
                break;
            }
            while msgs.peek().is_some_and(|(o, _)| *o < want) {
                msgs.next();
            }
            let Some((offset, msg)) = msgs.next_if(|(o, _)| *o == want) else {
                self.paged.pop_front();
                lost += 1;
                continue;
            };
            self.paged.pop_front();
            let size = msg.size();
            self.paged_bytes = self.paged_bytes.saturating_sub(size);
            self.ready_bytes += size;
            let delivery_count = u32::from(offset < self.recovered_below);
            self.ready.push_back(Entry {
                offset,
                msg,
                delivery_count,
            });
        }
        lost
    }

    /// The offset the next published message gets.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Deliveries awaiting ack.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Appends a message; returns its offset.
    pub fn publish(&mut self, msg: Arc<Message>) -> Offset {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.ready_bytes += msg.size();
        self.ready.push_back(Entry {
            offset,
            msg,
            delivery_count: 0,
        });
        offset
    }

    /// Makes the queue single-active-consumer: the earliest registered consumer gets every
    /// message; when it leaves, the next one takes over.
    pub fn set_single_active(&mut self, on: bool) {
        self.single_active = on;
    }

    /// Registers a consumer. `prefetch` 0 means unlimited; consumers with a higher
    /// `priority` are served first (round-robin among equals).
    pub fn add_consumer(
        &mut self,
        id: ConsumerId,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
        priority: i64,
    ) -> Result<(), CoreError> {
        if self.exclusive_consumer || (exclusive && !self.consumers.is_empty()) {
            return Err(CoreError::AccessRefused("queue in exclusive use".into()));
        }
        self.exclusive_consumer = exclusive;
        let consumer = Consumer {
            id,
            prefetch,
            in_flight: 0,
            no_ack,
            priority,
        };
        // Kept sorted by priority, highest first, registration order among equals (a
        // single-active queue keeps pure registration order).
        let at = if self.single_active {
            self.consumers.len()
        } else {
            self.consumers
                .iter()
                .position(|c| c.priority < priority)
                .unwrap_or(self.consumers.len())
        };
        self.consumers.insert(at, consumer);
        Ok(())
    }

    /// Removes a consumer. Its unacked deliveries stay unacked (the channel may still ack
    /// them, or requeue them when it closes). Returns whether it existed.
    pub fn remove_consumer(&mut self, id: ConsumerId) -> bool {
        let Some(i) = self.consumers.iter().position(|c| c.id == id) else {
            return false;
        };
        self.consumers.remove(i);
        if self.next_rr > i {
            self.next_rr -= 1;
        }
        if self.consumers.is_empty() {
            self.exclusive_consumer = false;
            self.next_rr = 0;
        }
        for u in self.unacked.values_mut() {
            if u.consumer == Some(id) {
                u.consumer = None;
            }
        }
        true
    }

    fn pop_next(&mut self) -> Option<Entry> {
        let e = match self.requeued.pop_first() {
            Some((_, e)) => e,
            None => self.ready.pop_front()?,
        };
        self.ready_bytes -= e.msg.size();
        Some(e)
    }

    fn peek_exists(&self) -> bool {
        !self.requeued.is_empty() || !self.ready.is_empty()
    }

    /// Hands ready messages to consumers round-robin, respecting each consumer's prefetch;
    /// `credit(consumer)` is asked before each delivery (channel-wide limits) and a `true`
    /// answer is taken as a reservation that the delivery then uses.
    pub fn dispatch(
        &mut self,
        mut credit: impl FnMut(ConsumerId) -> bool,
        out: &mut Vec<Delivery>,
    ) {
        let n = if self.single_active {
            self.consumers.len().min(1)
        } else {
            self.consumers.len()
        };
        // Priority levels, highest first: a level is served until all of its consumers are
        // out of room (room only comes back with acks, i.e. in a later round), then the
        // next level gets the rest.
        let mut start = 0;
        while start < n && self.peek_exists() {
            let p = self.consumers[start].priority;
            let end = self.consumers[start..n]
                .iter()
                .position(|c| c.priority != p)
                .map_or(n, |k| start + k);
            self.dispatch_level(start, end, &mut credit, out);
            start = end;
        }
    }

    /// Round-robin over `consumers[start..end]` (one priority level).
    fn dispatch_level(
        &mut self,
        start: usize,
        end: usize,
        credit: &mut impl FnMut(ConsumerId) -> bool,
        out: &mut Vec<Delivery>,
    ) {
        let len = end - start;
        let mut blocked = 0;
        while self.peek_exists() && blocked < len {
            let i = start + self.next_rr % len;
            self.next_rr = self.next_rr.wrapping_add(1);
            let c = &self.consumers[i];
            let has_room = c.prefetch == 0 || c.in_flight < c.prefetch;
            if !has_room || !credit(c.id) {
                blocked += 1;
                continue;
            }
            blocked = 0;
            let entry = self.pop_next().expect("peeked");
            let c = &mut self.consumers[i];
            let needs_ack = !c.no_ack;
            if needs_ack {
                c.in_flight += 1;
                self.unacked.insert(
                    entry.offset,
                    Unacked {
                        entry: entry.clone(),
                        consumer: Some(c.id),
                    },
                );
            }
            out.push(Delivery {
                consumer: c.id,
                entry,
                needs_ack,
            });
        }
    }

    /// `basic.get`: the next ready message, plus how many remain.
    pub fn get(&mut self, no_ack: bool) -> Option<(Entry, usize)> {
        let entry = self.pop_next()?;
        if !no_ack {
            self.unacked.insert(
                entry.offset,
                Unacked {
                    entry: entry.clone(),
                    consumer: None,
                },
            );
        }
        Some((entry, self.message_count()))
    }

    fn settle(&mut self, offset: Offset) -> Option<Entry> {
        let u = self.unacked.remove(&offset)?;
        if let Some(cid) = u.consumer {
            if let Some(c) = self.consumers.iter_mut().find(|c| c.id == cid) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
        }
        Some(u.entry)
    }

    /// Acknowledges deliveries; unknown offsets are ignored (the channel validated tags).
    pub fn ack(&mut self, offsets: &[Offset]) {
        for &o in offsets {
            self.settle(o);
        }
    }

    /// Rejects deliveries. With `requeue` they return to their original position; without,
    /// they are dropped and returned to the caller (for dead-lettering).
    pub fn reject(&mut self, offsets: &[Offset], requeue: bool) -> Vec<Entry> {
        let mut dropped = Vec::new();
        for &o in offsets {
            if let Some(mut e) = self.settle(o) {
                if requeue {
                    e.delivery_count += 1;
                    self.ready_bytes += e.msg.size();
                    self.requeued.insert(e.offset, e);
                } else {
                    dropped.push(e);
                }
            }
        }
        dropped
    }

    /// Drops all ready messages; returns their offsets.
    pub fn purge(&mut self) -> Vec<Offset> {
        let mut offsets: Vec<Offset> = self.requeued.keys().copied().collect();
        offsets.extend(self.ready.iter().map(|e| e.offset));
        offsets.extend(self.paged.iter().copied());
        self.ready.clear();
        self.requeued.clear();
        self.paged.clear();
        self.ready_bytes = 0;
        self.paged_bytes = 0;
        offsets
    }

    /// Starts a queue from what its store recovered: the first messages in memory, the
    /// rest as offsets to page in (with their total size), all marked redelivered (they may
    /// have been delivered before the restart), and the next offset to use.
    pub fn restore(
        &mut self,
        next_offset: Offset,
        messages: Vec<(Offset, Arc<Message>)>,
        paged: Vec<Offset>,
        paged_bytes: usize,
    ) {
        for (offset, msg) in messages {
            self.ready_bytes += msg.size();
            self.ready.push_back(Entry {
                offset,
                msg,
                delivery_count: 1,
            });
        }
        self.paged.extend(paged);
        self.paged_bytes += paged_bytes;
        self.next_offset = next_offset;
        self.recovered_below = next_offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &'static str) -> Arc<Message> {
        Arc::new(Message {
            exchange: Bytes::new(),
            routing_key: Bytes::new(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(body.as_bytes()),
            persistent: false,
            priority: None,
            headers: None,
        })
    }

    fn bodies(ds: &[Delivery]) -> Vec<(u64, &[u8], bool)> {
        ds.iter()
            .map(|d| (d.consumer.0, &d.entry.msg.body[..], d.entry.redelivered()))
            .collect()
    }

    #[test]
    fn prefetch_and_round_robin() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c", "d", "e"] {
            q.publish(msg(b));
        }
        q.add_consumer(ConsumerId(1), 2, false, false, 0).unwrap();
        q.add_consumer(ConsumerId(2), 2, false, false, 0).unwrap();
        let mut out = vec![];
        q.dispatch(|_| true, &mut out);
        assert_eq!(
            bodies(&out),
            vec![
                (1, &b"a"[..], false),
                (2, b"b", false),
                (1, b"c", false),
                (2, b"d", false)
            ]
        );
        assert_eq!(q.message_count(), 1);
        out.clear();
        q.dispatch(|_| true, &mut out);
        assert!(out.is_empty(), "windows are full");
        q.ack(&[0]);
        q.dispatch(|_| true, &mut out);
        assert_eq!(bodies(&out), vec![(1, &b"e"[..], false)]);
    }

    #[test]
    fn requeue_keeps_position() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        let (a, _) = q.get(false).unwrap();
        let (b, left) = q.get(false).unwrap();
        assert_eq!(left, 1);
        q.reject(&[b.offset], true);
        q.reject(&[a.offset], true);
        let order: Vec<_> = std::iter::from_fn(|| q.get(true))
            .map(|(e, _)| (e.msg.body.clone(), e.redelivered()))
            .collect();
        assert_eq!(
            order,
            vec![
                (Bytes::from("a"), true),
                (Bytes::from("b"), true),
                (Bytes::from("c"), false)
            ]
        );
    }

    #[test]
    fn credit_callback_and_no_ack() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        q.add_consumer(ConsumerId(1), 0, true, false, 0).unwrap();
        let mut budget = 2;
        let mut out = vec![];
        q.dispatch(
            |_| {
                budget -= 1;
                budget >= 0
            },
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| !d.needs_ack));
        assert_eq!(q.unacked_count(), 0);
        assert_eq!(q.purge(), vec![2]);
        assert_eq!(q.ready_bytes(), 0);
    }

    #[test]
    fn paging_keeps_order_and_counts() {
        let mut q = QueueState::new();
        let n = PAGE_HEAD + 10;
        for _ in 0..n {
            q.publish_stored(msg("x"));
        }
        assert_eq!(q.message_count(), n);
        assert_eq!(q.in_memory_count(), PAGE_HEAD);
        assert_eq!(q.page_in_request(), None, "head is full");
        for _ in 0..PAGE_HEAD - PAGE_REFILL + 1 {
            q.get(true).unwrap();
        }
        let want = q.page_in_request().expect("head ran low");
        assert_eq!(want, ((PAGE_HEAD as u64)..(n as u64)).collect::<Vec<_>>());
        // Messages the store did not return are dropped; the rest are taken in order.
        let lost = q.page_in(&want, want[1..].iter().map(|&o| (o, msg("x"))).collect());
        assert_eq!(lost, 1);
        assert_eq!(q.message_count(), q.in_memory_count());
        let mut last = None;
        while let Some((e, _)) = q.get(true) {
            assert!(last < Some(e.offset), "offset order");
            last = Some(e.offset);
        }
        assert_eq!(last, Some(n as u64 - 1));
    }

    #[test]
    fn restore_marks_recovered_redelivered() {
        let mut q = QueueState::new();
        q.restore(10, vec![(3, msg("a"))], vec![7, 9], 2);
        assert_eq!(q.message_count(), 3);
        let (e, _) = q.get(true).unwrap();
        assert!(e.redelivered());
        q.page_in(&[7, 9], vec![(7, msg("b")), (9, msg("c"))]);
        assert!(q.get(true).unwrap().0.redelivered());
        assert_eq!(q.publish(msg("new")), 10);
        q.get(true).unwrap();
        assert!(!q.get(true).unwrap().0.redelivered());
    }

    #[test]
    fn consumer_priorities_and_single_active() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c", "d", "e"] {
            q.publish(msg(b));
        }
        q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
        q.add_consumer(ConsumerId(2), 2, false, false, 10).unwrap();
        q.add_consumer(ConsumerId(3), 1, false, false, 10).unwrap();
        let mut out = vec![];
        q.dispatch(|_| true, &mut out);
        // The priority-10 pair first (round-robin while they have room), then priority 0.
        let who: Vec<u64> = out.iter().map(|d| d.consumer.0).collect();
        assert_eq!(who, vec![2, 3, 2, 1, 1]);

        let mut q = QueueState::new();
        q.set_single_active(true);
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
        q.add_consumer(ConsumerId(2), 0, false, false, 99).unwrap();
        let mut out = vec![];
        q.dispatch(|_| true, &mut out);
        assert!(
            out.iter().all(|d| d.consumer == ConsumerId(1)),
            "only the first registered"
        );
        q.remove_consumer(ConsumerId(1));
        q.publish(msg("d"));
        out.clear();
        q.dispatch(|_| true, &mut out);
        assert_eq!(
            out.iter().map(|d| d.consumer.0).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn exclusive_consumer() {
        let mut q = QueueState::new();
        q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
        assert!(q.add_consumer(ConsumerId(2), 0, false, true, 0).is_err());
        q.remove_consumer(ConsumerId(1));
        q.add_consumer(ConsumerId(2), 0, false, true, 0).unwrap();
        assert!(q.add_consumer(ConsumerId(3), 0, false, false, 0).is_err());
    }
}
