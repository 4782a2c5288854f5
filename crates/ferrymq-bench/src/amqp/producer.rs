//! One publishing connection: a writer that copies a pre-encoded message many times into a
//! large buffer, patches in send timestamps and writes the batch with one `write_all`, and a
//! reader on the same socket that counts publisher confirms and watches for the broker
//! closing the connection. Both run as futures on the connection's own current-thread runtime.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

use super::confirm::ConfirmTracker;
use super::conn::{self, BrokerClosed, Connection, Duplex, RecvBuf, Typed, RECV_BUF};
use super::method::{self, id, Method, PublishTemplate};
use super::uri::AmqpUri;
use super::wire::{parse_frame, FRAME_METHOD};
use crate::stats::{now_nanos, Shared};
use crate::tls::TlsClient;

/// Target size of one write: big enough that syscalls are rare, small enough to stay in cache.
const BATCH_BYTES: usize = 128 * 1024;
/// How long to wait for outstanding confirms and close-ok at the end of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one producer publishes and how.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub uri: AmqpUri,
    /// TLS settings for `amqps://` URIs.
    pub tls: Option<TlsClient>,
    pub exchange: String,
    pub routing_key: String,
    pub size: usize,
    pub persistent: bool,
    /// Maximum unconfirmed messages; 0 disables publisher confirms.
    pub confirm: u64,
    /// Messages per second for this producer; 0 = as fast as possible.
    pub rate: f64,
    /// Stop after this many messages; 0 = no limit.
    pub count: u64,
    /// Give every message an `x-delay` header (and the same delay in body bytes 8..16).
    pub delay: Option<DelaySpec>,
}

/// Delays of a delayed-message run: uniform in `[min_ms, min_ms + spread_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelaySpec {
    pub min_ms: u64,
    pub spread_ms: u64,
    /// Seed of this producer's generator.
    pub seed: u64,
}

/// A small, fast generator (xorshift64*) for per-message delays; not for cryptography.
#[derive(Debug, Clone)]
pub struct DelayGen {
    state: u64,
    min_ms: u64,
    span: u64,
}

impl DelayGen {
    pub fn new(spec: DelaySpec) -> DelayGen {
        // splitmix64 of the seed: never zero, well mixed even for seeds 0, 1, 2, ...
        let mut z = spec.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        DelayGen {
            state: (z ^ (z >> 31)) | 1,
            min_ms: spec.min_ms,
            span: spec.spread_ms.saturating_add(1),
        }
    }

    /// The next delay in ms.
    pub fn next_ms(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // Multiply-shift maps r uniformly onto 0..span without a division.
        self.min_ms + ((u128::from(r) * u128::from(self.span)) >> 64) as u64
    }
}

/// How long a batch interrupted by the end of the run may take to finish writing.
const FINISH_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// State the writer and reader futures share (same thread, so plain cells).
struct Flow {
    published: Cell<u64>,
    settled: Cell<u64>,
    closing: Cell<bool>,
    progress: Notify,
}

/// Connects, publishes until `stop` is set or `count` is reached, then waits for confirms
/// and closes. `ready` is called once the channel is set up.
pub async fn run(
    cfg: ProducerConfig,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    // One branch per connection, then each stream type has its own compiled hot loop.
    match conn::open_typed(&cfg.uri, cfg.tls.as_ref()).await? {
        Typed::Plain(conn) => publish(conn, cfg, shared, stop, ready).await,
        Typed::Tls(conn) => publish(conn, cfg, shared, stop, ready).await,
    }
}

