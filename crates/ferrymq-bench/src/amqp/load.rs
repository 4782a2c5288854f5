//! Orchestration of a producer/consumer run: declares the topology on a setup connection,
//! starts one OS thread with a current-thread tokio runtime per producer and consumer
//! connection, prints rates every second, stops producers on time/count/Ctrl-C, lets
//! consumers drain, cleans up generated queues and prints the summary.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};

use super::conn::Connection;
use super::consumer::{self, ConsumerConfig};
use super::declare;
use super::method::{self, id, DeclareFlags, Method};
use super::producer::{self, DelaySpec, ProducerConfig};
use super::uri::AmqpUri;
use super::wire::FieldValue;
use super::AmqpArgs;
use crate::stats::{fmt_count, new_histogram, thread_cpu, CpuSample, Shared, TICKS_PER_SEC};
use crate::tls::{TlsClient, TlsOptions};

/// How long consumers may go without receiving anything before the drain phase gives up.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Upper bound on the drain phase.
const DRAIN_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

#[derive(Debug)]
enum WorkerEvent {
    Ready(Role),
    Done(Role),
    Failed(String),
}

/// Where progress and the human summary go: stdout, or stderr when stdout carries JSON.
struct Out {
    json: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

/// Entry point: validates options and runs the chosen mode on a current-thread runtime.
pub fn run(args: AmqpArgs) -> anyhow::Result<()> {
    let uri = AmqpUri::parse(&args.uri)?;
    let tls = if uri.tls {
        Some(TlsClient::new(&TlsOptions {
            ca_file: args.tls_ca_file.clone(),
            insecure: args.tls_insecure,
        })?)
    } else {
        if args.tls_ca_file.is_some() || args.tls_insecure {
            bail!("--tls-ca-file and --tls-insecure need an amqps:// URI");
        }
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = Out { json: args.json };
    if let Some(count) = args.queue_declare {
        let prefix = format!("ferrymq-bench-declare-{}", std::process::id());
        let r = rt.block_on(declare::run(
            &uri,
            tls.as_ref(),
            count,
            args.declare_window,
            args.persistent,
            &prefix,
        ))?;
        let mode = if args.declare_window > 1 {
            "pipelined"
        } else {
            "sequential"
        };
        out.line(&format!(
            "queue.declare ({mode}, window {}): {} queues in {:.2} s = {} queues/s; queue.delete: {} queues/s",
            args.declare_window.max(1),
            r.queues,
            r.declare_secs,
            fmt_count(r.declare_rate()),
            fmt_count(r.delete_rate())
        ));
        if args.json {
            println!(
                "{{\"mode\":\"queue-declare\",\"queues\":{},\"window\":{},\"declare_secs\":{:.3},\"declare_per_sec\":{:.1},\"delete_secs\":{:.3},\"delete_per_sec\":{:.1}}}",
                r.queues,
                args.declare_window.max(1),
                r.declare_secs,
                r.declare_rate(),
                r.delete_secs,
                r.delete_rate()
            );
        }
        return Ok(());
    }
    if args.fanout > 0 && args.queues > 1 {
        bail!("--fanout and --queues are exclusive");
    }
    if args.rate < 0.0 || !args.rate.is_finite() {
        bail!("--rate must be a non-negative number");
    }
    if args.delay_spread.is_some() {
        if args.fanout > 0 {
            bail!("--delay-spread and --fanout are exclusive");
        }
        if args.size < method::DELAYED_BODY_MIN {
            bail!(
                "--delay-spread needs --size of at least {} (send time and delay in the body)",
                method::DELAYED_BODY_MIN
            );
        }
    }
    rt.block_on(run_load(&args, uri, tls, &out))
}

/// Queues and the exchange a run uses; `generated` ones are deleted at the end.
struct Topology {
    exchange: String,
    queues: Vec<String>,
    delete_exchange: bool,
    delete_queues: bool,
}

async fn declare_topology(conn: &mut Connection, args: &AmqpArgs) -> anyhow::Result<Topology> {
    let flags = DeclareFlags {
        durable: args.persistent,
        ..DeclareFlags::default()
    };
    let queue_args = parse_queue_args(&args.queue_arg)?;
    let n = if args.fanout > 0 {
        args.fanout
    } else {
        args.queues.max(1)
    };
    let mut queues = Vec::new();
    for i in 0..n {
        let name = match &args.queue {
            Some(q) if n == 1 => q.clone(),
            Some(q) => format!("{q}-{i}"),
            None => String::new(),
        };
        method::queue_declare(conn.out(), 1, &name, flags, &queue_args)?;
        match conn.call(1, id::QUEUE_DECLARE_OK).await? {
            Method::QueueDeclareOk {
                queue, messages, ..
            } => {
                if messages > 0 {
                    eprintln!("note: queue {queue} already holds {messages} messages");
                }
                queues.push(queue);
            }
            other => bail!("unexpected reply to queue.declare: {other:?}"),
        }
    }
    let mut exchange = String::new();
    if args.fanout > 0 {
        exchange = format!("ferrymq-bench-fanout-{}", std::process::id());
        method::exchange_declare(conn.out(), 1, &exchange, "fanout", flags, &[])?;
        conn.call(1, id::EXCHANGE_DECLARE_OK).await?;
        for q in &queues {
            method::queue_bind(conn.out(), 1, q, &exchange, "")?;
            conn.call(1, id::QUEUE_BIND_OK).await?;
        }
    } else if args.delay_spread.is_some() {
        exchange = format!("ferrymq-bench-delayed-{}", std::process::id());
        let delayed_type = [(
            "x-delayed-type".to_string(),
            FieldValue::LongStr("direct".into()),
        )];
        method::exchange_declare(
            conn.out(),
            1,
            &exchange,
            "x-delayed-message",
            flags,
            &delayed_type,
        )?;
        conn.call(1, id::EXCHANGE_DECLARE_OK).await?;
        for q in &queues {
            method::queue_bind(conn.out(), 1, q, &exchange, q)?;
            conn.call(1, id::QUEUE_BIND_OK).await?;
        }
    }
    Ok(Topology {
        delete_exchange: !exchange.is_empty(),
        delete_queues: args.queue.is_none(),
        exchange,
        queues,
    })
}

/// Turns `KEY=VALUE` options into a queue.declare arguments table: integers become
/// signed 64-bit values, `true`/`false` booleans, anything else a long string.
fn parse_queue_args(args: &[String]) -> anyhow::Result<Vec<(String, FieldValue)>> {
    args.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .with_context(|| format!("--queue-arg {a:?} is not KEY=VALUE"))?;
            let value = if let Ok(n) = v.parse::<i64>() {
                FieldValue::I64(n)
            } else if let Ok(b) = v.parse::<bool>() {
                FieldValue::Bool(b)
            } else {
                FieldValue::LongStr(v.to_string())
            };
            Ok((k.to_string(), value))
        })
        .collect()
}

