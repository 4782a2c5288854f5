//! Half messages (RocketMQ-style transactional messages over AMQP), sans-IO.
//!
//! A publish carrying `x-transaction-id` is a *half*: stored, confirmed, not routed. The
//! producer decides with a publish to `amq.ferrymq.transactions` (routing key = the id,
//! header `x-transaction-action` = `commit` / `rollback`). A transaction may name a check
//! queue (`x-transaction-check-queue`): with no decision after `x-transaction-check-after`
//! ms the broker publishes a check message there, again every interval, up to
//! `x-transaction-max-checks` times; at the next due time it expires (rolled back, dead
//! lettered by the server).
//!
//! States of one transaction: `Pending` → (`Checking` after its first check) → decided:
//! `Committed`, `RolledBack` or `Expired`. [`HalfBook`] holds the pending ones (an index
//! entry each: log offsets and the check schedule; bodies stay in the server's half log)
//! and remembers the last [`DECIDED_MEMORY`] decisions so that deciding twice is harmless.
//! It does no IO and reads no clock: the server passes `now` (ms) and performs what the
//! returned values say (route, drop, publish a check, dead-letter).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};

/// The broker-owned exchange decisions are published to.
pub const EXCHANGE: &str = "amq.ferrymq.transactions";
pub const ID_HEADER: &str = "x-transaction-id";
pub const ACTION_HEADER: &str = "x-transaction-action";
pub const CHECK_QUEUE_HEADER: &str = "x-transaction-check-queue";
pub const CHECK_AFTER_HEADER: &str = "x-transaction-check-after";
pub const MAX_CHECKS_HEADER: &str = "x-transaction-max-checks";
pub const CHECK_COUNT_HEADER: &str = "x-transaction-check-count";
pub const DEFAULT_CHECK_AFTER_MS: u32 = 6000;
pub const DEFAULT_MAX_CHECKS: u16 = 15;
/// Decided transaction ids remembered (FIFO) so that a repeated decision is a no-op.
pub const DECIDED_MEMORY: usize = 65_536;
/// Longest transaction id accepted (bytes).
pub const MAX_ID_LEN: usize = 255;

/// A log offset in the server's half log.
pub type Offset = u64;

/// What a producer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Commit,
    Rollback,
}

impl Action {
    pub fn parse(v: &[u8]) -> Option<Action> {
        match v {
            b"commit" => Some(Action::Commit),
            b"rollback" => Some(Action::Rollback),
            _ => None,
        }
    }
}

/// A transaction's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Stored, no check sent yet.
    Pending,
    /// At least one check message was sent.
    Checking,
    Committed,
    RolledBack,
    /// Rolled back by the broker after its last check.
    Expired,
}

/// The check-back a transaction asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSpec {
    pub after_ms: u32,
    pub max_checks: u16,
}

/// What a half publish's headers say (parsed once, at publish time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfMeta {
    pub id: String,
    pub check_queue: Option<String>,
    pub check: CheckSpec,
}

fn text(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

fn int(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        v => std::str::from_utf8(text(v)?).ok()?.trim().parse().ok()?,
    })
}

/// Why a half or decision publish is refused (the server answers PRECONDITION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HalfError {
    #[error("x-transaction-id must be a non-empty string of at most 255 bytes")]
    BadId,
    #[error("invalid {0} header")]
    BadHeader(&'static str),
    #[error("x-transaction-action must be 'commit' or 'rollback'")]
    BadAction,
}

