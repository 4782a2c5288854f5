//! Publisher-confirm bookkeeping: turns the broker's `basic.ack`/`basic.nack` stream
//! (single or `multiple`, possibly out of order) into a count of settled messages, so a
//! producer knows how many of its publishes are still outstanding.

use std::collections::BTreeSet;

/// Tracks which delivery tags (1, 2, 3, ... in publish order) the broker has settled.
#[derive(Debug, Default, Clone)]
pub struct ConfirmTracker {
    /// Every tag up to and including this one is settled.
    settled_upto: u64,
    /// Tags above `settled_upto` settled one by one, out of order.
    scattered: BTreeSet<u64>,
    /// How many settlements were nacks.
    nacked: u64,
}

impl ConfirmTracker {
    /// A tracker for a channel that has published nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one `basic.ack` or `basic.nack`. Tags beyond `published` are ignored, as are
    /// repeated settlements, so a misbehaving broker cannot make the count exceed reality.
    pub fn settle(&mut self, delivery_tag: u64, multiple: bool, ack: bool, published: u64) {
        let tag = delivery_tag.min(published);
        if tag <= self.settled_upto {
            return;
        }
        if multiple {
            if !ack {
                let scattered_below = self.scattered.range(..=tag).count() as u64;
                self.nacked += tag - self.settled_upto - scattered_below;
            }
            self.scattered = self.scattered.split_off(&(tag + 1));
            self.settled_upto = tag;
        } else if delivery_tag == tag {
            if !self.scattered.insert(tag) {
                return;
            }
            if !ack {
                self.nacked += 1;
            }
        }
        while self.scattered.first() == Some(&(self.settled_upto + 1)) {
            self.scattered.pop_first();
            self.settled_upto += 1;
        }
    }

    /// Number of messages settled (acked or nacked).
    pub fn settled(&self) -> u64 {
        self.settled_upto + self.scattered.len() as u64
    }

    /// Number of messages the broker nacked.
    pub fn nacked(&self) -> u64 {
        self.nacked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies (tag, multiple, ack) settlements and returns (settled, nacked).
    fn check(published: u64, events: &[(u64, bool, bool)], expected: (u64, u64)) {
        let mut t = ConfirmTracker::new();
        for &(tag, multiple, ack) in events {
            t.settle(tag, multiple, ack, published);
        }
        assert_eq!((t.settled(), t.nacked()), expected, "{events:?}");
    }

    #[test]
    fn multiple_acks() {
        check(10, &[(3, true, true), (10, true, true)], (10, 0));
        check(10, &[(3, true, true), (2, true, true)], (3, 0));
    }

    #[test]
    fn single_acks_out_of_order() {
        check(
            5,
            &[(2, false, true), (1, false, true), (5, false, true)],
            (3, 0),
        );
        check(5, &[(2, false, true), (2, false, true)], (1, 0));
        check(
            5,
            &[(2, false, true), (4, false, true), (3, true, true)],
            (4, 0),
        );
    }

    #[test]
    fn nacks_are_counted_once() {
        check(5, &[(2, false, false), (4, true, false)], (4, 4));
        check(5, &[(2, false, true), (4, true, false)], (4, 3));
        check(5, &[(4, true, false), (4, false, false)], (4, 4));
    }

    #[test]
    fn tags_beyond_published_are_clamped() {
        check(3, &[(100, true, true)], (3, 0));
        check(3, &[(100, false, true)], (0, 0));
        check(0, &[(1, true, true)], (0, 0));
    }
}
