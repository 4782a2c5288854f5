//! Member reconciliation (Kafka's `CurrentAssignmentBuilder`): moves one member towards its
//! target assignment without ever letting two members hold a partition at once.
//!
//! - A member behind the assignment epoch first gives up what its target no longer has:
//!   those partitions move to `revoking` (still held: nobody else gets them) and the member
//!   stays at its epoch in UNREVOKED_PARTITIONS, with its rebalance timeout running.
//! - Once its heartbeat's owned partitions no longer list any of them, they are released
//!   and the member moves to the assignment epoch.
//! - At the assignment epoch it takes the target partitions nobody holds; those still held
//!   by others leave it in UNRELEASED_PARTITIONS until they are released.

use super::{Assignment, Group, MemberState, Millis, LEAVE_STATIC_EPOCH};

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let left: std::collections::BTreeSet<i32> = match b.get(t) {
            Some(bs) => ps.difference(bs).copied().collect(),
            None => ps.clone(),
        };
        if !left.is_empty() {
            out.insert(*t, left);
        }
    }
    out
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|bs| !ps.is_disjoint(bs)))
}

/// Reconciles member `id` of `g` given the partitions its heartbeat says it owns (`None`:
/// not stated).
pub(super) fn reconcile(g: &mut Group, id: &str, owned: Option<&Assignment>, now: Millis) {
    let target_epoch = g.assignment_epoch;
    let target = g.target.get(id).cloned().unwrap_or_default();
    let Some(m) = g.members.get_mut(id) else {
        return;
    };
    if m.epoch == LEAVE_STATIC_EPOCH {
        return;
    }
    // Anything the member holds that its (latest) target does not have must be revoked.
    let drop = minus(&m.assigned, &target);
    if !drop.is_empty() && m.epoch < target_epoch {
        m.assigned = minus(&m.assigned, &drop);
        for (t, ps) in drop {
            m.revoking.entry(t).or_default().extend(ps);
        }
        m.send_assignment = true;
    }
    if !m.revoking.is_empty() {
        let released = owned.is_some_and(|o| !intersects(o, &m.revoking));
        if !released {
            if m.state != MemberState::UnrevokedPartitions {
                m.state = MemberState::UnrevokedPartitions;
                m.revoke_deadline = Some(now + m.rebalance_timeout_ms);
            }
            return;
        }
        let revoked = std::mem::take(&mut m.revoking);
        for (t, ps) in revoked {
            for p in ps {
                if g.owners.get(&(t, p)).is_some_and(|o| o == id) {
                    g.owners.remove(&(t, p));
                }
            }
        }
        m.revoke_deadline = None;
    }
    if m.epoch != target_epoch {
        m.previous_epoch = m.epoch;
        m.epoch = target_epoch;
        m.send_assignment = true;
    }
    // Take what is free of the target.
    let mut missing = false;
    for (t, ps) in &target {
        for &p in ps {
            if m.assigned.get(t).is_some_and(|a| a.contains(&p)) {
                continue;
            }
            match g.owners.get(&(*t, p)) {
                Some(o) if o != id => missing = true,
                _ => {
                    g.owners.insert((*t, p), id.to_owned());
                    m.assigned.entry(*t).or_default().insert(p);
                    m.send_assignment = true;
                }
            }
        }
    }
    m.state = if missing {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
}
