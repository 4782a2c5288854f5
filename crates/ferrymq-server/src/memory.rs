//! Memory accounting and the memory alarm (RabbitMQ's `vm_memory_high_watermark`).
//!
//! [`MemoryMonitor`] knows the broker's limit (`--memory-high-watermark`: a fraction of the
//! machine's RAM or of the cgroup's limit, or an absolute size) and samples the memory in
//! use every [`SAMPLE_INTERVAL`] with a sampler the binary injects (the allocator's own
//! count of allocated bytes; the process's RSS when none is given). Between samples, the
//! connections report the bytes they read from publishers (`note_input`): when those alone
//! could fill the headroom the last sample left, the alarm is raised at once instead of
//! up to 100 ms later. The alarm is a `watch` channel: AMQP connections that publish stop
//! being read (after `connection.blocked`), Kafka Produce requests are held and answered
//! with `throttle_time_ms`; consumers go on, so queues drain and the alarm clears.
//!
//! The parsers (watermark, `/proc/meminfo`, cgroup v1/v2 limits, `/proc/self/status`) and
//! the alarm's state machine ([`AlarmState`]) are pure, for unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

/// How often the monitor samples memory use.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// The alarm clears once use falls below this fraction of the limit (so that use hovering
/// at the limit does not flap publishers between blocked and unblocked).
pub const CLEAR_RATIO: f64 = 0.95;

/// RabbitMQ's default `vm_memory_high_watermark.relative`.
pub const DEFAULT_WATERMARK: Watermark = Watermark::Relative(0.4);

/// `--memory-high-watermark`: a fraction of the available memory or an absolute size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    /// A fraction (0 < f, usually ≤ 1) of RAM or of the cgroup limit.
    Relative(f64),
    /// Bytes.
    Absolute(u64),
}

/// A watermark that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("memory high watermark {0:?}: expected a fraction such as 0.4 or a size such as 2GiB, 300MB or 500000000")]
pub struct BadWatermark(pub String);

impl std::str::FromStr for Watermark {
    type Err = BadWatermark;

    /// `0.4` (a fraction: any number up to 1, or with a decimal point) or a size: a byte
    /// count above 1, or a number with a unit as RabbitMQ reads them (`k`/`kiB`, `M`/`MiB`,
    /// `G`/`GiB`, `T`/`TiB` are powers of 1024; `kB`, `MB`, `GB`, `TB` powers of 1000).
    fn from_str(s: &str) -> Result<Watermark, BadWatermark> {
        let bad = || BadWatermark(s.to_owned());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        if num.is_empty() {
            return Err(bad());
        }
        if unit.is_empty() {
            let f: f64 = num.parse().map_err(|_| bad())?;
            if !f.is_finite() || f <= 0.0 {
                return Err(bad());
            }
            if num.contains('.') || f <= 1.0 {
                return Ok(Watermark::Relative(f));
            }
            return num.parse().map(Watermark::Absolute).map_err(|_| bad());
        }
        let mult: u64 = match unit {
            "k" | "K" | "kiB" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let f: f64 = num.parse().map_err(|_| bad())?;
        let bytes = f * mult as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Watermark::Absolute(bytes as u64))
    }
}

impl Watermark {
    /// The limit in bytes given the memory available to the process.
    pub fn limit(&self, available: u64) -> u64 {
        match *self {
            Watermark::Relative(f) => (available as f64 * f) as u64,
            Watermark::Absolute(b) => b,
        }
    }
}

impl std::fmt::Display for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Watermark::Relative(x) => write!(f, "{x}"),
            Watermark::Absolute(b) => write!(f, "{b}"),
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| kb_field(l, "MemTotal:"))
}

/// `VmRSS` of `/proc/self/status`, bytes.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    text.lines().find_map(|l| kb_field(l, "VmRSS:"))
}

