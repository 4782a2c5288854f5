use super::*;
use bytes::Bytes;

fn msg(body: &'static str) -> Arc<Message> {
    Arc::new(Message {
        exchange: Bytes::new(),
        routing_key: Bytes::new(),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(body.as_bytes()),
        persistent: false,
        priority: None,
        headers: None,
        ttl_ms: None,
    })
}

fn bodies(ds: &[Delivery]) -> Vec<(u64, &[u8], bool)> {
    ds.iter()
        .map(|d| (d.consumer.0, &d.entry.msg.body[..], d.entry.redelivered()))
        .collect()
}

#[test]
fn prefetch_and_round_robin() {
    let mut q = QueueState::new();
    for b in ["a", "b", "c", "d", "e"] {
        q.publish(msg(b));
    }
    q.add_consumer(ConsumerId(1), 2, false, false, 0).unwrap();
    q.add_consumer(ConsumerId(2), 2, false, false, 0).unwrap();
    let mut out = vec![];
    q.dispatch(|_| true, &mut out);
    assert_eq!(
        bodies(&out),
        vec![
            (1, &b"a"[..], false),
            (2, b"b", false),
            (1, b"c", false),
            (2, b"d", false)
        ]
    );
    assert_eq!(q.message_count(), 1);
    out.clear();
    q.dispatch(|_| true, &mut out);
    assert!(out.is_empty(), "windows are full");
    q.ack(&[0]);
    q.dispatch(|_| true, &mut out);
    assert_eq!(bodies(&out), vec![(1, &b"e"[..], false)]);
}

#[test]
fn requeue_keeps_position() {
    let mut q = QueueState::new();
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    let (a, _) = q.get(false).unwrap();
    let (b, left) = q.get(false).unwrap();
    assert_eq!(left, 1);
    q.reject(&[b.offset], true);
    q.reject(&[a.offset], true);
    let order: Vec<_> = std::iter::from_fn(|| q.get(true))
        .map(|(e, _)| (e.msg.body.clone(), e.redelivered()))
        .collect();
    assert_eq!(
        order,
        vec![
            (Bytes::from("a"), true),
            (Bytes::from("b"), true),
            (Bytes::from("c"), false)
        ]
    );
}

#[test]
fn credit_callback_and_no_ack() {
    let mut q = QueueState::new();
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    q.add_consumer(ConsumerId(1), 0, true, false, 0).unwrap();
    let mut budget = 2;
    let mut out = vec![];
    q.dispatch(
        |_| {
            budget -= 1;
            budget >= 0
        },
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|d| !d.needs_ack));
    assert_eq!(q.unacked_count(), 0);
    assert_eq!(q.purge(), vec![2]);
    assert_eq!(q.ready_bytes(), 0);
}

/// Cost of `msg("x")`: one body byte, two property bytes.
const X: usize = 3 + ENTRY_OVERHEAD;

#[test]
fn paging_keeps_order_and_counts() {
    let mut q = QueueState::new();
    q.set_head_limit(X * 40);
    let n = 100;
    for _ in 0..n {
        q.publish_stored(msg("x"));
    }
    assert_eq!(q.message_count(), n);
    assert_eq!(q.in_memory_count(), 40);
    assert_eq!(q.head_cost(), X * 40);
    assert_eq!(q.page_in_request(), None, "head is full");
    for _ in 0..31 {
        q.get(true).unwrap();
    }
    let want = q.page_in_request().expect("head ran low");
    // At least MIN_PAGE_IN bytes' worth, at most what is paged.
    assert_eq!(want, (40..100).collect::<Vec<_>>());
    // Messages the store did not return are dropped; the rest are taken in order.
    let lost = q.page_in(&want, want[1..].iter().map(|&o| (o, msg("x"))).collect());
    assert_eq!(lost, 1);
    assert_eq!(q.message_count(), q.in_memory_count());
    let mut last = None;
    while let Some((e, _)) = q.get(true) {
        assert!(last < Some(e.offset), "offset order");
        last = Some(e.offset);
    }
    assert_eq!(last, Some(n as u64 - 1));
    assert_eq!((q.head_cost(), q.ready_bytes()), (0, 0));
}