async fn delete_topology(conn: &mut Connection, topo: &Topology) -> anyhow::Result<()> {
    if topo.delete_queues {
        for q in &topo.queues {
            method::queue_delete(conn.out(), 1, q)?;
            conn.call(1, id::QUEUE_DELETE_OK).await?;
        }
    }
    if topo.delete_exchange {
        method::exchange_delete(conn.out(), 1, &topo.exchange)?;
        conn.call(1, id::EXCHANGE_DELETE_OK).await?;
    }
    Ok(())
}

/// Starts a worker on its own thread with its own current-thread runtime.
fn spawn_worker<F, Fut>(
    name: String,
    role: Role,
    events: mpsc::UnboundedSender<WorkerEvent>,
    shared: Arc<Shared>,
    make: F,
) -> anyhow::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(Box<dyn FnOnce()>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let ready_tx = events.clone();
            let ready: Box<dyn FnOnce()> = Box::new(move || {
                let _ = ready_tx.send(WorkerEvent::Ready(role));
            });
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a worker runtime")
                .and_then(|rt| rt.block_on(make(ready)));
            let _ = match result {
                Ok(()) => events.send(WorkerEvent::Done(role)),
                Err(e) => {
                    let msg = format!("{name}: {e:#}");
                    shared.fail(msg.clone());
                    events.send(WorkerEvent::Failed(msg))
                }
            };
        })?;
    Ok(handle)
}

