//! One Kafka client connection. The reader takes requests off the socket in order and
//! starts each one ([`handlers::dispatch`]): work that must happen in request order (a
//! Produce's appends entering partition inboxes) happens right there; the rest is a future
//! that yields the response. A writer task awaits those futures in request order and
//! writes the responses, so pipelined requests are answered in order while their work
//! overlaps. Any framing or decoding error closes this connection only (what Kafka does).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferrymq_kafka::frame::{self, Decoded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

use super::handlers;
use super::KafkaBroker;

/// What a request gets back.
#[derive(Debug)]
pub enum Reply {
    Bytes(Bytes),
    /// Produce with acks=0.
    Nothing,
    /// The response could not be encoded: close the connection rather than leave the
    /// client waiting.
    Close,
}

/// A response to come.
pub type PendingResponse = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Requests in flight per connection before the reader waits for the writer.
const IN_FLIGHT: usize = 64;

pub async fn serve(broker: Arc<KafkaBroker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<PendingResponse>(IN_FLIGHT);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(pending) = rx.recv().await {
            match pending.await {
                Reply::Bytes(bytes) => out.extend_from_slice(&bytes),
                Reply::Nothing => {}
                Reply::Close => break,
            }
            if !out.is_empty() {
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut shutdown = broker.shutdown.clone();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        // Take every complete request already buffered.
        loop {
            let len = match frame::peek_request(&buf, frame::MAX_REQUEST_BYTES) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    debug!(%peer, error = %e, "closing kafka connection");
                    break 'conn;
                }
            };
            let mut request = buf.split_to(len).freeze();
            let _ = request.split_to(4);
            let decoded = match frame::decode_request(request) {
                Ok(d) => d,
                Err(e) => {
                    debug!(%peer, error = %e, "closing kafka connection");
                    break 'conn;
                }
            };
            let pending = match decoded {
                Decoded::ApiVersionsFallback { correlation_id } => {
                    handlers::api_versions_fallback(correlation_id)
                }
                Decoded::Request {
                    header,
                    api_key,
                    body,
                } => match handlers::dispatch(&broker, peer, header, api_key, *body).await {
                    Some(p) => p,
                    None => continue,
                },
            };
            if tx.send(pending).await.is_err() {
                break 'conn;
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(tx);
    let _ = writer.await;
    debug!(%peer, "kafka connection closed");
}
