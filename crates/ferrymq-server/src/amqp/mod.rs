//! One task per AMQP connection. It owns the socket (reading and writing through readiness,
//! so one task does both without locks), the channels, and an inbox of deliveries from
//! queue tasks. Frames from one socket read are handled as a batch: publishes and acks are
//! grouped per queue and sent to each queue task once per batch, and publisher confirms
//! for the batch go out as one `basic.ack multiple`.

mod close;
mod consume;
mod deliver;
mod dispatch;
mod exchanges;
mod handshake;
mod publish;
mod queues;
mod txn;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::transport::Transport;
use ahash::AHashMap;
use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Buf, Bytes, BytesMut};
use ferrymq_amqp::encode;
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_amqp::frame::{
    peek_frame, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};
use ferrymq_amqp::method::{decode_method, Method};
use ferrymq_core::queue::ConsumerId;
use ferrymq_core::topology::{Binding, Dest};
use ferrymq_core::Message;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::channel::{Channel, Partial};
use crate::queue_task::{Outbound, QueueHandle, QueueOp};
use crate::session::Session;
use crate::vhost::VHost;

/// Stop reading from the socket while this much output is waiting (slow reader).
const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
const READ_CHUNK: usize = 128 * 1024;
/// A connection with nothing read for this long gives back its (empty) read and write
/// buffers, so thousands of idle connections hold none; they are allocated again on use.
const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// Messages up to this size are copied out of the read buffer into one allocation, so a
/// small message kept in a queue does not pin a whole read chunk.
const COPY_LIMIT: usize = 16 * 1024;
/// The frame_max in force before `connection.tune-ok` (the spec's minimum).
const PRE_TUNE_FRAME_MAX: u32 = 131_072;

type Result<T, E = AmqpError> = std::result::Result<T, E>;

/// Capabilities the client declared in `connection.start-ok` that change what we send.
#[derive(Default)]
struct ClientCaps {
    consumer_cancel_notify: bool,
    connection_blocked: bool,
    /// Refused logins get `connection.close` 403 instead of a silent close.
    authentication_failure_close: bool,
    /// The client reads `basic.qos` as the AMQP 0-9-1 spec does (`global=false`: the whole
    /// channel, existing consumers included), not as RabbitMQ 3.3+ does (`global=false`:
    /// each consumer created afterwards). py-amqp, and so kombu and Celery, pick the
    /// spec's meaning for every server whose `product` is not "RabbitMQ" (kombu
    /// `qos_semantics_matches_spec`), so Celery raises its prefetch with `global=false`
    /// while it holds an ETA task and expects the running consumer to get more.
    spec_qos: bool,
}

/// Why the connection loop ended.
enum End {
    /// Peer closed or the handshake/close completed.
    Done,
    /// Socket error.
    Io(std::io::Error),
}

pub(crate) async fn serve(broker: Arc<Broker>, mut stream: Transport, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = broker.next_id();
    let local = stream.tcp().local_addr().unwrap_or(peer);
    let tls = stream.is_tls();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        broker,
        session: None,
        auth_user: None,
        peer_cn: stream.peer_identity().and_then(|p| p.cn),
        channels_counted: 0,
        impersonator: false,
        publish_allowed: None,
        id,
        peer,
        frame_max: PRE_TUNE_FRAME_MAX,
        channel_max: 0,
        heartbeat: 0,
        caps: ClientCaps::default(),
        channels: AHashMap::new(),
        consumers: AHashMap::new(),
        outbound_tx: tx,
        outbound_rx: rx,
        wbuf: Vec::new(),
        wpos: 0,
        pending: Vec::new(),
        pending_hint: 0,
        pending_room: 0,
        pending_settles: Vec::new(),
        exclusive_queues: Vec::new(),
        phase: Phase::Header,
        closing_since: None,
        last_read: Instant::now(),
        last_write: Instant::now(),
        user: String::new(),
        throttle: None,
        route_cache: None,
        exchange_counts: Default::default(),
        has_published: false,
        blocked_sent: false,
        backlog: Arc::new(AtomicUsize::new(0)),
        backlog_stalled: false,
        registration: None,
        local,
        tls,
        client_properties: FieldTable::default(),
        connected_at: crate::stats::unix_ms(),
    };
    conn.broker
        .amqp_connections
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    match conn.run(&mut stream).await {
        End::Done => {
            if stream.is_tls() {
                // close_notify, bounded: a peer that stopped reading cannot hold us.
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
            }
        }
        End::Io(e) => tracing::debug!(peer = %conn.peer, "connection ended: {e}"),
    }
    conn.cleanup().await;
    conn.broker
        .amqp_connections
        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Phase {
    /// Waiting for the protocol header.
    Header,
    StartOk,
    TuneOk,
    Open,
    Running,
    /// We sent `connection.close`: only `close-ok` (or `close`) matters now.
    Closing,
}