/// Waits for `n` workers of `role` to report ready; fails on the first failure.
async fn await_ready(
    events: &mut mpsc::UnboundedReceiver<WorkerEvent>,
    role: Role,
    n: u32,
) -> anyhow::Result<()> {
    let mut ready = 0;
    while ready < n {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(WorkerEvent::Ready(r))) if r == role => ready += 1,
            Ok(Some(WorkerEvent::Failed(msg))) => bail!("{msg}"),
            Ok(Some(_)) => {}
            Ok(None) => bail!("workers vanished"),
            Err(_) => bail!("timed out waiting for {role:?} connections to be set up"),
        }
    }
    Ok(())
}

fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// Prints the once-a-second progress line and accumulates the latency (or lateness)
/// histogram of the whole run.
struct Reporter {
    started: Instant,
    delayed: bool,
    confirm: bool,
    last: (u64, u64, u64),
    last_cpu: Option<CpuSample>,
    last_tick: Instant,
    total_latency: Histogram<u64>,
}

impl Reporter {
    fn new(args: &AmqpArgs, started: Instant, cpu: Option<CpuSample>) -> Reporter {
        Reporter {
            started,
            delayed: args.delay_spread.is_some(),
            confirm: args.confirm > 0,
            last: (0, 0, 0),
            last_cpu: cpu,
            last_tick: started,
            total_latency: new_histogram(),
        }
    }

    fn tick(&mut self, shared: &Shared, out: &Out) {
        let now = Instant::now();
        let secs = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        let cur = (
            Shared::get(&shared.published),
            Shared::get(&shared.confirmed),
            Shared::get(&shared.consumed),
        );
        let h = shared.take_latencies();
        let _ = self.total_latency.add(&h);
        let cpu = CpuSample::now();
        let cpu_pct = match (&self.last_cpu, &cpu) {
            (Some(a), Some(b)) => format!(
                "  cpu {:.0}%",
                b.process_ticks.saturating_sub(a.process_ticks) as f64 / TICKS_PER_SEC / secs
                    * 100.0
            ),
            _ => String::new(),
        };
        self.last_cpu = cpu;
        let what = if self.delayed { "lateness" } else { "latency" };
        let lat = if h.is_empty() {
            String::new()
        } else {
            format!(
                "  {what} p50 {} p99 {}",
                fmt_us(h.value_at_quantile(0.5)),
                fmt_us(h.value_at_quantile(0.99))
            )
        };
        let confirmed = if self.confirm {
            format!(
                "  confirmed {}/s",
                fmt_count((cur.1 - self.last.1) as f64 / secs)
            )
        } else {
            String::new()
        };
        let pending = if self.delayed {
            format!(
                "  pending {}",
                fmt_count(cur.0.saturating_sub(cur.2) as f64)
            )
        } else {
            String::new()
        };
        out.line(&format!(
            "{:6.1}s  published {}/s{confirmed}  consumed {}/s{pending}{lat}{cpu_pct}",
            now.duration_since(self.started).as_secs_f64(),
            fmt_count((cur.0 - self.last.0) as f64 / secs),
            fmt_count((cur.2 - self.last.2) as f64 / secs),
        ));
        self.last = cur;
    }
}

/// Totals of one run.
struct Summary {
    broker: String,
    producing_secs: f64,
    consuming_secs: f64,
    /// Messages consumed by the time publishing stopped.
    consumed_while_publishing: u64,
    published: u64,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    consumed: u64,
    latency: Histogram<u64>,
    /// Delayed messages that arrived before their due time, and by how much at most (µs).
    early: (u64, u64),
    cpu_total: Option<f64>,
    cpu_threads: Vec<(String, f64)>,
}

