//! Backlogs cost disk, not RAM: with a small `--queue-memory-budget`, a flood of 1 KiB
//! transient messages into a non-durable queue and a non-durable priority queue with no
//! consumer pages to the scratch logs (the broker's RSS stays bounded), every message comes
//! back in order (per priority, highest first) once consumers start, and a restart removes
//! the scratch logs.

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::harness::*;

const BODY: usize = 1024;

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// The broker's resident set (kB), from `/proc/<pid>/status`.
fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn body(seq: u64, priority: u8) -> Vec<u8> {
    let mut b = vec![b'.'; BODY];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8] = priority;
    b
}

/// Publishes `n` messages with confirms, `window` outstanding at a time; returns the peak
/// RSS (kB) seen while publishing.
async fn flood(ch: &lapin::Channel, queue: &str, n: u64, priorities: bool, pid: u32) -> u64 {
    let mut peak = 0;
    let mut pending = Vec::new();
    for seq in 0..n {
        let p = if priorities { (seq % 6) as u8 } else { 0 };
        let mut props = BasicProperties::default().with_delivery_mode(1);
        if priorities {
            props = props.with_priority(p);
        }
        let confirm = within(ch.basic_publish(
            "".into(),
            queue.into(),
            Default::default(),
            &body(seq, p),
            props,
        ))
        .await
        .expect("publish");
        pending.push(confirm);
        if pending.len() == 2000 {
            for c in pending.drain(..) {
                assert!(within(c).await.expect("confirm").is_ack());
            }
            peak = peak.max(rss_kb(pid));
        }
    }
    for c in pending.drain(..) {
        assert!(within(c).await.expect("confirm").is_ack());
    }
    peak.max(rss_kb(pid))
}

fn scratch_files(dir: &std::path::Path) -> usize {
    let Ok(queues) = std::fs::read_dir(dir.join("scratch")) else {
        return 0;
    };
    queues
        .flatten()
        .map(|q| std::fs::read_dir(q.path()).map_or(0, |f| f.count()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_backlogs_page_to_scratch_logs_with_bounded_rss() {
    if skip_if_external("transient_backlogs_page_to_scratch_logs_with_bounded_rss") {
        return;
    }
    let dir = TempDir::new();
    let mut broker = Broker::private_on(dir.path(), &["--queue-memory-budget", "16MiB"]);
    let pid = broker.pid().expect("spawned");
    let (_conn, ch) = broker.channel().await;
    let plain = unique("spill-plain");
    let prio = unique("spill-prio");
    within(ch.queue_declare(
        plain.as_str().into(),
        QueueDeclareOptions::default(),
        Default::default(),
    ))
    .await
    .expect("declare");
    within(ch.queue_declare(
        prio.as_str().into(),
        QueueDeclareOptions::default(),
        table(&[("x-max-priority", AMQPValue::ShortShortUInt(5))]),
    ))
    .await
    .expect("declare priority");
    let base = rss_kb(pid);
    let t0 = std::time::Instant::now();
    // ~100 MB of bodies: without paging the broker would hold well over that.
    let (n_plain, n_prio) = (60_000u64, 40_000u64);
    let peak_plain = flood(&ch, &plain, n_plain, false, pid).await;
    let peak_prio = flood(&ch, &prio, n_prio, true, pid).await;
    let peak = peak_plain.max(peak_prio);
    let grown_mb = peak.saturating_sub(base) / 1024;
    eprintln!(
        "spill: RSS base {} MB, peak {} MB; flood took {:?}",
        base / 1024,
        peak / 1024,
        t0.elapsed()
    );
    let t0 = std::time::Instant::now();
    assert!(
        grown_mb < 70,
        "RSS grew by {grown_mb} MB for a 16 MiB budget (base {} MB, peak {} MB)",
        base / 1024,
        peak / 1024
    );
    assert!(
        scratch_files(dir.path()) > 0,
        "the backlogs are in scratch logs"
    );
    let declared = within(ch.queue_declare(
        plain.as_str().into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        Default::default(),
    ))
    .await
    .expect("passive declare");
    assert_eq!(u64::from(declared.message_count()), n_plain);

    // Drain the plain queue: every message, in publish order.
    let (_c2, cons) = broker.plain_channel().await;
    within(cons.basic_qos(500, BasicQosOptions::default()))
        .await
        .expect("qos");
    let mut stream = within(cons.basic_consume(
        plain.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        Default::default(),
    ))
    .await
    .expect("consume");
    for want in 0..n_plain {
        let d = within(stream.next()).await.expect("delivery").expect("ok");
        assert_eq!(d.data.len(), BODY);
        let seq = u64::from_be_bytes(d.data[..8].try_into().unwrap());
        assert_eq!(seq, want, "publish order");
        if want % 100 == 99 {
            within(d.acker.ack(BasicAckOptions { multiple: true }))
                .await
                .expect("ack");
        }
    }
    eprintln!("spill: plain drain took {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    // Drain the priority queue: highest priority first, publish order within a priority.
    let mut stream = within(cons.basic_consume(
        prio.as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        Default::default(),
    ))
    .await
    .expect("consume priority");
    let mut last: Option<(u8, u64)> = None;
    for i in 0..n_prio {
        let d = within(stream.next()).await.expect("delivery").expect("ok");
        let seq = u64::from_be_bytes(d.data[..8].try_into().unwrap());
        let p = d.data[8].min(5);
        if let Some((lp, ls)) = last {
            assert!(
                p < lp || (p == lp && seq > ls),
                "delivery {i}: priority {p} seq {seq} after priority {lp} seq {ls}"
            );
        }
        last = Some((p, seq));
        if i % 100 == 99 {
            within(d.acker.ack(BasicAckOptions { multiple: true }))
                .await
                .expect("ack");
        }
    }

    eprintln!("spill: priority drain took {:?}", t0.elapsed());
    // A backlog left behind at a crash: the restart removes its scratch log.
    flood(&ch, &plain, 10_000, false, pid).await;
    assert!(scratch_files(dir.path()) > 0);
    broker.kill9();
    drop(broker);
    let _broker = Broker::private_on(dir.path(), &[]);
    assert!(
        !dir.path().join("scratch").exists(),
        "scratch logs are removed at start"
    );
}