struct Connection {
    broker: Arc<Broker>,
    /// The user in the vhost opened by `connection.open`: every operation is authorised
    /// and performed through it.
    session: Option<Session>,
    /// The user authenticated by `connection.start-ok`.
    auth_user: Option<Arc<ferrymq_auth::User>>,
    /// The user may publish messages with a foreign `user-id` (tag `impersonator`).
    impersonator: bool,
    /// The exchange (and topology epoch) the session last allowed any publish to.
    publish_allowed: Option<(Bytes, u64)>,
    /// Channels this connection counts towards its user's `max-channels`.
    channels_counted: usize,
    /// The common name of a verified client certificate (TLS connections), for EXTERNAL.
    peer_cn: Option<String>,
    id: u64,
    peer: SocketAddr,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    caps: ClientCaps,
    channels: AHashMap<u16, Channel>,
    /// Consumer id → (channel, consumer tag).
    consumers: AHashMap<ConsumerId, (u16, String)>,
    outbound_tx: mpsc::UnboundedSender<Outbound>,
    outbound_rx: mpsc::UnboundedReceiver<Outbound>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Publishes collected from the current batch of frames, per queue.
    pending: Vec<(QueueHandle, Vec<QueueOp>)>,
    /// Where in `pending` the next publish's queue is likely to be: a fanout routes every
    /// message to the same queues in the same order, so the next queue is found at once
    /// instead of by a search over all of them (per message per queue).
    pending_hint: usize,
    /// Room a queue's new publish batch starts with: the largest of the last flush
    /// (capped), so a batch of hundreds is not grown by doubling from empty every time.
    pending_room: usize,
    /// Acks, requeues and drops collected from the current batch, per queue.
    pending_settles: Vec<(QueueHandle, Vec<QueueOp>)>,
    exclusive_queues: Vec<QueueHandle>,
    phase: Phase,
    closing_since: Option<Instant>,
    last_read: Instant,
    /// When bytes last went out (heartbeats are sent after heartbeat/2 of silence).
    last_write: Instant,
    /// The authenticated user.
    user: String,
    /// A queue this connection fed faster than it drains: reading pauses until it catches up.
    throttle: Option<QueueHandle>,
    route_cache: Option<RouteCache>,
    /// Exchange `publish_in`/`publish_out` counted since the last flush.
    exchange_counts: crate::stats::ExchangeCounts,
    /// The connection has published (resource alarms stop reading from such connections).
    has_published: bool,
    /// We told the client it is blocked.
    blocked_sent: bool,
    /// Deliveries queued to us but not yet written (see `ConsumerLink::backlog`).
    backlog: Arc<AtomicUsize>,
    backlog_stalled: bool,
    /// The connection's entry in the broker's registry, from `connection.open` on
    /// (dropping it unregisters).
    registration: Option<crate::stats::Registration>,
    local: SocketAddr,
    tls: bool,
    /// From `connection.start-ok`, for the management API.
    client_properties: FieldTable,
    /// Unix ms.
    connected_at: u64,
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    p.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    p.insert("product".into(), s("FerryMQ"));
    p.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    p.insert("platform".into(), s("Rust"));
    p.insert("cluster_name".into(), s("ferrymq"));
    p.insert("copyright".into(), s("FerryMQ authors"));
    p.insert("information".into(), s("Licensed under Apache-2.0"));
    p
}

