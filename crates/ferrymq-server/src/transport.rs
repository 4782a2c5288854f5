//! The AMQP connection's byte stream: plain TCP or TLS behind the same readiness API
//! (`ready` / `try_read_buf` / `try_write` / `writable`) that `tokio::net::TcpStream` has,
//! so the connection loop stays readiness based and plaintext connections go straight to
//! the socket with no extra copy.
//!
//! The TLS side drives a sans-IO `rustls::ServerConnection` over the socket's readiness:
//! ciphertext is read from the socket into a small staging buffer (one syscall for up to
//! 32 KiB, where rustls alone would read 4 KiB at a time), handed to rustls record by record
//! and decrypted into rustls's plaintext buffer, from which `try_read_buf` copies into the
//! caller's buffer. `try_write` encrypts plaintext into rustls's output buffer (bounded by
//! `TLS_OUTPUT_LIMIT`) and writes TLS records to the socket without blocking.
//!
//! What differs from a bare socket, and why:
//! - data can be readable without the socket being readable (rustls already holds
//!   decrypted or undecrypted bytes), so `ready` checks rustls before the socket;
//! - TLS output can be pending after the caller's buffer is empty (accepted by `try_write`,
//!   or produced by rustls itself: session tickets, alerts, key updates), so `ready` writes
//!   it whenever the socket takes it, even when asked only for READABLE; `wants_write` says
//!   whether any is pending and `shutdown` flushes it (with `close_notify`) before close;
//! - a TCP EOF without `close_notify` is `ErrorKind::UnexpectedEof`, not `Ok(0)`.
//!
//! Every method is cancellation safe: all state lives in the transport between awaits, and
//! the only awaits are on the socket's readiness.

use std::io::{self, BufRead, Write};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::io::{AsyncWriteExt, Interest, Ready};
use tokio::net::TcpStream;

use crate::tls::{handshake_timed_out, peer_identity, PeerIdentity, Tls, HANDSHAKE_TIMEOUT};

/// How much encrypted output `try_write` lets wait in rustls for the socket before it
/// refuses more plaintext.
pub const TLS_OUTPUT_LIMIT: usize = 256 * 1024;

/// Ciphertext read from the socket per syscall.
const STAGING_SIZE: usize = 32 * 1024;

/// What `try_read_buf` reads when the caller's buffer has no spare capacity (a bare
/// socket would return `Ok(0)` there, which reads as EOF).
const MIN_READ: usize = 16 * 1024;

/// A connection's stream.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsTransport>),
}

/// A TLS session over a socket, after its handshake.
pub struct TlsTransport {
    tcp: TcpStream,
    conn: ServerConnection,
    /// Ciphertext read from the socket and not yet handed to rustls: `staging[start..end]`.
    staging: Box<[u8]>,
    start: usize,
    end: usize,
    /// The socket reported EOF (and rustls was told).
    tcp_eof: bool,
    /// A socket or TLS error met while reading: reported by every later `try_read_buf`
    /// (rustls's own errors are sticky too), and makes `ready` report READABLE so the
    /// caller learns of it.
    error: Option<(io::ErrorKind, String)>,
    peer: Option<PeerIdentity>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Transport::Tls(t) => f
                .debug_struct("Tls")
                .field("tcp", &t.tcp)
                .field("peer", &t.peer)
                .finish_non_exhaustive(),
        }
    }
}

/// Handshakes (within `HANDSHAKE_TIMEOUT`) on a freshly accepted socket and returns its TLS
/// transport. Fails with `TimedOut`, `UnexpectedEof` (client left), `InvalidData` (not TLS,
/// or the handshake failed: no acceptable client certificate, no common cipher suite, …)
/// or the socket's error.
pub async fn accept_tls(tls: &Tls, tcp: TcpStream) -> io::Result<Transport> {
    let mut conn = ServerConnection::new(tls.config()).map_err(io::Error::other)?;
    conn.set_buffer_limit(Some(TLS_OUTPUT_LIMIT));
    let mut t = Box::new(TlsTransport {
        tcp,
        conn,
        staging: vec![0; STAGING_SIZE].into_boxed_slice(),
        start: 0,
        end: 0,
        tcp_eof: false,
        error: None,
        peer: None,
    });
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, t.handshake()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(handshake_timed_out()),
    }
    t.peer = t.conn.peer_certificates().and_then(peer_identity);
    Ok(Transport::Tls(t))
}

