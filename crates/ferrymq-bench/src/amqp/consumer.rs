//! One consuming connection: reads the socket in large chunks, runs the frames through
//! [`DeliveryParser`], records end-to-end latency from the send stamps, and acknowledges
//! with `multiple=true` every N messages, writing all acks of a chunk in one go.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::conn::{self, BrokerClosed, Connection, RecvBuf, Typed, RECV_BUF};
use super::delivery::{ConsumerEvent, DeliveryParser};
use super::method::{self, id, Method};
use super::uri::AmqpUri;
use super::wire::{parse_frame, put_heartbeat};
use crate::stats::{latency_us, lateness_us, now_nanos, LatencyRecorder, Shared};
use crate::tls::TlsClient;

/// What one consumer subscribes to and how it acknowledges.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub uri: AmqpUri,
    /// TLS settings for `amqps://` URIs.
    pub tls: Option<TlsClient>,
    pub queue: String,
    /// basic.qos prefetch count; 0 = unlimited.
    pub prefetch: u16,
    /// Subscribe with no-ack (automatic acknowledgement).
    pub no_ack: bool,
    /// Acknowledge with multiple=true once this many messages are unacknowledged.
    pub multi_ack_every: u64,
    /// Consumer tag.
    pub tag: String,
    /// Messages come from a delayed-message exchange: record lateness (arrival minus send
    /// time plus the delay in body bytes 8..16) instead of latency.
    pub delayed: bool,
}

/// Connects, subscribes, calls `ready`, and consumes until `stop` is set.
pub async fn run(
    cfg: ConsumerConfig,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    // One branch per connection, then each stream type has its own compiled hot loop.
    match conn::open_typed(&cfg.uri, cfg.tls.as_ref()).await? {
        Typed::Plain(conn) => consume(conn, cfg, shared, stop, ready).await,
        Typed::Tls(conn) => consume(conn, cfg, shared, stop, ready).await,
    }
}

async fn consume<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Connection<S>,
    cfg: ConsumerConfig,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    conn.open_channel(1).await?;
    if !cfg.no_ack {
        method::basic_qos(conn.out(), 1, cfg.prefetch);
        conn.call(1, id::BASIC_QOS_OK).await?;
    }
    method::basic_consume(conn.out(), 1, &cfg.queue, &cfg.tag, cfg.no_ack)?;
    conn.call(1, id::BASIC_CONSUME_OK).await?;
    let frame_max = conn.frame_max;
    let (mut stream, leftover) = conn.into_parts();
    ready();

    let mut recv = RecvBuf::new(RECV_BUF, &leftover);
    let mut parser = DeliveryParser::new();
    let mut latencies = LatencyRecorder::new();
    let mut out = Vec::with_capacity(4096);
    let mut unacked = 0u64;
    let (mut early, mut max_early) = (0u64, 0u64);
    loop {
        let mut used = 0;
        let mut delivered = 0u64;
        let mut now = 0;
        while let Some((frame, n)) = parse_frame(&recv.data()[used..], frame_max)? {
            used += n;
            match parser.on_frame(frame)? {
                ConsumerEvent::Partial => {}
                ConsumerEvent::Delivered {
                    delivery_tag,
                    sent_at,
                    delay_ms,
                } => {
                    delivered += 1;
                    if let Some(sent_at) = sent_at {
                        if now == 0 {
                            // One clock read per chunk: everything in it arrived together.
                            now = now_nanos();
                        }
                        if !cfg.delayed {
                            if let Some(us) = latency_us(sent_at, now) {
                                latencies.record(us);
                            }
                        } else if let Some(late) =
                            delay_ms.and_then(|d| lateness_us(sent_at, d, now))
                        {
                            if late < 0 {
                                early += 1;
                                max_early = max_early.max(late.unsigned_abs());
                            }
                            latencies.record(late.max(0) as u64);
                        }
                    }
                    if !cfg.no_ack {
                        unacked += 1;
                        if unacked >= cfg.multi_ack_every {
                            method::basic_ack(&mut out, 1, delivery_tag, true);
                            unacked = 0;
                        }
                    }
                }
                ConsumerEvent::Heartbeat => put_heartbeat(&mut out),
                ConsumerEvent::Method(m) => match m {
                    Method::Close { .. } => {
                        if let Some(closed) = BrokerClosed::from_method(&m) {
                            return Err(closed.into());
                        }
                    }
                    Method::Cancel { consumer_tag } => {
                        bail!("broker cancelled consumer {consumer_tag:?} (queue deleted?)")
                    }
                    _ => {}
                },
            }
        }
        recv.consume(used);
        if early > 0 {
            shared.early.fetch_add(early, Ordering::Relaxed);
            shared.max_early_us.fetch_max(max_early, Ordering::Relaxed);
            early = 0;
        }
        if delivered > 0 {
            shared.consumed.fetch_add(delivered, Ordering::Relaxed);
            latencies.maybe_merge(&shared, false);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            // No-op on TCP; over TLS the acks must leave rustls' buffer before we wait.
            stream.flush().await?;
            out.clear();
        }
        let n = tokio::select! {
            r = recv.fill(&mut stream) => r?,
            _ = stop.changed() => break,
        };
        if n == 0 {
            bail!("broker closed the TCP connection of a consumer");
        }
    }
    latencies.maybe_merge(&shared, true);
    // Close politely; unacknowledged messages go back to the queue. Deliveries still in
    // flight are read and dropped until close-ok.
    method::connection_close(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let drain = async {
        loop {
            let mut used = 0;
            while let Some((frame, n)) = parse_frame(&recv.data()[used..], frame_max)? {
                used += n;
                if frame.kind == super::wire::FRAME_METHOD
                    && Method::decode(frame.payload).map(|m| m.id()) == Ok(id::CONNECTION_CLOSE_OK)
                {
                    return anyhow::Ok(());
                }
            }
            recv.consume(used);
            if recv.fill(&mut stream).await? == 0 {
                return Ok(());
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}
