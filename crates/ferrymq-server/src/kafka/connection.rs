//! One Kafka client connection, plaintext or TLS (generic over the stream's halves). The
//! reader takes requests off the socket in order. Until the connection has a user, each
//! request goes through its [`SaslSession`] first (SaslHandshake / SaslAuthenticate, raw
//! v0 tokens, or the first other request making it `guest` or its certificate's user);
//! then the connection enters its vhost's [`KafkaBroker`] and every request is started by
//! [`handlers::dispatch`], which checks it against the user's permissions: work that must
//! happen in request order (a Produce's appends entering partition inboxes) happens right
//! there, the rest is a future that yields the response. A writer task awaits those
//! futures in request order and writes the responses, so pipelined requests are answered
//! in order while their work overlaps. Any framing or decoding error closes this
//! connection only (what Kafka does); a refused authentication answers, waits
//! [`FAILED_AUTH_DELAY`] and closes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferrymq_kafka::frame::{self, Decoded};
use ferrymq_kafka::kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use ferrymq_kafka::sasl::{self, Input, Outcome, SaslSession};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::authz::Authz;
use super::handlers::{self, Session};
use super::traffic::Traffic;
use super::KafkaFront;

/// What a request gets back.
#[derive(Debug)]
pub enum Reply {
    Bytes(Bytes),
    /// Produce with acks=0.
    Nothing,
    /// The response could not be encoded, or the connection must end here: close it
    /// rather than leave the client waiting.
    Close,
}

/// A response to come.
pub type PendingResponse = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Requests in flight per connection before the reader waits for the writer.
const IN_FLIGHT: usize = 64;

/// How long a refused client waits for the close (Kafka's
/// `connection.failed.authentication.delay.ms` default), so failed logins cost time.
pub const FAILED_AUTH_DELAY: Duration = Duration::from_millis(100);

/// The listener a connection came in on.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Advertised in Metadata, FindCoordinator and DescribeCluster: each listener
    /// advertises its own port.
    pub port: u16,
    /// Whether it is the TLS listener.
    pub tls: bool,
}

/// Who is on the other end.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The listener's address the client connected to.
    pub local: SocketAddr,
    /// The CN of the client's verified TLS certificate.
    pub certificate_user: Option<String>,
}

/// Serves a plaintext TCP connection (owned halves: no lock between reader and writer).
pub async fn serve_tcp(
    front: Arc<KafkaFront>,
    listener: Listener,
    stream: TcpStream,
    addr: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(addr);
    let (rd, wr) = stream.into_split();
    let peer = Peer {
        addr,
        local,
        certificate_user: None,
    };
    serve(front, listener, peer, rd, wr).await
}

