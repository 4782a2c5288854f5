//! Regex subscriptions, resolved asynchronously as Kafka 4's coordinator does
//! (`GroupMetadataManager.maybeUpdateRegularExpressions`, `refreshRegularExpressions`,
//! `handleRegularExpressionsResult`):
//!
//! - a member's regex counts for its subscription only through the group's **resolution**
//!   of that pattern (the topic names it matched when last resolved), never by matching
//!   topics inside a heartbeat;
//! - a heartbeat that brings a pattern no other member uses, or finds the group with
//!   unresolved patterns or resolutions made against an older topic image (topics created
//!   or deleted since), **schedules** a refresh of all the group's patterns, at most one
//!   at a time and not within [`ConsumerConfig::regex_refresh_min_interval_ms`] (Kafka's
//!   `REGEX_BATCH_REFRESH_INTERVAL_MS`, 10 s) of the last one;
//! - the owner runs the scheduled refreshes after it answered the heartbeat
//!   ([`ConsumerGroups::resolve_regexes`]), so the heartbeat that subscribes to `t1` and
//!   `^x.*` is assigned `t1` and the `x…` topics come with a later heartbeat, as with
//!   Kafka; a result that changes what a pattern matches bumps the group epoch;
//! - a pattern already resolved for another member bumps the group epoch at once; the
//!   resolution of a pattern nobody subscribes to any more is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use regex::Regex;

use super::{ConsumerGroups, Group, Member, Millis, TopicImage};

/// What a pattern matched when the group last resolved it (Kafka's
/// `ResolvedRegularExpression`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub topics: BTreeSet<String>,
    /// When it was resolved.
    pub at: Millis,
    /// [`TopicImage::names_sig`] of the image it was resolved against.
    pub image: u64,
}

impl TopicImage {
    /// A signature of the set of topic names (changes when topics are created or deleted:
    /// Kafka's "metadata image with new topics").
    pub fn names_sig(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for name in self.by_name.keys() {
            name.hash(&mut h);
        }
        h.finish()
    }
}

/// The topics of `topics` a compiled pattern matches.
pub(super) fn matching(re: &Regex, topics: &TopicImage) -> BTreeSet<String> {
    topics
        .by_name
        .keys()
        .filter(|n| re.is_match(n))
        .cloned()
        .collect()
}

/// Whether `m` subscribes to topic `name`: by name, or through its pattern's resolution.
pub(super) fn member_subscribes(
    regexes: &BTreeMap<String, Resolved>,
    m: &Member,
    name: &str,
) -> bool {
    m.topics.iter().any(|t| t == name)
        || m.regex
            .as_ref()
            .is_some_and(|(p, _)| regexes.get(p).is_some_and(|r| r.topics.contains(name)))
}

impl Group {
    /// The patterns members subscribe to, compiled.
    fn patterns(&self) -> BTreeMap<String, Regex> {
        self.members
            .values()
            .filter_map(|m| m.regex.clone())
            .collect()
    }

    fn subscribers_of(&self, pattern: &str) -> usize {
        self.members
            .values()
            .filter(|m| m.regex.as_ref().is_some_and(|(p, _)| p == pattern))
            .count()
    }

    /// Drops the resolutions of patterns nobody subscribes to any more.
    pub(super) fn forget_unused_regexes(&mut self) {
        let used = self.patterns();
        self.regexes.retain(|p, _| used.contains_key(p));
        if used.is_empty() {
            self.regex_refresh = false;
        }
    }

    /// Kafka's `maybeUpdateRegularExpressions`, after a heartbeat changed (or not) a
    /// member's pattern from `old` to `new`: schedules a refresh when needed; returns
    /// whether the group epoch must be bumped (a pattern already resolved for others).
    pub(super) fn maybe_update_regexes(
        &mut self,
        old: Option<&str>,
        new: Option<&str>,
        now: Millis,
        image_sig: u64,
        min_interval_ms: u64,
    ) -> bool {
        let mut bump = false;
        let mut require = false;
        if old != new {
            if let Some(o) = old {
                if self.subscribers_of(o) == 0 {
                    self.regexes.remove(o);
                }
            }
            if let Some(n) = new {
                if self.subscribers_of(n) == 1 {
                    // A new pattern for the group: resolve it.
                    require = true;
                } else {
                    bump = self.regexes.contains_key(n);
                }
            }
        }
        let patterns = self.patterns();
        if patterns.is_empty() {
            self.regex_refresh = false;
            return bump;
        }
        if self.regex_refresh {
            return bump; // one refresh at a time
        }
        if let Some(last) = self.regexes.values().map(|r| r.at).max() {
            if now <= last + min_interval_ms {
                return bump;
            }
        }
        require |= patterns.keys().any(|p| !self.regexes.contains_key(p));
        require |= self.regexes.values().any(|r| r.image != image_sig);
        self.regex_refresh = require;
        bump
    }

    /// Resolves every pattern of the group against `topics` (Kafka's
    /// `refreshRegularExpressions` + `handleRegularExpressionsResult`); true when a
    /// pattern is newly resolved or matches other topics than before.
    fn refresh_regexes(&mut self, now: Millis, topics: &TopicImage) -> bool {
        self.regex_refresh = false;
        let sig = topics.names_sig();
        let mut changed = false;
        let mut fresh = BTreeMap::new();
        for (p, re) in self.patterns() {
            let matched = matching(&re, topics);
            changed |= self.regexes.get(&p).map(|r| &r.topics) != Some(&matched);
            fresh.insert(
                p,
                Resolved {
                    topics: matched,
                    at: now,
                    image: sig,
                },
            );
        }
        self.regexes = fresh;
        changed
    }
}

impl ConsumerGroups {
    /// Whether some group has a regex refresh scheduled.
    pub fn regex_refresh_pending(&self) -> bool {
        self.groups.values().any(|g| g.regex_refresh)
    }

    /// Runs the regex refreshes heartbeats scheduled (call it after answering them: the
    /// result reaches members on their next heartbeat). A group whose patterns now match
    /// other topics gets a new group epoch and target assignment. Returns those groups.
    pub fn resolve_regexes(&mut self, now: Millis, topics: &TopicImage) -> Vec<String> {
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.regex_refresh)
            .map(|(id, _)| id.clone())
            .collect();
        let mut bumped = Vec::new();
        for id in due {
            let config = self.config_for(&id);
            let g = self.groups.get_mut(&id).expect("listed");
            let changed = g.refresh_regexes(now, topics);
            let before = g.epoch;
            g.refresh_target(&config, topics, changed);
            if g.epoch != before {
                bumped.push(id);
            }
        }
        bumped
    }

    /// The topics a group's resolution of `pattern` holds (None: not resolved), for tests
    /// and tools.
    pub fn resolved(&self, group: &str, pattern: &str) -> Option<BTreeSet<String>> {
        let g = self.groups.get(group)?;
        g.regexes.get(pattern).map(|r| r.topics.clone())
    }
}
