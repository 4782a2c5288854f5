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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Buf;
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::tls::testpki::{connect, TestPki};

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    fn seed() -> u64 {
        let seed = std::env::var("FERRYMQ_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x7153);
        eprintln!("seed {seed} (FERRYMQ_TEST_SEED)");
        seed
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// One TLS connection: the server's `accept_tls` and the client's handshake, run
    /// together.
    async fn pair(
        tls: &Tls,
        config: Arc<rustls::ClientConfig>,
    ) -> (io::Result<Transport>, io::Result<Client>) {
        let (l, addr) = listener().await;
        let server = async {
            let (tcp, _) = l.accept().await.unwrap();
            accept_tls(tls, tcp).await
        };
        tokio::join!(server, connect(config, addr, "localhost"))
    }

    /// Echoes everything through the readiness API, the way the AMQP connection loop
    /// drives its socket, with random read and write sizes; then shuts down.
    async fn echo(t: &mut Transport, seed: u64) -> io::Result<usize> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pending = BytesMut::new();
        let mut eof = false;
        let mut total = 0;
        while !(eof && pending.is_empty()) {
            let can_read = !eof && pending.len() < 4 << 20;
            let interest = match (can_read, !pending.is_empty()) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                _ => Interest::WRITABLE,
            };
            let ready = t.ready(interest).await?;
            if ready.is_writable() && !pending.is_empty() {
                while !pending.is_empty() {
                    let n = rng.gen_range(1..=pending.len().min(100_000));
                    match t.try_write(&pending[..n]) {
                        Ok(n) => pending.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            if ready.is_readable() && can_read {
                let mut rbuf = BytesMut::with_capacity(rng.gen_range(1..=70_000));
                match t.try_read_buf(&mut rbuf) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        total += n;
                        pending.extend_from_slice(&rbuf);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        t.shutdown().await?;
        Ok(total)
    }

    /// Sends `len` random bytes in random chunks while reading the echo back; returns
    /// what was sent and what came back.
    async fn drive_client<S>(stream: S, len: usize, seed: u64) -> (Vec<u8>, Vec<u8>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xc11e);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let read_sizes: Vec<usize> = (0..4096).map(|_| rng.gen_range(1..=50_000)).collect();
        let (mut rd, mut wr) = tokio::io::split(stream);
        let writer = async {
            let mut off = 0;
            while off < data.len() {
                let n = rng.gen_range(1..=(data.len() - off).min(80_000));
                wr.write_all(&data[off..off + n]).await.unwrap();
                off += n;
            }
            wr.shutdown().await.unwrap();
        };
        let reader = async {
            let mut out = Vec::new();
            for size in read_sizes.iter().cycle() {
                let mut b = vec![0u8; *size];
                let n = rd.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&b[..n]);
            }
            out
        };
        let ((), out) = tokio::join!(writer, reader);
        (data, out)
    }

    #[tokio::test]
    async fn echo_1mib_both_directions_over_tls() {
        let seed = seed();
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let (l, addr) = listener().await;
            let server = async {
                let (tcp, _) = l.accept().await.unwrap();
                let mut t = accept_tls(&tls, tcp).await.unwrap();
                assert!(t.is_tls());
                t.set_nodelay(true).unwrap();
                echo(&mut t, seed).await.unwrap()
            };
            let client = async {
                let config = pki.client_config(None, versions);
                // The certificate's IP SAN is checked here.
                let c = connect(config, addr, "127.0.0.1").await.unwrap();
                drive_client(c, 1 << 20, seed).await
            };
            let (echoed, (sent, received)) = tokio::join!(server, client);
            assert_eq!(echoed, 1 << 20);
            assert!(sent == received, "echo differs ({versions:?})");
        }
    }

    #[tokio::test]
    async fn echo_1mib_both_directions_over_plain_tcp() {
        let seed = seed();
        let (l, addr) = listener().await;
        let server = async {
            let (tcp, _) = l.accept().await.unwrap();
            let mut t = Transport::Plain(tcp);
            assert!(!t.is_tls() && t.peer_identity().is_none() && !t.wants_write());
            echo(&mut t, seed).await.unwrap()
        };
        let client = async {
            let c = TcpStream::connect(addr).await.unwrap();
            drive_client(c, 1 << 20, seed).await
        };
        let (echoed, (sent, received)) = tokio::join!(server, client);
        assert_eq!(echoed, 1 << 20);
        assert!(sent == received);
    }

    /// Reads exactly `n` bytes through the readiness API with a small read buffer, so
    /// that later reads find their data already inside rustls.
    async fn read_n(t: &mut Transport, n: usize, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            // Must not wait for the socket when rustls holds the data.
            let ready = tokio::time::timeout(Duration::from_secs(10), t.ready(Interest::READABLE))
                .await
                .expect("ready(READABLE) hung although data was buffered")
                .unwrap();
            assert!(ready.is_readable());
            let mut b = BytesMut::with_capacity(chunk);
            match t.try_read_buf(&mut b) {
                Ok(0) => panic!("unexpected EOF"),
                Ok(_) => out.extend_from_slice(&b),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    async fn write_all(t: &mut Transport, mut data: &[u8]) {
        while !data.is_empty() {
            t.writable().await.unwrap();
            match t.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        t.writable().await.unwrap();
        assert!(!t.wants_write());
    }

    #[tokio::test]
    async fn buffered_plaintext_is_readable_without_the_socket() {
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (mut t, mut c) = (t.unwrap(), c.unwrap());
        // One TLS record (and one socket read) holding 3 KiB, read 7 bytes at a time.
        let msg: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        c.write_all(&msg).await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(read_n(&mut t, msg.len(), 7).await, msg);
        // Several records arriving together.
        for _ in 0..5 {
            c.write_all(b"0123456789").await.unwrap();
        }
        c.flush().await.unwrap();
        assert_eq!(read_n(&mut t, 50, 3).await, b"0123456789".repeat(5));
        // Clean close: close_notify reads as Ok(0).
        c.shutdown().await.unwrap();
        t.ready(Interest::READABLE).await.unwrap();
        let mut b = BytesMut::with_capacity(16);
        loop {
            match t.try_read_buf(&mut b) {
                Ok(0) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    t.ready(Interest::READABLE).await.unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn eof_without_close_notify_is_unexpected_eof() {
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (mut t, c) = (t.unwrap(), c.unwrap());
        // A FIN without close_notify (dropping the socket could reset it instead: the
        // client never read the session tickets).
        let (mut tcp, _) = c.into_inner();
        tcp.shutdown().await.unwrap();
        let err = loop {
            t.ready(Interest::READABLE).await.unwrap();
            let mut b = BytesMut::with_capacity(16);
            match t.try_read_buf(&mut b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break e,
                Ok(n) => panic!("read {n}"),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // And it stays that way.
        let mut b = BytesMut::with_capacity(16);
        assert_eq!(
            t.try_read_buf(&mut b).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    /// Output that `try_write` accepted but the socket could not take yet reaches the
    /// client while the server only ever asks for READABLE.
    #[tokio::test]
    async fn ready_readable_drives_pending_output() {
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (mut t, mut c) = (t.unwrap(), c.unwrap());
        let data = vec![0x5a; 16 << 20];
        let mut accepted = 0;
        loop {
            match t.try_write(&data[accepted..]) {
                Ok(n) => accepted += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(accepted < data.len(), "the socket never filled up");
        assert!(t.wants_write());
        let client = async {
            let mut got = vec![0u8; accepted];
            c.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|&b| b == 0x5a));
            c.write_all(b"k").await.unwrap();
            c.flush().await.unwrap();
            c
        };
        let server = async {
            let got = read_n(&mut t, 1, 64).await;
            assert_eq!(got, b"k");
            assert!(!t.wants_write());
        };
        tokio::join!(client, server);
    }

    #[tokio::test]
    async fn mtls_required() {
        let pki = TestPki::generate();
        let tls = pki.tls(true, true);
        assert!(tls.requires_client_cert());

        // No certificate: the handshake fails on the server; the client learns it too.
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        assert_eq!(t.unwrap_err().kind(), io::ErrorKind::InvalidData);
        if let Ok(mut c) = c {
            // TLS 1.3: the client finished first and hears of it on its next read.
            let mut b = [0u8; 1];
            assert!(!matches!(c.read(&mut b).await, Ok(1)));
        }

        // A certificate from another CA.
        let stranger = TestPki::generate().alice();
        let (t, _) = pair(&tls, pki.client_config(Some(&stranger), &[])).await;
        assert_eq!(t.unwrap_err().kind(), io::ErrorKind::InvalidData);

        // Alice.
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let (t, c) = pair(&tls, pki.client_config(Some(&pki.alice()), versions)).await;
            let (mut t, mut c) = (t.unwrap(), c.unwrap());
            let id = t.peer_identity().unwrap();
            assert_eq!(id.dn, "CN=alice,O=Acme");
            assert_eq!(id.cn.as_deref(), Some("alice"));
            c.write_all(b"hi").await.unwrap();
            c.flush().await.unwrap();
            assert_eq!(read_n(&mut t, 2, 16).await, b"hi");
        }
    }

    /// A resumed session (TLS 1.3 tickets, TLS 1.2 session ids) still carries the client
    /// certificate it was established with.
    #[tokio::test]
    async fn resumed_sessions_keep_the_peer_identity() {
        let pki = TestPki::generate();
        let tls = pki.tls(true, true);
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let config = pki.client_config(Some(&pki.alice()), versions);
            for round in 0..2 {
                let (t, c) = pair(&tls, config.clone()).await;
                let (mut t, mut c) = (t.unwrap(), c.unwrap());
                // Reading the echo makes the client take in the session tickets.
                ping(&mut t, &mut c, b"resume?").await;
                let kind = c.get_ref().1.handshake_kind().unwrap();
                let expected = if round == 0 {
                    rustls::HandshakeKind::Full
                } else {
                    rustls::HandshakeKind::Resumed
                };
                assert_eq!(kind, expected, "{versions:?}");
                assert_eq!(t.peer_identity().unwrap().dn, "CN=alice,O=Acme");
            }
        }
    }

    #[tokio::test]
    async fn client_cert_requested_or_not_asked() {
        let pki = TestPki::generate();
        // A CA without verify_peer: Kafka's ssl.client.auth=requested.
        let tls = pki.tls(true, false);
        assert!(tls.requests_client_cert() && !tls.requires_client_cert());
        let (t, _c) = pair(&tls, pki.client_config(None, &[])).await;
        assert_eq!(t.unwrap().peer_identity(), None);
        let (t, _c) = pair(&tls, pki.client_config(Some(&pki.alice()), &[])).await;
        assert_eq!(t.unwrap().peer_identity().unwrap().dn, "CN=alice,O=Acme");
        // An offered certificate that does not verify is still refused.
        let stranger = TestPki::generate().alice();
        let (t, _c) = pair(&tls, pki.client_config(Some(&stranger), &[])).await;
        assert!(t.is_err());

        // No CA: no certificate is asked for, none is seen.
        let tls = pki.tls(false, true);
        assert!(!tls.requests_client_cert());
        let (t, _c) = pair(&tls, pki.client_config(Some(&pki.alice()), &[])).await;
        assert_eq!(t.unwrap().peer_identity(), None);
    }

    async fn ping(t: &mut Transport, c: &mut Client, msg: &[u8]) {
        c.write_all(msg).await.unwrap();
        c.flush().await.unwrap();
        let got = read_n(t, msg.len(), 1024).await;
        write_all(t, &got).await;
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }

    fn server_cert(c: &Client) -> CertificateDer<'static> {
        c.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    use rustls_pki_types::CertificateDer;

    #[tokio::test]
    async fn reload_keeps_open_sessions_and_serves_the_new_cert() {
        let mut pki = TestPki::generate();
        let first = pki.server_der.clone();
        let tls = pki.tls(false, false);
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (mut old_t, mut old_c) = (t.unwrap(), c.unwrap());
        assert_eq!(server_cert(&old_c), first);
        ping(&mut old_t, &mut old_c, b"before").await;

        let second = pki.write_server_cert("FerryMQ test server 2");
        assert_ne!(first, second);
        tls.reload().unwrap();
        ping(&mut old_t, &mut old_c, b"after reload").await;
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (mut new_t, mut new_c) = (t.unwrap(), c.unwrap());
        assert_eq!(server_cert(&new_c), second);
        ping(&mut new_t, &mut new_c, b"new").await;

        // A failed reload keeps the current certificate.
        std::fs::write(&pki.key_file, "not a key").unwrap();
        let err = tls.reload().unwrap_err();
        assert!(err.to_string().contains("server.key"), "{err}");
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (_t, c) = (t.unwrap(), c.unwrap());
        assert_eq!(server_cert(&c), second);
        ping(&mut old_t, &mut old_c, b"still").await;
    }

    /// Bytes that are not a TLS ClientHello end the handshake at once with InvalidData.
    #[tokio::test]
    async fn not_tls_is_refused_cleanly() {
        let seed = seed();
        let pki = TestPki::generate();
        let tls = pki.tls(true, true);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut garbage = vec![0u8; 700];
        rng.fill_bytes(&mut garbage);
        let inputs: Vec<Vec<u8>> = vec![
            b"AMQP\x00\x00\x09\x01".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            // A handshake record announcing an absurd ClientHello.
            vec![
                0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0xff, 0xff, 0xff, 0, 0, 0, 0,
            ],
            garbage,
        ];
        for input in inputs {
            let (l, addr) = listener().await;
            let server = async {
                let (tcp, _) = l.accept().await.unwrap();
                accept_tls(&tls, tcp).await
            };
            let client = async {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(&input).await.unwrap();
                // The server answers with an alert or closes; either way, no hang.
                let mut sink = Vec::new();
                let _ = c.read_to_end(&mut sink).await;
            };
            let (r, ()) = tokio::join!(server, client);
            let err = r.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{input:?}: {err}");
        }
    }

    /// Records that do not decrypt end the session with a sticky InvalidData error.
    #[tokio::test]
    async fn corrupt_records_after_the_handshake() {
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        let (t, c) = pair(&tls, pki.client_config(None, &[])).await;
        let (mut t, c) = (t.unwrap(), c.unwrap());
        let (mut tcp, _) = c.into_inner();
        // An application-data record of 40 bytes that no key produced.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x28];
        record.extend_from_slice(&[0xab; 40]);
        tcp.write_all(&record).await.unwrap();
        let err = loop {
            t.ready(Interest::READABLE).await.unwrap();
            let mut b = BytesMut::with_capacity(64);
            match t.try_read_buf(&mut b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break e,
                Ok(n) => panic!("read {n}"),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let ready = t.ready(Interest::READABLE).await.unwrap();
        assert!(ready.is_readable());
        let mut b = BytesMut::with_capacity(64);
        assert_eq!(
            t.try_read_buf(&mut b).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // The client sees the session tickets, the (encrypted) alert, and the close.
        drop(t);
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
    }

    #[tokio::test]
    async fn client_leaving_mid_handshake() {
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        let (l, addr) = listener().await;
        let server = async {
            let (tcp, _) = l.accept().await.unwrap();
            accept_tls(&tls, tcp).await
        };
        let client = async {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // The start of a ClientHello record, then nothing more.
            c.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00])
                .await
                .unwrap();
        };
        let (r, ()) = tokio::join!(server, client);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out() {
        let pki = TestPki::generate();
        let tls = pki.tls(false, false);
        let (l, addr) = listener().await;
        let _c = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = l.accept().await.unwrap();
        let err = accept_tls(&tls, tcp).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let _c = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = l.accept().await.unwrap();
        let err = crate::tls::accept(&tls, tcp).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