#[test]
fn page_out_moves_the_tail_and_keeps_order() {
    let mut q = QueueState::new();
    for i in 0..10 {
        q.publish_until(msg("x"), if i == 8 { 50 } else { 0 });
    }
    // A store that refuses: nothing moves.
    assert_eq!(q.page_out(X * 4, |_| false), 0);
    assert_eq!(q.in_memory_count(), 10);
    let mut spilled = Vec::new();
    let moved = q.page_out(X * 4, |m| {
        spilled.extend(m.iter().map(|(o, _)| *o));
        true
    });
    assert_eq!(moved, 6);
    assert_eq!(spilled, vec![4, 5, 6, 7, 8, 9], "the tail, in offset order");
    assert_eq!((q.in_memory_count(), q.paged_count()), (4, 6));
    assert_eq!(q.head_cost(), X * 4);
    assert_eq!(q.ready_bytes(), 30, "bytes follow the messages");
    // New messages go behind the paged ones.
    assert!(!q.head_has_room(&msg("x")));
    // A paged message with a TTL still expires without being read.
    let mut out = vec![];
    q.expire(50, &mut out);
    assert!(matches!(out[..], [Removed::Paged(8)]));
    let mut got = vec![];
    loop {
        if let Some(want) = q.page_in_request() {
            let back = want.iter().map(|&o| (o, msg("x"))).collect();
            assert_eq!(q.page_in(&want, back), 0);
        }
        let Some((e, _)) = q.get(true) else { break };
        got.push(e.offset);
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5, 6, 7, 9]);
}

#[test]
fn priority_levels_page_and_keep_priority_order() {
    let mut q = QueueState::new();
    q.set_max_priority(3);
    q.set_head_limit(X * 3);
    // Low-priority backlog fills the head; a later high-priority message is paged.
    for _ in 0..3 {
        q.publish_stored(prio_msg("l", 0));
    }
    let hi = q.publish_stored(prio_msg("h", 3));
    let lo = q.publish_stored(prio_msg("l", 0));
    assert_eq!(q.paged_count(), 2);
    // The next message is the paged high one: nothing is handed out until it is read.
    assert!(q.get(true).is_none());
    assert_eq!(q.page_in_request(), Some(vec![hi]));
    assert_eq!(q.page_in(&[hi], vec![(hi, prio_msg("h", 3))]), 0);
    assert_eq!(&q.get(true).unwrap().0.msg.body[..], b"h");
    for _ in 0..3 {
        assert_eq!(&q.get(true).unwrap().0.msg.body[..], b"l");
    }
    assert_eq!(q.page_in_request(), Some(vec![lo]));
    // Page-out takes the lowest level first.
    let mut q2 = QueueState::new();
    q2.set_max_priority(3);
    q2.publish(prio_msg("l", 0));
    q2.publish(prio_msg("h", 3));
    let mut spilled = vec![];
    q2.page_out(X, |m| {
        spilled.extend(m.iter().map(|(o, _)| *o));
        true
    });
    assert_eq!(spilled, vec![0]);
}

#[test]
fn restore_marks_recovered_redelivered() {
    let mut q = QueueState::new();
    q.restore(10, vec![(3, msg("a"))], vec![7, 9], &[], 2);
    assert_eq!(q.message_count(), 3);
    let (e, _) = q.get(true).unwrap();
    assert!(e.redelivered());
    q.page_in(&[7, 9], vec![(7, msg("b")), (9, msg("c"))]);
    assert!(q.get(true).unwrap().0.redelivered());
    assert_eq!(q.publish(msg("new")), 10);
    q.get(true).unwrap();
    assert!(!q.get(true).unwrap().0.redelivered());
}

