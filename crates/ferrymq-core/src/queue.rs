//! The queue state machine: ready messages in FIFO order (per priority level on a priority
//! queue), deliveries awaiting ack, and the consumers that compete for messages with
//! per-consumer prefetch. Messages keep the offset they were enqueued at; a requeued
//! message goes back to its original position (ahead of everything enqueued after it) with
//! its delivery count raised, so it is redelivered with `redelivered` set.
//!
//! Time-based behaviour is driven by the caller's clock: messages carry an absolute expiry
//! (ms since the epoch), `expire(now)` removes the ones due wherever they are in the queue
//! (not only at the head), and delayed retries wait in their own set until
//! `release_delayed(now)`. `next_timer()` tells the owner task when to wake.
//!
//! The state is pure: the owner task feeds it commands and turns the returned deliveries
//! into frames. Channel-wide (global) prefetch is asked of the caller through a credit
//! callback, because it spans queues.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
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
    /// When it expires (ms since the epoch); 0 = never.
    pub expires_at: u64,
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

/// A message removed from the ready set by expiry or a length limit: in memory, or only
/// in the store (a paged message: the caller reads it back if it needs the body).
#[derive(Debug, Clone)]
pub enum Removed {
    InMemory(Entry),
    Paged(Offset),
}

impl Removed {
    pub fn offset(&self) -> Offset {
        match self {
            Removed::InMemory(e) => e.offset,
            Removed::Paged(o) => *o,
        }
    }
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
    /// When it was handed out (the owner's clock, `set_now`).
    delivered_at: u64,
}

/// The state of one queue.
#[derive(Debug, Default)]
pub struct QueueState {
    next_offset: Offset,
    /// Ready messages of a queue without priorities, in offset order.
    ready: VecDeque<Entry>,
    /// `x-max-priority` queues: one FIFO per level (index = level), used instead of `ready`.
    levels: Vec<VecDeque<Entry>>,
    /// Messages put back after delivery, keyed by (255 - level, offset): the first key is
    /// the next to deliver. At equal level their offsets are all below the ready ones.
    requeued: BTreeMap<(u8, Offset), Entry>,
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
    /// Expiry and size of paged messages that have a TTL (only those: a backlog without
    /// TTLs costs 8 bytes per paged message).
    paged_ttl: AHashMap<Offset, (u64, u32)>,
    /// Offsets below this were recovered after a restart (delivered as redelivered).
    recovered_below: Offset,
    /// (expires_at, offset, 255 - level) of every message with a TTL that was ready when
    /// pushed; entries whose message is no longer ready are skipped when they come up.
    expiry: BinaryHeap<Reverse<(u64, Offset, u8)>>,
    /// Requeued messages waiting for their retry time, keyed by (due, offset).
    delayed: BTreeMap<(u64, Offset), Entry>,
    /// The owner's clock (ms), stamped on deliveries for acknowledgement timeouts.
    now: u64,
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

    /// Makes this a priority queue with levels 0..=`max` (`x-max-priority`). Priority
    /// queues keep their whole backlog in memory (no paging). Call before the first publish.
    pub fn set_max_priority(&mut self, max: u8) {
        self.levels = (0..=max).map(|_| VecDeque::new()).collect();
    }

    fn is_priority(&self) -> bool {
        !self.levels.is_empty()
    }

    /// Rank of a message in `requeued` / `expiry` keys: 255 - its level (0 without levels).
    fn rank(&self, msg: &Message) -> u8 {
        if self.levels.is_empty() {
            return 0;
        }
        let max = (self.levels.len() - 1) as u8;
        255 - msg.priority.unwrap_or(0).min(max)
    }

    fn ready_len(&self) -> usize {
        if self.is_priority() {
            self.levels.iter().map(VecDeque::len).sum()
        } else {
            self.ready.len()
        }
    }

    /// Messages ready for delivery.
    pub fn message_count(&self) -> usize {
        self.ready_len() + self.requeued.len() + self.paged.len()
    }

    /// Requeued messages waiting for a delayed retry.
    pub fn delayed_count(&self) -> usize {
        self.delayed.len()
    }

    /// Bytes of ready messages (bodies and properties).
    pub fn ready_bytes(&self) -> usize {
        self.ready_bytes + self.paged_bytes
    }

    /// Ready messages held in memory.
    pub fn in_memory_count(&self) -> usize {
        self.ready_len() + self.requeued.len()
    }