/// Serves a connection over any byte stream split into halves.
pub async fn serve<R, W>(
    front: Arc<KafkaFront>,
    listener: Listener,
    peer: Peer,
    mut rd: R,
    mut wr: W,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    // Each response goes with its request's API key (for the byte counters).
    let (tx, mut rx) = mpsc::channel::<(i16, PendingResponse)>(IN_FLIGHT);
    let counters = front.clone();
    let writer = tokio::spawn(async move {
        let traffic = &counters.traffic;
        let mut out = BytesMut::new();
        // A response taken from the queue but not complete yet: the next one to await.
        let mut next: Option<(i16, PendingResponse)> = None;
        let mut closing = false;
        while !closing {
            let (api, pending) = match next.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => break,
                },
            };
            closing = take_reply(pending.await, &mut out, traffic, api);
            // Responses behind it that are complete already (one fsync answers several
            // produces) leave in the same write, still in request order.
            while !closing {
                let Ok((api, mut p)) = rx.try_recv() else {
                    break;
                };
                match poll_now(&mut p) {
                    Some(reply) => closing = take_reply(reply, &mut out, traffic, api),
                    None => {
                        next = Some((api, p));
                        break;
                    }
                }
            }
            if !out.is_empty() {
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    });
    let mut conn = Connection {
        front: front.clone(),
        listener,
        peer,
        sasl: SaslSession::new(),
        session: None,
        registration: None,
        client_id: None,
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'conn: loop {
        // Take every complete request already buffered.
        loop {
            let len = match frame::peek_request(&buf, frame::MAX_REQUEST_BYTES) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    debug!(peer = %addr, error = %e, "closing kafka connection");
                    break 'conn;
                }
            };
            let mut request = buf.split_to(len).freeze();
            let _ = request.split_to(4);
            let api = match request.get(..2) {
                Some(k) => i16::from_be_bytes([k[0], k[1]]),
                None => -1,
            };
            front.traffic.request(api, len);
            let step = conn.take(request).await;
            for pending in step.send {
                if tx.send((api, pending)).await.is_err() {
                    break 'conn;
                }
            }
            if step.close {
                break 'conn;
            }
        }
        // Room for the rest of the request being received (its size is known once 4
        // bytes are in; at most 1 MiB ahead of the bytes, so an announced size alone
        // cannot make the broker allocate), so that one read can take it whole.
        let rest = match buf.get(..4) {
            Some(p) => (4 + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
                .saturating_sub(buf.len())
                .min(1 << 20),
            None => 0,
        };
        let want = rest.max(16 * 1024);
        if buf.capacity() - buf.len() < want {
            buf.reserve(want.max(64 * 1024));
        }
        let closed = async {
            match &conn.session {
                Some(s) => s.broker.closed().await,
                None => std::future::pending().await,
            }
        };
        // The management API's close request.
        let close_requested = async {
            match &conn.registration {
                Some(r) => {
                    let mut rx = r.close_requested.clone();
                    let _ = rx.wait_for(|v| v.is_some()).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = close_requested => {
                info!(peer = %addr, "kafka connection closed via the management API");
                break;
            }
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = super::broker::raised(front.shutdown.clone()) => break,
            _ = closed => break,
        }
    }
    drop(tx);
    let _ = writer.await;
    debug!(peer = %addr, "kafka connection closed");
}

/// Adds a reply (to a request of `api`) to the bytes to write; true if the connection
/// must close after them.
fn take_reply(reply: Reply, out: &mut BytesMut, traffic: &Traffic, api: i16) -> bool {
    match reply {
        Reply::Bytes(bytes) => {
            traffic.response(api, bytes.len());
            out.extend_from_slice(&bytes);
            false
        }
        Reply::Nothing => false,
        Reply::Close => true,
    }
}

/// Polls a response once without waiting: its reply if it is complete. A response not
/// complete is awaited later (with the writer's own waker).
fn poll_now(p: &mut PendingResponse) -> Option<Reply> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match p.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(reply) => Some(reply),
        std::task::Poll::Pending => None,
    }
}

/// What the reader does after one request.
#[derive(Default)]
struct Step {
    send: Vec<PendingResponse>,
    close: bool,
}

impl Step {
    fn one(p: PendingResponse) -> Step {
        Step {
            send: vec![p],
            close: false,
        }
    }

    fn close() -> Step {
        Step {
            send: Vec::new(),
            close: true,
        }
    }
}

struct Connection {
    front: Arc<KafkaFront>,
    listener: Listener,
    peer: Peer,
    sasl: SaslSession,
    /// Set once the connection has a user and has entered its vhost.
    session: Option<Session>,
    /// The connection's entry in the broker's registry, once it has a session.
    registration: Option<crate::stats::Registration>,
    /// From the first request header that had one.
    client_id: Option<String>,
}

