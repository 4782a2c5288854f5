//! A queue's deliveries awaiting ack, keyed by offset: a dense ring indexed by
//! `offset - base` for the common case (a FIFO queue hands out consecutive offsets and its
//! consumers settle them roughly in order), plus a side map for the stragglers that do not
//! fit it (a requeued message delivered again after later ones, a low priority level, a
//! delivery held for long while later ones are settled).
//!
//! An insert, lookup or removal in the ring is an index into memory that is touched in
//! order, where a hash map scatters its 1 000-odd entries per queue (one cache miss per
//! delivery and per ack with 100 busy queues). The ring stays dense: it never holds more
//! than about twice its live entries plus `SLACK` slots; entries at its front that keep it
//! sparser than that move to the side map.

use std::collections::VecDeque;

use ahash::AHashMap;

use super::Offset;

/// Empty slots the ring may hold beyond twice its live entries.
const SLACK: usize = 64;

#[derive(Debug)]
pub(super) struct UnackedSet<T> {
    /// `ring[i]` is the delivery at offset `base + i`, if it is unacked.
    ring: VecDeque<Option<T>>,
    base: Offset,
    /// Live entries in `ring`.
    in_ring: usize,
    /// Unacked deliveries outside the ring (any offset not held there).
    stray: AHashMap<Offset, T>,
}

impl<T> Default for UnackedSet<T> {
    fn default() -> Self {
        UnackedSet {
            ring: VecDeque::new(),
            base: 0,
            in_ring: 0,
            stray: AHashMap::new(),
        }
    }
}

impl<T> UnackedSet<T> {
    pub(super) fn len(&self) -> usize {
        self.in_ring + self.stray.len()
    }

    /// The ring slot of `offset`, if the ring covers it.
    fn slot(&self, offset: Offset) -> Option<usize> {
        let i = offset.checked_sub(self.base)?;
        (i < self.ring.len() as u64).then_some(i as usize)
    }

    /// Records a delivery (an offset is unacked at most once at a time).
    pub(super) fn insert(&mut self, offset: Offset, v: T) {
        debug_assert!(self.get(offset).is_none(), "offset {offset} unacked twice");
        if self.in_ring == 0 {
            self.ring.clear();
            self.base = offset;
        }
        let Some(i) = offset.checked_sub(self.base) else {
            self.stray.insert(offset, v);
            return;
        };
        if i < self.ring.len() as u64 {
            self.ring[i as usize] = Some(v);
            self.in_ring += 1;
            return;
        }
        if i > (2 * (self.in_ring + 1) + SLACK) as u64 {
            // Far beyond the ring's end: a ring reaching it would be mostly holes. Start
            // it over at this offset; what it held becomes stray.
            self.spill_ring();
            self.base = offset;
        }
        let i = (offset - self.base) as usize;
        self.ring.resize_with(i, || None);
        self.ring.push_back(Some(v));
        self.in_ring += 1;
        self.trim_front();
    }

    /// Moves every ring entry to the side map and empties the ring.
    fn spill_ring(&mut self) {
        let base = self.base;
        for (i, slot) in self.ring.drain(..).enumerate() {
            if let Some(v) = slot {
                self.stray.insert(base + i as u64, v);
            }
        }
        self.in_ring = 0;
    }

    /// Drops empty slots at the front, and moves front entries to the side map while the
    /// ring is sparser than twice its live entries plus `SLACK`.
    fn trim_front(&mut self) {
        loop {
            match self.ring.front() {
                Some(None) => {}
                Some(Some(_)) if self.ring.len() > 2 * self.in_ring + SLACK => {
                    let v = self.ring.pop_front().flatten().expect("checked");
                    self.stray.insert(self.base, v);
                    self.in_ring -= 1;
                    self.base += 1;
                    continue;
                }
                _ => return,
            }
            self.ring.pop_front();
            self.base += 1;
        }
    }

    pub(super) fn get(&self, offset: Offset) -> Option<&T> {
        if let Some(v) = self.slot(offset).and_then(|i| self.ring[i].as_ref()) {
            return Some(v);
        }
        if self.stray.is_empty() {
            return None;
        }
        self.stray.get(&offset)
    }

    pub(super) fn remove(&mut self, offset: Offset) -> Option<T> {
        if let Some(i) = self.slot(offset) {
            if let Some(v) = self.ring[i].take() {
                self.in_ring -= 1;
                if self.in_ring == 0 {
                    self.ring.clear();
                } else {
                    self.trim_front();
                }
                return Some(v);
            }
        }
        if self.stray.is_empty() {
            return None;
        }
        self.stray.remove(&offset)
    }

