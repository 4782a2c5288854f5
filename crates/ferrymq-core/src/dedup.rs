//! Exchange-level de-duplication (`x-message-deduplication` exchanges, the conventions of
//! the rabbitmq-message-deduplication plugin): a message whose `x-deduplication-header`
//! value was seen within the cache bounds is routed nowhere. The cache holds at most
//! `x-cache-size` keys (the oldest insertion is evicted first) and forgets a key after its
//! TTL (`x-cache-ttl` on the exchange, overridden by the message's `x-cache-ttl` header;
//! milliseconds). Pure: `now` is passed in.

use std::collections::VecDeque;

use ahash::AHashMap;
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::CoreError;
use crate::topology::int_value;

/// Exchange type name.
pub const DEDUP_TYPE: &str = "x-message-deduplication";
/// Message header whose value identifies duplicates.
pub const DEDUP_HEADER: &str = "x-deduplication-header";
/// Exchange argument and message header: how long a key is remembered (ms).
pub const CACHE_TTL: &str = "x-cache-ttl";

/// Where a de-duplication cache lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    Memory,
    Disk,
}

/// A de-duplication exchange's declared arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupArgs {
    pub size: usize,
    pub ttl: Option<u64>,
    pub persistence: Persistence,
}

/// Positive integer argument, given as an integer or a decimal string (as the plugin
/// accepts both).
fn positive(v: &AMQPValue) -> Option<u64> {
    let n = match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().parse().ok()?,
        v => int_value(v)?,
    };
    (n > 0).then_some(n as u64)
}

impl DedupArgs {
    /// Validates declare arguments; 406 with the plugin's wording on a bad one.
    pub fn parse(args: &FieldTable) -> Result<DedupArgs, CoreError> {
        let a = args.inner();
        let size = a.get("x-cache-size").and_then(positive).ok_or_else(|| {
            CoreError::Precondition(
                "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"
                    .into(),
            )
        })?;
        let ttl = match a.get(CACHE_TTL) {
            None => None,
            Some(v) => Some(positive(v).ok_or_else(|| {
                CoreError::Precondition(
                    "Invalid argument, 'x-cache-ttl' must be an integer greater than 0".into(),
                )
            })?),
        };
        let persistence = match a.get("x-cache-persistence") {
            None => Persistence::Memory,
            Some(AMQPValue::LongString(s)) if s.as_bytes() == b"memory" => Persistence::Memory,
            Some(AMQPValue::LongString(s)) if s.as_bytes() == b"disk" => Persistence::Disk,
            Some(_) => {
                return Err(CoreError::Precondition(
                    "Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'"
                        .into(),
                ))
            }
        };
        Ok(DedupArgs {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            ttl,
            persistence,
        })
    }
}

/// The cache key of a message: its `x-deduplication-header` value, tagged by type (so the
/// string "1" and the integer 1 differ), or `None` if it has none.
pub fn dedup_key(headers: Option<&FieldTable>) -> Option<Vec<u8>> {
    let v = headers?.inner().get(DEDUP_HEADER)?;
    let mut key = Vec::new();
    match v {
        AMQPValue::LongString(s) => {
            key.push(b's');
            key.extend_from_slice(s.as_bytes());
        }
        AMQPValue::ShortString(s) => {
            key.push(b's');
            key.extend_from_slice(s.as_str().as_bytes());
        }
        AMQPValue::Void => return None,
        v => match int_value(v) {
            Some(n) => {
                key.push(b'i');
                key.extend_from_slice(&n.to_be_bytes());
            }
            None => {
                key.push(b'o');
                key.extend_from_slice(format!("{v:?}").as_bytes());
            }
        },
    }
    Some(key)
}

/// Per-message TTL override (`x-cache-ttl` header, positive ms).
pub fn message_ttl(headers: Option<&FieldTable>) -> Option<u64> {
    headers?.inner().get(CACHE_TTL).and_then(positive)
}

/// A bounded set of recently seen keys with expiry.
#[derive(Debug)]
pub struct DedupCache {
    size: usize,
    ttl: Option<u64>,
    /// key → (expires at, ms since the epoch, `u64::MAX` for never; insertion number)
    entries: AHashMap<Box<[u8]>, (u64, u64)>,
    /// Insertion order for eviction; stale items (key re-inserted since) are skipped.
    order: VecDeque<(u64, Box<[u8]>)>,
    inserted: u64,
}

impl DedupCache {
    pub fn new(size: usize, ttl: Option<u64>) -> Self {
        DedupCache {
            size: size.max(1),
            ttl,
            entries: AHashMap::new(),
            order: VecDeque::new(),
            inserted: 0,
        }
    }

    /// True if `key` is a duplicate at `now`; otherwise remembers it (with `ttl` or the
    /// cache's default) and returns false. Returns the entry's expiry for persistence.
    pub fn check(&mut self, key: &[u8], now: u64, ttl: Option<u64>) -> (bool, u64) {
        if let Some(&(expires, _)) = self.entries.get(key) {
            if expires > now {
                return (true, expires);
            }
        }
        let expires = ttl.or(self.ttl).map_or(u64::MAX, |t| now.saturating_add(t));
        self.restore(key, expires);
        (false, expires)
    }

