use super::*;

fn k(t: &str, p: i32) -> PartKey {
    PartKey::new(TopicRef::Name(t.into()), p)
}

fn r(off: i64) -> PartitionRequest {
    PartitionRequest {
        fetch_offset: off,
        max_bytes: 1 << 20,
    }
}

fn quiet(hw: i64) -> Outcome {
    Outcome {
        reported: Reported {
            high_watermark: hw,
            last_stable: hw,
            log_start: 0,
        },
        has_records: false,
        has_error: false,
    }
}

fn data(hw: i64) -> Outcome {
    Outcome {
        has_records: true,
        ..quiet(hw)
    }
}

/// Creates a session over `parts` (all at high watermark 0) and returns its id.
fn open(c: &mut FetchSessions, owner: &str, parts: &[PartKey], now: u64) -> i32 {
    let plan = c
        .begin(
            owner,
            0,
            0,
            false,
            now,
            parts.iter().map(|p| (p.clone(), r(0))).collect(),
            vec![],
        )
        .unwrap();
    assert_eq!(plan.kind, Kind::Full);
    let (id, inc) = c.finish(owner, &plan, &vec![quiet(0); parts.len()], now);
    assert!(inc.iter().all(|b| *b));
    id
}

#[test]
fn full_fetch_creates_a_session_and_incremental_answers_only_news() {
    let mut c = FetchSessions::new(10, DEFAULT_EVICTION_MS, 7);
    let parts = [k("a", 0), k("a", 1), k("b", 0)];
    let id = open(&mut c, "u", &parts, 0);
    assert!(id > 0);
    assert_eq!(c.len(), 1);

    // Epoch 1, nothing resent: every session partition is read, none has news.
    let plan = c.begin("u", id, 1, false, 1, vec![], vec![]).unwrap();
    assert_eq!(plan.kind, Kind::Incremental(id));
    assert_eq!(plan.partitions.len(), 3);
    let (rid, inc) = c.finish("u", &plan, &[quiet(0), quiet(0), quiet(0)], 1);
    assert_eq!(rid, id);
    assert_eq!(inc, vec![false, false, false]);

    // Epoch 2: a1 has records, b0's high watermark moved.
    let plan = c.begin("u", id, 2, false, 2, vec![], vec![]).unwrap();
    let (_, inc) = c.finish("u", &plan, &[quiet(0), data(5), quiet(3)], 2);
    assert_eq!(inc, vec![false, true, true]);
    // a1 returned records: it moved to the end.
    let plan = c
        .begin("u", id, 3, false, 3, vec![(k("a", 1), r(5))], vec![])
        .unwrap();
    let keys: Vec<_> = plan.partitions.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![k("a", 0), k("b", 0), k("a", 1)]);
    assert_eq!(plan.partitions[2].1.fetch_offset, 5);
    // Same offsets as last reported: quiet.
    let (_, inc) = c.finish("u", &plan, &[quiet(0), quiet(3), quiet(5)], 3);
    assert_eq!(inc, vec![false, false, false]);
}

#[test]
fn errors_and_offset_changes_are_news() {
    let mut c = FetchSessions::new(10, DEFAULT_EVICTION_MS, 1);
    let id = open(&mut c, "u", &[k("a", 0)], 0);
    let plan = c.begin("u", id, 1, false, 0, vec![], vec![]).unwrap();
    let err = Outcome {
        has_error: true,
        ..quiet(0)
    };
    assert_eq!(c.finish("u", &plan, &[err], 0).1, vec![true]);
    for (n, o) in [
        (
            2,
            Reported {
                high_watermark: 0,
                last_stable: 0,
                log_start: 1,
            },
        ),
        (
            3,
            Reported {
                high_watermark: 0,
                last_stable: 1,
                log_start: 1,
            },
        ),
    ] {
        let plan = c.begin("u", id, n, false, 0, vec![], vec![]).unwrap();
        let out = Outcome {
            reported: o,
            has_records: false,
            has_error: false,
        };
        assert_eq!(c.finish("u", &plan, &[out], 0).1, vec![true], "epoch {n}");
    }
}

#[test]
fn adding_and_forgetting_partitions() {
    let mut c = FetchSessions::new(10, DEFAULT_EVICTION_MS, 1);
    let id = open(&mut c, "u", &[k("a", 0), k("a", 1)], 0);
    let plan = c
        .begin(
            "u",
            id,
            1,
            false,
            0,
            vec![(k("c", 0), r(0))],
            vec![k("a", 0)],
        )
        .unwrap();
    let keys: Vec<_> = plan.partitions.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![k("a", 1), k("c", 0)]);
    // A new partition is always answered once (nothing reported yet).
    let (_, inc) = c.finish("u", &plan, &[quiet(0), quiet(0)], 0);
    assert_eq!(inc, vec![false, true]);
    assert_eq!(c.partitions(), 2);
}

