//! Bytes of Kafka requests read and responses written, per API key, across listeners
//! and vhosts (size prefixes included): what a client costs the network, e.g. a
//! sessionless Fetch naming every partition against an incremental one (KIP-227).
//! Exposed as `ferrymq_kafka_request_bytes_total` / `ferrymq_kafka_response_bytes_total`.

use std::sync::atomic::{AtomicU64, Ordering};

/// API keys counted one by one; higher ones share the last slot.
const SLOTS: usize = 128;

/// Byte counters per API key.
pub struct Traffic {
    requests: [AtomicU64; SLOTS],
    responses: [AtomicU64; SLOTS],
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn slot(api_key: i16) -> usize {
    (api_key.max(0) as usize).min(SLOTS - 1)
}

impl Traffic {
    /// A request of `api_key`, `bytes` long with its size prefix.
    pub fn request(&self, api_key: i16, bytes: usize) {
        self.requests[slot(api_key)].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A response to a request of `api_key`, `bytes` long with its size prefix.
    pub fn response(&self, api_key: i16, bytes: usize) {
        self.responses[slot(api_key)].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (API key, request bytes, response bytes) of every key seen, in key order.
    pub fn snapshot(&self) -> Vec<(i16, u64, u64)> {
        (0..SLOTS)
            .filter_map(|i| {
                let q = self.requests[i].load(Ordering::Relaxed);
                let r = self.responses[i].load(Ordering::Relaxed);
                (q > 0 || r > 0).then_some((i as i16, q, r))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key() {
        let t = Traffic::default();
        t.request(1, 100);
        t.request(1, 50);
        t.response(1, 7);
        t.request(0, 3);
        t.request(-5, 1);
        t.request(i16::MAX, 2);
        assert_eq!(
            t.snapshot(),
            [(0, 4, 0), (1, 150, 7), (SLOTS as i16 - 1, 2, 0)]
        );
    }
}