    /// Inserts a key with a known expiry (recovery of a persisted cache, or `check`).
    pub fn restore(&mut self, key: &[u8], expires: u64) {
        self.inserted += 1;
        let n = self.inserted;
        self.entries.insert(key.into(), (expires, n));
        self.order.push_back((n, key.into()));
        while self.entries.len() > self.size {
            let Some((n, k)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&k).is_some_and(|e| e.1 == n) {
                self.entries.remove(&k);
            }
        }
        // Stale order items (re-inserted keys) are bounded by compacting now and then.
        if self.order.len() > 2 * self.size + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(n, k)| entries.get(k).is_some_and(|e| e.1 == *n));
        }
    }

    /// Live entries at `now` as (key, expiry), oldest first: what a persisted cache keeps.
    pub fn live(&self, now: u64) -> Vec<(&[u8], u64)> {
        self.order
            .iter()
            .filter_map(|(n, k)| {
                let &(exp, m) = self.entries.get(k)?;
                (m == *n && exp > now).then_some((&**k, exp))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn arguments() {
        let s = |v: &str| AMQPValue::LongString(v.into());
        assert_eq!(
            DedupArgs::parse(&table(&[("x-cache-size", AMQPValue::LongInt(10))])),
            Ok(DedupArgs {
                size: 10,
                ttl: None,
                persistence: Persistence::Memory
            })
        );
        let full = DedupArgs::parse(&table(&[
            ("x-cache-size", s("5")),
            ("x-cache-ttl", AMQPValue::LongInt(1000)),
            ("x-cache-persistence", s("disk")),
        ]))
        .unwrap();
        assert_eq!((full.size, full.ttl), (5, Some(1000)));
        assert_eq!(full.persistence, Persistence::Disk);
        for bad in [
            table(&[]),
            table(&[("x-cache-size", AMQPValue::LongInt(0))]),
            table(&[("x-cache-size", s("many"))]),
            table(&[
                ("x-cache-size", AMQPValue::LongInt(1)),
                ("x-cache-ttl", AMQPValue::LongInt(-1)),
            ]),
            table(&[
                ("x-cache-size", AMQPValue::LongInt(1)),
                ("x-cache-persistence", s("tape")),
            ]),
        ] {
            assert!(
                matches!(DedupArgs::parse(&bad), Err(CoreError::Precondition(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_typed() {
        let k = |v: AMQPValue| dedup_key(Some(&table(&[(DEDUP_HEADER, v)])));
        assert_eq!(k(AMQPValue::LongString("a".into())), Some(b"sa".to_vec()));
        assert_ne!(
            k(AMQPValue::LongString("1".into())),
            k(AMQPValue::LongInt(1))
        );
        assert_eq!(k(AMQPValue::ShortInt(1)), k(AMQPValue::LongLongInt(1)));
        assert_eq!(dedup_key(Some(&table(&[]))), None);
        assert_eq!(dedup_key(None), None);
    }

    #[test]
    fn ttl_and_override() {
        let mut c = DedupCache::new(100, Some(1000));
        assert!(!c.check(b"a", 0, None).0);
        assert!(c.check(b"a", 999, None).0, "within ttl");
        assert!(!c.check(b"a", 1000, None).0, "expired: routed again");
        assert!(c.check(b"a", 1500, None).0, "and remembered again");
        assert!(!c.check(b"b", 0, Some(10)).0);
        assert!(
            !c.check(b"b", 10, None).0,
            "message ttl overrode the default"
        );
        let mut forever = DedupCache::new(100, None);
        assert!(!forever.check(b"x", 0, None).0);
        assert!(forever.check(b"x", u64::MAX - 1, None).0);
    }

    #[test]
    fn size_evicts_oldest() {
        let mut c = DedupCache::new(3, None);
        for k in [b"1", b"2", b"3"] {
            assert!(!c.check(k, 0, None).0);
        }
        assert!(!c.check(b"4", 0, None).0, "new key evicts 1");
        assert_eq!(c.len(), 3);
        assert!(c.check(b"2", 0, None).0);
        assert!(!c.check(b"1", 0, None).0, "1 was forgotten");
        assert!(!c.check(b"2", 0, None).0, "re-adding 1 evicted 2");
        for i in 0..1000u32 {
            c.check(&i.to_be_bytes(), 0, None);
        }
        assert_eq!(c.len(), 3);
        assert!(c.order.len() <= 2 * 3 + 64);
        let live: Vec<_> = c.live(0).into_iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(live.len(), 3);
        assert_eq!(live[2], 999u32.to_be_bytes().to_vec());
    }
}

/// Queue-level de-duplication (`x-message-deduplication` on a queue): the
/// `x-deduplication-header` values of the messages in the queue (ready, delayed or
/// delivered and not yet settled). A publish whose value is present is a duplicate.
#[derive(Debug, Default)]
pub struct InQueueKeys {
    by_offset: ahash::AHashMap<u64, Vec<u8>>,
    keys: ahash::AHashSet<Vec<u8>>,
}

impl InQueueKeys {
    /// Whether a message with this key is in the queue.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.keys.contains(key)
    }

    /// Records the key of the message enqueued at `offset`.
    pub fn insert(&mut self, offset: u64, key: Vec<u8>) {
        self.keys.insert(key.clone());
        self.by_offset.insert(offset, key);
    }

    /// The message at `offset` left the queue (acked, dropped, expired, purged).
    pub fn remove(&mut self, offset: u64) {
        if let Some(k) = self.by_offset.remove(&offset) {
            self.keys.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod in_queue_tests {
    use super::*;

    #[test]
    fn keys_live_while_their_message_does() {
        let mut k = InQueueKeys::default();
        k.insert(1, b"sa".to_vec());
        assert!(k.contains(b"sa"));
        k.remove(2);
        assert!(k.contains(b"sa"));
        k.remove(1);
        assert!(!k.contains(b"sa"));
        assert!(k.is_empty());
    }
}
