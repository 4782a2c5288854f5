//! The control plane of the bench client's AMQP connection over a TCP or TLS stream: the
//! handshake (protocol header, start-ok with PLAIN, tune-ok, open), channel opening and
//! synchronous request/reply methods for topology. Once set up, the hot loops in
//! `producer` and `consumer` take the raw stream and leftover bytes with
//! [`Connection::into_parts`].
//!
//! The hot loops are generic over the stream ([`Duplex`]) and get a concrete
//! `TcpStream` or `TlsStream<TcpStream>` from [`open_typed`], so the plaintext
//! path is the same code as before TLS existed: no boxing, no dynamic dispatch, no
//! per-read branch. Setup connections, where speed does not matter, use [`AnyStream`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::method::{self, id, Method};
use super::uri::AmqpUri;
use super::wire::{parse_frame, put_heartbeat, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER};
use crate::tls::TlsClient;

/// How long connecting, the TLS handshake and the AMQP handshake may take each.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream the hot loops can read and write at the same time from two futures of one
/// task: the producer's writer and its confirm reader.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin {
    type Read<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Unpin
    where
        Self: 'a;
    /// Borrowed read and write halves.
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Duplex for TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

impl Duplex for TlsStream<TcpStream> {
    // One rustls session serves both directions; tokio's split shares it behind a lock
    // that is never contended (both halves are polled by the same task).
    type Read<'a> = tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>;
    type Write<'a> = tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        tokio::io::split(self)
    }
}

/// A plain or TLS stream behind one type, for setup connections.
pub enum AnyStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for AnyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AnyStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            AnyStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AnyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AnyStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            AnyStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AnyStream::Plain(s) => Pin::new(s).poll_flush(cx),
            AnyStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AnyStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            AnyStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection set up over one of the two concrete stream types.
// Returned once per connection and taken apart at once: the size does not matter, and
// boxing the TLS side would cost an allocation to save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Typed {
    Plain(Connection<TcpStream>),
    Tls(Connection<TlsStream<TcpStream>>),
}

/// Frame size the client asks for when the server does not limit it.
const DEFAULT_FRAME_MAX: u32 = 131_072;
/// Read buffer size: large, so one read syscall drains many small messages.
pub const RECV_BUF: usize = 256 * 1024;

/// The broker closed the connection or a channel (`connection.close` / `channel.close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerClosed {
    /// 10 for connection.close, 20 for channel.close.
    pub class_id: u16,
    /// AMQP reply code (e.g. 404, 406, 541).
    pub reply_code: u16,
    /// The broker's explanation.
    pub reply_text: String,
    /// (class, method) of the method that caused it, (0, 0) if none.
    pub failing: (u16, u16),
}

