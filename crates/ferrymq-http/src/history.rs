//! The 5 s sampler's memory: for every live object (the broker, each queue, channel and
//! connection) a small ring of its counter values at the last sampler ticks, from which
//! `*_details.rate` and the `msg_rates_age` / `lengths_age` sample series are computed.
//! Pure (the sampler task in `stats` feeds it), bounded (a fixed number of ticks per
//! object: [`OBJECT_TICKS`] for queues, channels and connections — about 1 KB for a
//! queue — and [`BROKER_TICKS`] for the broker's totals), and forgetful (an object not
//! seen at a tick is dropped).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use serde_json::{json, Map, Value};

/// Seconds between samples (RabbitMQ's `collect_statistics_interval`).
pub const INTERVAL_MS: u64 = 5_000;
/// Ticks kept per queue, channel and connection: one minute and a bit.
pub const OBJECT_TICKS: usize = 13;
/// Ticks kept for the broker's totals: ten minutes (RabbitMQ's first retention band).
pub const BROKER_TICKS: usize = 121;

/// One object's last values, `series` values per tick, in one flat allocation (a queue's
/// ring is 9 series × 13 ticks × 8 bytes).
#[derive(Debug, Clone)]
pub struct Ring {
    series: u16,
    cap: u16,
    /// Rows held (≤ `cap`).
    len: u16,
    /// Slot of the oldest row.
    head: u16,
    /// Tick number of the newest row.
    last_tick: u64,
    data: Box<[u64]>,
}

impl Ring {
    pub fn new(series: usize, cap: usize) -> Ring {
        let series = series.clamp(1, 64);
        let cap = cap.clamp(2, 4096);
        Ring {
            series: series as u16,
            cap: cap as u16,
            len: 0,
            head: 0,
            last_tick: 0,
            data: vec![0; series * cap].into_boxed_slice(),
        }
    }

    pub fn push(&mut self, tick: u64, values: &[u64]) {
        let (series, cap) = (usize::from(self.series), usize::from(self.cap));
        let slot = if usize::from(self.len) == cap {
            let slot = usize::from(self.head);
            self.head = ((slot + 1) % cap) as u16;
            slot
        } else {
            self.len += 1;
            (usize::from(self.head) + usize::from(self.len) - 1) % cap
        };
        let row = &mut self.data[slot * series..(slot + 1) * series];
        for (dst, src) in row
            .iter_mut()
            .zip(values.iter().chain(std::iter::repeat(&0)))
        {
            *dst = *src;
        }
        self.last_tick = tick;
    }

