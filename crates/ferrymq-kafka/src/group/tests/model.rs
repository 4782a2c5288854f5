//! A seeded random model of many clients: every request answered, invariants kept.

use super::*;

/// Randomized clients against the coordinator: any interleaving of joins, syncs,
/// heartbeats, leaves, commits, fetches, admin calls, bogus ids and generations and the
/// passing of time must never panic, every response must encode at its version, the group
/// invariants must hold after every step, and once the clients stop and time passes every
/// deferred request must have been answered exactly once.
#[test]
fn random_clients_keep_invariants_and_get_every_answer() {
    #[derive(Clone, Default)]
    struct Client {
        member: String,
        instance: Option<String>,
        generation: i32,
        leader_of: Vec<String>,
        waiting: Option<ReqId>,
    }
    // How often interesting states were reached, so the test cannot pass by doing nothing.
    let mut stable_steps = 0usize;
    let mut deferred_answers = 0usize;
    for seed in 0..300u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n.max(1)
        };
        let mut h = H::new();
        let groups = ["g", "h"];
        let mut clients: Vec<(usize, Client)> = (0..5)
            .map(|k| {
                let c = Client {
                    instance: (k % 3 == 0).then(|| format!("i{k}")),
                    ..Client::default()
                };
                (k % 2, c)
            })
            .collect();
        let mut answered: BTreeSet<ReqId> = BTreeSet::new();
        let mut last_gen: HashMap<String, i32> = HashMap::new();
        for _step in 0..400 {
            // Deliver replies.
            for r in std::mem::take(&mut h.replies) {
                let (id, join) = match &r {
                    Reply::Join(id, j) => (*id, Some(j.clone())),
                    Reply::Sync(id, _) => (*id, None),
                };
                assert!(
                    answered.insert(id),
                    "seed {seed}: request {id} answered twice"
                );
                deferred_answers += 1;
                for (_, c) in clients.iter_mut() {
                    if c.waiting == Some(id) {
                        c.waiting = None;
                        if let Some(j) = &join {
                            if j.error_code == 0 {
                                c.member = j.member_id.to_string();
                                c.generation = j.generation_id;
                                c.leader_of =
                                    j.members.iter().map(|m| m.member_id.to_string()).collect();
                            } else if j.error_code == E::UnknownMemberId.code() {
                                c.member.clear();
                            }
                        }
                    }
                }
            }
            let k = next(clients.len() as u64 + 2) as usize;
            if k >= clients.len() {
                h.advance(next(4000));
            } else {
                let (g, c) = &mut clients[k];
                let group = groups[*g];
                if c.waiting.is_some() && next(4) != 0 {
                    continue;
                }
                match next(9) {
                    0 | 1 => {
                        let version = next(10) as i16;
                        let member = if next(10) == 0 {
                            "bogus".to_string()
                        } else {
                            c.member.clone()
                        };
                        let out = h.join_with(JoinArgs {
                            group,
                            member: &member,
                            instance: if version >= 5 {
                                c.instance.as_deref()
                            } else {
                                None
                            },
                            protocols: if next(5) == 0 {
                                vec![("roundrobin", b"x"), ("range", b"y")]
                            } else {
                                vec![("range", b"m")]
                            },
                            version,
                            session: SESSION,
                        });
                        match out {
                            Out::Now(j) => {
                                if j.error_code == E::MemberIdRequired.code() || j.error_code == 0 {
                                    c.member = j.member_id.to_string();
                                    c.generation = j.generation_id;
                                } else if j.error_code == E::UnknownMemberId.code() {
                                    c.member.clear();
                                }
                            }
                            Out::Later(id) => c.waiting = Some(id),
                        }
                    }
                    2 => {
                        let assignments: Vec<(String, Vec<u8>)> =
                            c.leader_of.iter().map(|m| (m.clone(), vec![1])).collect();
                        let a: Vec<(&str, &[u8])> = assignments
                            .iter()
                            .map(|(m, b)| (m.as_str(), b.as_slice()))
                            .collect();
                        let gen = if next(8) == 0 {
                            c.generation + 1
                        } else {
                            c.generation
                        };
                        let member = c.member.clone();
                        if let Out::Later(id) = h.sync(group, &member, gen, &a) {
                            c.waiting = Some(id);
                        }
                    }
                    3 | 4 => {
                        let (member, gen, inst) =
                            (c.member.clone(), c.generation, c.instance.clone());
                        h.heartbeat_i(group, &member, gen, inst.as_deref());
                    }
                    5 => {
                        let member = c.member.clone();
                        h.leave(next(6) as i16, group, &[&member]);
                    }
                    6 => {
                        let (member, gen) = (c.member.clone(), c.generation);
                        let gen = if next(4) == 0 { -1 } else { gen };
                        h.commit(group, &member, gen, &[(next(7) as i32, next(100) as i64)]);
                    }
                    7 => {
                        let v = 1 + next(8) as i16;
                        h.fetch(v, group, if next(2) == 0 { None } else { Some(&[0, 1]) });
                    }
                    _ => {
                        let v = next(6) as i16;
                        let r = h.c.list_groups(v, &ListGroupsRequest::default());
                        enc(v, &r);
                        let v = next(7) as i16;
                        let r = h.c.describe_groups(
                            v,
                            &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
                        );
                        enc(v, &r);
                        if next(10) == 0 {
                            let (r, _) = h.c.delete_groups(
                                2,
                                &DeleteGroupsRequest::default().with_groups_names(vec![gid(group)]),
                            );
                            enc(2, &r);
                            if r.results[0].error_code == 0 {
                                last_gen.remove(group);
                            }
                        }
                    }
                }
            }
            // Invariants of every group.
            for (id, g) in &h.c.groups {
                let prev = last_gen.insert(id.clone(), g.generation).unwrap_or(0);
                assert!(
                    g.generation >= prev,
                    "seed {seed}: generation of {id} went back from {prev} to {}",
                    g.generation
                );
                if g.state == GroupState::Stable {
                    stable_steps += 1;
                }
                match g.state {
                    GroupState::Stable | GroupState::CompletingRebalance => {
                        let leader = g.leader.as_ref().expect("a leader");
                        assert!(
                            g.members.contains_key(leader),
                            "seed {seed}: leader not a member"
                        );
                        assert!(g.protocol.is_some(), "seed {seed}: no protocol");
                    }
                    GroupState::Empty => {
                        assert!(
                            g.members.is_empty(),
                            "seed {seed}: Empty group {id} has members"
                        )
                    }
                    GroupState::PreparingRebalance => {
                        assert!(
                            g.join_deadline.is_some(),
                            "seed {seed}: rebalance without deadline"
                        )
                    }
                    GroupState::Dead => {}
                }
                for (inst, m) in &g.static_members {
                    assert_eq!(
                        g.members.get(m).and_then(|m| m.instance_id.as_deref()),
                        Some(inst.as_str()),
                        "seed {seed}: static mapping of {inst} is stale"
                    );
                }
                if g.state != GroupState::CompletingRebalance {
                    assert!(
                        g.members.values().all(|m| m.awaiting_sync.is_none()),
                        "seed {seed}: a sync waits outside CompletingRebalance"
                    );
                }
                if g.state != GroupState::PreparingRebalance {
                    assert!(
                        g.members.values().all(|m| m.awaiting_join.is_none()),
                        "seed {seed}: a join waits outside PreparingRebalance"
                    );
                }
            }
        }
        // Quiet: time passes, nobody talks; every deferred request gets its answer.
        for _ in 0..20 {
            h.advance(10_000);
        }
        for r in std::mem::take(&mut h.replies) {
            let id = match r {
                Reply::Join(id, _) | Reply::Sync(id, _) => id,
            };
            assert!(
                answered.insert(id),
                "seed {seed}: request {id} answered twice"
            );
        }
        for (_, c) in &clients {
            if let Some(id) = c.waiting {
                assert!(
                    answered.contains(&id),
                    "seed {seed}: request {id} never answered"
                );
            }
        }
        for g in h.c.groups.values() {
            assert!(
                g.members.is_empty(),
                "seed {seed}: silent members never expired"
            );
        }
    }
    assert!(
        stable_steps > 1000,
        "groups rarely became Stable: {stable_steps}"
    );
    assert!(
        deferred_answers > 1000,
        "few deferred answers: {deferred_answers}"
    );
}