impl Transport {
    /// Waits until `try_read_buf` or `try_write` may make progress, like
    /// `TcpStream::ready`: READABLE when input (or EOF, or an error) is waiting, WRITABLE
    /// when `try_write` would take bytes. Over TLS, buffered input makes it return at once,
    /// and pending TLS output is written as the socket allows whatever `interest` is.
    pub async fn ready(&mut self, interest: Interest) -> io::Result<Ready> {
        match self {
            Transport::Plain(s) => s.ready(interest).await,
            Transport::Tls(t) => t.ready(interest).await,
        }
    }

    /// Reads what is available into `buf`'s spare capacity: `Ok(0)` at the end of the
    /// stream (TCP EOF in plaintext, `close_notify` over TLS), `WouldBlock` when nothing is
    /// available.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_read_buf(buf),
            Transport::Tls(t) => t.try_read_buf(buf),
        }
    }

    /// Writes a prefix of `data` without blocking and returns its length; `WouldBlock`
    /// when nothing can be taken. Over TLS, accepted bytes are encrypted at once and may
    /// wait in rustls (up to `TLS_OUTPUT_LIMIT`) until the socket takes them: see
    /// `wants_write`.
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.try_write(data),
            Transport::Tls(t) => t.try_write(data),
        }
    }

    /// Waits until `try_write` would take bytes (over TLS: until the pending TLS output has
    /// reached the socket).
    pub async fn writable(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.writable().await,
            Transport::Tls(t) => t.writable().await,
        }
    }

    /// Whether TLS output accepted earlier still waits for the socket (never for plain
    /// TCP). A loop that waits for WRITABLE only when its own buffer is non-empty should
    /// also wait when this is true, or ask for READABLE, which drives this output too.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Ends the stream: over TLS sends `close_notify` and waits until all TLS output has
    /// reached the socket; then shuts the socket's write side. Bound it with a timeout: a
    /// peer that does not read can make it wait for ever.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.shutdown().await,
            Transport::Tls(t) => {
                t.conn.send_close_notify();
                t.writable().await?;
                t.tcp.shutdown().await
            }
        }
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp().set_nodelay(nodelay)
    }

    /// The socket (for `peer_addr`, `local_addr`, socket options). Reading or writing it
    /// directly would corrupt a TLS session.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.tcp,
        }
    }

    /// The verified client certificate's names, over TLS with a client certificate.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.peer.clone(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