    /// Every entry with its offset, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Offset, &T)> {
        let base = self.base;
        self.ring
            .iter()
            .enumerate()
            .filter_map(move |(i, v)| v.as_ref().map(|v| (base + i as u64, v)))
            .chain(self.stray.iter().map(|(o, v)| (*o, v)))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.ring.iter().flatten().chain(self.stray.values())
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.ring
            .iter_mut()
            .flatten()
            .chain(self.stray.values_mut())
    }

    /// Ring slots (live or empty) and stray entries: for tests of the density bound.
    #[cfg(test)]
    fn footprint(&self) -> (usize, usize) {
        (self.ring.len(), self.stray.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Checks the set against a plain map after every step of a scripted workload.
    fn check(set: &UnackedSet<u64>, model: &BTreeMap<Offset, u64>) {
        assert_eq!(set.len(), model.len());
        let mut got: Vec<(Offset, u64)> = set.iter().map(|(o, v)| (o, *v)).collect();
        got.sort_unstable();
        let want: Vec<(Offset, u64)> = model.iter().map(|(o, v)| (*o, *v)).collect();
        assert_eq!(got, want);
        for (o, v) in model {
            assert_eq!(set.get(*o), Some(v));
        }
        let (ring, _) = set.footprint();
        assert!(
            ring <= 2 * set.len() + SLACK + 1,
            "ring of {ring} slots for {} entries",
            set.len()
        );
    }

    #[test]
    fn in_order_deliveries_and_acks_stay_in_the_ring() {
        let mut s = UnackedSet::default();
        let mut m = BTreeMap::new();
        for o in 0..10_000u64 {
            s.insert(o, o * 10);
            m.insert(o, o * 10);
            if o >= 1000 {
                let a = o - 1000;
                assert_eq!(s.remove(a), Some(a * 10));
                m.remove(&a);
            }
        }
        check(&s, &m);
        assert_eq!(s.footprint(), (1000, 0));
        assert_eq!(s.remove(5), None, "acked long ago");
        assert_eq!(s.remove(20_000), None, "never delivered");
    }

    #[test]
    fn a_held_delivery_moves_aside_instead_of_stretching_the_ring() {
        let mut s = UnackedSet::default();
        let mut m = BTreeMap::new();
        s.insert(0, 0);
        m.insert(0, 0);
        // Offset 0 is never acked while 100 000 later deliveries come and go.
        for o in 1..100_000u64 {
            s.insert(o, o);
            m.insert(o, o);
            if o > 10 {
                s.remove(o - 10);
                m.remove(&(o - 10));
            }
        }
        check(&s, &m);
        let (ring, stray) = s.footprint();
        assert!(ring <= 2 * 11 + SLACK + 1, "ring {ring}");
        assert_eq!(stray, 1);
        assert_eq!(s.remove(0), Some(0));
    }

    #[test]
    fn earlier_and_far_offsets_go_to_the_side_map() {
        let mut s = UnackedSet::default();
        let mut m = BTreeMap::new();
        for o in [100u64, 101, 102, 5, 3, 1_000_000, 1_000_001, 101_000] {
            s.insert(o, o);
            m.insert(o, o);
            check(&s, &m);
        }
        for o in [3u64, 102, 1_000_000, 5, 100, 101, 101_000, 1_000_001] {
            assert_eq!(s.remove(o), Some(o));
            m.remove(&o);
            check(&s, &m);
        }
        assert_eq!(s.footprint(), (0, 0));
        // The ring restarts wherever the next delivery is, below a former base too.
        s.insert(7, 7);
        s.insert(8, 8);
        assert_eq!(s.footprint(), (2, 0));
    }

    #[test]
    fn random_workload_matches_a_map() {
        // A small xorshift: deterministic, no dependency.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut s = UnackedSet::default();
        let mut m: BTreeMap<Offset, u64> = BTreeMap::new();
        let mut next = 0u64;
        let mut ready: Vec<Offset> = Vec::new();
        for step in 0..200_000u64 {
            match rnd() % 10 {
                // Deliver the next offset, or (sometimes) a requeued one again.
                0..=4 => {
                    let o = if !ready.is_empty() && rnd() % 4 == 0 {
                        ready.swap_remove((rnd() % ready.len() as u64) as usize)
                    } else {
                        next += 1 + u64::from(rnd() % 16 == 0) * (rnd() % 500);
                        next
                    };
                    s.insert(o, step);
                    m.insert(o, step);
                }
                // Settle the oldest, or a random one (requeued ones come back later).
                _ => {
                    let o = if rnd() % 2 == 0 {
                        m.keys().next().copied()
                    } else {
                        let n = m.len();
                        (n > 0).then(|| *m.keys().nth((rnd() % n as u64) as usize).unwrap())
                    };
                    if let Some(o) = o {
                        assert_eq!(s.remove(o), m.remove(&o));
                        if rnd() % 3 == 0 {
                            ready.push(o);
                        }
                    }
                }
            }
            if step % 997 == 0 {
                check(&s, &m);
            }
        }
        check(&s, &m);
    }
}