async fn run_load(
    args: &AmqpArgs,
    uri: AmqpUri,
    tls: Option<TlsClient>,
    out: &Out,
) -> anyhow::Result<()> {
    let mut setup = Connection::open(&uri, tls.as_ref()).await?;
    setup.open_channel(1).await?;
    let topo = declare_topology(&mut setup, args).await?;
    let broker = format!(
        "{} at {}{}",
        setup.server,
        uri.address(),
        if uri.tls { " (TLS)" } else { "" }
    );
    out.line(&format!(
        "ferrymq bench amqp: {} producer(s), {} consumer(s), {} B {} messages, confirm {}, prefetch {}, {} queue(s){} on {broker}",
        args.producers,
        args.consumers,
        args.size,
        if args.persistent { "persistent" } else { "transient" },
        if args.confirm > 0 { args.confirm.to_string() } else { "off".into() },
        args.prefetch,
        topo.queues.len(),
        if args.fanout > 0 { " (fanout)" } else { "" },
    ));
    if args.size < 8 && args.consumers > 0 {
        eprintln!(
            "note: --size below 8 leaves no room for a send timestamp; no latency is measured"
        );
    }

    let shared = Arc::new(Shared::new());
    let (stop_producers, stop_p_rx) = watch::channel(false);
    let (stop_consumers, stop_c_rx) = watch::channel(false);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut threads = Vec::new();

    let multi_ack_every = match args.multi_ack_every {
        Some(n) => n.max(1),
        None if args.prefetch == 0 => 500,
        None => u64::from(args.prefetch / 2).max(1),
    };
    let multi_ack_every = if args.prefetch > 0 && multi_ack_every > u64::from(args.prefetch) {
        eprintln!(
            "note: --multi-ack-every above --prefetch would stall; using {}",
            args.prefetch
        );
        u64::from(args.prefetch)
    } else {
        multi_ack_every
    };
    let per_queue = if args.fanout > 0 { args.consumers } else { 1 };
    let total_consumers = if args.fanout > 0 {
        args.consumers * args.fanout
    } else {
        args.consumers
    };
    for i in 0..total_consumers {
        let queue = topo.queues[(i / per_queue) as usize % topo.queues.len()].clone();
        let cfg = ConsumerConfig {
            uri: uri.clone(),
            tls: tls.clone(),
            queue,
            prefetch: args.prefetch,
            no_ack: args.no_ack,
            multi_ack_every,
            tag: format!("ferrymq-bench-{i}"),
            delayed: args.delay_spread.is_some(),
        };
        let (shared2, stop) = (shared.clone(), stop_c_rx.clone());
        threads.push(spawn_worker(
            format!("bench-cons-{i}"),
            Role::Consumer,
            events_tx.clone(),
            shared.clone(),
            move |ready| consumer::run(cfg, shared2, stop, ready),
        )?);
    }
    if let Err(e) = await_ready(&mut events, Role::Consumer, total_consumers).await {
        let _ = stop_consumers.send(true);
        let _ = delete_topology(&mut setup, &topo).await;
        return Err(e);
    }
    if args.queues > 1 && args.consumers < args.queues && args.fanout == 0 {
        eprintln!("note: fewer consumers than queues; some queues are not consumed");
    }

    for i in 0..args.producers {
        let (exchange, routing_key) = if args.fanout > 0 {
            (topo.exchange.clone(), String::new())
        } else if args.delay_spread.is_some() {
            (
                topo.exchange.clone(),
                topo.queues[i as usize % topo.queues.len()].clone(),
            )
        } else {
            (
                String::new(),
                topo.queues[i as usize % topo.queues.len()].clone(),
            )
        };
        let cfg = ProducerConfig {
            uri: uri.clone(),
            tls: tls.clone(),
            exchange,
            routing_key,
            size: args.size,
            persistent: args.persistent,
            confirm: args.confirm,
            rate: args.rate,
            count: args.pmessages.unwrap_or(0),
            delay: args.delay_spread.map(|spread_ms| DelaySpec {
                min_ms: args.delay_min,
                spread_ms,
                seed: u64::from(std::process::id()) << 16 | u64::from(i),
            }),
        };
        let (shared2, stop) = (shared.clone(), stop_p_rx.clone());
        threads.push(spawn_worker(
            format!("bench-prod-{i}"),
            Role::Producer,
            events_tx.clone(),
            shared.clone(),
            move |ready| producer::run(cfg, shared2, stop, ready),
        )?);
    }
    drop(events_tx);
    if let Err(e) = await_ready(&mut events, Role::Producer, args.producers).await {
        let _ = stop_producers.send(true);
        let _ = stop_consumers.send(true);
        let _ = delete_topology(&mut setup, &topo).await;
        return Err(e);
    }

    // Steady state: report every second until time, count, Ctrl-C or an error ends it.
    let started = Instant::now();
    let cpu_start = CpuSample::now();
    let deadline = args
        .time
        .map(|t| started + Duration::from_secs_f64(t.max(0.0)));
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut reporter = Reporter::new(args, started, cpu_start.clone());
    let mut producers_done = 0;
    let mut interrupted = false;
    let mut failed = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => reporter.tick(&shared, out),
            ev = events.recv() => match ev {
                Some(WorkerEvent::Done(Role::Producer)) => {
                    producers_done += 1;
                    if producers_done == args.producers {
                        break;
                    }
                }
                Some(WorkerEvent::Failed(_)) => {
                    failed = true;
                    break;
                }
                Some(_) => {}
                None => break,
            },
            _ = sleep_deadline => break,
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        }
    }
    let producing_secs = started.elapsed().as_secs_f64();
    let consumed_while_publishing = Shared::get(&shared.consumed);
    let cpu_end = CpuSample::now();
    let _ = stop_producers.send(true);
    // Producers finish their confirms and close.
    let wait_producers = async {
        while producers_done < args.producers && !failed {
            match events.recv().await {
                Some(WorkerEvent::Done(Role::Producer)) => producers_done += 1,
                Some(WorkerEvent::Failed(_)) => failed = true,
                Some(_) => {}
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), wait_producers).await;

    // Drain: let consumers receive what is still in flight.
    let published = Shared::get(&shared.published);
    let expected = if args.fanout > 0 {
        published * u64::from(args.fanout)
    } else {
        published
    };
    let mut consuming_secs = producing_secs;
    if total_consumers > 0 && !failed && !interrupted {
        let drain_start = Instant::now();
        // Delayed messages published last are due up to the longest delay from now; until
        // then silence is expected, not a sign that everything has arrived.
        let held_for = args.delay_spread.map_or(Duration::ZERO, |spread| {
            Duration::from_millis(args.delay_min.saturating_add(spread))
        });
        let quiet_ok_after = drain_start + held_for;
        let mut last_consumed = Shared::get(&shared.consumed);
        let mut last_change = Instant::now();
        let mut poll = tokio::time::interval(Duration::from_millis(10));
        while Shared::get(&shared.consumed) < expected
            && (Instant::now() < quiet_ok_after || last_change.elapsed() < DRAIN_IDLE)
            && drain_start.elapsed() < DRAIN_MAX + held_for
            && shared.error().is_none()
            && !failed
        {
            tokio::select! {
                _ = poll.tick() => {}
                _ = tick.tick() => reporter.tick(&shared, out),
                _ = &mut ctrl_c => {
                    interrupted = true;
                    break;
                }
            }
            let c = Shared::get(&shared.consumed);
            if c != last_consumed {
                last_consumed = c;
                last_change = Instant::now();
                consuming_secs = started.elapsed().as_secs_f64();
            }
        }
    }
    let _ = stop_consumers.send(true);
    drop(events);
    for t in threads {
        let _ = t.join();
    }
    let mut total_latency = reporter.total_latency;
    let _ = total_latency.add(shared.take_latencies());

    if let Some(err) = shared.error() {
        let _ = delete_topology(&mut setup, &topo).await;
        bail!("{err}");
    }
    delete_topology(&mut setup, &topo)
        .await
        .context("deleting the bench queues")?;
    setup.close().await?;

    let (cpu_total, cpu_threads) = match (&cpu_start, &cpu_end) {
        (Some(a), Some(b)) => (
            Some(
                b.process_ticks.saturating_sub(a.process_ticks) as f64
                    / TICKS_PER_SEC
                    / producing_secs
                    * 100.0,
            ),
            thread_cpu(a, b, producing_secs),
        ),
        _ => (None, Vec::new()),
    };
    let summary = Summary {
        broker,
        producing_secs,
        consuming_secs,
        consumed_while_publishing,
        published,
        confirmed: Shared::get(&shared.confirmed),
        nacked: Shared::get(&shared.nacked),
        returned: Shared::get(&shared.returned),
        consumed: Shared::get(&shared.consumed),
        latency: total_latency,
        early: (
            Shared::get(&shared.early),
            Shared::get(&shared.max_early_us),
        ),
        cpu_total,
        cpu_threads,
    };
    print_summary(&summary, args, out);
    if interrupted {
        eprintln!("interrupted");
    }
    Ok(())
}