impl Connection {
    /// Handles one request (size prefix removed).
    async fn take(&mut self, request: Bytes) -> Step {
        if self.session.is_none() && self.sasl.expects_raw_token() {
            let outcome = self.sasl_step(Input::Token(&request));
            return self.outcome(outcome, ApiKey::SaslAuthenticate, 0, 0).await;
        }
        let decoded = match frame::decode_request(request) {
            Ok(d) => d,
            Err(e) => {
                debug!(peer = %self.peer.addr, error = %e, "closing kafka connection");
                return Step::close();
            }
        };
        let (header, api_key, body) = match decoded {
            Decoded::ApiVersionsFallback { correlation_id } => {
                return Step::one(handlers::api_versions_fallback(correlation_id));
            }
            Decoded::Request {
                header,
                api_key,
                body,
            } => (header, api_key, *body),
        };
        let v = header.request_api_version;
        let cid = header.correlation_id;
        let throttle_ms = match &body {
            RequestKind::Produce(req) if self.session.is_some() => {
                hold_produce(&self.front, req.timeout_ms).await
            }
            _ => 0,
        };
        if self.client_id.is_none() {
            self.client_id = header.client_id.as_ref().map(|s| s.to_string());
        }
        // The hot path: an authenticated connection.
        if let Some(session) = &mut self.session {
            return match body {
                RequestKind::SaslHandshake(req) => {
                    let outcome = self.sasl.step(
                        &world(&self.front, &self.peer),
                        Input::Handshake {
                            version: v,
                            mechanism: &req.mechanism,
                        },
                    );
                    self.outcome(outcome, api_key, v, cid).await
                }
                RequestKind::SaslAuthenticate(req) => {
                    let outcome = self.sasl.step(
                        &world(&self.front, &self.peer),
                        Input::Authenticate(&req.auth_bytes),
                    );
                    self.outcome(outcome, api_key, v, cid).await
                }
                body => match handlers::dispatch(session, header, api_key, body, throttle_ms).await
                {
                    Some(p) => Step::one(p),
                    None => Step::default(),
                },
            };
        }
        let input = match &body {
            RequestKind::ApiVersions(_) => {
                return Step::one(handlers::api_versions(v, cid));
            }
            RequestKind::SaslHandshake(req) => Input::Handshake {
                version: v,
                mechanism: &req.mechanism,
            },
            RequestKind::SaslAuthenticate(req) => Input::Authenticate(&req.auth_bytes),
            _ => Input::Request,
        };
        let outcome = self.sasl_step(input);
        if outcome != Outcome::Serve {
            return self.outcome(outcome, api_key, v, cid).await;
        }
        if let Err(step) = self.enter().await {
            return step;
        }
        let Some(session) = &mut self.session else {
            return Step::close();
        };
        match handlers::dispatch(session, header, api_key, body, throttle_ms).await {
            Some(p) => Step::one(p),
            None => Step::default(),
        }
    }

    fn sasl_step(&mut self, input: Input<'_>) -> Outcome {
        self.sasl.step(&world(&self.front, &self.peer), input)
    }

    /// Acts on an outcome of the SASL session for a request of `key` v`version`.
    async fn outcome(&mut self, outcome: Outcome, key: ApiKey, version: i16, cid: i32) -> Step {
        match outcome {
            Outcome::Serve => Step::default(),
            Outcome::Reply(reply) => {
                let mut step = Step::one(encode_reply(reply, key, version, cid));
                if self.session.is_none() && self.sasl.principal().is_some() {
                    if let Err(refused) = self.enter().await {
                        step.send.extend(refused.send);
                        step.close = true;
                    }
                }
                step
            }
            Outcome::Refuse { reply, reason } => {
                info!(peer = %self.peer.addr, "kafka authentication refused: {reason}");
                let mut send = Vec::new();
                if let Some(reply) = reply {
                    send.push(encode_reply(reply, key, version, cid));
                }
                send.push(Box::pin(async {
                    tokio::time::sleep(FAILED_AUTH_DELAY).await;
                    Reply::Close
                }) as PendingResponse);
                Step { send, close: true }
            }
        }
    }

