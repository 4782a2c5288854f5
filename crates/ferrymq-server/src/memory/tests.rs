use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

fn wm(s: &str) -> Result<Watermark, BadWatermark> {
    s.parse()
}

#[test]
fn watermark_fractions() {
    assert_eq!(wm("0.4"), Ok(Watermark::Relative(0.4)));
    assert_eq!(wm(" 0.75 "), Ok(Watermark::Relative(0.75)));
    assert_eq!(wm("1"), Ok(Watermark::Relative(1.0)));
    assert_eq!(wm("1.0"), Ok(Watermark::Relative(1.0)));
    // A decimal point makes a fraction even above 1 (RabbitMQ allows relative > 1).
    assert_eq!(wm("1.5"), Ok(Watermark::Relative(1.5)));
    assert_eq!(Watermark::Relative(0.4).limit(1000), 400);
}

#[test]
fn watermark_sizes() {
    assert_eq!(wm("2GiB"), Ok(Watermark::Absolute(2 << 30)));
    assert_eq!(wm("2G"), Ok(Watermark::Absolute(2 << 30)));
    assert_eq!(wm("300MB"), Ok(Watermark::Absolute(300_000_000)));
    assert_eq!(wm("300 MiB"), Ok(Watermark::Absolute(300 << 20)));
    assert_eq!(wm("512kB"), Ok(Watermark::Absolute(512_000)));
    assert_eq!(wm("512k"), Ok(Watermark::Absolute(512 << 10)));
    assert_eq!(wm("1.5GB"), Ok(Watermark::Absolute(1_500_000_000)));
    assert_eq!(wm("500000000"), Ok(Watermark::Absolute(500_000_000)));
    assert_eq!(Watermark::Absolute(7).limit(1000), 7);
}

#[test]
fn watermark_refused() {
    for bad in [
        "", "0", "0.0", "-1", "abc", "2XB", "GiB", "1e9", "nan", "inf", "0MB", "1..2",
    ] {
        assert!(wm(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn meminfo_and_status() {
    let meminfo = "MemTotal:       24523456 kB\nMemFree:         1234 kB\n";
    assert_eq!(parse_meminfo_total(meminfo), Some(24_523_456 * 1024));
    assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    let status = "Name:\tferrymq\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nRssAnon: 1 kB\n";
    assert_eq!(parse_status_rss(status), Some(20 * 1024 * 1024));
    assert_eq!(parse_status_rss("VmRSS:\tgarbage kB\n"), None);
}

#[test]
fn cgroup_files() {
    assert_eq!(parse_cgroup_v2_max("max\n"), None);
    assert_eq!(parse_cgroup_v2_max("536870912\n"), Some(536_870_912));
    assert_eq!(parse_cgroup_v2_max("junk"), None);
    assert_eq!(parse_cgroup_v1_limit("9223372036854771712\n"), None);
    assert_eq!(parse_cgroup_v1_limit("1073741824\n"), Some(1 << 30));
    let v2 = "0::/system.slice/ferrymq.service\n";
    assert_eq!(
        parse_proc_cgroup(v2),
        (Some("/system.slice/ferrymq.service".into()), None)
    );
    let v1 = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
    assert_eq!(parse_proc_cgroup(v1), (None, Some("/docker/abc".into())));
    let hybrid = "11:memory:/user.slice\n0::/user.slice/session-1.scope\n";
    assert_eq!(
        parse_proc_cgroup(hybrid),
        (
            Some("/user.slice/session-1.scope".into()),
            Some("/user.slice".into())
        )
    );
}

#[test]
fn alarm_state_machine() {
    let mut a = AlarmState::default();
    assert_eq!(a.observe(90, 100), None);
    assert_eq!(a.observe(100, 100), None, "at the limit is not above it");
    assert_eq!(a.observe(101, 100), Some(true));
    assert_eq!(a.observe(150, 100), None);
    // Below the limit but within the clearing margin: still on (no flapping).
    assert_eq!(a.observe(99, 100), None);
    assert_eq!(a.observe(96, 100), None);
    assert_eq!(a.observe(94, 100), Some(false));
    assert_eq!(a.observe(99, 100), None);
    assert!(a.raise());
    assert!(!a.raise());
    assert_eq!(a.observe(94, 100), Some(false));
}

fn monitor(limit: u64, used: Arc<AtomicU64>) -> MemoryMonitor {
    MemoryMonitor::with_available(
        Watermark::Absolute(limit),
        1 << 40,
        MemorySource::Ram,
        Some(Box::new(move || used.load(Ordering::Relaxed))),
    )
}

#[test]
fn monitor_samples_and_signals() {
    let used = Arc::new(AtomicU64::new(10));
    let m = monitor(1000, used.clone());
    let mut rx = m.subscribe();
    assert!(!m.alarm());
    assert_eq!(m.used(), 10);
    assert_eq!(m.limit(), 1000);
    used.store(2000, Ordering::Relaxed);
    m.check();
    assert!(m.alarm());
    assert!(rx.has_changed().unwrap());
    assert!(*rx.borrow_and_update());
    used.store(500, Ordering::Relaxed);
    m.check();
    assert!(!m.alarm());
    assert!(!*rx.borrow_and_update());
}

#[test]
fn input_between_samples_raises_early() {
    let used = Arc::new(AtomicU64::new(900));
    let m = monitor(1000, used.clone());
    m.note_input(60);
    assert!(!m.alarm(), "within the headroom");
    m.note_input(60);
    assert!(m.alarm(), "120 bytes read with 100 of headroom");
    // The next sample decides: 900 is below 95 % of the limit, so it clears.
    m.check();
    assert!(!m.alarm());
    // A sample resets the count.
    m.note_input(90);
    assert!(!m.alarm());
    // Confirmed by a sample above the limit: stays on.
    m.note_input(20);
    assert!(m.alarm());
    used.store(1200, Ordering::Relaxed);
    m.check();
    assert!(m.alarm());
    used.store(960, Ordering::Relaxed);
    m.check();
    assert!(m.alarm(), "within the clearing margin");
    used.store(100, Ordering::Relaxed);
    m.check();
    assert!(!m.alarm());
}

#[test]
fn relative_watermark_of_available_memory() {
    let m = MemoryMonitor::with_available(
        Watermark::Relative(0.4),
        1000,
        MemorySource::Cgroup,
        Some(Box::new(|| 1)),
    );
    assert_eq!(m.limit(), 400);
    assert_eq!(m.available(), (1000, MemorySource::Cgroup));
}

#[test]
fn rss_of_this_process_is_read() {
    assert!(process_rss() > 0);
    let (avail, _) = available_memory();
    assert!(avail > 0);
}