/// The half-message headers of a publish, if it is one (`x-transaction-id` present):
/// one map lookup for a publish with headers that is not.
pub fn half_meta(headers: Option<&FieldTable>) -> Result<Option<HalfMeta>, HalfError> {
    let Some(h) = headers else { return Ok(None) };
    let h = h.inner();
    let Some(id) = h.get(ID_HEADER) else {
        return Ok(None);
    };
    let id = text(id)
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN)
        .and_then(|s| std::str::from_utf8(s).ok())
        .ok_or(HalfError::BadId)?;
    let check_queue = match h.get(CHECK_QUEUE_HEADER) {
        None => None,
        Some(v) => Some(
            text(v)
                .filter(|s| s.len() <= 255)
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or(HalfError::BadHeader(CHECK_QUEUE_HEADER))?
                .to_owned(),
        ),
    };
    let after_ms = match h.get(CHECK_AFTER_HEADER) {
        None => DEFAULT_CHECK_AFTER_MS,
        Some(v) => int(v)
            .filter(|n| (1..=u32::MAX as i64).contains(n))
            .ok_or(HalfError::BadHeader(CHECK_AFTER_HEADER))? as u32,
    };
    let max_checks = match h.get(MAX_CHECKS_HEADER) {
        None => DEFAULT_MAX_CHECKS,
        Some(v) => int(v)
            .filter(|n| (0..=u16::MAX as i64).contains(n))
            .ok_or(HalfError::BadHeader(MAX_CHECKS_HEADER))? as u16,
    };
    Ok(Some(HalfMeta {
        id: id.to_owned(),
        check_queue,
        check: CheckSpec {
            after_ms,
            max_checks,
        },
    }))
}

/// The action of a decision publish (`x-transaction-action`).
pub fn decision_action(headers: Option<&FieldTable>) -> Result<Action, HalfError> {
    headers
        .and_then(|h| h.inner().get(ACTION_HEADER))
        .and_then(text)
        .and_then(Action::parse)
        .ok_or(HalfError::BadAction)
}

#[derive(Debug)]
struct Check {
    spec: CheckSpec,
    /// Checks sent so far.
    count: u16,
    /// When the next check (or, after the last one, expiry) is due.
    due: u64,
    /// The log record holding `count`/`due` (acked when superseded or decided).
    record: Option<Offset>,
}

/// One pending transaction: its halves' log offsets (publish order) and check schedule.
#[derive(Debug)]
struct Txn {
    first: Offset,
    more: Vec<Offset>,
    check: Option<Check>,
}

impl Txn {
    fn offsets(&self) -> Vec<Offset> {
        let mut v = Vec::with_capacity(1 + self.more.len());
        v.push(self.first);
        v.extend_from_slice(&self.more);
        v
    }
}

/// What a decision does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// No such pending transaction and none decided recently.
    Unknown,
    /// Already decided (the earlier outcome stands; nothing to do).
    Repeat(Phase),
    /// Route (commit) or drop (rollback) these halves (publish order), then ack them and
    /// `check_record` in the log.
    Apply {
        halves: Vec<Offset>,
        check_record: Option<Offset>,
    },
}

/// A timer outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send check number `count` for `id` (its first half at `first` names the check
    /// queue); persist the schedule (`count`, `next_due`) and report the record with
    /// [`HalfBook::check_recorded`].
    Check {
        id: Arc<str>,
        first: Offset,
        count: u16,
        next_due: u64,
    },
    /// Checks exhausted: the transaction is rolled back; dead-letter its halves
    /// (`halves`, publish order) via the check queue named in `halves[0]`, then ack them
    /// and `check_record`.
    Expire {
        id: Arc<str>,
        halves: Vec<Offset>,
        check_record: Option<Offset>,
    },
}

/// The pending transactions of one vhost.
#[derive(Debug, Default)]
pub struct HalfBook {
    txns: HashMap<Arc<str>, Txn>,
    /// `(due, id)` of transactions with a check schedule; stale entries (decided, or
    /// rescheduled) are skipped when popped.
    timers: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    decided: HashMap<Arc<str>, Phase>,
    decided_order: VecDeque<Arc<str>>,
    halves: usize,
}

