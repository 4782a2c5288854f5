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

mod unacked;
use unacked::UnackedSet;

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

/// What a queue's in-memory head may cost by default (bytes, `entry_cost` each); the rest
/// of a backlog is paged to the queue's log (durable) or scratch log (transient) and read
/// back as the head drains. The global budget (`crate::budget`) may lower it.
pub const HEAD_BYTES: usize = 8 << 20;
/// Bookkeeping of one in-memory message beyond its body and properties: the `Message`
/// (four `Bytes`, headers, TTL) behind its `Arc`, the `Entry` and the deque slot.
pub const ENTRY_OVERHEAD: usize = 256;
/// A page-in reads at least this much (bytes' worth of messages), even when the queue's
/// share of the budget is smaller, so a drain goes in batches.
pub const MIN_PAGE_IN: usize = 64 << 10;
/// At most this many messages per page-in.
pub const MAX_PAGE_IN: usize = 16_384;

/// What holding `msg` in memory costs.
pub fn entry_cost(msg: &Message) -> usize {
    msg.size() + ENTRY_OVERHEAD
}

/// One priority level (the only one without priorities): its in-memory head in offset
/// order, then the offsets of its paged messages, all after the head.
#[derive(Debug, Default)]
struct Level {
    mem: VecDeque<Entry>,
    /// Sum of `entry_cost` over `mem`.
    mem_cost: usize,
    paged: VecDeque<Offset>,
}

/// The state of one queue.
#[derive(Debug)]
pub struct QueueState {
    next_offset: Offset,
    /// Ready messages by level: one level without priorities, `x-max-priority + 1` with
    /// (index = priority). Each level is its in-memory head followed by its paged part.
    levels: Vec<Level>,
    /// `x-max-priority` was set.
    priority: bool,
    /// Messages put back after delivery, keyed by (255 - level, offset): the first key is
    /// the next to deliver. At equal level their offsets are all below the ready ones.
    requeued: BTreeMap<(u8, Offset), Entry>,
    /// Deliveries awaiting ack: a dense ring by offset plus a side map for stragglers.
    unacked: UnackedSet<Unacked>,
    consumers: Vec<Consumer>,
    exclusive_consumer: bool,
    /// `x-single-active-consumer`: only the earliest registered consumer gets messages.
    single_active: bool,
    next_rr: usize,
    /// Bytes (bodies and properties) of the ready messages held in memory.
    ready_bytes: usize,
    /// What the in-memory ready messages cost (`entry_cost`): levels' heads and requeued.
    head_cost: usize,
    /// What unacked deliveries (`entry_cost` each) hold: not pageable, but counted against
    /// the broker-wide budget so the head pages out to make room for them.
    unacked_cost: usize,
    /// What delayed retries (`delayed`) hold, likewise.
    delayed_cost: usize,
    /// How much the in-memory head may cost before new messages are paged
    /// (`set_head_limit`; `HEAD_BYTES` by default).
    head_limit: usize,
    /// Paged messages (bodies only in the store), over all levels.
    paged_count: usize,
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

impl Default for QueueState {
    fn default() -> Self {
        QueueState {
            next_offset: 0,
            levels: vec![Level::default()],
            priority: false,
            requeued: BTreeMap::new(),
            unacked: UnackedSet::default(),
            consumers: Vec::new(),
            exclusive_consumer: false,
            single_active: false,
            next_rr: 0,
            ready_bytes: 0,
            head_cost: 0,
            unacked_cost: 0,
            delayed_cost: 0,
            head_limit: HEAD_BYTES,
            paged_count: 0,
            paged_bytes: 0,
            paged_ttl: AHashMap::new(),
            recovered_below: 0,
            expiry: BinaryHeap::new(),
            delayed: BTreeMap::new(),
            now: 0,
        }
    }
}

impl QueueState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this a priority queue with levels 0..=`max` (`x-max-priority`). Each level
    /// pages like a plain queue. Call before the first publish.
    pub fn set_max_priority(&mut self, max: u8) {
        self.levels = (0..=max).map(|_| Level::default()).collect();
        self.priority = true;
    }

    /// Rank of a message in `requeued` / `expiry` keys: 255 - its level (0 without levels).
    fn rank(&self, msg: &Message) -> u8 {
        if !self.priority {
            return 0;
        }
        let max = (self.levels.len() - 1) as u8;
        255 - msg.priority.unwrap_or(0).min(max)
    }

    /// The level index of a rank.
    fn level_of(&self, rank: u8) -> usize {
        if self.priority {
            usize::from(255 - rank)
        } else {
            0
        }
    }

    fn ready_len(&self) -> usize {
        self.levels.iter().map(|l| l.mem.len()).sum()
    }