fn kb_field(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix(name)?.trim();
    let kb: u64 = rest
        .strip_suffix("kB")
        .unwrap_or(rest)
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// A cgroup v2 `memory.max`: `max` (no limit) or bytes.
pub fn parse_cgroup_v2_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// A cgroup v1 `memory.limit_in_bytes`: "no limit" is a huge number (page-rounded
/// `i64::MAX`).
pub fn parse_cgroup_v1_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 60).then_some(n)
}

/// The process's cgroup paths from `/proc/self/cgroup`: (v2 unified path, v1 memory
/// controller path).
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let (mut v2, mut v1) = (None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = Some(path.to_owned());
        } else if ctrls.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_owned());
        }
    }
    (v2, v1)
}

/// Where the memory available to the broker was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    Ram,
    Cgroup,
}

/// The memory available to the process: the machine's RAM, or its cgroup's limit when
/// lower (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`; the limits of parent
/// cgroups are looked at too, as containers often set them there).
pub fn available_memory() -> (u64, MemorySource) {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo_total(&t))
        .unwrap_or(1 << 30);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| cgroup_limit(&t));
    match cgroup {
        Some(c) if c < ram => (c, MemorySource::Cgroup),
        _ => (ram, MemorySource::Ram),
    }
}

fn cgroup_limit(proc_cgroup: &str) -> Option<u64> {
    let (v2, v1) = parse_proc_cgroup(proc_cgroup);
    let walk = |root: &str, path: &str, file: &str, parse: fn(&str) -> Option<u64>| {
        let mut best: Option<u64> = None;
        let mut p = std::path::PathBuf::from(root);
        p.push(path.trim_start_matches('/'));
        loop {
            if let Some(v) = std::fs::read_to_string(p.join(file))
                .ok()
                .and_then(|t| parse(&t))
            {
                best = Some(best.map_or(v, |b| b.min(v)));
            }
            if p.as_os_str() == root || !p.pop() {
                break;
            }
        }
        best
    };
    let a = v2.and_then(|p| walk("/sys/fs/cgroup", &p, "memory.max", parse_cgroup_v2_max));
    let b = v1.and_then(|p| {
        walk(
            "/sys/fs/cgroup/memory",
            &p,
            "memory.limit_in_bytes",
            parse_cgroup_v1_limit,
        )
    });
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The process's resident set size, bytes (0 when it cannot be read).
pub fn process_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| parse_status_rss(&t))
        .unwrap_or(0)
}

/// The alarm's state machine: raised when use exceeds the limit, cleared when it falls
/// below `CLEAR_RATIO` of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AlarmState {
    pub on: bool,
}

impl AlarmState {
    /// Feeds one sample; returns the new state when it changed.
    pub fn observe(&mut self, used: u64, limit: u64) -> Option<bool> {
        let next = if self.on {
            (used as f64) >= limit as f64 * CLEAR_RATIO
        } else {
            used > limit
        };
        (next != self.on).then(|| {
            self.on = next;
            next
        })
    }

    /// Raised without a sample (the input since the last one may have filled the headroom).
    pub fn raise(&mut self) -> bool {
        !std::mem::replace(&mut self.on, true)
    }
}

/// What a sampler reports: the memory the alarm compares with the limit.
pub type Sampler = Box<dyn Fn() -> u64 + Send + Sync>;