fn short(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

fn sstr(s: &str) -> ShortString {
    let mut s = s.to_owned();
    s.truncate(255);
    while !s.is_char_boundary(s.len()) {
        s.pop();
    }
    s.into()
}

fn random_name(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let tail: String = (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

impl Connection {
    /// The vhost this connection opened (only methods after `connection.open` use it).
    fn vh(&self) -> Result<&Arc<VHost>> {
        self.session
            .as_ref()
            .map(|s| &s.vhost)
            .ok_or_else(|| AmqpError::new(code::CHANNEL_ERROR, "no vhost opened"))
    }

    /// The session opened by `connection.open`.
    fn session(&mut self) -> Result<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| AmqpError::new(code::CHANNEL_ERROR, "no vhost opened"))
    }

    async fn run(&mut self, stream: &mut Transport) -> End {
        // Allocated on the first read (and again after an idle release).
        let mut rbuf = BytesMut::new();
        let mut shutdown = self.broker.shutdown_signal();
        let mut disk_alarm = self.broker.disk_alarm_signal();
        let mut mem_alarm = self.broker.memory.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut outbound = Vec::with_capacity(64);
        let handshake_deadline = Instant::now() + Duration::from_secs(10);
        // The management API's close request, once the connection is registered.
        let mut close_requested: Option<tokio::sync::watch::Receiver<Option<String>>> = None;
        loop {
            if close_requested.is_none() {
                close_requested = self
                    .registration
                    .as_ref()
                    .map(|r| r.close_requested.clone());
            }
            if self.phase == Phase::Closing {
                let timed_out = self
                    .closing_since
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(3));
                if timed_out || (self.closing_since.is_none() && self.wpos >= self.wbuf.len()) {
                    self.flush_now(stream).await;
                    return End::Done;
                }
            }
            let want_write = self.wpos < self.wbuf.len() || stream.wants_write();
            let write_ok = self.wbuf.len() - self.wpos < WRITE_HIGH_WATER;
            // During a resource alarm a connection that publishes is not read from (after
            // telling clients that understand `connection.blocked`); others go on.
            let alarm = if *disk_alarm.borrow_and_update() || *mem_alarm.borrow_and_update() {
                self.broker.alarm_reason()
            } else {
                None
            };
            self.update_blocked(alarm);
            let blocked = alarm.is_some() && self.has_published;
            let can_read = write_ok && self.throttle.is_none() && !blocked;
            let throttle = self.throttle.clone();
            let interest = match (can_read, want_write) {
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            tokio::select! {
                ready = async { stream.ready(interest.unwrap()).await }, if interest.is_some() => {
                    let ready = match ready {
                        Ok(r) => r,
                        Err(e) => return End::Io(e),
                    };
                    if ready.is_writable() && want_write {
                        if let Err(e) = self.try_write(stream) {
                            return End::Io(e);
                        }
                    }
                    if ready.is_readable() && can_read {
                        rbuf.reserve(READ_CHUNK);
                        match stream.try_read_buf(&mut rbuf) {
                            Ok(0) => return End::Done,
                            Ok(n) => {
                                if let Some(r) = &self.registration {
                                    r.entry.counters.received(n);
                                }
                                self.broker.memory.note_input(n);
                                self.last_read = Instant::now();
                                if let Some(end) = self.process_input(&mut rbuf).await {
                                    return end;
                                }
                                if let Err(e) = self.try_write(stream) {
                                    return End::Io(e);
                                }
                                // A busy publisher must not starve the queue and consumer
                                // tasks sharing its worker thread.
                                tokio::task::yield_now().await;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return End::Io(e),
                        }
                    }
                }
                _ = async { throttle.as_ref().unwrap().uncongested().await }, if throttle.is_some() => {
                    self.throttle = None;
                }
                n = self.outbound_rx.recv_many(&mut outbound, 64), if write_ok => {
                    if n > 0 {
                        for o in outbound.drain(..) {
                            self.handle_outbound(o);
                        }
                        while let Ok(o) = self.outbound_rx.try_recv() {
                            self.handle_outbound(o);
                            if self.wbuf.len() > WRITE_HIGH_WATER {
                                break;
                            }
                        }
                        self.flush_pending();
                        if let Err(e) = self.try_write(stream) {
                            return End::Io(e);
                        }
                    }
                }
                r = async { close_requested.as_mut().unwrap().changed().await }, if close_requested.is_some() => {
                    let reason = match r {
                        Ok(()) => close_requested.as_ref().and_then(|c| c.borrow().clone()),
                        Err(_) => None,
                    };
                    match reason {
                        Some(reason) if self.phase == Phase::Running => {
                            tracing::info!(peer = %self.peer, "closing connection: {reason}");
                            self.close_connection(AmqpError::new(code::CONNECTION_FORCED, reason));
                        }
                        Some(_) => {}
                        None => close_requested = None,
                    }
                }
                _ = disk_alarm.changed() => {}
                _ = mem_alarm.changed() => {}
                _ = shutdown.changed() => {
                    if self.phase == Phase::Running {
                        self.close_connection(AmqpError::new(
                            code::CONNECTION_FORCED,
                            "broker forced connection closure with reason 'shutdown'",
                        ));
                    } else if self.phase != Phase::Closing {
                        return End::Done;
                    }
                }
                _ = tick.tick() => {
                    if blocked {
                        // Not reading is our doing: the client's heartbeats wait in the
                        // socket (RabbitMQ pauses its heartbeat monitor while blocked).
                        self.last_read = Instant::now();
                    }
                    if self.last_read.elapsed() >= IDLE_RELEASE {
                        if rbuf.is_empty() && rbuf.capacity() > 0 {
                            rbuf = BytesMut::new();
                        }
                        if self.wpos >= self.wbuf.len() && self.wbuf.capacity() > 0 {
                            self.wbuf = Vec::new();
                            self.wpos = 0;
                        }
                    }
                    if self.phase != Phase::Running && self.phase != Phase::Closing && Instant::now() > handshake_deadline {
                        return End::Done;
                    }
                    if self.phase == Phase::Running {
                        if let Some(s) = &self.session {
                            if s.vhost.is_deleted() {
                                let name = s.vhost.name.clone();
                                self.close_connection(AmqpError::new(
                                    code::CONNECTION_FORCED,
                                    format!("vhost '{name}' is deleted"),
                                ));
                            }
                        }
                    }
                    if self.heartbeat > 0 && self.phase == Phase::Running {
                        let hb = Duration::from_secs(self.heartbeat as u64);
                        if self.last_read.elapsed() > hb * 2 {
                            tracing::info!(peer = %self.peer, "missed heartbeats from client, timeout: {}s", self.heartbeat);
                            return End::Done;
                        }
                        if self.last_write.elapsed() >= hb / 2 && self.wpos >= self.wbuf.len() {
                            encode::heartbeat(&mut self.wbuf);
                            if let Err(e) = self.try_write(stream) {
                                return End::Io(e);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sends `connection.blocked` / `unblocked` to a publishing client that asked for them
    /// when the alarm state changes.
    fn update_blocked(&mut self, alarm: Option<&'static str>) {
        let want = alarm.is_some() && self.has_published && self.phase == Phase::Running;
        if want == self.blocked_sent || !self.caps.connection_blocked {
            return;
        }
        self.blocked_sent = want;
        let m = if want {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: alarm.unwrap_or_default().into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        self.send_method(0, AMQPClass::Connection(m));
    }

    fn try_write(&mut self, stream: &mut Transport) -> std::io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match stream.try_write(&self.wbuf[self.wpos..]) {
                Ok(n) => {
                    if let Some(r) = &self.registration {
                        r.entry.counters.sent(n);
                    }
                    self.wpos += n;
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.wpos >= self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 8 * 1024 * 1024 {
                self.wbuf.shrink_to(64 * 1024);
            }
        } else if self.wpos > 256 * 1024 && self.wpos * 2 >= self.wbuf.len() {
            // Compact only when the written part dominates, so each byte moves at most once.
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Best-effort write of whatever is buffered, used before closing the socket.
    async fn flush_now(&mut self, stream: &mut Transport) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while (self.wpos < self.wbuf.len() || stream.wants_write()) && Instant::now() < deadline {
            if tokio::time::timeout(Duration::from_millis(200), stream.writable())
                .await
                .is_err()
            {
                continue;
            }
            if self.try_write(stream).is_err() {
                return;
            }
        }
    }

    /// Handles every complete frame in `rbuf`. Returns `Some` when the connection must end.
    async fn process_input(&mut self, rbuf: &mut BytesMut) -> Option<End> {
        if self.phase == Phase::Header {
            if rbuf.len() < 8 {
                return None;
            }
            let header = rbuf.split_to(8);
            if &header[..] != b"AMQP\x00\x00\x09\x01" {
                self.wbuf.extend_from_slice(b"AMQP\x00\x00\x09\x01");
                self.phase = Phase::Closing;
                return None;
            }
            self.send_method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: server_properties(),
                    mechanisms: self.mechanisms().into(),
                    locales: "en_US".into(),
                })),
            );
            self.phase = Phase::StartOk;
        }
        let mut pos = 0;
        loop {
            let head = match peek_frame(&rbuf[pos..], self.frame_max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    pos = rbuf.len();
                    self.close_connection(e.into());
                    break;
                }
            };
            let start = pos + 7;
            pos += head.size as usize + FRAME_OVERHEAD;
            let payload = &rbuf[start..start + head.size as usize];
            if let Err(mut e) = self.handle_frame(head.kind, head.channel, payload).await {
                if head.kind == FRAME_METHOD && payload.len() >= 4 {
                    let class = u16::from_be_bytes([payload[0], payload[1]]);
                    let method = u16::from_be_bytes([payload[2], payload[3]]);
                    e = e.in_method(class, method);
                }
                // Errors on channel 0 always end the connection.
                if e.is_connection_error() || head.channel == 0 {
                    pos = rbuf.len();
                    self.close_connection(e);
                    break;
                }
                let (class, method) = e.method.unwrap_or((0, 0));
                self.close_channel(head.channel, e, class, method);
            }
            if self.phase == Phase::Closing && self.closing_since.is_none() {
                pos = rbuf.len();
                break;
            }
        }
        rbuf.advance(pos);
        self.flush_pending();
        None
    }

    async fn handle_frame(&mut self, kind: u8, ch: u16, payload: &[u8]) -> Result<()> {
        if self.phase == Phase::Closing {
            // Only connection.close / close-ok matter while closing.
            if kind == FRAME_METHOD && ch == 0 {
                if let Ok(Method::Other(AMQPClass::Connection(m))) = decode_method(payload) {
                    match m {
                        connection::AMQPMethod::CloseOk(_) => {
                            self.closing_since = None;
                        }
                        connection::AMQPMethod::Close(_) => {
                            self.send_method(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                    connection::CloseOk {},
                                )),
                            );
                            self.closing_since = None;
                        }
                        _ => {}
                    }
                }
            }
            return Ok(());
        }
        match kind {
            FRAME_HEARTBEAT => {
                if ch != 0 {
                    return Err(AmqpError::new(
                        code::UNEXPECTED_FRAME,
                        format!("heartbeat frame on channel {ch}"),
                    ));
                }
                Ok(())
            }
            FRAME_METHOD => {
                let method = decode_method(payload)?;
                if ch == 0 {
                    return self.connection_method(method);
                }
                if self.phase != Phase::Running {
                    return Err(AmqpError::new(
                        code::CHANNEL_ERROR,
                        format!("expected channel 0 during handshake, got channel {ch}"),
                    ));
                }
                self.channel_method(ch, method).await
            }
            FRAME_HEADER | FRAME_BODY => {
                if ch == 0 || self.phase != Phase::Running {
                    return Err(AmqpError::new(
                        code::UNEXPECTED_FRAME,
                        "content frame on channel 0",
                    ));
                }
                self.content_frame(kind, ch, payload)
            }
            _ => Err(AmqpError::new(
                code::FRAME_ERROR,
                format!("unknown frame type {kind}"),
            )),
        }
    }
}

/// A binding as `queue.bind` / `exchange.bind` (and their unbinds) describe it.
fn binding(source: &str, dest: Dest, routing_key: &str, arguments: FieldTable) -> Binding {
    Binding {
        source: source.into(),
        dest,
        routing_key: routing_key.into(),
        arguments,
    }
}

/// The last route resolved on a connection.
struct RouteCache {
    epoch: u64,
    exchange: Bytes,
    routing_key: Bytes,
    targets: Arc<[QueueHandle]>,
}

/// The pseudo queue of direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Re-encodes a property list with `reply-to` replaced.
fn rewrite_reply_to(raw: &[u8], reply_to: &str) -> Option<Bytes> {
    let props = ferrymq_core::props::parse(raw)?.with_reply_to(sstr(reply_to));
    Some(ferrymq_core::props::encode(&props))
}

/// Builds the stored message from a complete `Partial` and the channel's assembly buffer:
/// small messages are copied into one allocation; large bodies are kept as assembled.
fn build_message(mut p: Partial, asm: &[u8]) -> Message {
    let h = p.header.take().expect("complete message has a header");
    let a = p.exchange_len;
    let b = a + p.routing_key_len;
    let c = b + h.properties_len;
    let (all, body) = match p.big_body.take() {
        None => {
            let all = Bytes::copy_from_slice(asm);
            let body = all.slice(c..);
            (all, body)
        }
        Some(big) => (Bytes::copy_from_slice(&asm[..c]), big.freeze()),
    };
    Message {
        exchange: all.slice(..a),
        routing_key: all.slice(a..b),
        raw_properties: all.slice(b..c),
        body,
        persistent: h.persistent,
        priority: h.priority,
        headers: h.headers,
        ttl_ms: h.ttl_ms,
    }
}