fn print_summary(s: &Summary, args: &AmqpArgs, out: &Out) {
    let rate = |n: u64, secs: f64| n as f64 / secs.max(1e-9);
    out.line("summary:");
    out.line(&format!("  broker       {}", s.broker));
    out.line(&format!(
        "  duration     {:.2} s publishing",
        s.producing_secs
    ));
    out.line(&format!(
        "  published    {} msgs, {} msg/s",
        fmt_count(s.published as f64),
        fmt_count(rate(s.published, s.producing_secs))
    ));
    if args.confirm > 0 {
        out.line(&format!(
            "  confirmed    {} msgs, {} msg/s (nacked {})",
            fmt_count(s.confirmed as f64),
            fmt_count(rate(s.confirmed, s.producing_secs)),
            s.nacked
        ));
    }
    if s.returned > 0 {
        out.line(&format!("  returned     {}", s.returned));
    }
    out.line(&format!(
        "  consumed     {} msgs, {} msg/s while publishing; all {} msgs in {:.2} s = {} msg/s",
        fmt_count(s.consumed_while_publishing as f64),
        fmt_count(rate(s.consumed_while_publishing, s.producing_secs)),
        fmt_count(s.consumed as f64),
        s.consuming_secs,
        fmt_count(rate(s.consumed, s.consuming_secs)),
    ));
    let q = |p: f64| s.latency.value_at_quantile(p);
    let delayed = args.delay_spread.is_some();
    if delayed {
        out.line(&format!(
            "  delays       uniform in [{}, {}] ms, x-delayed-message exchange",
            args.delay_min,
            args.delay_min + args.delay_spread.unwrap_or(0)
        ));
    }
    if !s.latency.is_empty() {
        out.line(&format!(
            "  {}      p50 {}  p95 {}  p99 {}  max {}  ({} samples)",
            if delayed { "lateness" } else { "latency " },
            fmt_us(q(0.5)),
            fmt_us(q(0.95)),
            fmt_us(q(0.99)),
            fmt_us(s.latency.max()),
            fmt_count(s.latency.len() as f64)
        ));
    }
    if delayed {
        out.line(&format!(
            "  early        {} msgs arrived before their due time (by at most {}; counted as lateness 0)",
            fmt_count(s.early.0 as f64),
            fmt_us(s.early.1)
        ));
    }
    if let Some(total) = s.cpu_total {
        let threads: Vec<String> = s
            .cpu_threads
            .iter()
            .map(|(n, p)| format!("{n} {p:.0}%"))
            .collect();
        out.line(&format!(
            "  client cpu   {total:.0}% of one core in total; {}",
            threads.join(", ")
        ));
    }
    if args.json {
        let threads: Vec<String> = s
            .cpu_threads
            .iter()
            .map(|(n, p)| format!("\"{n}\":{p:.1}"))
            .collect();
        println!(
            "{{\"mode\":\"load\",\"broker\":\"{}\",\"producing_secs\":{:.3},\"consuming_secs\":{:.3},\"published\":{},\"publish_rate\":{:.1},\"confirmed\":{},\"confirm_rate\":{:.1},\"nacked\":{},\"consumed\":{},\"consume_rate\":{:.1},\"consume_rate_overall\":{:.1},\"{}\":{{\"p50\":{},\"p95\":{},\"p99\":{},\"max\":{}}},\"cpu_percent\":{:.1},\"thread_cpu_percent\":{{{}}}}}",
            s.broker.replace('\\', "\\\\").replace('"', "\\\""),
            s.producing_secs,
            s.consuming_secs,
            s.published,
            rate(s.published, s.producing_secs),
            s.confirmed,
            rate(s.confirmed, s.producing_secs),
            s.nacked,
            s.consumed,
            rate(s.consumed_while_publishing, s.producing_secs),
            rate(s.consumed, s.consuming_secs),
            if delayed { "lateness_us" } else { "latency_us" },
            q(0.5),
            q(0.95),
            q(0.99),
            s.latency.max(),
            s.cpu_total.unwrap_or(0.0),
            threads.join(",")
        );
    }
}
