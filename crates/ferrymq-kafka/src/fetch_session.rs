//! Fetch sessions (KIP-227, incremental fetch), sans-IO: the bounded session cache, the
//! epoch rules, and which partitions an incremental response carries.
//!
//! A Fetch request names its session by `session_id` and `session_epoch`:
//! - epoch 0 (full fetch): any session it names (of the same owner) is closed; the request
//!   lists every partition it wants; once answered, a new session holding those partitions
//!   is created if the cache has room (or can evict one) and its id is returned (0: none).
//! - epoch -1 (final): any session it names is closed; a sessionless full fetch.
//! - epoch n > 0 (incremental): the session must exist and belong to the same owner
//!   (else `FETCH_SESSION_ID_NOT_FOUND`), `n` must be the session's next epoch (else
//!   `INVALID_FETCH_SESSION_EPOCH`), and it must name topics the way the session was
//!   created (ids from v13 on, else `FETCH_SESSION_TOPIC_ID_ERROR`). Its partitions add to
//!   or update the session's, `forgotten_topics_data` removes some; the broker reads every
//!   partition of the session and answers only those with news: records, an error, or a
//!   high watermark / last stable offset / log start offset that changed since the last
//!   response. Partitions that returned records move to the end of the session's order,
//!   so a busy partition does not starve the others under the response's byte budget.
//!
//! Eviction when every slot is taken (KIP-227): first the least recently used session if
//! it has not been used for `eviction_ms` (Kafka's
//! `min.incremental.fetch.session.eviction.ms`, 120 s); otherwise the smallest session
//! (fewest partitions, then oldest), only if the new session has more partitions.
//!
//! Sessions are keyed by id but also by owner (the server passes vhost and user): a
//! session id used by another principal is unknown to it.

use std::collections::HashMap;

use uuid::Uuid;

