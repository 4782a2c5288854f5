//! Model-based testing of a durable queue as the broker runs it: `QueueState` (the queue
//! semantics) over a `LogStore` on the fault-injecting disk, driven by random publish /
//! deliver / ack / nack / reject / purge / sync / crash / restart sequences and checked
//! against a simple model. After every crash and restart:
//! - every persistent message that was synced (confirmed) and not settled-and-synced is
//!   back, in publish order, marked redelivered;
//! - nothing comes back that was not published, nor any non-persistent message;
//! - a message whose settle was synced never comes back.
//!
//! `FERRYMQ_TEST_SEED` picks the first seed, `FERRYMQ_TEST_CASES` the number of cases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ferrymq_core::queue::{Offset, QueueState};
use ferrymq_core::Message;
use ferrymq_store::log::fault::{CrashMode, FaultBackend, SimRng};
use ferrymq_store::log::LogConfig;
use ferrymq_store::queue_log::LogStore;
use ferrymq_store::QueueStore;

use crate::{base_seed, message, SeedGuard};

fn id_of(m: &Message) -> u64 {
    u64::from_be_bytes(m.body[..8].try_into().expect("8-byte body"))
}

struct Queue {
    state: QueueState,
    store: LogStore<FaultBackend>,
}

fn open(disk: &FaultBackend) -> (Queue, Vec<(u64, bool)>) {
    let config = LogConfig {
        max_segment_bytes: 2048,
        ..LogConfig::default()
    };
    let mut store =
        LogStore::open_with(disk.clone(), Path::new("/data"), "q", config).expect("open");
    let r = store.recover().expect("recover");
    let mut state = QueueState::new();
    let mut seen = Vec::new();
    state.restore(
        r.next_offset,
        r.messages,
        r.paged,
        &r.paged_priority,
        r.paged_bytes,
    );
    // Read everything back in order through the queue (paging included), then put it back
    // by requeueing, so the queue continues with the recovered contents.
    let mut taken = Vec::new();
    loop {
        if let Some(want) = state.page_in_request() {
            let got = store.read(&want).expect("read back");
            assert_eq!(
                state.page_in(&want, got),
                0,
                "a paged message could not be read"
            );
        }
        let Some((e, _)) = state.get(false) else {
            break;
        };
        assert!(e.msg.persistent, "a non-persistent message came back");
        seen.push((id_of(&e.msg), e.redelivered()));
        taken.push(e.offset);
    }
    state.reject(&taken, true);
    (Queue { state, store }, seen)
}

fn run_case(seed: u64, ops: usize) {
    let _guard = SeedGuard(seed);
    let mut rng = SimRng::new(seed);
    let disk = FaultBackend::new(seed ^ 0x9ee7);
    let (mut q, seen) = open(&disk);
    assert!(seen.is_empty());
    let mut next_id = 0u64;
    // Model: id -> persistent, for everything published and not settled.
    let mut live: BTreeMap<u64, bool> = BTreeMap::new();
    // Persistent ids whose publish was synced; ids whose settle was synced.
    let mut synced: BTreeSet<u64> = BTreeSet::new();
    let mut settled_synced: BTreeSet<u64> = BTreeSet::new();
    // Not yet synced: publishes and settles.
    let mut unsynced_pub: Vec<u64> = Vec::new();
    let mut unsynced_settle: Vec<u64> = Vec::new();
    // Deliveries awaiting a settle: offset -> id.
    let mut outstanding: BTreeMap<Offset, u64> = BTreeMap::new();
    let mut ever_published: BTreeSet<u64> = BTreeSet::new();

    for _ in 0..ops {
        match rng.up_to(100) {
            0..=39 => {
                let id = next_id;
                next_id += 1;
                let persistent = rng.chance(3, 4);
                let m = message(id, persistent);
                let offset = q.state.next_offset();
                q.store.append(offset, &m).expect("append");
                q.state.publish_stored(m);
                live.insert(id, persistent);
                ever_published.insert(id);
                if persistent {
                    unsynced_pub.push(id);
                }
            }
            40..=59 => {
                if let Some(want) = q.state.page_in_request() {
                    let got = q.store.read(&want).expect("read back");
                    assert_eq!(q.state.page_in(&want, got), 0);
                }
                if let Some((e, _)) = q.state.get(false) {
                    outstanding.insert(e.offset, id_of(&e.msg));
                }
            }
            60..=79 => {
                // Settle (ack or reject without requeue) a random outstanding delivery.
                if let Some((&offset, &id)) = outstanding
                    .iter()
                    .nth(rng.up_to(outstanding.len() as u64 + 1) as usize)
                {
                    outstanding.remove(&offset);
                    if rng.chance(1, 2) {
                        q.state.ack(&[offset]);
                    } else {
                        q.state.reject(&[offset], false);
                    }
                    q.store.remove(&[offset]).expect("remove");
                    live.remove(&id);
                    unsynced_settle.push(id);
                }
            }
            80..=86 => {
                // Requeue everything outstanding (a channel closed).
                let offsets: Vec<Offset> = outstanding.keys().copied().collect();
                q.state.reject(&offsets, true);
                outstanding.clear();
            }
            87 => {
                let purged = q.state.purge();
                q.store.remove(&purged).expect("remove");
                // Purge takes ready messages only: outstanding deliveries stay live.
                let outstanding_ids: BTreeSet<u64> = outstanding.values().copied().collect();
                let gone: Vec<u64> = live
                    .keys()
                    .copied()
                    .filter(|id| !outstanding_ids.contains(id))
                    .collect();
                assert_eq!(gone.len(), purged.len(), "purge count");
                for id in gone {
                    live.remove(&id);
                    unsynced_settle.push(id);
                }
            }
            88..=95 => {
                q.store.sync().expect("sync");
                synced.extend(unsynced_pub.drain(..));
                settled_synced.extend(unsynced_settle.drain(..));
            }
            _ => {
                let crash = rng.chance(2, 3);
                if crash {
                    disk.crash(CrashMode::all());
                } else {
                    q.store.sync().expect("sync");
                    synced.extend(unsynced_pub.drain(..));
                    settled_synced.extend(unsynced_settle.drain(..));
                }
                drop(q);
                let (nq, back) = open(&disk);
                q = nq;
                let ids: Vec<u64> = back.iter().map(|(id, _)| *id).collect();
                assert!(
                    back.iter().all(|(_, redelivered)| *redelivered),
                    "recovered must be redelivered"
                );
                assert!(
                    ids.windows(2).all(|w| w[0] < w[1]),
                    "recovered order: {ids:?}"
                );
                for id in &ids {
                    assert!(ever_published.contains(id), "phantom message {id}");
                    assert!(
                        !settled_synced.contains(id),
                        "settled (synced) message {id} came back"
                    );
                }
                let back_set: BTreeSet<u64> = ids.iter().copied().collect();
                for id in synced.iter().filter(|id| !settled_synced.contains(id)) {
                    assert!(back_set.contains(id), "synced message {id} lost");
                }
                // The model now is exactly what came back (all unsettled, none outstanding),
                // and non-persistent messages are gone.
                live = ids.iter().map(|id| (*id, true)).collect();
                outstanding.clear();
                unsynced_pub.clear();
                unsynced_settle.clear();
                synced = back_set;
                settled_synced.clear();
            }
        }
    }
}

#[test]
fn queue_on_faulty_disk_matches_model() {
    let first = base_seed(0x00DD_BA11);
    let cases: u64 = std::env::var("FERRYMQ_TEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for i in 0..cases {
        run_case(first.wrapping_add(i), 400);
    }
}