    /// Appends a message that is safely in the store: once the in-memory head is full it is
    /// kept as an offset only and read back later (`page_in_request` / `page_in`).
    pub fn publish_stored(&mut self, msg: Arc<Message>) -> Offset {
        self.publish_stored_until(msg, 0)
    }

    /// `publish_stored` for a message that expires at `expires_at` (0 = never).
    pub fn publish_stored_until(&mut self, msg: Arc<Message>, expires_at: u64) -> Offset {
        if self.is_priority() || (self.paged.is_empty() && self.ready.len() < PAGE_HEAD) {
            return self.publish_until(msg, expires_at);
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        let size = msg.size();
        self.paged_bytes += size;
        self.paged.push_back(offset);
        if expires_at != 0 {
            self.paged_ttl
                .insert(offset, (expires_at, size.min(u32::MAX as usize) as u32));
            self.expiry.push(Reverse((expires_at, offset, 0)));
        }
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
                // Expired while being read, or taken by a purge: skip it.
                continue;
            }
            while msgs.peek().is_some_and(|(o, _)| *o < want) {
                msgs.next();
            }
            let ttl = self.paged_ttl.remove(&want);
            let Some((offset, msg)) = msgs.next_if(|(o, _)| *o == want) else {
                self.paged.pop_front();
                if let Some((_, size)) = ttl {
                    self.paged_bytes = self.paged_bytes.saturating_sub(size as usize);
                }
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
                expires_at: ttl.map_or(0, |(at, _)| at),
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

    /// Whether some consumer could take a message now (used by `x-overflow` decisions and
    /// TTL 0, which only lets a message through to a waiting consumer).
    pub fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Appends a message; returns its offset.
    pub fn publish(&mut self, msg: Arc<Message>) -> Offset {
        self.publish_until(msg, 0)
    }

    /// Appends a message that expires at `expires_at` (ms since the epoch; 0 = never).
    pub fn publish_until(&mut self, msg: Arc<Message>, expires_at: u64) -> Offset {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.ready_bytes += msg.size();
        let rank = self.rank(&msg);
        if expires_at != 0 {
            self.expiry.push(Reverse((expires_at, offset, rank)));
        }
        let entry = Entry {
            offset,
            msg,
            delivery_count: 0,
            expires_at,
        };
        if self.is_priority() {
            self.levels[usize::from(255 - rank)].push_back(entry);
        } else {
            self.ready.push_back(entry);
        }
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

    /// Sets the clock (ms) stamped on the deliveries that follow.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Consumers holding a delivery handed out before `cutoff` (ms): their acknowledgement
    /// timeout passed. A scan of the unacked deliveries (bounded by prefetch in practice).
    pub fn overdue_consumers(&self, cutoff: u64) -> Vec<ConsumerId> {
        let mut out: Vec<ConsumerId> = Vec::new();
        for u in self.unacked.values() {
            if let Some(c) = u.consumer {
                if u.delivered_at < cutoff && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// The unacked deliveries of a consumer (for an acknowledgement timeout), oldest first.
    pub fn unacked_of(&self, id: ConsumerId) -> Vec<Offset> {
        let mut v: Vec<Offset> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == Some(id))
            .map(|(o, _)| *o)
            .collect();
        v.sort_unstable();
        v
    }

    /// The highest non-empty priority level.
    fn top_level(&self) -> Option<usize> {
        self.levels.iter().rposition(|l| !l.is_empty())
    }

    fn pop_next(&mut self) -> Option<Entry> {
        let e = if self.is_priority() {
            let top = self.top_level();
            let requeued_first = match (self.requeued.first_key_value(), top) {
                (Some(((rank, _), _)), Some(level)) => usize::from(255 - *rank) >= level,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if requeued_first {
                self.requeued.pop_first()?.1
            } else {
                self.levels[top?].pop_front()?
            }
        } else {
            match self.requeued.pop_first() {
                Some((_, e)) => e,
                None => self.ready.pop_front()?,
            }
        };
        self.ready_bytes -= e.msg.size();
        Some(e)
    }

    fn peek_exists(&self) -> bool {
        !self.requeued.is_empty()
            || !self.ready.is_empty()
            || (self.is_priority() && self.top_level().is_some())
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
                        delivered_at: self.now,
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
                    delivered_at: self.now,
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

    /// The delivery count of an unacked delivery (its generation), if it is unacked.
    pub fn delivery_generation(&self, offset: Offset) -> Option<u32> {
        self.unacked.get(&offset).map(|u| u.entry.delivery_count)
    }

    /// Acknowledges deliveries; unknown offsets are ignored (the channel validated tags).
    pub fn ack(&mut self, offsets: &[Offset]) {
        for &o in offsets {
            self.settle(o);
        }
    }

    fn make_ready(&mut self, e: Entry) {
        self.ready_bytes += e.msg.size();
        let rank = self.rank(&e.msg);
        if e.expires_at != 0 {
            self.expiry.push(Reverse((e.expires_at, e.offset, rank)));
        }
        self.requeued.insert((rank, e.offset), e);
    }

    /// Rejects deliveries. With `requeue` they return to their original position; without,
    /// they are dropped and returned to the caller (for dead-lettering).
    pub fn reject(&mut self, offsets: &[Offset], requeue: bool) -> Vec<Entry> {
        let mut dropped = Vec::new();
        for &o in offsets {
            if let Some(mut e) = self.settle(o) {
                if requeue {
                    e.delivery_count += 1;
                    self.make_ready(e);
                } else {
                    dropped.push(e);
                }
            }
        }
        dropped
    }

    /// Takes back a delivery whose consumer gave it up, raising its delivery count, and
    /// returns it instead of making it ready: the caller decides (delivery limit, delayed
    /// retry) and then calls `requeue_entry`, `delay_entry` or drops it.
    pub fn take_returned(&mut self, offset: Offset) -> Option<Entry> {
        let mut e = self.settle(offset)?;
        e.delivery_count += 1;
        Some(e)
    }

    /// Puts a message taken with `take_returned` back at its position.
    pub fn requeue_entry(&mut self, e: Entry) {
        self.make_ready(e);
    }

    /// Holds a message taken with `take_returned` until `due` (ms since the epoch).
    pub fn delay_entry(&mut self, e: Entry, due: u64) {
        self.delayed.insert((due, e.offset), e);
    }

    /// Makes delayed retries that are due ready again; returns how many.
    pub fn release_delayed(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let e = entry.remove();
            self.make_ready(e);
            n += 1;
        }
        n
    }

    /// When the owner should next call `expire` / `release_delayed` (ms since the epoch).
    pub fn next_timer(&self) -> Option<u64> {
        let a = self.expiry.peek().map(|Reverse((at, _, _))| *at);
        let b = self.delayed.first_key_value().map(|((due, _), _)| *due);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes the ready message at `offset` (of rank `rank`), wherever it is.
    fn remove_ready(&mut self, offset: Offset, rank: u8) -> Option<Removed> {
        if let Some(e) = self.requeued.remove(&(rank, offset)) {
            self.ready_bytes -= e.msg.size();
            return Some(Removed::InMemory(e));
        }
        let fifo = if self.is_priority() {
            &mut self.levels[usize::from(255 - rank)]
        } else {
            &mut self.ready
        };
        if let Ok(i) = fifo.binary_search_by_key(&offset, |e| e.offset) {
            let e = fifo.remove(i).expect("found");
            self.ready_bytes -= e.msg.size();
            return Some(Removed::InMemory(e));
        }
        if let Ok(i) = self.paged.binary_search(&offset) {
            self.paged.remove(i);
            if let Some((_, size)) = self.paged_ttl.remove(&offset) {
                self.paged_bytes = self.paged_bytes.saturating_sub(size as usize);
            }
            return Some(Removed::Paged(offset));
        }
        None
    }

    /// Removes every ready message whose expiry is at or before `now` (anywhere in the
    /// queue, not only at its head) and appends them to `out`. Delivered messages do not
    /// expire; if they come back after their expiry they go at the next call.
    pub fn expire(&mut self, now: u64, out: &mut Vec<Removed>) {
        while let Some(Reverse((at, offset, rank))) = self.expiry.peek().copied() {
            if at > now {
                break;
            }
            self.expiry.pop();
            if let Some(r) = self.remove_ready(offset, rank) {
                out.push(r);
            }
        }
    }

    /// Removes the message at the head of the queue (for `x-max-length` drop-head). A
    /// paged head is returned as its offset.
    pub fn drop_head(&mut self) -> Option<Removed> {
        if let Some(e) = self.pop_next() {
            return Some(Removed::InMemory(e));
        }
        let offset = self.paged.pop_front()?;
        if let Some((_, size)) = self.paged_ttl.remove(&offset) {
            self.paged_bytes = self.paged_bytes.saturating_sub(size as usize);
        }
        Some(Removed::Paged(offset))
    }

    /// Accounts for the size of a paged message removed by `drop_head` whose size the
    /// caller learned from the store.
    pub fn forget_paged_bytes(&mut self, size: usize) {
        self.paged_bytes = self.paged_bytes.saturating_sub(size);
    }

    /// Drops all ready messages (and delayed retries); returns their offsets.
    pub fn purge(&mut self) -> Vec<Offset> {
        let mut offsets: Vec<Offset> = self.requeued.values().map(|e| e.offset).collect();
        offsets.extend(self.ready.iter().map(|e| e.offset));
        for l in &self.levels {
            offsets.extend(l.iter().map(|e| e.offset));
        }
        offsets.extend(self.paged.iter().copied());
        offsets.extend(self.delayed.values().map(|e| e.offset));
        self.ready.clear();
        for l in &mut self.levels {
            l.clear();
        }
        self.requeued.clear();
        self.paged.clear();
        self.paged_ttl.clear();
        self.delayed.clear();
        self.expiry.clear();
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
            let rank = self.rank(&msg);
            let e = Entry {
                offset,
                msg,
                delivery_count: 1,
                expires_at: 0,
            };
            if self.is_priority() {
                self.levels[usize::from(255 - rank)].push_back(e);
            } else {
                self.ready.push_back(e);
            }
        }
        self.paged.extend(paged);
        self.paged_bytes += paged_bytes;
        self.next_offset = next_offset;
        self.recovered_below = next_offset;
    }

    /// Sets the expiry of recovered messages: `(offset, expires_at, size)`, offsets
    /// ascending. Call after `restore`.
    pub fn restore_expiry(&mut self, expiries: &[(Offset, u64, u32)]) {
        for &(offset, at, size) in expiries {
            if at == 0 {
                continue;
            }
            let mut rank = None;
            let levels = self.levels.len();
            for fifo in std::iter::once(&mut self.ready).chain(self.levels.iter_mut()) {
                if let Ok(i) = fifo.binary_search_by_key(&offset, |e| e.offset) {
                    fifo[i].expires_at = at;
                    let p = fifo[i].msg.priority.unwrap_or(0);
                    rank = Some(if levels == 0 {
                        0
                    } else {
                        255 - p.min((levels - 1) as u8)
                    });
                    break;
                }
            }
            if rank.is_none() && self.paged.binary_search(&offset).is_ok() {
                self.paged_ttl.insert(offset, (at, size));
                rank = Some(0);
            }
            if let Some(rank) = rank {
                self.expiry.push(Reverse((at, offset, rank)));
            }
        }
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
            ttl_ms: None,
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

    fn prio_msg(body: &'static str, p: u8) -> Arc<Message> {
        let mut m = (*msg(body)).clone();
        m.priority = Some(p);
        Arc::new(m)
    }

    fn drain(q: &mut QueueState) -> Vec<Bytes> {
        std::iter::from_fn(|| q.get(true))
            .map(|(e, _)| e.msg.body.clone())
            .collect()
    }

    #[test]
    fn expiry_removes_messages_anywhere_in_the_queue() {
        let mut q = QueueState::new();
        q.publish_until(msg("a"), 0);
        q.publish_until(msg("b"), 100);
        q.publish_until(msg("c"), 0);
        q.publish_until(msg("d"), 50);
        assert_eq!(q.next_timer(), Some(50));
        let mut out = vec![];
        q.expire(49, &mut out);
        assert!(out.is_empty());
        q.expire(100, &mut out);
        let gone: Vec<u64> = out.iter().map(Removed::offset).collect();
        assert_eq!(gone, vec![3, 1]);
        assert_eq!(q.message_count(), 2);
        assert_eq!(
            q.ready_bytes(),
            6,
            "two 1-byte bodies with 2-byte property lists"
        );
        assert_eq!(drain(&mut q), vec![Bytes::from("a"), Bytes::from("c")]);
        assert_eq!(q.next_timer(), None);
    }

    #[test]
    fn delivered_messages_expire_only_once_back() {
        let mut q = QueueState::new();
        q.publish_until(msg("a"), 10);
        let (e, _) = q.get(false).unwrap();
        let mut out = vec![];
        q.expire(20, &mut out);
        assert!(out.is_empty(), "unacked messages do not expire");
        q.reject(&[e.offset], true);
        q.expire(20, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(q.message_count(), 0);
    }

    #[test]
    fn paged_messages_expire_without_being_read() {
        let mut q = QueueState::new();
        for _ in 0..PAGE_HEAD {
            q.publish_stored(msg("x"));
        }
        let o = q.publish_stored_until(msg("yy"), 5);
        q.publish_stored(msg("z"));
        let mut out = vec![];
        q.expire(5, &mut out);
        assert!(matches!(out[..], [Removed::Paged(p)] if p == o));
        assert_eq!(q.message_count(), PAGE_HEAD + 1);
        assert_eq!(q.ready_bytes(), PAGE_HEAD * 3 + 3);
    }

    #[test]
    fn priority_levels_with_requeue() {
        let mut q = QueueState::new();
        q.set_max_priority(5);
        q.publish(prio_msg("low", 0));
        q.publish(prio_msg("hi", 5));
        q.publish(prio_msg("over", 200)); // above max: counts as 5
        q.publish(prio_msg("mid", 3));
        q.publish(msg("none"));
        let (hi, _) = q.get(false).unwrap();
        assert_eq!(&hi.msg.body[..], b"hi");
        q.reject(&[hi.offset], true);
        assert_eq!(
            drain(&mut q),
            ["hi", "over", "mid", "low", "none"]
                .iter()
                .map(|s| Bytes::from(*s))
                .collect::<Vec<_>>()
        );
        // Expiry inside a level.
        q.publish_until(prio_msg("a", 2), 10);
        q.publish_until(prio_msg("b", 2), 0);
        let mut out = vec![];
        q.expire(10, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(drain(&mut q), vec![Bytes::from("b")]);
    }

    #[test]
    fn drop_head_and_delayed_retry() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        match q.drop_head() {
            Some(Removed::InMemory(e)) => assert_eq!(&e.msg.body[..], b"a"),
            other => panic!("{other:?}"),
        }
        let (b, _) = q.get(false).unwrap();
        let e = q.take_returned(b.offset).unwrap();
        assert_eq!(e.delivery_count, 1);
        q.delay_entry(e, 500);
        assert_eq!(q.message_count(), 1);
        assert_eq!(q.delayed_count(), 1);
        assert_eq!(q.next_timer(), Some(500));
        assert_eq!(q.release_delayed(499), 0);
        assert_eq!(q.release_delayed(500), 1);
        let order: Vec<_> = std::iter::from_fn(|| q.get(true))
            .map(|(e, _)| (e.msg.body.clone(), e.redelivered()))
            .collect();
        assert_eq!(
            order,
            vec![(Bytes::from("b"), true), (Bytes::from("c"), false)]
        );
    }

    #[test]
    fn restore_expiry_covers_head_and_paged() {
        let mut q = QueueState::new();
        q.restore(10, vec![(3, msg("a")), (4, msg("b"))], vec![7, 9], 2);
        q.restore_expiry(&[(3, 100, 1), (7, 50, 1), (9, 0, 1)]);
        let mut out = vec![];
        q.expire(100, &mut out);
        let gone: Vec<u64> = out.iter().map(Removed::offset).collect();
        assert_eq!(gone, vec![7, 3]);
        assert_eq!(q.message_count(), 2);
    }

    #[test]
    fn overdue_consumers_by_delivery_time() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        q.add_consumer(ConsumerId(1), 1, false, false, 0).unwrap();
        q.set_now(100);
        let mut out = vec![];
        q.dispatch(|_| true, &mut out);
        q.add_consumer(ConsumerId(2), 1, false, false, 0).unwrap();
        q.set_now(500);
        q.dispatch(|_| true, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(q.overdue_consumers(100), vec![]);
        assert_eq!(q.overdue_consumers(101), vec![ConsumerId(1)]);
        let mut both = q.overdue_consumers(501);
        both.sort();
        assert_eq!(both, vec![ConsumerId(1), ConsumerId(2)]);
        assert_eq!(q.unacked_of(ConsumerId(1)), vec![0]);
        // A taken-back delivery has a new generation: a stale settle can tell.
        assert_eq!(q.delivery_generation(0), Some(0));
        let e = q.take_returned(0).unwrap();
        q.requeue_entry(e);
        assert_eq!(q.delivery_generation(0), None);
        let (e, _) = q.get(false).unwrap();
        assert_eq!((e.offset, q.delivery_generation(0)), (0, Some(1)));
    }
}