impl HalfBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pending half messages (not transactions).
    pub fn halves(&self) -> usize {
        self.halves
    }

    /// Pending transactions.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    pub fn phase(&self, id: &str) -> Option<Phase> {
        if let Some(t) = self.txns.get(id) {
            return Some(match &t.check {
                Some(c) if c.count > 0 => Phase::Checking,
                _ => Phase::Pending,
            });
        }
        self.decided.get(id).copied()
    }

    /// A half stored at `offset` at time `now`. The first half of a transaction fixes its
    /// check schedule (`check`: `None` when it names no check queue); later ones join it.
    /// An id decided earlier starts a new transaction.
    pub fn add(&mut self, id: &str, offset: Offset, check: Option<CheckSpec>, now: u64) {
        self.halves += 1;
        if let Some(t) = self.txns.get_mut(id) {
            t.more.push(offset);
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.forget_decided(&id);
        let check = check.map(|spec| {
            let due = now.saturating_add(u64::from(spec.after_ms));
            self.timers.push(Reverse((due, id.clone())));
            Check {
                spec,
                count: 0,
                due,
                record: None,
            }
        });
        self.txns.insert(
            id,
            Txn {
                first: offset,
                more: Vec::new(),
                check,
            },
        );
    }

    /// Recovery: a persisted check state (`count` checks sent, next due `due`) of `id`,
    /// recorded at `record`. Returns a superseded record to ack (recovery may see several;
    /// the highest count wins, ties the later record).
    pub fn recover_check(
        &mut self,
        id: &str,
        count: u16,
        due: u64,
        record: Offset,
    ) -> Option<Offset> {
        let Some(t) = self.txns.get_mut(id) else {
            return Some(record);
        };
        let Some(c) = &mut t.check else {
            return Some(record);
        };
        if let Some(old) = c.record {
            if c.count > count {
                return Some(record);
            }
            c.count = count;
            c.due = due;
            c.record = Some(record);
            self.timers.push(Reverse((due, t_key(&self.txns, id))));
            return Some(old);
        }
        c.count = count;
        c.due = due;
        c.record = Some(record);
        self.timers.push(Reverse((due, t_key(&self.txns, id))));
        None
    }

    /// A decision for `id`.
    pub fn decide(&mut self, id: &str, action: Action) -> Decided {
        let Some((key, t)) = self.txns.remove_entry(id) else {
            return match self.decided.get(id) {
                Some(p) => Decided::Repeat(*p),
                None => Decided::Unknown,
            };
        };
        let phase = match action {
            Action::Commit => Phase::Committed,
            Action::Rollback => Phase::RolledBack,
        };
        self.finish(key, &t, phase);
        Decided::Apply {
            halves: t.offsets(),
            check_record: t.check.and_then(|c| c.record),
        }
    }

    fn finish(&mut self, id: Arc<str>, t: &Txn, phase: Phase) {
        self.halves -= 1 + t.more.len();
        self.decided.insert(id.clone(), phase);
        self.decided_order.push_back(id);
        while self.decided_order.len() > DECIDED_MEMORY {
            if let Some(old) = self.decided_order.pop_front() {
                self.decided.remove(&old);
            }
        }
        if self.timers.len() > 64 && self.timers.len() > 2 * self.txns.len() {
            let txns = &self.txns;
            self.timers.retain(|Reverse((due, id))| {
                txns.get(id)
                    .and_then(|t| t.check.as_ref())
                    .is_some_and(|c| c.due == *due)
            });
        }
    }

    fn forget_decided(&mut self, id: &str) {
        if self.decided.remove(id).is_some() {
            self.decided_order.retain(|d| &**d != id);
        }
    }

    /// The earliest time a check or expiry is due.
    pub fn next_due(&mut self) -> Option<u64> {
        while let Some(Reverse((due, id))) = self.timers.peek() {
            let live = self
                .txns
                .get(id)
                .and_then(|t| t.check.as_ref())
                .is_some_and(|c| c.due == *due);
            if live {
                return Some(*due);
            }
            self.timers.pop();
        }
        None
    }

    /// The next due check or expiry at `now`, if any (call until `None`).
    pub fn poll(&mut self, now: u64) -> Option<Due> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        let Reverse((_, id)) = self.timers.pop().expect("peeked");
        let t = self.txns.get_mut(&id).expect("live timer");
        let c = t.check.as_mut().expect("live timer");
        if c.count < c.spec.max_checks {
            c.count += 1;
            c.due = now.saturating_add(u64::from(c.spec.after_ms));
            self.timers.push(Reverse((c.due, id.clone())));
            return Some(Due::Check {
                first: t.first,
                count: c.count,
                next_due: c.due,
                id,
            });
        }
        let (key, t) = self.txns.remove_entry(&id).expect("live timer");
        self.finish(key, &t, Phase::Expired);
        Some(Due::Expire {
            id,
            halves: t.offsets(),
            check_record: t.check.and_then(|c| c.record),
        })
    }

    /// The check schedule of `id` was persisted at `record`: returns the record it
    /// supersedes (to ack). If the transaction was decided meanwhile, `record` itself.
    pub fn check_recorded(&mut self, id: &str, record: Offset) -> Option<Offset> {
        match self.txns.get_mut(id).and_then(|t| t.check.as_mut()) {
            Some(c) => c.record.replace(record),
            None => Some(record),
        }
    }
}

