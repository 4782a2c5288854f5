//! The broker-wide budget for message bodies held in queue memory (`--queue-memory-budget`).
//! Every queue owner task reports what its in-memory head costs ([`QueueMemoryShare::report`],
//! once per round, so the hot path pays a few relaxed atomics per round, none per message)
//! and asks how much it may keep ([`QueueMemoryShare::head_limit`]).
//!
//! The rule ("each beyond a fair share"): while the queues together hold at most half of
//! the budget, every queue may keep its own maximum head (`HEAD_BYTES`); above that, each
//! queue may keep at most `budget / holders` (holders: queues whose head holds anything).
//! A queue over its limit pages the rest of its in-memory backlog out to its log or
//! scratch log. Since every holder is then at or below `budget / holders`, the sum is at
//! or below the budget; a queue below its share is never asked to page.
//!
//! A queue reports its head plus what it holds outside the head and cannot page: unacked
//! deliveries and delayed retries ([`QueueMemory::head_limit_holding`]). While constrained,
//! its head may then keep only its share minus what it holds, so those bytes push its own
//! head (and, through the total, every other queue's) to disk. Requeued messages are ready
//! messages: they count in the head and page like the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The shared accounting: one per broker.
#[derive(Debug)]
pub struct QueueMemory {
    limit: usize,
    used: AtomicUsize,
    holders: AtomicUsize,
}

impl QueueMemory {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: usize) -> Arc<QueueMemory> {
        Arc::new(QueueMemory {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the queues' heads hold now (as last reported).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Queues whose head holds anything.
    pub fn holders(&self) -> usize {
        self.holders.load(Ordering::Relaxed)
    }

    /// Whether queues are held to their fair share (more than half the budget in use).
    pub fn constrained(&self) -> bool {
        self.used() > self.limit / 2
    }

    /// What one queue may hold while constrained.
    pub fn fair_share(&self) -> usize {
        self.limit / self.holders().max(1)
    }

    /// The head limit for a queue whose own maximum is `own_max`.
    pub fn head_limit(&self, own_max: usize) -> usize {
        if self.constrained() {
            own_max.min(self.fair_share())
        } else {
            own_max
        }
    }

    /// The head limit for a queue whose own maximum is `own_max` and which holds `held`
    /// bytes outside its head (unacked, delayed): while constrained, its share minus
    /// `held` (zero when `held` alone exceeds the share: the whole head pages out).
    /// Unconstrained, `own_max` (held bytes do not shrink a queue's own maximum, so a large
    /// prefetch does not make an idle broker page).
    pub fn head_limit_holding(&self, own_max: usize, held: usize) -> usize {
        if self.constrained() {
            own_max.min(self.fair_share().saturating_sub(held))
        } else {
            own_max
        }
    }
}

/// One queue's part of the budget: what it last reported. Reports zero when dropped.
#[derive(Debug)]
pub struct QueueMemoryShare {
    pool: Arc<QueueMemory>,
    reported: usize,
}

impl QueueMemoryShare {
    pub fn new(pool: Arc<QueueMemory>) -> QueueMemoryShare {
        QueueMemoryShare { pool, reported: 0 }
    }

    /// Records that this queue's head now costs `cost` bytes.
    pub fn report(&mut self, cost: usize) {
        let old = self.reported;
        if cost == old {
            return;
        }
        if cost > old {
            self.pool.used.fetch_add(cost - old, Ordering::Relaxed);
        } else {
            self.pool.used.fetch_sub(old - cost, Ordering::Relaxed);
        }
        match (old == 0, cost == 0) {
            (true, false) => {
                self.pool.holders.fetch_add(1, Ordering::Relaxed);
            }
            (false, true) => {
                self.pool.holders.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.reported = cost;
    }

    /// The head limit for this queue (see [`QueueMemory::head_limit`]).
    pub fn head_limit(&self, own_max: usize) -> usize {
        self.pool.head_limit(own_max)
    }

    /// The head limit for this queue holding `held` bytes outside its head (see
    /// [`QueueMemory::head_limit_holding`]).
    pub fn head_limit_holding(&self, own_max: usize, held: usize) -> usize {
        self.pool.head_limit_holding(own_max, held)
    }

    pub fn pool(&self) -> &Arc<QueueMemory> {
        &self.pool
    }
}

impl Drop for QueueMemoryShare {
    fn drop(&mut self) {
        self.report(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_account_and_release() {
        let pool = QueueMemory::new(1000);
        let mut a = QueueMemoryShare::new(pool.clone());
        let mut b = QueueMemoryShare::new(pool.clone());
        a.report(300);
        assert_eq!((pool.used(), pool.holders()), (300, 1));
        assert!(!pool.constrained());
        assert_eq!(a.head_limit(800), 800, "unconstrained: own maximum");
        b.report(400);
        assert_eq!((pool.used(), pool.holders()), (700, 2));
        assert!(pool.constrained());
        assert_eq!(a.head_limit(800), 500, "constrained: budget / holders");
        assert_eq!(a.head_limit(100), 100, "never above its own maximum");
        a.report(100);
        assert_eq!(pool.used(), 500);
        a.report(0);
        assert_eq!((pool.used(), pool.holders()), (400, 1));
        drop(b);
        assert_eq!((pool.used(), pool.holders()), (0, 0));
    }

    #[test]
    fn paging_to_the_share_keeps_the_sum_within_the_budget() {
        // Any mix of queue sizes: after each pages down to its limit, the sum fits.
        let pool = QueueMemory::new(10_000);
        let sizes = [50_000usize, 10, 3_000, 9_999, 1, 200_000, 0, 4_000];
        let mut shares: Vec<QueueMemoryShare> = sizes
            .iter()
            .map(|&s| {
                let mut q = QueueMemoryShare::new(pool.clone());
                q.report(s);
                q
            })
            .collect();
        for (q, &s) in shares.iter_mut().zip(&sizes) {
            let limit = q.head_limit(usize::MAX);
            q.report(s.min(limit));
        }
        assert!(
            pool.used() <= pool.limit(),
            "{} > {}",
            pool.used(),
            pool.limit()
        );
    }

    #[test]
    fn held_bytes_shrink_the_head_only_while_constrained() {
        let pool = QueueMemory::new(1000);
        let mut a = QueueMemoryShare::new(pool.clone());
        a.report(100);
        assert_eq!(a.head_limit_holding(800, 300), 800, "unconstrained");
        a.report(600); // head + held reported together
        assert!(pool.constrained());
        assert_eq!(a.head_limit_holding(800, 300), 700, "share 1000 - 300 held");
        let mut b = QueueMemoryShare::new(pool.clone());
        b.report(100);
        assert_eq!(a.head_limit_holding(800, 300), 200, "share 500 - 300 held");
        assert_eq!(a.head_limit_holding(800, 700), 0, "held beyond the share");
        // Paging the head to that limit brings head + held to the share.
        a.report(200 + 300);
        assert!(pool.used() <= pool.limit());
    }
}