    /// Enters the vhost of the session's principal.
    async fn enter(&mut self) -> Result<(), Step> {
        let Some(p) = self.sasl.principal() else {
            return Err(Step::close());
        };
        let (user, vhost, login) = (p.user.name.clone(), p.vhost.clone(), p.login);
        match self.front.vhost(&vhost) {
            Ok(broker) => {
                debug!(peer = %self.peer.addr, user, vhost, ?login, "kafka client authenticated");
                self.session = Some(Session {
                    broker,
                    authz: Authz::new(self.front.auth.clone(), &user, &vhost, self.peer.addr.ip()),
                    host: self.front.config.advertised_host.clone(),
                    port: self.listener.port,
                    peer: self.peer.addr,
                });
                if let Some(registry) = self.front.registry() {
                    let mut props = amq_protocol::types::FieldTable::default();
                    if let Some(id) = &self.client_id {
                        props.insert(
                            "client_id".into(),
                            amq_protocol::types::AMQPValue::LongString(id.as_str().into()),
                        );
                    }
                    self.registration = Some(registry.register(
                        rand::random::<u64>() >> 1 | 1 << 62,
                        crate::stats::ConnectionMeta {
                            protocol: crate::stats::Protocol::Kafka,
                            user: user.clone(),
                            vhost: vhost.clone(),
                            peer: self.peer.addr,
                            local: self.peer.local,
                            tls: self.listener.tls,
                            client_properties: props,
                            frame_max: 0,
                            channel_max: 0,
                            timeout: 0,
                            connected_at: crate::stats::unix_ms(),
                        },
                    ));
                }
                Ok(())
            }
            Err(e) => {
                warn!(peer = %self.peer.addr, user, vhost, "kafka client refused: {e}");
                Err(Step::close())
            }
        }
    }
}

/// While a memory or disk alarm is in effect a Produce request waits, and its connection
/// is not read meanwhile, until the alarm clears, the broker stops, or half the request's
/// timeout has passed (then it is served, so that the client does not time out and send
/// it again). Returns the time it waited, answered as `throttle_time_ms` (as a Kafka
/// broker's quotas delay a response).
async fn hold_produce(front: &KafkaFront, timeout_ms: i32) -> i32 {
    let Some((mem, disk)) = front.alarms() else {
        return 0;
    };
    if !*mem.borrow() && !*disk.borrow() {
        return 0;
    }
    let (mut mem, mut disk) = (mem.clone(), disk.clone());
    let start = std::time::Instant::now();
    let cap = Duration::from_millis((timeout_ms.max(0) as u64 / 2).clamp(100, 30_000));
    let cleared = async {
        loop {
            if !*mem.borrow_and_update() && !*disk.borrow_and_update() {
                return;
            }
            tokio::select! {
                r = mem.changed() => if r.is_err() { return },
                r = disk.changed() => if r.is_err() { return },
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(cap, cleared) => {}
        _ = super::broker::raised(front.shutdown.clone()) => {}
    }
    start.elapsed().as_millis().min(i32::MAX as u128) as i32
}

fn world<'a>(front: &'a KafkaFront, peer: &'a Peer) -> sasl::World<'a> {
    sasl::World {
        store: &front.auth,
        enabled: &front.config.sasl_mechanisms,
        from_loopback: peer.addr.ip().is_loopback() || is_mapped_loopback(peer.addr),
        default_vhost: &front.config.default_vhost,
        certificate_user: peer.certificate_user.as_deref(),
        nonce: &ferrymq_auth::scram::generate_nonce,
    }
}

/// `::ffff:127.0.0.1` (an IPv4 client on a dual-stack socket).
fn is_mapped_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        std::net::IpAddr::V4(_) => false,
    }
}

fn encode_reply(reply: sasl::Reply, key: ApiKey, version: i16, cid: i32) -> PendingResponse {
    let bytes = match reply {
        sasl::Reply::Token(token) => {
            let mut b = BytesMut::with_capacity(4 + token.len());
            b.put_u32(token.len() as u32);
            b.extend_from_slice(&token);
            Reply::Bytes(b.freeze())
        }
        sasl::Reply::Handshake(r) => {
            handlers::encode(key, version, cid, ResponseKind::SaslHandshake(r))
        }
        sasl::Reply::Authenticate(r) => {
            handlers::encode(key, version, cid, ResponseKind::SaslAuthenticate(r))
        }
    };
    Box::pin(async move { bytes })
}
