//! The Kafka load run: set up the topic, start producer tasks (each with one pipelined
//! connection per partition leader) and/or fetch loops (one per leader), print progress
//! every second and a summary at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};

use super::batch::BatchBuilder;
use super::conn::{
    self, decode_response, encode_request, read_frame, Conn, Security, TopicLayout, WriteSide,
};
use super::{KafkaArgs, Keys, Mode};
use crate::stats::{fmt_count, new_histogram, now_nanos, CpuSample, TICKS_PER_SEC};

/// Counters and histograms shared by every task.
struct Stats {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    producers_done: AtomicBool,
    stop: AtomicBool,
    produce_latency: Mutex<Histogram<u64>>,
    e2e_latency: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
    /// Nanoseconds after start when the last ack / last consumed record arrived.
    last_ack_ns: AtomicU64,
    last_consume_ns: AtomicU64,
    start: Instant,
}

impl Stats {
    fn fail(&self, msg: String) {
        if let Ok(mut e) = self.first_error.lock() {
            e.get_or_insert(msg);
        }
    }

    fn since_start_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub fn run(args: KafkaArgs) -> anyhow::Result<()> {
    let acks = args.acks_value()?;
    let security = Arc::new(args.security()?);
    if args.partitions < 1 || args.producers < 1 || args.in_flight < 1 {
        bail!("--partitions, --producers and --in-flight must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .thread_name("bench-kafka")
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, acks, security))
}

async fn run_async(args: KafkaArgs, acks: i16, security: Arc<Security>) -> anyhow::Result<()> {
    let mut setup = Conn::connect(&args.bootstrap, &security).await?;
    let layout = match conn::describe_topic(&mut setup, &args.topic).await? {
        Some(l) => l,
        None => {
            conn::create_topic(&mut setup, &args.topic, args.partitions).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(l) = conn::describe_topic(&mut setup, &args.topic).await? {
                    break l;
                }
                if Instant::now() > deadline {
                    bail!(
                        "topic {} not in metadata 30 s after creating it",
                        args.topic
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    drop(setup);
    let layout = Arc::new(layout);
    let count = match (args.count, args.time) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(1_000_000),
    };
    if args.mode == Mode::Consume && count.is_none() && args.time.is_none() {
        bail!("consume needs --count or --time");
    }
    let stats = Arc::new(Stats {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        consumed_bytes: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        produce_latency: Mutex::new(new_histogram()),
        e2e_latency: Mutex::new(new_histogram()),
        first_error: Mutex::new(None),
        last_ack_ns: AtomicU64::new(0),
        last_consume_ns: AtomicU64::new(0),
        start: Instant::now(),
    });
    let deadline = args
        .time
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let cpu_before = CpuSample::now();
    eprintln!(
        "kafka bench: {} ({}{}) topic {} ({} partitions), mode {:?}, {} B records, acks={}, {:?}, keys {:?}, {} producer(s), {} in flight",
        args.bootstrap,
        match args.security_protocol {
            super::SecurityProtocol::Plaintext => "plaintext",
            super::SecurityProtocol::Ssl => "ssl",
            super::SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            super::SecurityProtocol::SaslSsl => "sasl_ssl",
        },
        security
            .sasl
            .as_ref()
            .map(|s| format!(" {} as {}", s.mechanism.name(), s.username))
            .unwrap_or_default(),
        args.topic,
        layout.partitions.len(),
        args.mode,
        args.size,
        args.acks,
        args.compression,
        args.keys,
        args.producers,
        args.in_flight
    );

    let mut producers = Vec::new();
    if args.mode != Mode::Consume {
        for id in 0..args.producers {
            let quota = count.map(|n| {
                n / args.producers as u64 + u64::from((id as u64) < n % args.producers as u64)
            });
            let (args, layout, stats) = (args.clone(), layout.clone(), stats.clone());
            let security = security.clone();
            producers.push(tokio::spawn(async move {
                let r = produce(id, &args, acks, &layout, &stats, &security, quota, deadline).await;
                if let Err(e) = &r {
                    stats.fail(format!("producer {id}: {e:#}"));
                    stats.stop.store(true, Ordering::Relaxed);
                }
                r
            }));
        }
    } else {
        stats.producers_done.store(true, Ordering::Relaxed);
    }
    let mut consumers = Vec::new();
    if args.mode != Mode::Produce {
        let mut by_leader: HashMap<String, Vec<i32>> = HashMap::new();
        for (p, leader) in &layout.partitions {
            by_leader.entry(leader.clone()).or_default().push(*p);
        }
        for (leader, parts) in by_leader {
            let (args, stats, security) = (args.clone(), stats.clone(), security.clone());
            consumers.push(tokio::spawn(async move {
                let r = consume(&args, &leader, &parts, &stats, &security, count, deadline).await;
                if let Err(e) = &r {
                    stats.fail(format!("consumer of {leader}: {e:#}"));
                    stats.stop.store(true, Ordering::Relaxed);
                }
                r
            }));
        }
    }
    let reporter = {
        let stats = stats.clone();
        let size = args.size as f64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let (mut last_acked, mut last_consumed) = (0, 0);
            let mut secs = 0;
            loop {
                tick.tick().await;
                secs += 1;
                let (a, c) = (get(&stats.acked), get(&stats.consumed));
                eprintln!(
                    "[{secs:>4}s] produced {:>10} rec/s {:>8.1} MB/s | consumed {:>10} rec/s {:>8.1} MB/s",
                    fmt_count((a - last_acked) as f64),
                    (a - last_acked) as f64 * size / 1e6,
                    fmt_count((c - last_consumed) as f64),
                    (c - last_consumed) as f64 * size / 1e6,
                );
                last_acked = a;
                last_consumed = c;
            }
        })
    };
    let mut failed = false;
    for p in producers {
        failed |= !matches!(p.await, Ok(Ok(())));
    }
    stats.producers_done.store(true, Ordering::Relaxed);
    for c in consumers {
        failed |= !matches!(c.await, Ok(Ok(())));
    }
    reporter.abort();
    let wall = stats.start.elapsed().as_secs_f64();
    let cpu_after = CpuSample::now();
    report(&args, &stats, wall, cpu_before, cpu_after);
    if let Some(e) = stats.first_error.lock().ok().and_then(|e| e.clone()) {
        bail!("{e}");
    }
    if failed {
        bail!("a bench task failed");
    }
    Ok(())
}

// ------------------------------------------------------------------ producers

struct Pending {
    corr: i32,
    sent: Instant,
    records: u64,
}

/// One pipelined produce connection: the writer side here, responses read by a task.
struct Pipeline {
    write: WriteSide,
    version: i16,
    next_corr: i32,
    permits: Arc<Semaphore>,
    pending: Option<mpsc::UnboundedSender<Pending>>,
    reader: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    out: BytesMut,
}

impl Pipeline {
    async fn open(
        addr: &str,
        security: &Security,
        acks: i16,
        in_flight: u32,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Self> {
        let c = Conn::connect(addr, security).await?;
        let version = c.versions.of::<ProduceRequest>()?;
        let Conn {
            mut read,
            write,
            mut rbuf,
            ..
        } = c;
        let permits = Arc::new(Semaphore::new(in_flight as usize));
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let reader = if acks == 0 {
            None // acks=0: the broker sends no response at all
        } else {
            let permits = permits.clone();
            Some(tokio::spawn(async move {
                let mut local = new_histogram();
                let mut responses = 0u64;
                while let Some(p) = rx.recv().await {
                    let frame = read_frame(&mut read, &mut rbuf).await?;
                    let (corr, resp) = decode_response::<ProduceRequest>(frame, version)?;
                    if corr != p.corr {
                        bail!(
                            "produce response correlation id {corr}, expected {}",
                            p.corr
                        );
                    }
                    let us = p.sent.elapsed().as_micros() as u64;
                    let mut error = None;
                    for t in &resp.responses {
                        for pr in &t.partition_responses {
                            if pr.error_code != 0 {
                                error = Some(format!(
                                    "partition {} error {}{}",
                                    pr.index,
                                    pr.error_code,
                                    pr.error_message
                                        .as_ref()
                                        .map(|m| format!(" ({})", m.as_str()))
                                        .unwrap_or_default()
                                ));
                            }
                        }
                    }
                    match error {
                        None => {
                            stats.acked.fetch_add(p.records, Ordering::Relaxed);
                            let _ = local.record_n(us.max(1), p.records);
                        }
                        Some(e) => {
                            stats.failed.fetch_add(p.records, Ordering::Relaxed);
                            stats.fail(format!("produce failed: {e}"));
                        }
                    }
                    stats
                        .last_ack_ns
                        .store(stats.since_start_ns(), Ordering::Relaxed);
                    permits.add_permits(1);
                    responses += 1;
                    if responses & 63 == 0 {
                        if let Ok(mut h) = stats.produce_latency.lock() {
                            let _ = h.add(&local);
                        }
                        local.reset();
                    }
                }
                if let Ok(mut h) = stats.produce_latency.lock() {
                    let _ = h.add(&local);
                }
                Ok(())
            }))
        };
        Ok(Pipeline {
            write,
            version,
            next_corr: 1,
            permits,
            pending: Some(tx),
            reader,
            out: BytesMut::with_capacity(256 * 1024),
        })
    }

    async fn send(
        &mut self,
        topic: &TopicName,
        partition: i32,
        batch: Bytes,
        records: u64,
        acks: i16,
        stats: &Stats,
    ) -> anyhow::Result<()> {
        if acks != 0 {
            self.permits
                .acquire()
                .await
                .context("produce pipeline closed")?
                .forget();
        }
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = 30_000;
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(batch);
        let mut td = TopicProduceData::default();
        td.name = topic.clone();
        td.partition_data = vec![pd];
        req.topic_data = vec![td];
        let corr = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1);
        self.out.clear();
        encode_request(&req, self.version, corr, &mut self.out)?;
        if acks != 0 {
            if let Some(tx) = &self.pending {
                tx.send(Pending {
                    corr,
                    sent: Instant::now(),
                    records,
                })
                .map_err(|_| anyhow::anyhow!("produce response reader stopped"))?;
            }
        }
        self.write.write_all(&self.out).await?;
        // No-op on TCP; over TLS it sends what rustls still buffers.
        self.write.flush().await?;
        stats.sent.fetch_add(records, Ordering::Relaxed);
        if acks == 0 {
            stats.acked.fetch_add(records, Ordering::Relaxed);
            stats
                .last_ack_ns
                .store(stats.since_start_ns(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Waits for every response.
    async fn finish(mut self) -> anyhow::Result<()> {
        self.pending.take();
        if let Some(r) = self.reader.take() {
            r.await??;
        }
        self.write.flush().await?;
        Ok(())
    }
}

/// A small xorshift generator for random keys (deterministic per producer).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    id: u32,
    args: &KafkaArgs,
    acks: i16,
    layout: &TopicLayout,
    stats: &Arc<Stats>,
    security: &Security,
    quota: Option<u64>,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let topic = TopicName(StrBytes::from_string(args.topic.clone()));
    let n_parts = layout.partitions.len();
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    for (_, leader) in &layout.partitions {
        if !pipelines.contains_key(leader) {
            let p = Pipeline::open(leader, security, acks, args.in_flight, stats.clone()).await?;
            pipelines.insert(leader.clone(), p);
        }
    }
    let mut builders: Vec<BatchBuilder> = (0..n_parts)
        .map(|_| BatchBuilder::new(args.compression))
        .collect();
    let mut opened: Vec<Option<Instant>> = vec![None; n_parts];
    let mut value = vec![b'x'; args.size];
    let mut sticky = id as usize % n_parts;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 32));
    let mut key = String::with_capacity(24);
    let start = Instant::now();
    let linger = Duration::from_millis(args.linger_ms);
    let mut made: u64 = 0;
    let mut checked_at: u64 = 0;
    loop {
        if quota.is_some_and(|q| made >= q) || stats.stop.load(Ordering::Relaxed) {
            break;
        }
        if made >= checked_at + 256 || made == 0 {
            checked_at = made;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        if args.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * args.rate) as u64;
            if made >= due {
                // Ahead of the rate: send batches that lingered long enough, then wait.
                for i in 0..n_parts {
                    if opened[i].is_some_and(|t| t.elapsed() >= linger) {
                        send_batch(
                            &mut builders[i],
                            &mut opened[i],
                            i,
                            layout,
                            &topic,
                            &mut pipelines,
                            acks,
                            stats,
                        )
                        .await?;
                    }
                }
                let next = Duration::from_secs_f64((made + 1) as f64 / args.rate);
                let wake = (start + next).min(Instant::now() + linger);
                tokio::time::sleep_until(wake.into()).await;
                continue;
            }
        }
        let stamp = now_nanos();
        if value.len() >= 8 {
            value[..8].copy_from_slice(&stamp.to_be_bytes());
        }
        let (idx, key_bytes): (usize, Option<&[u8]>) = match args.keys {
            Keys::None => (sticky, None),
            Keys::Random | Keys::Sequential => {
                key.clear();
                use std::fmt::Write;
                if args.keys == Keys::Random {
                    let _ = write!(key, "{:016x}", rng.next());
                } else {
                    let _ = write!(key, "{id}-{made}");
                }
                let p = super::batch::partition_for_key(key.as_bytes(), n_parts as u32);
                (p as usize, Some(key.as_bytes()))
            }
        };
        builders[idx].append((stamp / 1_000_000) as i64, key_bytes, &value);
        opened[idx].get_or_insert_with(Instant::now);
        made += 1;
        if builders[idx].records_bytes() >= args.batch_bytes {
            send_batch(
                &mut builders[idx],
                &mut opened[idx],
                idx,
                layout,
                &topic,
                &mut pipelines,
                acks,
                stats,
            )
            .await?;
            if args.keys == Keys::None {
                sticky = (sticky + 1) % n_parts;
            }
        }
    }
    for i in 0..n_parts {
        if !builders[i].is_empty() {
            send_batch(
                &mut builders[i],
                &mut opened[i],
                i,
                layout,
                &topic,
                &mut pipelines,
                acks,
                stats,
            )
            .await?;
        }
    }
    for (_, p) in pipelines {
        p.finish().await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn send_batch(
    builder: &mut BatchBuilder,
    opened: &mut Option<Instant>,
    idx: usize,
    layout: &TopicLayout,
    topic: &TopicName,
    pipelines: &mut HashMap<String, Pipeline>,
    acks: i16,
    stats: &Stats,
) -> anyhow::Result<()> {
    let n = builder.len() as u64;
    let batch = builder.seal()?;
    *opened = None;
    let (partition, leader) = &layout.partitions[idx];
    let p = pipelines
        .get_mut(leader)
        .ok_or_else(|| anyhow::anyhow!("no connection to leader {leader}"))?;
    p.send(topic, *partition, batch, n, acks, stats).await
}

// ------------------------------------------------------------------ consumers

async fn consume(
    args: &KafkaArgs,
    leader: &str,
    partitions: &[i32],
    stats: &Stats,
    security: &Security,
    target: Option<u64>,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let mut c = Conn::connect(leader, security).await?;
    let version = c.versions.of::<FetchRequest>()?;
    let topic = TopicName(StrBytes::from_string(args.topic.clone()));
    let mut offsets: HashMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    let mut local = new_histogram();
    let mut idle_since: Option<Instant> = None;
    loop {
        let consumed = get(&stats.consumed);
        if stats.stop.load(Ordering::Relaxed) || target.is_some_and(|t| consumed >= t) {
            break;
        }
        if target.is_none() && stats.producers_done.load(Ordering::Relaxed) {
            // Timed run: stop once everything acknowledged was read, or nothing moves.
            if consumed >= get(&stats.acked) {
                break;
            }
            if idle_since.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                break;
            }
        }
        if args.mode == Mode::Consume && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 500;
        req.min_bytes = 1;
        req.max_bytes = i32::MAX;
        req.isolation_level = 0;
        req.session_id = 0;
        req.session_epoch = -1;
        let mut ft = FetchTopic::default();
        ft.topic = topic.clone();
        ft.partitions = partitions
            .iter()
            .map(|p| {
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.current_leader_epoch = -1;
                fp.fetch_offset = offsets[p];
                fp.last_fetched_epoch = -1;
                fp.log_start_offset = -1;
                fp.partition_max_bytes = args.fetch_bytes;
                fp
            })
            .collect();
        req.topics = vec![ft];
        let resp = c.call(&req, version).await?;
        if resp.error_code != 0 {
            bail!("fetch error {}", resp.error_code);
        }
        let now_ms = (now_nanos() / 1_000_000) as i64;
        let mut got = 0u64;
        for t in &resp.responses {
            for pd in &t.partitions {
                let Some(off) = offsets.get_mut(&pd.partition_index) else {
                    continue;
                };
                match pd.error_code {
                    0 => {}
                    1 => {
                        // OFFSET_OUT_OF_RANGE: start from the log start (earliest).
                        *off = pd.log_start_offset.max(0);
                        continue;
                    }
                    e => bail!("fetch partition {} error {e}", pd.partition_index),
                }
                let Some(records) = &pd.records else { continue };
                for b in super::batch::scan_batches(records) {
                    if b.last_offset < *off {
                        continue;
                    }
                    if !b.control {
                        let n = if b.base_offset >= *off {
                            b.record_count.max(0) as u64
                        } else {
                            (b.last_offset - *off + 1) as u64
                        };
                        got += n;
                        let lat_us = (now_ms - b.first_timestamp).max(0) as u64 * 1000;
                        let _ = local.record_n(lat_us.max(1), n);
                    }
                    *off = b.last_offset + 1;
                }
            }
        }
        if got > 0 {
            idle_since = None;
            stats.consumed.fetch_add(got, Ordering::Relaxed);
            stats
                .consumed_bytes
                .fetch_add(got * args.size as u64, Ordering::Relaxed);
            stats
                .last_consume_ns
                .store(stats.since_start_ns(), Ordering::Relaxed);
        } else {
            idle_since.get_or_insert_with(Instant::now);
        }
    }
    if let Ok(mut h) = stats.e2e_latency.lock() {
        let _ = h.add(&local);
    }
    Ok(())
}

// ------------------------------------------------------------------ report

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn report(
    args: &KafkaArgs,
    stats: &Stats,
    wall: f64,
    before: Option<CpuSample>,
    after: Option<CpuSample>,
) {
    let size = args.size as f64;
    let acked = get(&stats.acked);
    let consumed = get(&stats.consumed);
    let produce_secs = (get(&stats.last_ack_ns) as f64 / 1e9).max(1e-9);
    let consume_secs = (get(&stats.last_consume_ns) as f64 / 1e9).max(1e-9);
    let pl = stats
        .produce_latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| new_histogram());
    let el = stats
        .e2e_latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| new_histogram());
    let cpu = match (before, after) {
        (Some(b), Some(a)) => {
            (a.process_ticks.saturating_sub(b.process_ticks)) as f64 / TICKS_PER_SEC / wall * 100.0
        }
        _ => f64::NAN,
    };
    let prod_rate = acked as f64 / produce_secs;
    let cons_rate = consumed as f64 / consume_secs;
    if args.json {
        println!(
            "{{\"records_produced\":{acked},\"records_failed\":{},\"produce_seconds\":{produce_secs:.3},\"produce_records_per_sec\":{prod_rate:.0},\"produce_mb_per_sec\":{:.2},\"produce_latency_ms\":{{\"p50\":{:.3},\"p95\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}},\"records_consumed\":{consumed},\"consume_seconds\":{consume_secs:.3},\"consume_records_per_sec\":{cons_rate:.0},\"consume_mb_per_sec\":{:.2},\"e2e_latency_ms\":{{\"p50\":{:.3},\"p95\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}},\"client_cpu_percent\":{cpu:.0},\"wall_seconds\":{wall:.3}}}",
            get(&stats.failed),
            prod_rate * size / 1e6,
            pct(&pl, 0.5),
            pct(&pl, 0.95),
            pct(&pl, 0.99),
            pct(&pl, 0.999),
            pl.max() as f64 / 1000.0,
            cons_rate * size / 1e6,
            pct(&el, 0.5),
            pct(&el, 0.95),
            pct(&el, 0.99),
            pct(&el, 0.999),
            el.max() as f64 / 1000.0,
        );
        return;
    }
    if args.mode != Mode::Consume {
        println!(
            "produce: {} records in {:.2} s: {} records/s, {:.1} MB/s ({} failed)",
            fmt_count(acked as f64),
            produce_secs,
            fmt_count(prod_rate),
            prod_rate * size / 1e6,
            get(&stats.failed)
        );
        if !pl.is_empty() {
            println!(
                "produce latency (request → response) ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                pct(&pl, 0.5),
                pct(&pl, 0.95),
                pct(&pl, 0.99),
                pct(&pl, 0.999),
                pl.max() as f64 / 1000.0
            );
        }
    }
    if args.mode != Mode::Produce {
        println!(
            "consume: {} records in {:.2} s: {} records/s, {:.1} MB/s",
            fmt_count(consumed as f64),
            consume_secs,
            fmt_count(cons_rate),
            cons_rate * size / 1e6
        );
        // In consume-only mode record age measures the backlog, not the broker.
        if args.mode == Mode::Both && !el.is_empty() {
            println!(
                "end-to-end latency (CreateTime → fetched, ms resolution) ms: p50 {:.0}  p95 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
                pct(&el, 0.5),
                pct(&el, 0.95),
                pct(&el, 0.99),
                pct(&el, 0.999),
                el.max() as f64 / 1000.0
            );
        }
    }
    println!("client cpu: {cpu:.0}% of one core over {wall:.2} s");
}