async fn publish<S: Duplex>(
    mut conn: Connection<S>,
    cfg: ProducerConfig,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    conn.open_channel(1).await?;
    if cfg.confirm > 0 {
        method::confirm_select(conn.out(), 1);
        conn.call(1, id::CONFIRM_SELECT_OK).await?;
    }
    let encode = if cfg.delay.is_some() {
        PublishTemplate::delayed
    } else {
        PublishTemplate::new
    };
    let template = encode(
        1,
        &cfg.exchange,
        &cfg.routing_key,
        cfg.size,
        cfg.persistent,
        conn.frame_max,
    )?;
    let frame_max = conn.frame_max;
    let (mut stream, leftover) = conn.into_parts();
    ready();
    let (mut rd, mut wr) = stream.halves();
    let flow = Flow {
        published: Cell::new(0),
        settled: Cell::new(0),
        closing: Cell::new(false),
        progress: Notify::new(),
    };
    let reader = read_loop(&mut rd, &leftover, frame_max, &flow, &shared);
    let writer = async {
        let graceful = write_loop(&cfg, &template, &mut wr, &flow, &shared, &mut stop).await?;
        if graceful {
            if cfg.confirm > 0 {
                // Wait for the broker to settle everything published, so counts are final.
                let wait = async {
                    while flow.settled.get() < flow.published.get() {
                        flow.progress.notified().await;
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, wait).await;
            }
            let mut close = Vec::new();
            method::connection_close(&mut close);
            flow.closing.set(true);
            wr.write_all(&close).await?;
            wr.flush().await?;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

/// Publishes batches; returns whether it stopped at a frame boundary (so closing politely
/// is possible) or was interrupted mid-write.
async fn write_loop<W: AsyncWrite + Unpin>(
    cfg: &ProducerConfig,
    template: &PublishTemplate,
    wr: &mut W,
    flow: &Flow,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let msg_len = template.bytes.len();
    let per_batch = (BATCH_BYTES / msg_len).max(1);
    let batch: Vec<u8> = template.bytes.repeat(per_batch);
    let mut batch = batch;
    let patch = template.body_offset.is_some() && cfg.size >= 8;
    let mut delays = cfg.delay.map(DelayGen::new);
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        if *stop.borrow() {
            return Ok(true);
        }
        let mut n = per_batch as u64;
        if cfg.count > 0 {
            n = n.min(cfg.count - sent);
            if n == 0 {
                return Ok(true);
            }
        }
        if cfg.confirm > 0 {
            let outstanding = sent - flow.settled.get();
            if outstanding >= cfg.confirm {
                tokio::select! {
                    _ = flow.progress.notified() => continue,
                    _ = stop.changed() => return Ok(true),
                }
            }
            n = n.min(cfg.confirm - outstanding);
        }
        if cfg.rate > 0.0 {
            let elapsed = started.elapsed().as_secs_f64();
            let due = (elapsed * cfg.rate) as u64;
            if due <= sent {
                let next = (sent + 1) as f64 / cfg.rate;
                let wait = Duration::from_secs_f64((next - elapsed).max(0.001));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.changed() => return Ok(true),
                }
            }
            n = n.min(due - sent);
        }
        let n_usize = n as usize;
        if patch {
            // One clock read per batch: every message in it leaves in the same write.
            let stamp = now_nanos();
            for msg in batch[..n_usize * msg_len].chunks_exact_mut(msg_len) {
                let delay = delays.as_mut().map_or(0, DelayGen::next_ms);
                template.patch(msg, stamp, delay);
            }
        }
        // The flush is a no-op on TCP; over TLS it pushes out the records rustls still
        // buffers, which the broker must see before it confirms or we wait for confirms.
        let write = async {
            wr.write_all(&batch[..n_usize * msg_len]).await?;
            wr.flush().await
        };
        tokio::pin!(write);
        let mut stopping = false;
        tokio::select! {
            r = &mut write => r.context("publishing")?,
            _ = stop.changed() => {
                // Finish the batch so every message written is counted, unless the broker
                // stopped reading (blocked, or overloaded) for long.
                match tokio::time::timeout(FINISH_WRITE_TIMEOUT, &mut write).await {
                    Ok(r) => r.context("publishing")?,
                    Err(_) => return Ok(false),
                }
                stopping = true;
            }
        }
        sent += n;
        flow.published.set(sent);
        shared.published.fetch_add(n, Ordering::Relaxed);
        if stopping {
            return Ok(true);
        }
    }
}

/// Reads confirms and connection-level methods until close-ok (after our close) or an error.
async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    leftover: &[u8],
    frame_max: u32,
    flow: &Flow,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut recv = RecvBuf::new(RECV_BUF, leftover);
    let mut tracker = ConfirmTracker::new();
    let mut reported_nacks = 0;
    loop {
        let mut used = 0;
        let mut closed_ok = false;
        while let Some((frame, n)) = parse_frame(&recv.data()[used..], frame_max)? {
            used += n;
            if frame.kind != FRAME_METHOD {
                continue; // heartbeats (negotiated off) and returned-message content
            }
            match Method::decode(frame.payload)? {
                Method::Confirm {
                    ack,
                    delivery_tag,
                    multiple,
                } => {
                    tracker.settle(delivery_tag, multiple, ack, flow.published.get());
                }
                m @ Method::Close { .. } => {
                    if let Some(closed) = BrokerClosed::from_method(&m) {
                        return Err(closed.into());
                    }
                }
                Method::Blocked(b) => {
                    if b && !shared.blocked.swap(true, Ordering::Relaxed) {
                        eprintln!("note: the broker blocked publishing (connection.blocked)");
                    }
                    if !b {
                        shared.blocked.store(false, Ordering::Relaxed);
                    }
                }
                Method::Return { .. } => {
                    shared.returned.fetch_add(1, Ordering::Relaxed);
                }
                m if m.id() == id::CONNECTION_CLOSE_OK => closed_ok = true,
                _ => {}
            }
        }
        recv.consume(used);
        let settled = tracker.settled();
        let before = flow.settled.get();
        if settled > before {
            flow.settled.set(settled);
            shared
                .confirmed
                .fetch_add(settled - before, Ordering::Relaxed);
            let nacked = tracker.nacked();
            shared
                .nacked
                .fetch_add(nacked - reported_nacks, Ordering::Relaxed);
            reported_nacks = nacked;
            flow.progress.notify_one();
        }
        if closed_ok {
            return Ok(());
        }
        if recv.fill(rd).await? == 0 {
            if flow.closing.get() {
                return Ok(());
            }
            bail!("broker closed the TCP connection of a producer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_uniform_within_bounds() {
        let spec = DelaySpec {
            min_ms: 100,
            spread_ms: 999,
            seed: 7,
        };
        let mut g = DelayGen::new(spec);
        let mut buckets = [0u32; 10];
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..100_000 {
            let d = g.next_ms();
            assert!((100..=1099).contains(&d), "{d}");
            lo = lo.min(d);
            hi = hi.max(d);
            buckets[((d - 100) / 100) as usize] += 1;
        }
        assert_eq!((lo, hi), (100, 1099));
        for b in buckets {
            assert!((9_000..11_000).contains(&b), "{buckets:?}");
        }
        // Different seeds, different sequences; zero spread, constant delay.
        let mut other = DelayGen::new(DelaySpec { seed: 8, ..spec });
        let mut g = DelayGen::new(spec);
        assert_ne!(
            (0..8).map(|_| g.next_ms()).collect::<Vec<_>>(),
            (0..8).map(|_| other.next_ms()).collect::<Vec<_>>()
        );
        let mut fixed = DelayGen::new(DelaySpec {
            min_ms: 5,
            spread_ms: 0,
            seed: 1,
        });
        assert!((0..100).all(|_| fixed.next_ms() == 5));
    }
}