impl fmt::Display for BrokerClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.class_id == 10 {
            "connection"
        } else {
            "channel"
        };
        write!(
            f,
            "broker closed the {what}: {} {}",
            self.reply_code, self.reply_text
        )?;
        if self.failing != (0, 0) {
            write!(f, " (in reply to {})", method_name(self.failing))?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerClosed {}

impl BrokerClosed {
    /// Converts a decoded close method; `None` for any other method.
    pub fn from_method(m: &Method) -> Option<BrokerClosed> {
        match m {
            Method::Close {
                class_id,
                reply_code,
                reply_text,
                failing,
            } => Some(BrokerClosed {
                class_id: *class_id,
                reply_code: *reply_code,
                reply_text: reply_text.clone(),
                failing: *failing,
            }),
            _ => None,
        }
    }
}

/// A readable name for the (class, method) ids this client sends.
pub fn method_name(m: (u16, u16)) -> String {
    let name = match m {
        id::CONNECTION_START_OK => "connection.start-ok",
        id::CONNECTION_TUNE_OK => "connection.tune-ok",
        id::CONNECTION_OPEN => "connection.open",
        id::CHANNEL_OPEN => "channel.open",
        id::EXCHANGE_DECLARE => "exchange.declare",
        id::EXCHANGE_DELETE => "exchange.delete",
        id::QUEUE_DECLARE => "queue.declare",
        id::QUEUE_BIND => "queue.bind",
        id::QUEUE_DELETE => "queue.delete",
        id::BASIC_QOS => "basic.qos",
        id::BASIC_CONSUME => "basic.consume",
        id::BASIC_PUBLISH => "basic.publish",
        id::BASIC_ACK => "basic.ack",
        id::CONFIRM_SELECT => "confirm.select",
        (c, m) => return format!("method {c}.{m}"),
    };
    name.to_string()
}

/// A receive buffer holding bytes read from the socket but not yet parsed.
#[derive(Debug)]
pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// An empty buffer of `capacity` bytes, preloaded with `leftover`.
    pub fn new(capacity: usize, leftover: &[u8]) -> RecvBuf {
        let mut buf = vec![0; capacity.max(leftover.len() * 2).max(4096)];
        buf[..leftover.len()].copy_from_slice(leftover);
        RecvBuf {
            buf,
            start: 0,
            end: leftover.len(),
        }
    }

    /// The unparsed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes at the front as parsed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes from `r`; returns 0 at end of stream. Makes room for at least the
    /// whole frame that is pending at the front, so one frame never needs more than the buffer.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        let pending = self.end - self.start;
        let mut need = 0;
        if pending >= 7 {
            let d = self.data();
            need = 8 + u32::from_be_bytes([d[3], d[4], d[5], d[6]]) as usize;
        }
        if self.buf.len() - self.end < 16 * 1024 || self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        if need > self.buf.len() {
            self.buf.resize(need.next_power_of_two(), 0);
        }
        let n = r.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// An open AMQP connection in its synchronous (setup) phase.
pub struct Connection<S = AnyStream> {
    stream: S,
    recv: RecvBuf,
    out: Vec<u8>,
    /// Negotiated maximum frame size.
    pub frame_max: u32,
    /// "product version" from the server's properties.
    pub server: String,
}

impl Connection<AnyStream> {
    /// Connects (with TLS for `amqps://`) and performs the handshake; heartbeats are
    /// negotiated off. For setup and topology, where the stream type does not matter.
    pub async fn open(uri: &AmqpUri, tls: Option<&TlsClient>) -> anyhow::Result<Connection> {
        Ok(match open_typed(uri, tls).await? {
            Typed::Plain(c) => c.map_stream(AnyStream::Plain),
            Typed::Tls(c) => c.map_stream(|s| AnyStream::Tls(Box::new(s))),
        })
    }
}

/// Connects and performs the handshake, over TLS for `amqps://` URIs (then `tls` is
/// required), returning the connection with its concrete stream type for the hot loops.
pub async fn open_typed(uri: &AmqpUri, tls: Option<&TlsClient>) -> anyhow::Result<Typed> {
    let addr = uri.address();
    let stream = tokio::time::timeout(SETUP_TIMEOUT, TcpStream::connect(&addr))
        .await
        .with_context(|| format!("timed out connecting to {addr}"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    if !uri.tls {
        return Ok(Typed::Plain(Connection::handshake_over(stream, uri).await?));
    }
    let Some(tls) = tls else {
        bail!("amqps:// needs a TLS configuration");
    };
    let stream = tokio::time::timeout(SETUP_TIMEOUT, tls.connect(stream, &uri.host))
        .await
        .with_context(|| format!("timed out in the TLS handshake with {addr}"))??;
    Ok(Typed::Tls(Connection::handshake_over(stream, uri).await?))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Performs the AMQP handshake over an established stream.
    pub async fn handshake_over(stream: S, uri: &AmqpUri) -> anyhow::Result<Connection<S>> {
        let mut conn = Connection {
            stream,
            recv: RecvBuf::new(RECV_BUF, &[]),
            out: Vec::with_capacity(4096),
            frame_max: DEFAULT_FRAME_MAX,
            server: String::new(),
        };
        tokio::time::timeout(SETUP_TIMEOUT, conn.handshake(uri))
            .await
            .with_context(|| format!("timed out in the AMQP handshake with {}", uri.address()))??;
        Ok(conn)
    }

    fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> Connection<T> {
        Connection {
            stream: f(self.stream),
            recv: self.recv,
            out: self.out,
            frame_max: self.frame_max,
            server: self.server,
        }
    }

    async fn handshake(&mut self, uri: &AmqpUri) -> anyhow::Result<()> {
        self.stream.write_all(PROTOCOL_HEADER).await?;
        self.stream.flush().await?;
        let start = self
            .expect(0, id::CONNECTION_START)
            .await
            .context("waiting for connection.start")?;
        let Method::ConnectionStart {
            server_properties,
            mechanisms,
        } = start
        else {
            bail!("expected connection.start, got {}", method_name(start.id()));
        };
        if !mechanisms.split(' ').any(|m| m == "PLAIN") {
            bail!("server does not offer PLAIN authentication (offers {mechanisms:?})");
        }
        let prop = |k: &str| {
            server_properties
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        self.server = format!(
            "{} {}",
            prop("product").unwrap_or("?"),
            prop("version").unwrap_or("?")
        );
        method::connection_start_ok(&mut self.out, &uri.user, &uri.password)?;
        self.flush().await?;
        let tune = self
            .expect(0, id::CONNECTION_TUNE)
            .await
            .context("authenticating")?;
        let Method::ConnectionTune {
            channel_max,
            frame_max,
            ..
        } = tune
        else {
            bail!("expected connection.tune, got {}", method_name(tune.id()));
        };
        self.frame_max = if frame_max == 0 {
            DEFAULT_FRAME_MAX
        } else {
            frame_max.min(DEFAULT_FRAME_MAX)
        };
        let channel_max = if channel_max == 0 { 2047 } else { channel_max };
        method::connection_tune_ok(&mut self.out, channel_max, self.frame_max, 0);
        method::connection_open(&mut self.out, &uri.vhost)?;
        self.flush().await?;
        self.expect(0, id::CONNECTION_OPEN_OK).await?;
        Ok(())
    }

    /// Buffer for methods to send; written by [`Connection::flush`].
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Writes everything buffered in `out` (through TLS to the socket).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads the next method frame, answering heartbeats and skipping content frames.
    pub async fn next_method(&mut self) -> anyhow::Result<(u16, Method)> {
        loop {
            if let Some((frame, used)) =
                parse_frame(self.recv.data(), self.frame_max.max(DEFAULT_FRAME_MAX))?
            {
                let result = match frame.kind {
                    FRAME_METHOD => Some((frame.channel, Method::decode(frame.payload)?)),
                    FRAME_HEARTBEAT => {
                        put_heartbeat(&mut self.out);
                        None
                    }
                    _ => None,
                };
                self.recv.consume(used);
                if let Some(m) = result {
                    return Ok(m);
                }
                self.flush().await?;
                continue;
            }
            if self.recv.fill(&mut self.stream).await? == 0 {
                bail!("broker closed the TCP connection");
            }
        }
    }

    /// Waits for method `want` on `channel`; a close from the broker becomes a
    /// [`BrokerClosed`] error (after answering it), other methods are skipped.
    pub async fn expect(&mut self, channel: u16, want: (u16, u16)) -> anyhow::Result<Method> {
        loop {
            let (ch, m) = self.next_method().await?;
            if let Some(closed) = BrokerClosed::from_method(&m) {
                if closed.class_id == 10 {
                    method::connection_close_ok(&mut self.out);
                }
                let _ = self.flush().await;
                return Err(closed.into());
            }
            if ch == channel && m.id() == want {
                return Ok(m);
            }
        }
    }

    /// Opens channel `channel`.
    pub async fn open_channel(&mut self, channel: u16) -> anyhow::Result<()> {
        method::channel_open(&mut self.out, channel);
        self.flush().await?;
        self.expect(channel, id::CHANNEL_OPEN_OK).await?;
        Ok(())
    }

    /// Sends what is buffered and waits for the reply `want`.
    pub async fn call(&mut self, channel: u16, want: (u16, u16)) -> anyhow::Result<Method> {
        self.flush().await?;
        self.expect(channel, want).await
    }

    /// Closes the connection politely, waiting at most two seconds for close-ok.
    pub async fn close(mut self) -> anyhow::Result<()> {
        method::connection_close(&mut self.out);
        self.flush().await?;
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.expect(0, id::CONNECTION_CLOSE_OK),
        )
        .await;
        Ok(())
    }

    /// The stream and any bytes already read but not parsed.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.recv.data().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{put_frame, FRAME_BODY};
    use super::*;

    /// Feeds `stream` through a small RecvBuf and returns the payload sizes of its frames.
    fn frames_through(capacity: usize, stream: &[u8]) -> Vec<usize> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut recv = RecvBuf::new(capacity, &stream[..3]);
            let mut reader = &stream[3..];
            let mut sizes = Vec::new();
            loop {
                while let Some((frame, n)) = parse_frame(recv.data(), 1 << 20).unwrap() {
                    sizes.push(frame.payload.len());
                    recv.consume(n);
                }
                if recv.fill(&mut reader).await.unwrap() == 0 {
                    assert!(recv.data().is_empty(), "bytes left over");
                    return sizes;
                }
            }
        })
    }

    #[test]
    fn recv_buf_grows_for_large_frames() {
        let mut stream = Vec::new();
        for size in [10, 100_000, 5, 20_000, 0, 300_000] {
            put_frame(&mut stream, FRAME_BODY, 1, |o| o.resize(o.len() + size, 7));
        }
        assert_eq!(
            frames_through(4096, &stream),
            vec![10, 100_000, 5, 20_000, 0, 300_000]
        );
    }
}