fn t_key(txns: &HashMap<Arc<str>, Txn>, id: &str) -> Arc<str> {
    txns.get_key_value(id)
        .map(|(k, _)| k.clone())
        .expect("present")
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{LongString, ShortString};

    fn spec(after: u32, max: u16) -> Option<CheckSpec> {
        Some(CheckSpec {
            after_ms: after,
            max_checks: max,
        })
    }

    #[test]
    fn commit_then_repeat_and_unknown() {
        let mut b = HalfBook::new();
        b.add("t1", 10, None, 0);
        b.add("t1", 12, None, 0);
        b.add("t2", 11, None, 0);
        assert_eq!(b.halves(), 3);
        assert_eq!(b.phase("t1"), Some(Phase::Pending));
        assert_eq!(
            b.decide("t1", Action::Commit),
            Decided::Apply {
                halves: vec![10, 12],
                check_record: None
            }
        );
        assert_eq!(b.halves(), 1);
        assert_eq!(
            b.decide("t1", Action::Rollback),
            Decided::Repeat(Phase::Committed)
        );
        assert_eq!(b.decide("nope", Action::Commit), Decided::Unknown);
        assert_eq!(
            b.decide("t2", Action::Rollback),
            Decided::Apply {
                halves: vec![11],
                check_record: None
            }
        );
        assert_eq!(b.phase("t2"), Some(Phase::RolledBack));
        assert!(b.is_empty());
        assert_eq!(b.next_due(), None);
        // A decided id reused starts a new transaction.
        b.add("t2", 20, None, 0);
        assert_eq!(b.phase("t2"), Some(Phase::Pending));
    }

    #[test]
    fn checks_then_expiry() {
        let mut b = HalfBook::new();
        b.add("t", 1, spec(100, 2), 1000);
        b.add("u", 2, None, 1000);
        assert_eq!(b.next_due(), Some(1100));
        assert_eq!(b.poll(1099), None);
        assert_eq!(
            b.poll(1100),
            Some(Due::Check {
                id: "t".into(),
                first: 1,
                count: 1,
                next_due: 1200
            })
        );
        assert_eq!(b.poll(1100), None);
        assert_eq!(b.phase("t"), Some(Phase::Checking));
        assert_eq!(b.check_recorded("t", 50), None);
        assert!(matches!(b.poll(1250), Some(Due::Check { count: 2, .. })));
        assert_eq!(b.check_recorded("t", 51), Some(50));
        assert_eq!(b.next_due(), Some(1350));
        assert_eq!(
            b.poll(1350),
            Some(Due::Expire {
                id: "t".into(),
                halves: vec![1],
                check_record: Some(51)
            })
        );
        assert_eq!(b.phase("t"), Some(Phase::Expired));
        assert_eq!(
            b.decide("t", Action::Commit),
            Decided::Repeat(Phase::Expired)
        );
        assert_eq!(b.next_due(), None);
        assert_eq!(b.halves(), 1);
    }

    #[test]
    fn decision_cancels_checks() {
        let mut b = HalfBook::new();
        b.add("t", 1, spec(100, 15), 0);
        assert!(matches!(b.poll(100), Some(Due::Check { .. })));
        b.check_recorded("t", 9);
        assert_eq!(
            b.decide("t", Action::Commit),
            Decided::Apply {
                halves: vec![1],
                check_record: Some(9)
            }
        );
        assert_eq!(b.next_due(), None);
        assert_eq!(b.poll(u64::MAX), None);
        // A check record written after the decision is acked at once.
        assert_eq!(b.check_recorded("t", 10), Some(10));
    }

    #[test]
    fn zero_max_checks_expires_at_first_due() {
        let mut b = HalfBook::new();
        b.add("t", 1, spec(10, 0), 0);
        assert!(matches!(b.poll(10), Some(Due::Expire { .. })));
    }

    #[test]
    fn recovery_keeps_the_latest_check_state() {
        let mut b = HalfBook::new();
        b.add("t", 1, spec(100, 5), 0);
        assert_eq!(b.recover_check("t", 2, 700, 5), None);
        assert_eq!(b.recover_check("t", 3, 900, 6), Some(5));
        assert_eq!(b.recover_check("t", 1, 300, 7), Some(7));
        assert_eq!(b.recover_check("gone", 1, 300, 8), Some(8));
        assert_eq!(b.next_due(), Some(900));
        assert_eq!(b.phase("t"), Some(Phase::Checking));
        assert!(matches!(b.poll(900), Some(Due::Check { count: 4, .. })));
    }

    #[test]
    fn decided_memory_is_bounded() {
        let mut b = HalfBook::new();
        for i in 0..DECIDED_MEMORY + 10 {
            let id = i.to_string();
            b.add(&id, i as u64, None, 0);
            b.decide(&id, Action::Rollback);
        }
        assert_eq!(b.decide("0", Action::Commit), Decided::Unknown);
        assert_eq!(
            b.decide(&(DECIDED_MEMORY + 9).to_string(), Action::Commit),
            Decided::Repeat(Phase::RolledBack)
        );
    }

    #[test]
    fn many_interleaved() {
        let mut b = HalfBook::new();
        for i in 0..1000u64 {
            b.add(&format!("t{i}"), i, spec(1000, 3), i);
        }
        for i in (0..1000u64).rev() {
            let d = b.decide(
                &format!("t{i}"),
                if i % 2 == 0 {
                    Action::Commit
                } else {
                    Action::Rollback
                },
            );
            assert_eq!(
                d,
                Decided::Apply {
                    halves: vec![i],
                    check_record: None
                }
            );
        }
        assert_eq!(b.halves(), 0);
        assert_eq!(b.poll(u64::MAX), None);
        assert!(b.timers.len() <= 64);
    }

    #[test]
    fn headers() {
        let mut h = FieldTable::default();
        assert_eq!(half_meta(Some(&h)), Ok(None));
        assert_eq!(half_meta(None), Ok(None));
        h.insert(
            ID_HEADER.into(),
            AMQPValue::LongString(LongString::from("tx")),
        );
        let m = half_meta(Some(&h)).unwrap().unwrap();
        assert_eq!(m.id, "tx");
        assert_eq!(m.check_queue, None);
        assert_eq!(m.check, spec(6000, 15).unwrap());
        h.insert(
            CHECK_QUEUE_HEADER.into(),
            AMQPValue::ShortString(ShortString::from("cq")),
        );
        h.insert(CHECK_AFTER_HEADER.into(), AMQPValue::LongInt(250));
        h.insert(MAX_CHECKS_HEADER.into(), AMQPValue::ShortShortUInt(2));
        let m = half_meta(Some(&h)).unwrap().unwrap();
        assert_eq!(m.check_queue.as_deref(), Some("cq"));
        assert_eq!(m.check, spec(250, 2).unwrap());
        h.insert(CHECK_AFTER_HEADER.into(), AMQPValue::LongInt(-1));
        assert_eq!(
            half_meta(Some(&h)),
            Err(HalfError::BadHeader(CHECK_AFTER_HEADER))
        );
        h.insert(
            ID_HEADER.into(),
            AMQPValue::LongString(LongString::from("")),
        );
        assert_eq!(half_meta(Some(&h)), Err(HalfError::BadId));
        h.insert(ID_HEADER.into(), AMQPValue::LongInt(3));
        assert_eq!(half_meta(Some(&h)), Err(HalfError::BadId));

        let mut d = FieldTable::default();
        assert_eq!(decision_action(Some(&d)), Err(HalfError::BadAction));
        d.insert(
            ACTION_HEADER.into(),
            AMQPValue::LongString(LongString::from("commit")),
        );
        assert_eq!(decision_action(Some(&d)), Ok(Action::Commit));
        d.insert(
            ACTION_HEADER.into(),
            AMQPValue::LongString(LongString::from("maybe")),
        );
        assert_eq!(decision_action(Some(&d)), Err(HalfError::BadAction));
        assert_eq!(decision_action(None), Err(HalfError::BadAction));
    }
}
