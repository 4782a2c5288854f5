//! The server-side assignors of KIP-848 (`group.consumer.assignors`): `uniform` (Kafka's
//! default) and `range`. Both are pure functions of the members' subscriptions, the topic
//! metadata and the previous target assignment, so the same inputs always give the same
//! target.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions per topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The assignor names this broker serves, in `group.consumer.assignors` order (the first is
/// the default).
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// What an assignor sees of one member.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// Topic ids the member is subscribed to (resolved from names and regex) that exist.
    pub topics: BTreeSet<Uuid>,
    /// The member's previous target assignment (for stickiness).
    pub previous: Assignment,
}

/// Computes the target assignment with assignor `name` (one of [`ASSIGNORS`]).
/// `partitions` gives the partition count of every subscribed topic.
pub fn assign(
    name: &str,
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    if name == "range" {
        range(members, partitions)
    } else {
        uniform(members, partitions)
    }
}

/// Kafka's RangeAssignor: per topic, the subscribed members in member-id order each get a
/// contiguous range of `n / m` partitions, the first `n % m` one more.
fn range(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (&topic, &n) in partitions {
        let subs: Vec<&String> = members
            .iter()
            .filter(|(_, s)| s.topics.contains(&topic))
            .map(|(id, _)| id)
            .collect();
        if subs.is_empty() || n <= 0 {
            continue;
        }
        let (per, extra) = (n / subs.len() as i32, n % subs.len() as i32);
        let mut next = 0;
        for (i, m) in subs.into_iter().enumerate() {
            let count = per + i32::from((i as i32) < extra);
            if count > 0 {
                out.get_mut(m)
                    .expect("member")
                    .entry(topic)
                    .or_default()
                    .extend(next..next + count);
            }
            next += count;
        }
    }
    out
}

/// A sticky, balanced assignor in the spirit of Kafka's UniformAssignor: every partition
/// of a subscribed topic goes to one subscribed member; members keep what they had when it
/// keeps the balance; then partitions move from the most to the least loaded eligible
/// member until no move would bring two eligible members closer. With identical
/// subscriptions the counts differ by at most one.
fn uniform(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(Uuid, i32), &String> = BTreeMap::new();
    let mut count: BTreeMap<&String, usize> = members.keys().map(|m| (m, 0)).collect();
    // Fair share: what a member could get if the partitions of its topics were spread over
    // their subscribers (rounded up); a member keeps its previous partitions up to it.
    let subscribers = |t: &Uuid| members.values().filter(|s| s.topics.contains(t)).count();
    for (id, spec) in members {
        let share: f64 = spec
            .topics
            .iter()
            .filter_map(|t| partitions.get(t).map(|&n| n as f64 / subscribers(t) as f64))
            .sum();
        let quota = share.ceil() as usize;
        for (t, ps) in &spec.previous {
            let Some(&n) = partitions.get(t) else {
                continue;
            };
            if !spec.topics.contains(t) {
                continue;
            }
            for &p in ps {
                if p < n && count[id] < quota && !owner.contains_key(&(*t, p)) {
                    owner.insert((*t, p), id);
                    *count.get_mut(id).expect("member") += 1;
                }
            }
        }
    }
    // Unowned partitions go to the least loaded subscriber.
    for (&t, &n) in partitions {
        for p in 0..n.max(0) {
            if owner.contains_key(&(t, p)) {
                continue;
            }
            let best = members
                .iter()
                .filter(|(_, s)| s.topics.contains(&t))
                .map(|(id, _)| id)
                .min_by_key(|id| (count[id], *id));
            if let Some(id) = best {
                owner.insert((t, p), id);
                *count.get_mut(id).expect("member") += 1;
            }
        }
    }
    // Balance: move a partition from a member to an eligible one with at least two fewer.
    let max_moves = owner.len() * members.len().max(1);
    for _ in 0..max_moves {
        let mut moved = false;
        let keys: Vec<(Uuid, i32)> = owner.keys().rev().copied().collect();
        for key in keys {
            let from = owner[&key];
            let to = members
                .iter()
                .filter(|(id, s)| *id != from && s.topics.contains(&key.0))
                .map(|(id, _)| id)
                .min_by_key(|id| (count[id], *id));
            if let Some(to) = to {
                if count[to] + 1 < count[from] {
                    *count.get_mut(from).expect("member") -= 1;
                    *count.get_mut(to).expect("member") += 1;
                    owner.insert(key, to);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for ((t, p), id) in owner {
        out.get_mut(id)
            .expect("member")
            .entry(t)
            .or_default()
            .insert(p);
    }
    out
}
