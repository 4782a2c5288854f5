//! The liveness half of the coordinator: heartbeats, members leaving, and the timers
//! (session timeouts, rebalance and join deadlines, the initial delay) that `tick` fires.

use super::*;

impl Coordinator {
    // ---------------------------------------------------------------- Heartbeat

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        now: Millis,
        version: i16,
        r: &HeartbeatRequest,
    ) -> HeartbeatResponse {
        let _ = version;
        let e = self.heartbeat_error(now, r);
        HeartbeatResponse::default().with_error_code(e.map_or(0, code))
    }

    pub(super) fn heartbeat_error(
        &mut self,
        now: Millis,
        r: &HeartbeatRequest,
    ) -> Option<ResponseError> {
        if r.group_id.0.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        let member_id = r.member_id.as_str();
        let Some(group) = self.groups.get_mut(r.group_id.0.as_str()) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if group.state == GroupState::Dead {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(e) = validate_member(
            group,
            member_id,
            r.group_instance_id.as_deref(),
            Some(r.generation_id),
        ) {
            return Some(e);
        }
        let state = group.state;
        group
            .members
            .get_mut(member_id)
            .expect("validated")
            .last_heartbeat = now;
        match state {
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    // ---------------------------------------------------------------- LeaveGroup

    /// LeaveGroup (v0–2 one member, v3+ a batch).
    pub fn leave_group(
        &mut self,
        now: Millis,
        version: i16,
        r: &LeaveGroupRequest,
    ) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            r.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_owned(),
                        m.group_instance_id.as_deref().map(str::to_owned),
                    )
                })
                .collect()
        } else {
            vec![(r.member_id.as_str().to_owned(), None)]
        };
        let mut top = None;
        let mut results: Vec<(String, Option<String>, i16)> = Vec::new();
        if r.group_id.0.is_empty() {
            top = Some(ResponseError::InvalidGroupId);
        } else if let Some(group) = self.groups.get_mut(r.group_id.0.as_str()) {
            if group.state == GroupState::Dead {
                top = Some(ResponseError::CoordinatorNotAvailable);
            } else {
                let mut changed = false;
                for (member_id, instance) in &leaving {
                    // With only an instance id (administrative removal), the member is
                    // found through it.
                    // Ok(None): a pending member, nothing more to remove.
                    let target: Result<Option<String>, ResponseError> = if member_id.is_empty() {
                        instance
                            .as_ref()
                            .and_then(|i| group.static_members.get(i).cloned())
                            .map(Some)
                            .ok_or(ResponseError::UnknownMemberId)
                    } else if group.pending.remove(member_id.as_str()).is_some() {
                        changed = true;
                        Ok(None)
                    } else {
                        match validate_member(group, member_id, instance.as_deref(), None) {
                            Some(e) => Err(e),
                            None => Ok(Some(member_id.to_string())),
                        }
                    };
                    let e = match target {
                        Ok(Some(id)) => {
                            let replies = remove_member_answering(group, &id);
                            self.replies.extend(replies);
                            changed = true;
                            None
                        }
                        Ok(None) => None,
                        Err(e) => Some(e),
                    };
                    results.push((member_id.clone(), instance.clone(), e.map_or(0, code)));
                }
                if changed {
                    self.after_member_removed(now, r.group_id.0.as_str());
                }
            }
        } else {
            top = Some(ResponseError::UnknownMemberId);
        }
        let mut resp = LeaveGroupResponse::default();
        if version >= 3 {
            resp.error_code = top.map_or(0, code);
            if top.is_none() {
                resp.members = results
                    .into_iter()
                    .map(|(m, i, e)| {
                        MemberResponse::default()
                            .with_member_id(sb(&m))
                            .with_group_instance_id(i.as_deref().map(sb))
                            .with_error_code(e)
                    })
                    .collect();
            }
        } else {
            resp.error_code = top
                .map(code)
                .or_else(|| results.first().map(|r| r.2))
                .unwrap_or(0);
        }
        resp
    }

    /// Kafka's `removeMemberAndUpdateGroup` after members left or expired.
    pub(super) fn after_member_removed(&mut self, now: Millis, group_id: &str) {
        let Some(group) = self.groups.get(group_id) else {
            return;
        };
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                // Kafka's tryCompleteElseWatch: with nobody left to wait for (the last
                // member left), the rebalance completes at once and the group is Empty.
                self.maybe_prepare_rebalance(now, group_id);
                self.try_complete_join(now, group_id);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, group_id),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---------------------------------------------------------------- time

    /// The earliest time at which [`Coordinator::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        let mut at = |t: Millis| next = Some(next.map_or(t, |n| n.min(t)));
        for g in self.groups.values() {
            g.join_deadline.into_iter().for_each(&mut at);
            g.idle_since
                .map(|t| t + EMPTY_GROUP_RETENTION_MS)
                .into_iter()
                .for_each(&mut at);
            g.sync_deadline.into_iter().for_each(&mut at);
            g.pending.values().copied().for_each(&mut at);
            for m in g.members.values() {
                if m.awaiting_join.is_none() && m.awaiting_sync.is_none() {
                    at(m.last_heartbeat + m.session_timeout_ms);
                }
            }
        }
        next
    }

    /// Applies everything due at `now`: expired sessions, rebalance and sync timeouts, the
    /// end of an initial rebalance delay.
    pub fn tick(&mut self, now: Millis) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            self.tick_group(now, &id);
        }
        self.groups.retain(|_, g| {
            if !g.is_idle() {
                g.idle_since = None;
                return true;
            }
            let since = *g.idle_since.get_or_insert(now);
            now < since + EMPTY_GROUP_RETENTION_MS
        });
    }

    pub(super) fn tick_group(&mut self, now: Millis, group_id: &str) {
        let delay = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("group exists");
        // KIP-394 pending members that never came back.
        let before = group.pending.len();
        group.pending.retain(|_, deadline| *deadline > now);
        let mut changed = group.pending.len() != before;
        // Session timeouts of members not waiting on a rebalance.
        let expired: Vec<String> = group
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && m.last_heartbeat + m.session_timeout_ms <= now
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            let replies = remove_member_answering(group, &id);
            self.replies.extend(replies);
            changed = true;
        }
        if changed {
            self.after_member_removed(now, group_id);
        }
        let group = self.groups.get_mut(group_id).expect("group exists");
        // Members that did not SyncGroup in time are removed (Kafka's DelayedSync).
        if group.sync_deadline.is_some_and(|d| d <= now) {
            group.sync_deadline = None;
            let late: Vec<String> = std::mem::take(&mut group.pending_sync)
                .into_iter()
                .filter(|m| group.members.contains_key(m))
                .collect();
            if !late.is_empty() {
                for id in late {
                    let replies = remove_member_answering(group, &id);
                    self.replies.extend(replies);
                }
                self.after_member_removed(now, group_id);
            }
        }
        let group = self.groups.get_mut(group_id).expect("group exists");
        if group.state == GroupState::PreparingRebalance
            && group.join_deadline.is_some_and(|d| d <= now)
        {
            match &mut group.initial_delay {
                Some(d) if d.new_member_added && d.remaining_ms > 0 => {
                    // Kafka's InitialDelayedJoin: more members came, wait a little more.
                    let step = delay.min(d.remaining_ms);
                    d.remaining_ms -= step;
                    d.new_member_added = false;
                    group.join_deadline = Some(now + step);
                }
                _ => self.complete_join(now, group_id),
            }
        }
    }
}