    /// Series `i` of row `k` (0 = oldest).
    fn value(&self, k: usize, i: usize) -> u64 {
        let (series, cap) = (usize::from(self.series), usize::from(self.cap));
        let slot = (usize::from(self.head) + k) % cap;
        self.data.get(slot * series + i).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The sampler's shared clock: the time of each tick still referenced by some ring.
#[derive(Debug, Default, Clone)]
pub struct Ticks {
    /// Tick number of `times[0]`.
    first: u64,
    times: VecDeque<u64>,
}

impl Ticks {
    /// Records a new tick at `now_ms`; returns its number (from 1).
    pub fn next(&mut self, now_ms: u64) -> u64 {
        self.times.push_back(now_ms);
        if self.first == 0 {
            self.first = 1;
        }
        if self.times.len() > BROKER_TICKS {
            self.times.pop_front();
            self.first += 1;
        }
        self.first + self.times.len() as u64 - 1
    }

    pub fn current(&self) -> u64 {
        if self.times.is_empty() {
            0
        } else {
            self.first + self.times.len() as u64 - 1
        }
    }

    fn time(&self, tick: u64) -> Option<u64> {
        let i = tick.checked_sub(self.first)?;
        self.times.get(usize::try_from(i).ok()?).copied()
    }
}

/// What a request asked for (`msg_rates_age` & co., in seconds).
#[derive(Debug, Default, Clone, Copy)]
pub struct Range {
    pub age_s: u64,
    pub incr_s: u64,
}

impl Range {
    /// From `<prefix>_age` / `<prefix>_incr` query parameters (absent or bad: no samples).
    pub fn from_query(q: &HashMap<String, String>, prefix: &str) -> Option<Range> {
        let age = q.get(&format!("{prefix}_age"))?.parse::<u64>().ok()?;
        let incr = q
            .get(&format!("{prefix}_incr"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(5)
            .max(1);
        (age > 0).then_some(Range {
            age_s: age.min(86_400),
            incr_s: incr,
        })
    }
}

/// Rings of one kind of object, by key.
#[derive(Debug)]
pub struct Rings<K> {
    series: usize,
    cap: usize,
    map: HashMap<K, Ring>,
}

impl<K: Hash + Eq + Clone> Rings<K> {
    pub fn new(series: usize, cap: usize) -> Rings<K> {
        Rings {
            series,
            cap,
            map: HashMap::new(),
        }
    }

    /// Records `values` for `key` at `tick`.
    pub fn record(&mut self, key: &K, tick: u64, values: &[u64]) {
        let (series, cap) = (self.series, self.cap);
        self.map
            .entry(key.clone())
            .or_insert_with(|| Ring::new(series, cap))
            .push(tick, values);
    }

    /// Drops objects not recorded at `tick` (they are gone).
    pub fn retain_tick(&mut self, tick: u64) {
        self.map.retain(|_, r| r.last_tick == tick);
    }

    pub fn get(&self, key: &K) -> Option<&Ring> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// `<name>_details` for series `i` of `ring`: the rate between the last two samples
/// (0.0 when the newest is stale or there are fewer than two), and with a `range` the
/// samples (newest first), `avg` and `avg_rate`. `current` is the value read live now.
pub fn details(
    ring: Option<&Ring>,
    ticks: &Ticks,
    i: usize,
    current: u64,
    range: Option<Range>,
) -> Value {
    let mut m = Map::new();
    let rate = ring.map_or(0.0, |r| rate(r, ticks, i));
    m.insert("rate".into(), json!(round(rate)));
    if let Some(range) = range {
        let samples = samples(ring, ticks, i, current, range);
        let n = samples.len();
        let avg = if n == 0 {
            0.0
        } else {
            samples.iter().map(|(v, _)| *v as f64).sum::<f64>() / n as f64
        };
        let avg_rate = match (samples.first(), samples.last()) {
            (Some((v1, t1)), Some((v0, t0))) if t1 > t0 => {
                (*v1 as f64 - *v0 as f64) * 1000.0 / (*t1 - *t0) as f64
            }
            _ => 0.0,
        };
        m.insert("avg".into(), json!(round(avg)));
        m.insert("avg_rate".into(), json!(round(avg_rate)));
        m.insert(
            "samples".into(),
            Value::Array(
                samples
                    .into_iter()
                    .map(|(v, t)| json!({"sample": v, "timestamp": t}))
                    .collect(),
            ),
        );
    }
    Value::Object(m)
}

fn round(f: f64) -> f64 {
    if f.is_finite() {
        (f * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn rate(r: &Ring, ticks: &Ticks, i: usize) -> f64 {
    if r.last_tick != ticks.current() || r.len() < 2 {
        return 0.0;
    }
    let n = r.len();
    let (new, old) = (r.value(n - 1, i), r.value(n - 2, i));
    let (Some(t1), Some(t0)) = (ticks.time(r.last_tick), ticks.time(r.last_tick - 1)) else {
        return 0.0;
    };
    if t1 <= t0 {
        return 0.0;
    }
    (new as f64 - old as f64) * 1000.0 / (t1 - t0) as f64
}

/// (value, unix ms) pairs, newest first: the live value now, then one per `incr` back to
/// `age` seconds ago from the ring (each the newest sample at or before that time).
fn samples(
    ring: Option<&Ring>,
    ticks: &Ticks,
    i: usize,
    current: u64,
    range: Range,
) -> Vec<(u64, u64)> {
    let Some(now) = ticks.time(ticks.current()) else {
        return Vec::new();
    };
    let mut out = vec![(current, now)];
    let Some(r) = ring else {
        return out;
    };
    let n = r.len() as u64;
    let stamped: Vec<(u64, u64)> = (0..n)
        .filter_map(|k| {
            let tick = r.last_tick.checked_sub(n - 1 - k)?;
            Some((r.value(k as usize, i), ticks.time(tick)?))
        })
        .collect();
    let mut t = now;
    for _ in 0..(range.age_s / range.incr_s) {
        t = t.saturating_sub(range.incr_s * 1000);
        // Ticks drift by a few ms: take the newest sample within half a step of `t`.
        let slack = range.incr_s * 500;
        match stamped.iter().rev().find(|(_, ts)| *ts <= t + slack) {
            Some(&(v, _)) => out.push((v, t)),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_the_last_two_ticks() {
        let mut ticks = Ticks::default();
        let mut rings: Rings<&str> = Rings::new(2, OBJECT_TICKS);
        let t1 = ticks.next(10_000);
        rings.record(&"q", t1, &[0, 5]);
        assert_eq!(details(rings.get(&"q"), &ticks, 0, 0, None)["rate"], 0.0);
        let t2 = ticks.next(15_000);
        rings.record(&"q", t2, &[50, 5]);
        assert_eq!(details(rings.get(&"q"), &ticks, 0, 50, None)["rate"], 10.0);
        assert_eq!(details(rings.get(&"q"), &ticks, 1, 5, None)["rate"], 0.0);
        // A stale ring (object not sampled at the current tick) has rate 0.
        ticks.next(20_000);
        assert_eq!(details(rings.get(&"q"), &ticks, 0, 50, None)["rate"], 0.0);
        assert_eq!(details(None, &ticks, 0, 0, None)["rate"], 0.0);
    }

    #[test]
    fn rings_are_bounded_and_forget_dead_objects() {
        let mut ticks = Ticks::default();
        let mut rings: Rings<u32> = Rings::new(1, 3);
        for i in 0..10 {
            let t = ticks.next(i * 5000);
            rings.record(&1, t, &[i]);
            if i < 5 {
                rings.record(&2, t, &[i]);
            }
            rings.retain_tick(t);
        }
        let ring = rings.get(&1).unwrap();
        assert_eq!(ring.len(), 3);
        assert_eq!(
            (0..3).map(|k| ring.value(k, 0)).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert!(rings.get(&2).is_none());
        assert_eq!(rings.len(), 1);
        for i in 0..200 {
            ticks.next(i);
        }
        assert!(ticks.times.len() <= BROKER_TICKS);
    }

    #[test]
    fn sample_series_newest_first() {
        let mut ticks = Ticks::default();
        let mut rings: Rings<u8> = Rings::new(1, OBJECT_TICKS);
        for (i, v) in [0u64, 10, 20, 30].iter().enumerate() {
            let t = ticks.next(1_000_000 + i as u64 * 5000);
            rings.record(&0, t, &[*v]);
        }
        let d = details(
            rings.get(&0),
            &ticks,
            0,
            35,
            Some(Range {
                age_s: 10,
                incr_s: 5,
            }),
        );
        let s = d["samples"].as_array().unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0]["sample"], 35);
        assert_eq!(s[1]["sample"], 20);
        assert_eq!(s[2]["sample"], 10);
        assert_eq!(
            s[0]["timestamp"].as_u64().unwrap() - s[2]["timestamp"].as_u64().unwrap(),
            10_000
        );
        assert_eq!(d["avg_rate"], 2.5);
        assert_eq!(d["rate"], 2.0);
    }

    #[test]
    fn ranges_from_queries() {
        let q: HashMap<String, String> = [("msg_rates_age", "60"), ("msg_rates_incr", "5")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let r = Range::from_query(&q, "msg_rates").unwrap();
        assert_eq!((r.age_s, r.incr_s), (60, 5));
        assert!(Range::from_query(&q, "lengths").is_none());
    }
}
