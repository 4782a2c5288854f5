//! Measurements shared between the bench's worker threads and its reporter: lock-free
//! message counters, end-to-end latency histograms (microseconds, via hdrhistogram) that
//! workers merge in periodically, send timestamps, and the client's own CPU use read from
//! `/proc` so a run can show the load generator was not the bottleneck.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Highest latency the histograms track: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Nanoseconds since the UNIX epoch: the send timestamp format in message bodies, chosen over
/// a process-local `Instant` so that producer and consumer may run in different processes.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The latency in microseconds between a body's send stamp and `now`, if the stamp is
/// plausible (within the last hour and not in the future by more than a second): bodies
/// published by other tools hold arbitrary bytes there.
pub fn latency_us(sent_at: u64, now: u64) -> Option<u64> {
    if sent_at > now.saturating_add(1_000_000_000)
        || now.saturating_sub(sent_at) > MAX_LATENCY_US * 1000
    {
        return None;
    }
    Some(now.saturating_sub(sent_at) / 1000)
}

/// The lateness in microseconds of a delayed message: `now` minus its due time, the send
/// stamp plus `delay_ms`; negative if it arrived early. `None` if the stamp is implausible
/// (see [`latency_us`]) or the delay exceeds the histogram's hour.
pub fn lateness_us(sent_at: u64, delay_ms: u64, now: u64) -> Option<i64> {
    latency_us(sent_at, now)?;
    if delay_ms > MAX_LATENCY_US / 1000 {
        return None;
    }
    let due = sent_at + delay_ms * 1_000_000;
    Some(((i128::from(now) - i128::from(due)) / 1000) as i64)
}

/// Counters and histograms every worker updates; read by the reporter.
pub struct Shared {
    /// Messages written to the socket by all producers.
    pub published: AtomicU64,
    /// Messages confirmed (acked) by the broker.
    pub confirmed: AtomicU64,
    /// Messages the broker nacked.
    pub nacked: AtomicU64,
    /// Messages returned as unroutable.
    pub returned: AtomicU64,
    /// Messages received by all consumers.
    pub consumed: AtomicU64,
    /// Whether the broker has blocked a publisher (`connection.blocked`).
    pub blocked: AtomicBool,
    /// Delayed messages that arrived before their due time (recorded as lateness 0).
    pub early: AtomicU64,
    /// The most any of them was early, in microseconds.
    pub max_early_us: AtomicU64,
    /// Latencies recorded since the reporter last took them.
    interval: Mutex<Histogram<u64>>,
    /// The first fatal error of any worker.
    error: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    /// All counters at zero.
    pub fn new() -> Shared {
        Shared {
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            early: AtomicU64::new(0),
            max_early_us: AtomicU64::new(0),
            interval: Mutex::new(new_histogram()),
            error: Mutex::new(None),
        }
    }

    /// Adds a worker's local latencies and clears them.
    pub fn merge_latencies(&self, local: &mut Histogram<u64>) {
        if local.is_empty() {
            return;
        }
        if let Ok(mut h) = self.interval.lock() {
            let _ = h.add(&*local);
        }
        local.reset();
    }

    /// Takes the latencies merged since the last call.
    pub fn take_latencies(&self) -> Histogram<u64> {
        match self.interval.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, new_histogram()),
            Err(_) => new_histogram(),
        }
    }

    /// Records a fatal worker error; the first one wins.
    pub fn fail(&self, message: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(message);
        }
    }

    /// The first fatal worker error, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A worker-side latency recorder that merges into [`Shared`] every 100 ms.
pub struct LatencyRecorder {
    local: Histogram<u64>,
    last_merge: Instant,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> LatencyRecorder {
        LatencyRecorder {
            local: new_histogram(),
            last_merge: Instant::now(),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, us: u64) {
        self.local.saturating_record(us.max(1));
    }

    /// Merges into `shared` if 100 ms have passed (or always when `force`).
    pub fn maybe_merge(&mut self, shared: &Shared, force: bool) {
        if force || self.last_merge.elapsed() >= Duration::from_millis(100) {
            shared.merge_latencies(&mut self.local);
            self.last_merge = Instant::now();
        }
    }
}

/// CPU time used so far by the process and by each of its threads, from `/proc/self`.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    /// Process user + system time in clock ticks.
    pub process_ticks: u64,
    /// (thread name, user + system ticks) per thread.
    pub threads: Vec<(String, u64)>,
}

/// Clock ticks per second of `/proc` stat times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

impl CpuSample {
    /// Reads the current sample; `None` where `/proc` is unavailable.
    pub fn now() -> Option<CpuSample> {
        let (_, process_ticks) = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut threads = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                if let Ok(s) = std::fs::read_to_string(entry.path().join("stat")) {
                    if let Some(t) = parse_stat(&s) {
                        threads.push(t);
                    }
                }
            }
        }
        Some(CpuSample {
            process_ticks,
            threads,
        })
    }
}

/// Parses `comm` and utime + stime out of a `/proc/<pid>/stat` line.
pub fn parse_stat(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    // Fields after ") ": state is field 3; utime and stime are fields 14 and 15.
    let mut fields = line.get(close + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Percent of one core used between two samples `secs` apart, per thread name prefix
/// `bench-` (workers), highest first.
pub fn thread_cpu(before: &CpuSample, after: &CpuSample, secs: f64) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .threads
        .iter()
        .filter(|(name, _)| name.starts_with("bench-"))
        .map(|(name, ticks)| {
            let start = before
                .threads
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, t)| *t);
            (
                name.clone(),
                ticks.saturating_sub(start) as f64 / TICKS_PER_SEC / secs * 100.0,
            )
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// Formats a rate with thousands separators.
pub fn fmt_count(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line() {
        let line = "1234 (bench-producer-0) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 0 0";
        assert_eq!(
            parse_stat(line),
            Some(("bench-producer-0".to_string(), 281))
        );
        assert_eq!(parse_stat("1 (a) b) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn latency_plausibility() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(latency_us(now - 5_000_000, now), Some(5_000));
        assert_eq!(latency_us(now + 10, now), Some(0));
        assert_eq!(latency_us(0, now), None);
        assert_eq!(latency_us(now + 5_000_000_000, now), None);
    }

    #[test]
    fn lateness_is_signed() {
        let sent = 1_700_000_000_000_000_000;
        let now = sent + 60_000 * 1_000_000 + 2_500_000;
        assert_eq!(lateness_us(sent, 60_000, now), Some(2_500));
        assert_eq!(lateness_us(sent, 60_001, now), Some(1_500));
        assert_eq!(lateness_us(sent, 60_003, now), Some(-500));
        assert_eq!(lateness_us(sent, 0, sent + 7_000), Some(7));
        assert_eq!(lateness_us(0, 10, now), None);
        assert_eq!(lateness_us(sent, 4_000_000, now), None);
    }

    #[test]
    fn counts() {
        assert_eq!(fmt_count(0.0), "0");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_count(1234567.4), "1 234 567");
    }

    #[test]
    fn histograms_merge() {
        let shared = Shared::new();
        let mut r = LatencyRecorder::new();
        r.record(10);
        r.record(20);
        r.maybe_merge(&shared, true);
        let h = shared.take_latencies();
        assert_eq!(h.len(), 2);
        assert!(shared.take_latencies().is_empty());
    }
}