static PROCESS_SAMPLER: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Sets how monitors created without a sampler measure memory (the binary sets the
/// allocator's count of allocated bytes; without it, the process's RSS).
pub fn set_process_sampler(f: fn() -> u64) {
    let _ = PROCESS_SAMPLER.set(f);
}

/// The broker's memory use, limit and alarm.
pub struct MemoryMonitor {
    watermark: Watermark,
    available: u64,
    source: MemorySource,
    limit: u64,
    /// Bytes in use at the last sample.
    used: AtomicU64,
    /// `limit - used` at the last sample.
    headroom: AtomicU64,
    /// Bytes read by connections since the last sample.
    input: AtomicU64,
    /// The alarm state, and whether it was raised by `note_input` with no sample over
    /// the limit since (then its setting and clearing are logged at debug level only).
    state: Mutex<(AlarmState, bool)>,
    alarm: watch::Sender<bool>,
    sampler: Sampler,
}

impl MemoryMonitor {
    /// A monitor for `watermark` of the memory available to the process, measuring with
    /// `sampler` (the process's RSS when `None`).
    pub fn new(watermark: Watermark, sampler: Option<Sampler>) -> MemoryMonitor {
        let (available, source) = available_memory();
        MemoryMonitor::with_available(watermark, available, source, sampler)
    }

    pub fn with_available(
        watermark: Watermark,
        available: u64,
        source: MemorySource,
        sampler: Option<Sampler>,
    ) -> MemoryMonitor {
        let limit = watermark.limit(available);
        let m = MemoryMonitor {
            watermark,
            available,
            source,
            limit,
            used: AtomicU64::new(0),
            headroom: AtomicU64::new(limit),
            input: AtomicU64::new(0),
            state: Mutex::new((AlarmState::default(), false)),
            alarm: watch::channel(false).0,
            sampler: sampler.unwrap_or_else(|| match PROCESS_SAMPLER.get() {
                Some(f) => Box::new(*f),
                None => Box::new(process_rss),
            }),
        };
        m.check();
        m
    }

    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    /// The memory available to the process (RAM or cgroup limit) and where it came from.
    pub fn available(&self) -> (u64, MemorySource) {
        (self.available, self.source)
    }

    /// The limit in bytes (RabbitMQ's `mem_limit`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes in use at the last sample (RabbitMQ's `mem_used`).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the alarm is on (RabbitMQ's `mem_alarm`).
    pub fn alarm(&self) -> bool {
        *self.alarm.borrow()
    }

    /// A receiver of the alarm state.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.alarm.subscribe()
    }

    /// Counts `n` bytes read from a client; raises the alarm at once when the input since
    /// the last sample could have used up the headroom that sample left.
    #[inline]
    pub fn note_input(&self, n: usize) {
        let since = self.input.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if since > self.headroom.load(Ordering::Relaxed) && !*self.alarm.borrow() {
            self.raise_early(since);
        }
    }

    #[cold]
    fn raise_early(&self, since: u64) {
        let mut st = self.state.lock();
        if st.0.raise() {
            st.1 = true;
            tracing::debug!(
                used = self.used(),
                read_since_sample = since,
                limit = self.limit,
                "memory alarm raised early: the input since the last sample may fill the headroom"
            );
            self.alarm.send_replace(true);
        }
    }

    /// Samples memory use and updates the alarm.
    pub fn check(&self) {
        let used = (self.sampler)();
        self.used.store(used, Ordering::Relaxed);
        self.headroom
            .store(self.limit.saturating_sub(used), Ordering::Relaxed);
        self.input.store(0, Ordering::Relaxed);
        let mut st = self.state.lock();
        let (state, early) = &mut *st;
        let was_early = *early;
        let confirmed = state.on && used > self.limit && was_early;
        match state.observe(used, self.limit) {
            Some(true) => {
                tracing::warn!(
                    used,
                    limit = self.limit,
                    "memory alarm set: memory use is above the high watermark, blocking publishers"
                );
                self.alarm.send_replace(true);
            }
            Some(false) => {
                *early = false;
                if was_early {
                    tracing::debug!(used, limit = self.limit, "early memory alarm cleared");
                } else {
                    tracing::info!(used, limit = self.limit, "memory alarm cleared");
                }
                self.alarm.send_replace(false);
            }
            None if confirmed => {
                *early = false;
                tracing::warn!(
                    used,
                    limit = self.limit,
                    "memory alarm set: memory use is above the high watermark, blocking publishers"
                );
            }
            None => {}
        }
    }

    /// Samples every `SAMPLE_INTERVAL` until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.check(),
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests;
