//! Integration tests of `ferrymq_store::log`: model-based crash testing on the
//! fault-injecting backend, targeted recovery cases, the real file backend in a temp dir,
//! and group commit.

mod coalesced;
mod delay_overlap;
mod dir_entries;
mod file_backend;
mod group_commit;
mod lazy_acks;
mod model;
mod overlap;
mod partition_overlap;
mod queue_model;
mod recovery;

use ferrymq_store::log::fault::SimRng;

/// Seed for randomized tests: `FERRYMQ_TEST_SEED` if set, else a fixed default (so CI
/// is reproducible); printed if the test fails.
/// A queue message whose body is `id` (8 bytes, big-endian).
pub fn message(id: u64, persistent: bool) -> std::sync::Arc<ferrymq_core::Message> {
    std::sync::Arc::new(ferrymq_core::Message {
        exchange: bytes::Bytes::new(),
        routing_key: bytes::Bytes::from_static(b"q"),
        raw_properties: bytes::Bytes::from_static(&[0, 0]),
        body: bytes::Bytes::from(id.to_be_bytes().to_vec()),
        persistent,
        priority: None,
        headers: None,
        ttl_ms: None,
    })
}

pub fn base_seed(default: u64) -> u64 {
    std::env::var("FERRYMQ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Prints the seed if dropped while the test is panicking.
pub struct SeedGuard(pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "failing seed: {0} (rerun with FERRYMQ_TEST_SEED={0})",
                self.0
            );
        }
    }
}

/// A payload whose bytes depend on `tag`, of length `len`.
pub fn payload(rng: &mut SimRng, len: usize) -> Vec<u8> {
    let x = rng.next_u64();
    (0..len)
        .map(|i| (x.rotate_left(i as u32 % 64) as u8) ^ (i as u8))
        .collect()
}