#[test]
fn epoch_and_id_errors() {
    let mut c = FetchSessions::new(10, DEFAULT_EVICTION_MS, 3);
    let id = open(&mut c, "u", &[k("a", 0)], 0);
    assert_eq!(
        c.begin("u", id, 2, false, 0, vec![], vec![]).unwrap_err(),
        SessionError::InvalidEpoch
    );
    assert_eq!(
        c.begin("u", id.wrapping_add(1), 1, false, 0, vec![], vec![])
            .unwrap_err(),
        SessionError::NotFound
    );
    assert_eq!(
        c.begin("u", id, 1, true, 0, vec![], vec![]).unwrap_err(),
        SessionError::TopicIdMismatch
    );
    // Another principal cannot use (nor close) the session.
    assert_eq!(
        c.begin("other", id, 1, false, 0, vec![], vec![])
            .unwrap_err(),
        SessionError::NotFound
    );
    let p = c.begin("other", id, -1, false, 0, vec![], vec![]).unwrap();
    assert_eq!(p.kind, Kind::Sessionless);
    assert_eq!(c.len(), 1);
    // The errors did not advance the epoch.
    let plan = c.begin("u", id, 1, false, 0, vec![], vec![]).unwrap();
    c.finish("u", &plan, &[quiet(0)], 0);
    // A replayed epoch is refused.
    assert_eq!(
        c.begin("u", id, 1, false, 0, vec![], vec![]).unwrap_err(),
        SessionError::InvalidEpoch
    );
    assert_eq!(c.stats().session_errors, 5);
}

#[test]
fn final_epoch_closes_and_full_fetch_replaces() {
    let mut c = FetchSessions::new(10, DEFAULT_EVICTION_MS, 3);
    let id = open(&mut c, "u", &[k("a", 0)], 0);
    let p = c
        .begin(
            "u",
            id,
            FINAL_EPOCH,
            false,
            0,
            vec![(k("a", 0), r(0))],
            vec![],
        )
        .unwrap();
    assert_eq!(p.kind, Kind::Sessionless);
    assert_eq!(c.finish("u", &p, &[quiet(0)], 0).0, 0);
    assert!(c.is_empty());
    assert_eq!(
        c.begin("u", id, 1, false, 0, vec![], vec![]).unwrap_err(),
        SessionError::NotFound
    );
    // A full fetch naming a session closes it and opens a new one.
    let id = open(&mut c, "u", &[k("a", 0)], 0);
    let plan = c
        .begin("u", id, 0, false, 0, vec![(k("a", 0), r(0))], vec![])
        .unwrap();
    let (id2, _) = c.finish("u", &plan, &[quiet(0)], 0);
    assert_ne!(id2, id);
    assert_eq!(c.len(), 1);
}

#[test]
fn bounded_cache_evicts_stale_then_smaller_sessions() {
    let mut c = FetchSessions::new(2, 1000, 9);
    let a = open(&mut c, "u", &[k("a", 0), k("a", 1)], 0);
    let b = open(&mut c, "u", &[k("b", 0), k("b", 1), k("b", 2)], 10);
    // Full, nothing stale, the new one is not bigger than the smallest (2): no session.
    let plan = c
        .begin(
            "u",
            0,
            0,
            false,
            20,
            vec![(k("c", 0), r(0)), (k("c", 1), r(0))],
            vec![],
        )
        .unwrap();
    assert_eq!(c.finish("u", &plan, &[quiet(0), quiet(0)], 20).0, 0);
    assert_eq!(c.stats().not_created, 1);
    // Bigger than the smallest: evicts `a`.
    let parts: Vec<_> = (0..3).map(|p| k("d", p)).collect();
    let d = open(&mut c, "u", &parts, 30);
    assert!(d > 0);
    assert_eq!(
        c.begin("u", a, 1, false, 30, vec![], vec![]).unwrap_err(),
        SessionError::NotFound
    );
    // Keep `d` in use; `b` goes stale and is evicted even by a one-partition session.
    let plan = c.begin("u", d, 1, false, 1500, vec![], vec![]).unwrap();
    c.finish("u", &plan, &[quiet(0); 3], 1500);
    let e = open(&mut c, "u", &[k("e", 0)], 1600);
    assert!(e > 0);
    assert_eq!(
        c.begin("u", b, 1, false, 1600, vec![], vec![]).unwrap_err(),
        SessionError::NotFound
    );
    assert_eq!(c.stats().evicted, 2);
    assert_eq!(c.len(), 2);
}

#[test]
fn zero_slots_means_no_sessions() {
    let mut c = FetchSessions::new(0, 1000, 9);
    let plan = c
        .begin("u", 0, 0, false, 0, vec![(k("a", 0), r(0))], vec![])
        .unwrap();
    assert_eq!(c.finish("u", &plan, &[quiet(0)], 0).0, 0);
}

#[test]
fn epochs_wrap_to_one() {
    assert_eq!(next_epoch(i32::MAX), 1);
    assert_eq!(next_epoch(0), 1);
}

#[test]
fn ids_are_positive_and_distinct() {
    let mut c = FetchSessions::new(100, 1000, 42);
    let mut ids = std::collections::HashSet::new();
    for i in 0..100 {
        let id = open(&mut c, "u", &[k("a", i)], 0);
        assert!(id > 0);
        assert!(ids.insert(id));
    }
}
