//! A set of byte ranges: the parts of a file written since its last sync.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`, kept merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges {
    /// start → end
    map: BTreeMap<u64, u64>,
}

impl Ranges {
    /// Adds `[start, end)`, merging it with every range it touches or overlaps.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Ranges starting inside [start, end].
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Drops everything at or past `len` (the file was cut to `len` bytes).
    pub fn clip(&mut self, len: u64) {
        let past: Vec<u64> = self.map.range(len..).map(|(&s, _)| s).collect();
        for s in past {
            self.map.remove(&s);
        }
        if let Some((&s, e)) = self.map.range_mut(..len).next_back() {
            if *e > len {
                *e = len;
            }
            debug_assert!(s < *e);
        }
    }

    /// Removes every range.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Whether no byte is in the set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The ranges in order, as `(start, end)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Total number of bytes covered.
    pub fn bytes(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;

    fn check(ops: &[(u64, u64)], clip: Option<u64>, want: &[(u64, u64)]) {
        let mut r = Ranges::default();
        for &(s, e) in ops {
            r.insert(s, e);
        }
        if let Some(len) = clip {
            r.clip(len);
        }
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            want,
            "ops {ops:?} clip {clip:?}"
        );
        assert_eq!(r.bytes(), want.iter().map(|(s, e)| e - s).sum::<u64>());
    }

    #[test]
    fn inserts_merge_overlapping_and_adjacent_ranges() {
        check(&[], None, &[]);
        check(&[(5, 5)], None, &[]);
        check(&[(0, 10), (20, 30)], None, &[(0, 10), (20, 30)]);
        check(&[(0, 10), (10, 20)], None, &[(0, 20)]);
        check(&[(10, 20), (0, 10)], None, &[(0, 20)]);
        check(&[(0, 10), (5, 8)], None, &[(0, 10)]);
        check(&[(5, 8), (0, 10)], None, &[(0, 10)]);
        check(&[(0, 2), (4, 6), (8, 10), (1, 9)], None, &[(0, 10)]);
        check(
            &[(0, 2), (4, 6), (8, 10), (3, 7)],
            None,
            &[(0, 2), (3, 7), (8, 10)],
        );
        check(&[(10, 20), (5, 25)], None, &[(5, 25)]);
    }

    #[test]
    fn clip_cuts_ranges_at_the_new_length() {
        check(&[(0, 10), (20, 30)], Some(25), &[(0, 10), (20, 25)]);
        check(&[(0, 10), (20, 30)], Some(20), &[(0, 10)]);
        check(&[(0, 10), (20, 30)], Some(5), &[(0, 5)]);
        check(&[(0, 10), (20, 30)], Some(0), &[]);
        check(&[(0, 10)], Some(100), &[(0, 10)]);
    }
}