/// The epoch of a full fetch that creates a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch that closes a session (a sessionless fetch).
pub const FINAL_EPOCH: i32 = -1;
/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const DEFAULT_SLOTS: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms` default.
pub const DEFAULT_EVICTION_MS: u64 = 120_000;

/// How a request names a topic: by name before Fetch v13, by id from v13 on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// One partition of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartKey {
    pub topic: TopicRef,
    pub partition: i32,
}

impl PartKey {
    pub fn new(topic: TopicRef, partition: i32) -> PartKey {
        PartKey { topic, partition }
    }
}

/// What the client asks of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRequest {
    pub fetch_offset: i64,
    pub max_bytes: i32,
}

/// The offsets a response reported for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reported {
    pub high_watermark: i64,
    pub last_stable: i64,
    pub log_start: i64,
}

/// What reading a partition gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub reported: Reported,
    pub has_records: bool,
    pub has_error: bool,
}

/// Why a request's session cannot be used (the response's top-level error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// `FETCH_SESSION_ID_NOT_FOUND` (70).
    #[error("fetch session not found")]
    NotFound,
    /// `INVALID_FETCH_SESSION_EPOCH` (71).
    #[error("invalid fetch session epoch")]
    InvalidEpoch,
    /// `FETCH_SESSION_TOPIC_ID_ERROR` (106): topic ids used where the session did not, or
    /// the reverse.
    #[error("fetch session topic id usage changed")]
    TopicIdMismatch,
}

/// How a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A full fetch that does not create a session (epoch -1).
    Sessionless,
    /// A full fetch that creates a session once answered (epoch 0).
    Full,
    /// An incremental fetch in session `id`.
    Incremental(i32),
}

/// What to read for a request: every partition, in order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub partitions: Vec<(PartKey, PartitionRequest)>,
    /// Whether the request names topics by id (Fetch v13+).
    pub uses_topic_ids: bool,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessionless_fetches: u64,
    pub full_fetches: u64,
    pub incremental_fetches: u64,
    pub session_errors: u64,
    pub created: u64,
    pub evicted: u64,
    /// Full fetches that found no slot.
    pub not_created: u64,
}

#[derive(Debug)]
struct Cached {
    req: PartitionRequest,
    last: Option<Reported>,
}

#[derive(Debug)]
struct Session {
    owner: String,
    /// The epoch the next request must carry.
    epoch: i32,
    uses_topic_ids: bool,
    order: Vec<PartKey>,
    parts: HashMap<PartKey, Cached>,
    last_used_ms: u64,
    created_ms: u64,
}

impl Session {
    fn size(&self) -> usize {
        self.order.len()
    }
}

/// The broker's fetch session cache.
#[derive(Debug)]
pub struct FetchSessions {
    slots: usize,
    eviction_ms: u64,
    sessions: HashMap<i32, Session>,
    rng: u64,
    stats: Stats,
}

fn next_epoch(e: i32) -> i32 {
    if e == i32::MAX {
        1
    } else {
        e + 1
    }
}

impl FetchSessions {
    /// A cache of `slots` sessions; `seed` seeds the session id generator (ids are hard
    /// to guess, never 0).
    pub fn new(slots: usize, eviction_ms: u64, seed: u64) -> FetchSessions {
        FetchSessions {
            slots,
            eviction_ms,
            sessions: HashMap::new(),
            rng: seed | 1,
            stats: Stats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held by all sessions.
    pub fn partitions(&self) -> usize {
        self.sessions.values().map(Session::size).sum()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn new_id(&mut self) -> i32 {
        loop {
            // xorshift64*
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let id = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as i32;
            if id > 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    fn remove_owned(&mut self, owner: &str, id: i32) {
        if self.sessions.get(&id).is_some_and(|s| s.owner == owner) {
            self.sessions.remove(&id);
        }
    }

    /// Starts serving a request: applies its session rules and says which partitions to
    /// read. `updates` are the request's partitions, `forgotten` its
    /// `forgotten_topics_data`.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &mut self,
        owner: &str,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        now_ms: u64,
        updates: Vec<(PartKey, PartitionRequest)>,
        forgotten: Vec<PartKey>,
    ) -> Result<Plan, SessionError> {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != 0 {
                self.remove_owned(owner, session_id);
            }
            let kind = if epoch == FINAL_EPOCH {
                self.stats.sessionless_fetches += 1;
                Kind::Sessionless
            } else {
                self.stats.full_fetches += 1;
                Kind::Full
            };
            // A full fetch lists each partition once; a repeated one keeps its last entry.
            let mut partitions: Vec<(PartKey, PartitionRequest)> = Vec::new();
            let mut seen: HashMap<PartKey, usize> = HashMap::new();
            for (k, r) in updates {
                match seen.get(&k) {
                    Some(&i) => partitions[i].1 = r,
                    None => {
                        seen.insert(k.clone(), partitions.len());
                        partitions.push((k, r));
                    }
                }
            }
            return Ok(Plan {
                kind,
                partitions,
                uses_topic_ids,
            });
        }
        let result = self.incremental(
            owner,
            session_id,
            epoch,
            uses_topic_ids,
            now_ms,
            updates,
            forgotten,
        );
        match &result {
            Ok(_) => self.stats.incremental_fetches += 1,
            Err(_) => self.stats.session_errors += 1,
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn incremental(
        &mut self,
        owner: &str,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        now_ms: u64,
        updates: Vec<(PartKey, PartitionRequest)>,
        forgotten: Vec<PartKey>,
    ) -> Result<Plan, SessionError> {
        let s = self
            .sessions
            .get_mut(&session_id)
            .filter(|s| s.owner == owner)
            .ok_or(SessionError::NotFound)?;
        if s.epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        if s.uses_topic_ids != uses_topic_ids {
            return Err(SessionError::TopicIdMismatch);
        }
        for (k, r) in updates {
            match s.parts.get_mut(&k) {
                Some(c) => c.req = r,
                None => {
                    s.order.push(k.clone());
                    s.parts.insert(k, Cached { req: r, last: None });
                }
            }
        }
        if !forgotten.is_empty() {
            for k in &forgotten {
                s.parts.remove(k);
            }
            let parts = &s.parts;
            s.order.retain(|k| parts.contains_key(k));
        }
        s.epoch = next_epoch(s.epoch);
        s.last_used_ms = now_ms;
        let partitions = s
            .order
            .iter()
            .map(|k| (k.clone(), s.parts[k].req))
            .collect();
        Ok(Plan {
            kind: Kind::Incremental(session_id),
            partitions,
            uses_topic_ids,
        })
    }

    /// Finishes a request once its partitions were read (`outcomes`, in the plan's
    /// order): returns the response's session id and, per partition, whether the
    /// response carries it.
    pub fn finish(
        &mut self,
        owner: &str,
        plan: &Plan,
        outcomes: &[Outcome],
        now_ms: u64,
    ) -> (i32, Vec<bool>) {
        debug_assert_eq!(plan.partitions.len(), outcomes.len());
        match plan.kind {
            Kind::Sessionless => (0, vec![true; outcomes.len()]),
            Kind::Full => {
                let size = plan.partitions.len();
                if self.sessions.len() >= self.slots && !self.try_evict(size, now_ms) {
                    self.stats.not_created += 1;
                    return (0, vec![true; outcomes.len()]);
                }
                let id = self.new_id();
                let mut order = Vec::with_capacity(size);
                let mut parts = HashMap::with_capacity(size);
                for ((k, r), o) in plan.partitions.iter().zip(outcomes) {
                    order.push(k.clone());
                    parts.insert(
                        k.clone(),
                        Cached {
                            req: *r,
                            last: Some(o.reported),
                        },
                    );
                }
                self.sessions.insert(
                    id,
                    Session {
                        owner: owner.to_owned(),
                        epoch: next_epoch(INITIAL_EPOCH),
                        uses_topic_ids: plan.uses_topic_ids,
                        order,
                        parts,
                        last_used_ms: now_ms,
                        created_ms: now_ms,
                    },
                );
                self.stats.created += 1;
                (id, vec![true; outcomes.len()])
            }
            Kind::Incremental(id) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    // Evicted meanwhile: answer everything; the next request learns.
                    return (id, vec![true; outcomes.len()]);
                };
                let mut include = Vec::with_capacity(outcomes.len());
                let mut moved = Vec::new();
                for ((k, _), o) in plan.partitions.iter().zip(outcomes) {
                    let mut news = o.has_records || o.has_error;
                    if let Some(c) = s.parts.get_mut(k) {
                        if c.last != Some(o.reported) {
                            news = true;
                            c.last = Some(o.reported);
                        }
                        if o.has_records {
                            moved.push(k.clone());
                        }
                    }
                    include.push(news);
                }
                if !moved.is_empty() {
                    s.order.retain(|k| !moved.contains(k));
                    s.order.extend(moved);
                }
                s.last_used_ms = now_ms;
                (id, include)
            }
        }
    }

    /// Frees a slot for a new session of `size` partitions (KIP-227's preference).
    fn try_evict(&mut self, size: usize, now_ms: u64) -> bool {
        let lru = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
            .map(|(id, s)| (*id, s.last_used_ms));
        if let Some((id, used)) = lru {
            if now_ms.saturating_sub(used) > self.eviction_ms {
                self.sessions.remove(&id);
                self.stats.evicted += 1;
                return true;
            }
        }
        let smallest = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.size(), s.created_ms, **id))
            .map(|(id, s)| (*id, s.size()));
        match smallest {
            Some((id, n)) if size > n => {
                self.sessions.remove(&id);
                self.stats.evicted += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