#[test]
fn consumer_priorities_and_single_active() {
    let mut q = QueueState::new();
    for b in ["a", "b", "c", "d", "e"] {
        q.publish(msg(b));
    }
    q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
    q.add_consumer(ConsumerId(2), 2, false, false, 10).unwrap();
    q.add_consumer(ConsumerId(3), 1, false, false, 10).unwrap();
    let mut out = vec![];
    q.dispatch(|_| true, &mut out);
    // The priority-10 pair first (round-robin while they have room), then priority 0.
    let who: Vec<u64> = out.iter().map(|d| d.consumer.0).collect();
    assert_eq!(who, vec![2, 3, 2, 1, 1]);

    let mut q = QueueState::new();
    q.set_single_active(true);
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
    q.add_consumer(ConsumerId(2), 0, false, false, 99).unwrap();
    let mut out = vec![];
    q.dispatch(|_| true, &mut out);
    assert!(
        out.iter().all(|d| d.consumer == ConsumerId(1)),
        "only the first registered"
    );
    q.remove_consumer(ConsumerId(1));
    q.publish(msg("d"));
    out.clear();
    q.dispatch(|_| true, &mut out);
    assert_eq!(
        out.iter().map(|d| d.consumer.0).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn exclusive_consumer() {
    let mut q = QueueState::new();
    q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
    assert!(q.add_consumer(ConsumerId(2), 0, false, true, 0).is_err());
    q.remove_consumer(ConsumerId(1));
    q.add_consumer(ConsumerId(2), 0, false, true, 0).unwrap();
    assert!(q.add_consumer(ConsumerId(3), 0, false, false, 0).is_err());
}

fn prio_msg(body: &'static str, p: u8) -> Arc<Message> {
    let mut m = (*msg(body)).clone();
    m.priority = Some(p);
    Arc::new(m)
}

fn drain(q: &mut QueueState) -> Vec<Bytes> {
    std::iter::from_fn(|| q.get(true))
        .map(|(e, _)| e.msg.body.clone())
        .collect()
}

#[test]
fn expiry_removes_messages_anywhere_in_the_queue() {
    let mut q = QueueState::new();
    q.publish_until(msg("a"), 0);
    q.publish_until(msg("b"), 100);
    q.publish_until(msg("c"), 0);
    q.publish_until(msg("d"), 50);
    assert_eq!(q.next_timer(), Some(50));
    let mut out = vec![];
    q.expire(49, &mut out);
    assert!(out.is_empty());
    q.expire(100, &mut out);
    let gone: Vec<u64> = out.iter().map(Removed::offset).collect();
    assert_eq!(gone, vec![3, 1]);
    assert_eq!(q.message_count(), 2);
    assert_eq!(
        q.ready_bytes(),
        6,
        "two 1-byte bodies with 2-byte property lists"
    );
    assert_eq!(drain(&mut q), vec![Bytes::from("a"), Bytes::from("c")]);
    assert_eq!(q.next_timer(), None);
}

#[test]
fn delivered_messages_expire_only_once_back() {
    let mut q = QueueState::new();
    q.publish_until(msg("a"), 10);
    let (e, _) = q.get(false).unwrap();
    let mut out = vec![];
    q.expire(20, &mut out);
    assert!(out.is_empty(), "unacked messages do not expire");
    q.reject(&[e.offset], true);
    q.expire(20, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(q.message_count(), 0);
}

#[test]
fn paged_messages_expire_without_being_read() {
    let mut q = QueueState::new();
    q.set_head_limit(X * 5);
    for _ in 0..5 {
        q.publish_stored(msg("x"));
    }
    let o = q.publish_stored_until(msg("yy"), 5);
    q.publish_stored(msg("z"));
    let mut out = vec![];
    q.expire(5, &mut out);
    assert!(matches!(out[..], [Removed::Paged(p)] if p == o));
    assert_eq!(q.message_count(), 6);
    assert_eq!(q.ready_bytes(), 6 * 3);
}

#[test]
fn priority_levels_with_requeue() {
    let mut q = QueueState::new();
    q.set_max_priority(5);
    q.publish(prio_msg("low", 0));
    q.publish(prio_msg("hi", 5));
    q.publish(prio_msg("over", 200)); // above max: counts as 5
    q.publish(prio_msg("mid", 3));
    q.publish(msg("none"));
    let (hi, _) = q.get(false).unwrap();
    assert_eq!(&hi.msg.body[..], b"hi");
    q.reject(&[hi.offset], true);
    assert_eq!(
        drain(&mut q),
        ["hi", "over", "mid", "low", "none"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect::<Vec<_>>()
    );
    // Expiry inside a level.
    q.publish_until(prio_msg("a", 2), 10);
    q.publish_until(prio_msg("b", 2), 0);
    let mut out = vec![];
    q.expire(10, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(drain(&mut q), vec![Bytes::from("b")]);
}

#[test]
fn drop_head_and_delayed_retry() {
    let mut q = QueueState::new();
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    match q.drop_head() {
        Some(Removed::InMemory(e)) => assert_eq!(&e.msg.body[..], b"a"),
        other => panic!("{other:?}"),
    }
    let (b, _) = q.get(false).unwrap();
    let e = q.take_returned(b.offset).unwrap();
    assert_eq!(e.delivery_count, 1);
    q.delay_entry(e, 500);
    assert_eq!(q.message_count(), 1);
    assert_eq!(q.delayed_count(), 1);
    assert_eq!(q.next_timer(), Some(500));
    assert_eq!(q.release_delayed(499), 0);
    assert_eq!(q.release_delayed(500), 1);
    let order: Vec<_> = std::iter::from_fn(|| q.get(true))
        .map(|(e, _)| (e.msg.body.clone(), e.redelivered()))
        .collect();
    assert_eq!(
        order,
        vec![(Bytes::from("b"), true), (Bytes::from("c"), false)]
    );
}

#[test]
fn restore_expiry_covers_head_and_paged() {
    let mut q = QueueState::new();
    q.restore(10, vec![(3, msg("a")), (4, msg("b"))], vec![7, 9], &[], 2);
    q.restore_expiry(&[(3, 100, 1), (7, 50, 1), (9, 0, 1)]);
    let mut out = vec![];
    q.expire(100, &mut out);
    let gone: Vec<u64> = out.iter().map(Removed::offset).collect();
    assert_eq!(gone, vec![7, 3]);
    assert_eq!(q.message_count(), 2);
}

#[test]
fn overdue_consumers_by_delivery_time() {
    let mut q = QueueState::new();
    for b in ["a", "b", "c"] {
        q.publish(msg(b));
    }
    q.add_consumer(ConsumerId(1), 1, false, false, 0).unwrap();
    q.set_now(100);
    let mut out = vec![];
    q.dispatch(|_| true, &mut out);
    q.add_consumer(ConsumerId(2), 1, false, false, 0).unwrap();
    q.set_now(500);
    q.dispatch(|_| true, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(q.overdue_consumers(100), vec![]);
    assert_eq!(q.overdue_consumers(101), vec![ConsumerId(1)]);
    let mut both = q.overdue_consumers(501);
    both.sort();
    assert_eq!(both, vec![ConsumerId(1), ConsumerId(2)]);
    assert_eq!(q.unacked_of(ConsumerId(1)), vec![0]);
    // A taken-back delivery has a new generation: a stale settle can tell.
    assert_eq!(q.delivery_generation(0), Some(0));
    let e = q.take_returned(0).unwrap();
    q.requeue_entry(e);
    assert_eq!(q.delivery_generation(0), None);
    let (e, _) = q.get(false).unwrap();
    assert_eq!((e.offset, q.delivery_generation(0)), (0, Some(1)));
}

/// Model check: a queue that pages (tiny head limits, random page-outs, a store keeping
/// what was paged) hands out exactly what an unpaged queue hands out, in the same order,
/// under random publishes (with priorities and TTLs), gets, acks, requeues, expiry, purges
/// and drop-head. `FERRYMQ_TEST_SEED` picks the first seed; a failure prints its seed.
#[test]
fn paging_never_changes_the_delivery_sequence() {
    let first: u64 = std::env::var("FERRYMQ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + 200 {
        let r = std::panic::catch_unwind(|| run_paging_case(seed, true));
        let r = r.and_then(|()| std::panic::catch_unwind(|| run_paging_case(seed, false)));
        if r.is_err() {
            panic!("paging model failed with FERRYMQ_TEST_SEED={seed}");
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn run_paging_case(seed: u64, priority: bool) {
    use std::collections::HashMap;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut plain = QueueState::new();
    let mut paged = QueueState::new();
    if priority {
        plain.set_max_priority(4);
        paged.set_max_priority(4);
    }
    plain.set_head_limit(usize::MAX);
    // The store of the paging queue: every message it was told to keep.
    let mut store: HashMap<Offset, Arc<Message>> = HashMap::new();
    let mut unacked: Vec<Offset> = Vec::new();
    let mut now = 0u64;
    let mk = |id: u64, p: Option<u8>| {
        Arc::new(Message {
            exchange: Bytes::new(),
            routing_key: Bytes::new(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(id.to_be_bytes().to_vec()),
            persistent: false,
            priority: p,
            headers: None,
            ttl_ms: None,
        })
    };
    let refill = |q: &mut QueueState, store: &HashMap<Offset, Arc<Message>>| {
        while let Some(want) = q.page_in_request() {
            let got = want.iter().map(|o| (*o, store[o].clone())).collect();
            assert_eq!(q.page_in(&want, got), 0);
            if !q.next_is_paged() {
                break;
            }
        }
    };
    for step in 0..600u64 {
        match rng.below(100) {
            0..=44 => {
                let p = (priority && rng.below(3) > 0).then(|| rng.below(6) as u8);
                let m = mk(step, p);
                let ttl = if rng.below(5) == 0 {
                    now + 1 + rng.below(20)
                } else {
                    0
                };
                let a = plain.publish_until(m.clone(), ttl);
                let b = paged.next_offset();
                // The paging queue's store keeps what it pages (the task's spill).
                store.insert(b, m.clone());
                paged.publish_stored_until(m, ttl);
                assert_eq!(a, b);
            }
            45..=64 => {
                refill(&mut paged, &store);
                let a = plain.get(false);
                let b = paged.get(false);
                let key = |r: &Option<(Entry, usize)>| {
                    r.as_ref()
                        .map(|(e, n)| (e.offset, e.msg.body.clone(), e.redelivered(), *n))
                };
                assert_eq!(key(&a), key(&b), "get at step {step}");
                if let Some((e, _)) = a {
                    unacked.push(e.offset);
                }
            }
            65..=74 => {
                if !unacked.is_empty() {
                    let o = unacked.swap_remove(rng.below(unacked.len() as u64) as usize);
                    if rng.below(2) == 0 {
                        plain.ack(&[o]);
                        paged.ack(&[o]);
                    } else {
                        plain.reject(&[o], true);
                        paged.reject(&[o], true);
                    }
                }
            }
            75..=84 => {
                let limit = ENTRY_OVERHEAD * rng.below(6) as usize;
                paged.set_head_limit(limit);
                paged.page_out(limit, |msgs| {
                    for (o, m) in msgs {
                        store.insert(*o, m.clone());
                    }
                    true
                });
            }
            85..=92 => {
                now += rng.below(5);
                let (mut a, mut b) = (vec![], vec![]);
                plain.expire(now, &mut a);
                paged.expire(now, &mut b);
                let offs = |v: &[Removed]| v.iter().map(Removed::offset).collect::<Vec<_>>();
                assert_eq!(offs(&a), offs(&b), "expiry at step {step}");
            }
            93..=96 => {
                // As the owner task does: the head is read back before dropping it.
                refill(&mut paged, &store);
                let a = plain.drop_head().map(|r| r.offset());
                let b = paged.drop_head().map(|r| r.offset());
                assert_eq!(a, b, "drop-head at step {step}");
            }
            _ => {
                if rng.below(4) == 0 {
                    let mut a = plain.purge();
                    let mut b = paged.purge();
                    a.sort_unstable();
                    b.sort_unstable();
                    assert_eq!(a, b, "purge at step {step}");
                }
            }
        }
        assert_eq!(plain.message_count(), paged.message_count(), "step {step}");
        assert_eq!(plain.ready_bytes(), paged.ready_bytes(), "step {step}");
    }
}

#[test]
fn unacked_and_delayed_are_held_cost_until_settled_or_released() {
    let mut q = QueueState::new();
    for b in ["a", "bb", "ccc", "dddd"] {
        q.publish(msg(b));
    }
    let all = q.head_cost();
    let cost = |b: &'static str| entry_cost(&msg(b));
    assert_eq!(all, cost("a") + cost("bb") + cost("ccc") + cost("dddd"));
    assert_eq!(q.held_cost(), 0);
    // Consumer deliveries and basic.get (with acks) move cost from the head to held.
    q.add_consumer(ConsumerId(1), 2, false, false, 0).unwrap();
    let mut out = vec![];
    q.dispatch(|_| true, &mut out);
    let (c, _) = q.get(false).unwrap();
    assert_eq!(q.held_cost(), cost("a") + cost("bb") + cost("ccc"));
    assert_eq!(q.head_cost() + q.held_cost(), all);
    // No-ack deliveries hold nothing.
    let (_d, _) = q.get(true).unwrap();
    assert_eq!(q.head_cost(), 0);
    // An ack releases; a requeue moves back to the head.
    q.ack(&[out[0].entry.offset]);
    q.reject(&[c.offset], true);
    assert_eq!(q.held_cost(), cost("bb"));
    assert_eq!(q.head_cost(), cost("ccc"));
    // A delayed retry stays held until released, then counts in the head again.
    let b = q.take_returned(out[1].entry.offset).unwrap();
    assert_eq!(q.held_cost(), 0);
    q.delay_entry(b, 1_000);
    assert_eq!(q.held_cost(), cost("bb"));
    assert_eq!(q.release_delayed(999), 0);
    assert_eq!(q.release_delayed(1_000), 1);
    assert_eq!(q.held_cost(), 0);
    assert_eq!(q.head_cost(), cost("bb") + cost("ccc"));
    // A purge drops delayed retries' cost too.
    let e = q.get(false).unwrap().0;
    let e = q.take_returned(e.offset).unwrap();
    q.delay_entry(e, 5_000);
    assert!(q.held_cost() > 0);
    q.purge();
    assert_eq!((q.held_cost(), q.head_cost()), (0, 0));
}

/// Deliveries held while thousands after them are settled leave the dense unacked ring for
/// its side map; settles, requeues (to the original position, redelivered), the consumer's
/// list for an acknowledgement timeout and the counts all still find them.
#[test]
fn long_held_deliveries_are_still_settled_and_requeued_in_place() {
    let mut q = QueueState::new();
    for _ in 0..10_000 {
        q.publish(msg("m"));
    }
    q.add_consumer(ConsumerId(1), 0, false, false, 0).unwrap();
    let mut out = vec![];
    q.dispatch(|_| true, &mut out);
    assert_eq!(out.len(), 10_000);
    assert_eq!(q.unacked_count(), 10_000);
    // Everything but offsets 3 and 5 000 is acked, in order.
    let acked: Vec<Offset> = (0..10_000).filter(|o| *o != 3 && *o != 5_000).collect();
    for chunk in acked.chunks(500) {
        q.ack(chunk);
    }
    assert_eq!(q.unacked_count(), 2);
    assert_eq!(q.unacked_of(ConsumerId(1)), vec![3, 5_000]);
    assert_eq!(q.delivery_generation(3), Some(0));
    assert_eq!(q.delivery_generation(4), None, "acked");
    // Later publishes are delivered and sit in the ring beside the held ones.
    for _ in 0..3 {
        q.publish(msg("n"));
    }
    out.clear();
    q.dispatch(|_| true, &mut out);
    assert_eq!(
        out.iter().map(|d| d.entry.offset).collect::<Vec<_>>(),
        vec![10_000, 10_001, 10_002]
    );
    // Offset 3 comes back ahead of everything published after it, redelivered.
    q.reject(&[3, 10_001], true);
    q.publish(msg("o"));
    out.clear();
    q.dispatch(|_| true, &mut out);
    assert_eq!(
        out.iter()
            .map(|d| (d.entry.offset, d.entry.redelivered()))
            .collect::<Vec<_>>(),
        vec![(3, true), (10_001, true), (10_003, false)]
    );
    assert_eq!(q.delivery_generation(3), Some(1));
    q.ack(&[3, 5_000, 10_000, 10_001, 10_002, 10_003]);
    assert_eq!(q.unacked_count(), 0);
    assert_eq!(q.held_cost(), 0);
    assert!(q.unacked_of(ConsumerId(1)).is_empty());
}
