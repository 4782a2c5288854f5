//! The sampler: every [`INTERVAL_MS`] it reads the live counters of the broker, every
//! queue, channel and connection (atomics their owners publish; nothing is asked of any
//! task, so a busy queue never delays it and it never delays a queue) into the bounded
//! rings of [`history`](crate::history). Requests read the same atomics for current values
//! and the rings only for rates and sample series.

use std::sync::Arc;
use std::time::Duration;

use ferrymq_server::broker::Broker;
use ferrymq_server::stats::{unix_ms, Counts};
use parking_lot::Mutex;

use crate::history::{Ring, Rings, Ticks, BROKER_TICKS, INTERVAL_MS, OBJECT_TICKS};

/// Series kept per queue, in this order.
pub const QUEUE_SERIES: &[&str] = &[
    "messages_ready",
    "messages_unacknowledged",
    "messages",
    "publish",
    "deliver_get",
    "deliver",
    "get",
    "redeliver",
    "ack",
];
/// Series kept per channel (and for the broker's message rates).
pub const CHANNEL_SERIES: &[&str] = &[
    "publish",
    "confirm",
    "deliver_get",
    "deliver",
    "get",
    "redeliver",
    "ack",
    "return_unroutable",
    "drop_unroutable",
];
/// Series kept for the broker: the channel series, then the queue totals.
pub const BROKER_SERIES: &[&str] = &[
    "publish",
    "confirm",
    "deliver_get",
    "deliver",
    "get",
    "redeliver",
    "ack",
    "return_unroutable",
    "drop_unroutable",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
];
/// Series kept per connection.
pub const CONNECTION_SERIES: &[&str] = &["recv_oct", "send_oct"];

/// An exchange's key in the histories: (vhost, exchange name).
pub type ExchangeKey = (String, Arc<str>);

/// Per-exchange series (`message_stats` of `/api/exchanges`).
pub const EXCHANGE_SERIES: &[&str] = &["publish_in", "publish_out"];

/// `deliver_get` as RabbitMQ sums it.
pub fn deliver_get(c: &Counts) -> u64 {
    c.deliver + c.deliver_no_ack + c.get + c.get_no_ack
}

/// The value of a named counter (the `Counts` fields plus `deliver_get`).
pub fn counter(c: &Counts, name: &str) -> u64 {
    if name == "deliver_get" {
        return deliver_get(c);
    }
    c.fields()
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}

/// Queue totals: (ready, unacked).
pub fn queue_totals(broker: &Broker) -> (u64, u64) {
    let mut totals = (0, 0);
    for v in broker.vhosts() {
        v.read(|t| {
            for q in t.queues() {
                let s = q.handle.stats();
                totals.0 += s.ready.load(std::sync::atomic::Ordering::Relaxed);
                totals.1 += s.unacked.load(std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    totals
}

/// The sampled histories.
pub struct Sampled {
    pub ticks: Ticks,
    pub broker: Ring,
    pub queues: Rings<u64>,
    pub channels: Rings<(u64, u16)>,
    pub connections: Rings<u64>,
    /// Keyed by (vhost, exchange name).
    pub exchanges: Rings<ExchangeKey>,
}

/// Shared by the sampler task and the request handlers.
pub struct Stats {
    inner: Mutex<Sampled>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            inner: Mutex::new(Sampled {
                ticks: Ticks::default(),
                broker: Ring::new(BROKER_SERIES.len(), BROKER_TICKS),
                queues: Rings::new(QUEUE_SERIES.len(), OBJECT_TICKS),
                channels: Rings::new(CHANNEL_SERIES.len(), OBJECT_TICKS),
                connections: Rings::new(CONNECTION_SERIES.len(), OBJECT_TICKS),
                exchanges: Rings::new(EXCHANGE_SERIES.len(), OBJECT_TICKS),
            }),
        }
    }
}

impl Stats {
    /// Locks the histories for reading (briefly: build the answer and let go).
    pub fn view(&self) -> parking_lot::MutexGuard<'_, Sampled> {
        self.inner.lock()
    }

    /// Takes one sample of everything.
    pub fn sample(&self, broker: &Broker) {
        use std::sync::atomic::Ordering::Relaxed;
        // Read everything first, then record under the lock.
        let mut queues: Vec<(u64, [u64; 9])> = Vec::new();
        let mut exchanges: Vec<(ExchangeKey, [u64; 2])> = Vec::new();
        let (mut ready, mut unacked) = (0, 0);
        for v in broker.vhosts() {
            for (name, i, o) in v.all_exchange_counts() {
                exchanges.push(((v.name.clone(), name), [i, o]));
            }
            v.read(|t| {
                for q in t.queues() {
                    let s = q.handle.stats();
                    let c = s.counters.load();
                    let (r, u) = (s.ready.load(Relaxed), s.unacked.load(Relaxed));
                    ready += r;
                    unacked += u;
                    queues.push((
                        q.handle.id(),
                        [
                            r,
                            u,
                            r + u,
                            c.publish,
                            deliver_get(&c),
                            c.deliver,
                            c.get,
                            c.redeliver,
                            c.ack,
                        ],
                    ));
                }
            });
        }
        let mut channels = Vec::new();
        let mut connections = Vec::new();
        for c in broker.registry.connections() {
            connections.push((
                c.id,
                [
                    c.counters.recv_oct.load(Relaxed),
                    c.counters.send_oct.load(Relaxed),
                ],
            ));
            for ch in c.channels.lock().iter() {
                channels.push(((c.id, ch.number), channel_values(&ch.counters.load())));
            }
        }
        let global = broker.global.load();
        let mut b = channel_values(&global).to_vec();
        b.extend([ready + unacked, ready, unacked]);
        let mut s = self.inner.lock();
        let tick = s.ticks.next(unix_ms());
        s.broker.push(tick, &b);
        for (k, v) in &queues {
            s.queues.record(k, tick, v);
        }
        for (k, v) in &channels {
            s.channels.record(k, tick, v);
        }
        for (k, v) in &connections {
            s.connections.record(k, tick, v);
        }
        for (k, v) in &exchanges {
            s.exchanges.record(k, tick, v);
        }
        s.queues.retain_tick(tick);
        s.channels.retain_tick(tick);
        s.connections.retain_tick(tick);
        s.exchanges.retain_tick(tick);
    }

    /// Samples every [`INTERVAL_MS`] until the broker shuts down.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>) {
        let mut shutdown = broker.shutdown_signal();
        let mut every = tokio::time::interval(Duration::from_millis(INTERVAL_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.sample(&broker),
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            }
        }
    }
}

/// A channel's (or the broker's) counters in [`CHANNEL_SERIES`] order.
pub fn channel_values(c: &Counts) -> [u64; 9] {
    [
        c.publish,
        c.confirm,
        deliver_get(c),
        c.deliver,
        c.get,
        c.redeliver,
        c.ack,
        c.return_unroutable,
        c.drop_unroutable,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queues_history_stays_under_a_kilobyte() {
        let ring = std::mem::size_of::<Ring>() + QUEUE_SERIES.len() * OBJECT_TICKS * 8;
        let entry = ring + std::mem::size_of::<u64>();
        assert!(entry <= 1024, "{entry} bytes");
        assert_eq!(
            counter(
                &Counts {
                    get: 2,
                    deliver_no_ack: 3,
                    ..Counts::default()
                },
                "deliver_get"
            ),
            5
        );
        assert_eq!(
            counter(
                &Counts {
                    ack: 4,
                    ..Counts::default()
                },
                "ack"
            ),
            4
        );
        assert_eq!(counter(&Counts::default(), "no-such-counter"), 0);
    }
}