/// `io::Write` over a socket without blocking, for `ServerConnection::write_tls`.
struct SocketWriter<'a>(&'a TcpStream);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl TlsTransport {
    async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.flush_tls()?;
            if self.conn.wants_write() {
                self.tcp.writable().await?;
                continue;
            }
            match self.feed() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS handshake stalled",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tcp.readable().await?;
                }
                Err(e) => return Err(e),
            }
            if self.tcp_eof && self.conn.is_handshaking() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection during the TLS handshake",
                ));
            }
        }
        // The last flight (TLS 1.2's Finished, TLS 1.3's session tickets).
        self.writable().await
    }

    /// Writes pending TLS records until the socket would block.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut SocketWriter(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Hands rustls one read's worth of ciphertext (reading the socket if the staging
    /// buffer is empty) and decrypts it. `Ok(false)` when rustls takes nothing now (it
    /// holds plaintext or saw `close_notify`), `WouldBlock` when the socket is empty.
    fn feed(&mut self) -> io::Result<bool> {
        if !self.conn.wants_read() {
            return Ok(false);
        }
        if self.start == self.end {
            if self.tcp_eof {
                return Ok(false);
            }
            let n = self.tcp.try_read(&mut self.staging)?;
            if n == 0 {
                self.tcp_eof = true;
                // A zero-length read is how rustls learns of the EOF.
                self.conn.read_tls(&mut io::empty())?;
                self.conn.process_new_packets().map_err(tls_error)?;
                return Ok(true);
            }
            self.start = 0;
            self.end = n;
        }
        // One `read_tls` at a time: rustls buffers at most one record before processing.
        let n = self
            .conn
            .read_tls(&mut &self.staging[self.start..self.end])?;
        self.start += n;
        if let Err(e) = self.conn.process_new_packets() {
            // rustls queued an alert for the peer; send it if the socket takes it now.
            let _ = self.flush_tls();
            return Err(tls_error(e));
        }
        Ok(n > 0)
    }

    fn fail(&mut self, e: &io::Error) {
        if self.error.is_none() {
            self.error = Some((e.kind(), e.to_string()));
        }
    }

    /// Whether `try_read_buf` has something to report without the socket.
    fn input_pending(&mut self) -> bool {
        if self.error.is_some() || self.tcp_eof || self.start < self.end {
            return true;
        }
        match self.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(e) => {
                self.fail(&tls_error(e));
                true
            }
        }
    }

    async fn ready(&mut self, interest: Interest) -> io::Result<Ready> {
        loop {
            if let Err(e) = self.flush_tls() {
                if !interest.is_readable() {
                    return Err(e);
                }
                self.fail(&e);
            }
            let mut ready = Ready::EMPTY;
            if interest.is_readable() && self.input_pending() {
                ready |= Ready::READABLE;
            }
            if interest.is_writable() && !self.conn.wants_write() {
                ready |= Ready::WRITABLE;
            }
            if !ready.is_empty() {
                return Ok(ready);
            }
            // Here either READABLE was asked for, or WRITABLE with output pending.
            let wait = match (interest.is_readable(), self.conn.wants_write()) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                (false, _) => Interest::WRITABLE,
            };
            let socket = self.tcp.ready(wait).await?;
            if socket.is_readable() && interest.is_readable() {
                return Ok(Ready::READABLE);
            }
            // Writable: the next round writes pending output and re-checks.
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.error {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        let want = match buf.capacity() - buf.len() {
            0 => MIN_READ,
            n => n,
        };
        let mut got = 0;
        loop {
            // Copy out what rustls has decrypted.
            while got < want {
                let mut reader = self.conn.reader();
                let n = match reader.fill_buf() {
                    // `close_notify`, after all data before it.
                    Ok([]) => return Ok(got),
                    Ok(chunk) => {
                        let n = chunk.len().min(want - got);
                        buf.extend_from_slice(&chunk[..n]);
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // UnexpectedEof: rustls reports it again on the next call.
                    Err(_) if got > 0 => return Ok(got),
                    Err(e) => return Err(e),
                };
                reader.consume(n);
                got += n;
            }
            if got >= want {
                return Ok(got);
            }
            match self.feed() {
                Ok(true) => {}
                Ok(false) => return if got > 0 { Ok(got) } else { Err(would_block()) },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if got > 0 { Ok(got) } else { Err(e) };
                }
                Err(e) => {
                    self.fail(&e);
                    return if got > 0 { Ok(got) } else { Err(e) };
                }
            }
        }
    }

    fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        if data.is_empty() {
            return Ok(0);
        }
        // Takes what fits under the buffer limit, encrypting it into TLS records.
        let n = self.conn.writer().write(data)?;
        if n == 0 {
            return Err(would_block());
        }
        self.flush_tls()?;
        Ok(n)
    }

    async fn writable(&mut self) -> io::Result<()> {
        loop {
            self.flush_tls()?;
            if !self.conn.wants_write() {
                return Ok(());
            }
            self.tcp.writable().await?;
        }
    }
}