    /// Messages ready for delivery.
    pub fn message_count(&self) -> usize {
        self.ready_len() + self.requeued.len() + self.paged_count
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

    /// Ready messages whose bodies are only in the store.
    pub fn paged_count(&self) -> usize {
        self.paged_count
    }

    /// What the in-memory ready messages cost (bytes, `entry_cost` each).
    pub fn head_cost(&self) -> usize {
        self.head_cost
    }

    /// What the queue holds in memory outside its head and cannot page: unacked deliveries
    /// and delayed retries (`entry_cost` each).
    pub fn held_cost(&self) -> usize {
        self.unacked_cost + self.delayed_cost
    }

    /// Bounds the in-memory head: beyond `bytes`, new messages are paged (when the store
    /// can page) and `page_out` has something to do.
    pub fn set_head_limit(&mut self, bytes: usize) {
        self.head_limit = bytes;
    }

    pub fn head_limit(&self) -> usize {
        self.head_limit
    }

    /// Whether a new message may join the in-memory head: its level has nothing paged
    /// (order) and the head has room for it (an empty head always takes one message).
    pub fn head_has_room(&self, msg: &Message) -> bool {
        let level = self.level_of(self.rank(msg));
        self.levels[level].paged.is_empty()
            && (self.head_cost == 0 || self.head_cost + entry_cost(msg) <= self.head_limit)
    }

    /// Appends a message that is safely in the store: once the in-memory head is full it is
    /// kept as an offset only and read back later (`page_in_request` / `page_in`).
    pub fn publish_stored(&mut self, msg: Arc<Message>) -> Offset {
        self.publish_stored_until(msg, 0)
    }

    /// `publish_stored` for a message that expires at `expires_at` (0 = never).
    pub fn publish_stored_until(&mut self, msg: Arc<Message>, expires_at: u64) -> Offset {
        if self.head_has_room(&msg) {
            self.publish_until(msg, expires_at)
        } else {
            self.publish_paged(&msg, expires_at)
        }
    }

    /// Appends a message whose body only the store keeps (the caller checked
    /// `head_has_room` and wrote it there): it is read back when its turn comes.
    pub fn publish_paged(&mut self, msg: &Message, expires_at: u64) -> Offset {
        let offset = self.next_offset;
        self.next_offset += 1;
        let rank = self.rank(msg);
        let level = self.level_of(rank);
        self.add_paged(level, offset, msg.size(), expires_at);
        self.levels[level].paged.push_back(offset);
        if expires_at != 0 {
            self.expiry.push(Reverse((expires_at, offset, rank)));
        }
        offset
    }

    /// Counts a message joining the paged part (its position is the caller's).
    fn add_paged(&mut self, _level: usize, offset: Offset, size: usize, expires_at: u64) {
        self.paged_count += 1;
        self.paged_bytes += size;
        if expires_at != 0 {
            self.paged_ttl
                .insert(offset, (expires_at, size.min(u32::MAX as usize) as u32));
        }
    }

    /// Forgets a paged message taken out of its level; returns its TTL entry.
    fn sub_paged(&mut self, offset: Offset) -> Option<(u64, u32)> {
        self.paged_count -= 1;
        let ttl = self.paged_ttl.remove(&offset);
        if let Some((_, size)) = ttl {
            self.paged_bytes = self.paged_bytes.saturating_sub(size as usize);
        }
        if self.paged_count == 0 {
            // Sizes of paged messages lost or dropped unread are not known: settle here.
            self.paged_bytes = 0;
        }
        ttl
    }

    /// Adds an entry at the back of its level's in-memory head.
    fn push_mem(&mut self, level: usize, e: Entry) {
        let cost = entry_cost(&e.msg);
        self.ready_bytes += e.msg.size();
        self.head_cost += cost;
        let l = &mut self.levels[level];
        l.mem_cost += cost;
        l.mem.push_back(e);
    }

    /// The offsets to read back from the store when the in-memory head runs low: from the
    /// level served next, a batch sized to refill the head (at least `MIN_PAGE_IN` bytes'
    /// worth, so a queue held to a tiny share still drains in batches).
    pub fn page_in_request(&self) -> Option<Vec<Offset>> {
        if self.paged_count == 0 {
            return None;
        }
        let top = self.top_level()?;
        let l = &self.levels[top];
        if l.paged.is_empty() || (!l.mem.is_empty() && l.mem_cost >= self.head_limit / 4) {
            return None;
        }
        let avg = self.paged_bytes / self.paged_count.max(1) + ENTRY_OVERHEAD;
        let room = self
            .head_limit
            .saturating_sub(self.head_cost)
            .max(MIN_PAGE_IN);
        let n = (room / avg.max(1)).clamp(1, MAX_PAGE_IN).min(l.paged.len());
        Some(l.paged.iter().take(n).copied().collect())
    }

    /// Takes back the messages read from the store for a `page_in_request` (`requested`,
    /// in offset order). A requested message the store could not return is dropped from
    /// the queue (its record is gone or corrupt); returns how many were.
    pub fn page_in(&mut self, requested: &[Offset], msgs: Vec<(Offset, Arc<Message>)>) -> usize {
        // The level the request came from: the one whose paged part starts with a
        // requested offset (a request never spans levels).
        let Some(level) = self
            .levels
            .iter()
            .position(|l| l.paged.front().is_some_and(|f| requested.contains(f)))
        else {
            return 0;
        };
        let mut lost = 0;
        let mut msgs = msgs.into_iter().peekable();
        for &want in requested {
            if self.levels[level].paged.front() != Some(&want) {
                // Expired while being read, or taken by a purge: skip it.
                continue;
            }
            while msgs.peek().is_some_and(|(o, _)| *o < want) {
                msgs.next();
            }
            self.levels[level].paged.pop_front();
            let ttl = self.sub_paged(want);
            let Some((offset, msg)) = msgs.next_if(|(o, _)| *o == want) else {
                lost += 1;
                continue;
            };
            let size = msg.size();
            if ttl.is_none() {
                self.paged_bytes = self.paged_bytes.saturating_sub(size);
            }
            let delivery_count = u32::from(offset < self.recovered_below);
            self.push_mem(
                level,
                Entry {
                    offset,
                    msg,
                    delivery_count,
                    expires_at: ttl.map_or(0, |(at, _)| at),
                },
            );
        }
        lost
    }

    /// Pages the in-memory head out until it costs at most `target`: the messages served
    /// last go first (the tail of the lowest levels). `store` gets the messages leaving
    /// memory (a store that keeps every message anyway has nothing to do) and answers
    /// whether they are safely there; if not, nothing moves. Returns how many moved.
    pub fn page_out(
        &mut self,
        target: usize,
        store: impl FnOnce(&[(Offset, Arc<Message>)]) -> bool,
    ) -> usize {
        if self.head_cost <= target {
            return 0;
        }
        let mut excess = self.head_cost - target;
        // Per level (lowest first): how many entries leave from the tail of its head.
        let mut plan: Vec<(usize, usize)> = Vec::new();
        let mut out: Vec<(Offset, Arc<Message>)> = Vec::new();
        for (i, l) in self.levels.iter().enumerate() {
            if excess == 0 {
                break;
            }
            let mut n = 0;
            for e in l.mem.iter().rev() {
                if excess == 0 {
                    break;
                }
                excess = excess.saturating_sub(entry_cost(&e.msg));
                out.push((e.offset, e.msg.clone()));
                n += 1;
            }
            if n > 0 {
                plan.push((i, n));
            }
        }
        if out.is_empty() {
            return 0;
        }
        out.sort_unstable_by_key(|(o, _)| *o);
        if !store(&out) {
            return 0;
        }
        for (level, n) in plan {
            for _ in 0..n {
                let e = self.levels[level].mem.pop_back().expect("planned");
                let cost = entry_cost(&e.msg);
                self.levels[level].mem_cost -= cost;
                self.head_cost -= cost;
                self.ready_bytes -= e.msg.size();
                self.add_paged(level, e.offset, e.msg.size(), e.expires_at);
                self.levels[level].paged.push_front(e.offset);
            }
        }
        out.len()
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
        self.push_mem(self.level_of(rank), entry);
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
            .map(|(o, _)| o)
            .collect();
        v.sort_unstable();
        v
    }

    /// The level served next: the highest with anything ready (in memory or paged).
    fn top_level(&self) -> Option<usize> {
        self.levels
            .iter()
            .rposition(|l| !l.mem.is_empty() || !l.paged.is_empty())
    }

    /// Where the next message comes from: `Some(None)` the requeued set, `Some(Some(l))`
    /// the head of level `l`; `None` if nothing is ready in memory (the next message is
    /// paged: `page_in` first).
    fn next_source(&self) -> Option<Option<usize>> {
        let top = self.top_level();
        let requeued_first = match (self.requeued.first_key_value(), top) {
            (Some(((rank, _), _)), Some(level)) => self.level_of(*rank) >= level,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if requeued_first {
            return Some(None);
        }
        let top = top?;
        (!self.levels[top].mem.is_empty()).then_some(Some(top))
    }

    fn pop_next(&mut self) -> Option<Entry> {
        let e = match self.next_source()? {
            None => self.requeued.pop_first()?.1,
            Some(level) => {
                let l = &mut self.levels[level];
                let e = l.mem.pop_front()?;
                l.mem_cost -= entry_cost(&e.msg);
                e
            }
        };
        self.ready_bytes -= e.msg.size();
        self.head_cost -= entry_cost(&e.msg);
        Some(e)
    }

    fn peek_exists(&self) -> bool {
        self.next_source().is_some()
    }

    /// Whether the next message to hand out is paged (read it back with `page_in` first).
    pub fn next_is_paged(&self) -> bool {
        self.next_source().is_none() && self.paged_count > 0
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
                self.unacked_cost += entry_cost(&entry.msg);
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
            self.unacked_cost += entry_cost(&entry.msg);
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
        let u = self.unacked.remove(offset)?;
        self.unacked_cost -= entry_cost(&u.entry.msg);
        if let Some(cid) = u.consumer {
            if let Some(c) = self.consumers.iter_mut().find(|c| c.id == cid) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
        }
        Some(u.entry)
    }

    /// The delivery count of an unacked delivery (its generation), if it is unacked.
    pub fn delivery_generation(&self, offset: Offset) -> Option<u32> {
        self.unacked.get(offset).map(|u| u.entry.delivery_count)
    }

    /// Acknowledges deliveries; unknown offsets are ignored (the channel validated tags).
    pub fn ack(&mut self, offsets: &[Offset]) {
        for &o in offsets {
            self.settle(o);
        }
    }

    fn make_ready(&mut self, e: Entry) {
        self.ready_bytes += e.msg.size();
        self.head_cost += entry_cost(&e.msg);
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
        self.delayed_cost += entry_cost(&e.msg);
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
            self.delayed_cost -= entry_cost(&e.msg);
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
            self.head_cost -= entry_cost(&e.msg);
            return Some(Removed::InMemory(e));
        }
        let level = self.level_of(rank);
        let l = &mut self.levels[level];
        if let Ok(i) = l.mem.binary_search_by_key(&offset, |e| e.offset) {
            let e = l.mem.remove(i).expect("found");
            l.mem_cost -= entry_cost(&e.msg);
            self.ready_bytes -= e.msg.size();
            self.head_cost -= entry_cost(&e.msg);
            return Some(Removed::InMemory(e));
        }
        if let Ok(i) = l.paged.binary_search(&offset) {
            l.paged.remove(i);
            self.sub_paged(offset);
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
        let top = self.top_level()?;
        let offset = self.levels[top].paged.pop_front()?;
        self.sub_paged(offset);
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
        for l in &mut self.levels {
            offsets.extend(l.mem.drain(..).map(|e| e.offset));
            offsets.extend(l.paged.drain(..));
            l.mem_cost = 0;
        }
        offsets.extend(self.delayed.values().map(|e| e.offset));
        self.requeued.clear();
        self.paged_ttl.clear();
        self.delayed.clear();
        self.delayed_cost = 0;
        self.expiry.clear();
        self.ready_bytes = 0;
        self.head_cost = 0;
        self.paged_bytes = 0;
        self.paged_count = 0;
        offsets
    }

    /// Starts a queue from what its store recovered: the first messages in memory, the
    /// rest as offsets to page in (with their priorities, parallel to `paged`, empty when
    /// none has one, and their total size), all marked redelivered (they may have been
    /// delivered before the restart), and the next offset to use.
    pub fn restore(
        &mut self,
        next_offset: Offset,
        messages: Vec<(Offset, Arc<Message>)>,
        paged: Vec<Offset>,
        paged_priority: &[u8],
        paged_bytes: usize,
    ) {
        for (offset, msg) in messages {
            let level = self.level_of(self.rank(&msg));
            let e = Entry {
                offset,
                msg,
                delivery_count: 1,
                expires_at: 0,
            };
            self.push_mem(level, e);
        }
        let max = (self.levels.len() - 1) as u8;
        for (i, offset) in paged.into_iter().enumerate() {
            let level = if self.priority {
                usize::from(paged_priority.get(i).copied().unwrap_or(0).min(max))
            } else {
                0
            };
            self.levels[level].paged.push_back(offset);
            self.paged_count += 1;
        }
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
            for (i, l) in self.levels.iter_mut().enumerate() {
                let r = if self.priority { 255 - i as u8 } else { 0 };
                if let Ok(k) = l.mem.binary_search_by_key(&offset, |e| e.offset) {
                    l.mem[k].expires_at = at;
                    rank = Some(r);
                    break;
                }
                if l.paged.binary_search(&offset).is_ok() {
                    self.paged_ttl.insert(offset, (at, size));
                    rank = Some(r);
                    break;
                }
            }
            if let Some(rank) = rank {
                self.expiry.push(Reverse((at, offset, rank)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
