//! One task per AMQP connection. It owns the socket (reading and writing through readiness,
//! so one task does both without locks), the channels, and an inbox of deliveries from
//! queue tasks. Frames from one socket read are handled as a batch: publishes and acks are
//! grouped per queue and sent to each queue task once per batch, and publisher confirms
//! for the batch go out as one `basic.ack multiple`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Buf, Bytes, BytesMut};
use ferrymq_amqp::content::decode_content_header;
use ferrymq_amqp::encode;
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_amqp::frame::{
    peek_frame, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};
use ferrymq_amqp::method::{decode_method, Method};
use ferrymq_core::queue::{ConsumerId, Delivery};
use ferrymq_core::topology::{Binding, Declared, Dest, ExchangeKind, ExchangeSpec, QueueSpec};
use ferrymq_core::{CoreError, Message};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::channel::{
    Channel, ChannelConsumer, ChannelState, HeaderInfo, Partial, Settle, TxBuffer, Unacked,
};
use crate::queue_task::{
    ConfirmToken, ConsumerLink, Outbound, QueueCmd, QueueHandle, QueueOp, CONNECTION_BACKLOG_HIGH,
    CONNECTION_BACKLOG_LOW,
};
use crate::vhost::{ReplyConsumer, VHost};

/// Stop reading from the socket while this much output is waiting (slow reader).
const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
const READ_CHUNK: usize = 128 * 1024;
/// Messages up to this size are copied out of the read buffer into one allocation, so a
/// small message kept in a queue does not pin a whole read chunk.
const COPY_LIMIT: usize = 16 * 1024;
/// The frame_max in force before `connection.tune-ok` (the spec's minimum).
const PRE_TUNE_FRAME_MAX: u32 = 131_072;

type Result<T, E = AmqpError> = std::result::Result<T, E>;

/// Capabilities the client declared in `connection.start-ok` that change what we send.
/// (`connection.blocked` joins when resource alarms arrive.)
#[derive(Default)]
struct ClientCaps {
    consumer_cancel_notify: bool,
    connection_blocked: bool,
}

/// Why the connection loop ended.
enum End {
    /// Peer closed or the handshake/close completed.
    Done,
    /// Socket error.
    Io(std::io::Error),
}

pub(crate) async fn serve(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = broker.next_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        broker,
        vhost: None,
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
        wbuf: Vec::with_capacity(64 * 1024),
        wpos: 0,
        pending: Vec::new(),
        pending_settles: Vec::new(),
        exclusive_queues: Vec::new(),
        phase: Phase::Header,
        closing_since: None,
        last_read: Instant::now(),
        last_write: Instant::now(),
        user: String::new(),
        throttle: None,
        route_cache: None,
        has_published: false,
        blocked_sent: false,
        backlog: Arc::new(AtomicUsize::new(0)),
        backlog_stalled: false,
    };
    match conn.run(&stream).await {
        End::Done => {}
        End::Io(e) => tracing::debug!(peer = %conn.peer, "connection ended: {e}"),
    }
    conn.cleanup().await;
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
    /// The vhost opened by `connection.open`.
    vhost: Option<Arc<VHost>>,
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
    /// The connection has published (resource alarms stop reading from such connections).
    has_published: bool,
    /// We told the client it is blocked.
    blocked_sent: bool,
    /// Deliveries queued to us but not yet written (see `ConsumerLink::backlog`).
    backlog: Arc<AtomicUsize>,
    backlog_stalled: bool,
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

fn check_credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((short(user), short(pass)))
        }
        "AMQPLAIN" => {
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, t) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| match t.inner().get(k) {
                Some(AMQPValue::LongString(s)) => Some(short(s.as_bytes())),
                Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

impl Connection {
    /// The vhost this connection opened (only methods after `connection.open` use it).
    fn vh(&self) -> Result<&Arc<VHost>> {
        self.vhost
            .as_ref()
            .ok_or_else(|| AmqpError::new(code::CHANNEL_ERROR, "no vhost opened"))
    }

    async fn run(&mut self, stream: &TcpStream) -> End {
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut shutdown = self.broker.shutdown_signal();
        let mut disk_alarm = self.broker.disk_alarm_signal();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut outbound = Vec::with_capacity(64);
        let handshake_deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.phase == Phase::Closing {
                let timed_out = self
                    .closing_since
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(3));
                if timed_out || (self.closing_since.is_none() && self.wpos >= self.wbuf.len()) {
                    self.flush_now(stream).await;
                    return End::Done;
                }
            }
            let want_write = self.wpos < self.wbuf.len();
            let write_ok = self.wbuf.len() - self.wpos < WRITE_HIGH_WATER;
            // During a resource alarm a connection that publishes is not read from (after
            // telling clients that understand `connection.blocked`); others go on.
            let alarm = *disk_alarm.borrow();
            self.update_blocked(alarm);
            let can_read = write_ok && self.throttle.is_none() && !(alarm && self.has_published);
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
                            Ok(_) => {
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
                _ = disk_alarm.changed() => {}
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
                    if self.phase != Phase::Running && self.phase != Phase::Closing && Instant::now() > handshake_deadline {
                        return End::Done;
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
    fn update_blocked(&mut self, alarm: bool) {
        let want = alarm && self.has_published && self.phase == Phase::Running;
        if want == self.blocked_sent || !self.caps.connection_blocked {
            return;
        }
        self.blocked_sent = want;
        let m = if want {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: "low on disk".into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        self.send_method(0, AMQPClass::Connection(m));
    }

    fn try_write(&mut self, stream: &TcpStream) -> std::io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match stream.try_write(&self.wbuf[self.wpos..]) {
                Ok(n) => {
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
    async fn flush_now(&mut self, stream: &TcpStream) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.wpos < self.wbuf.len() && Instant::now() < deadline {
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
                    mechanisms: "PLAIN AMQPLAIN".into(),
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

    // ---- connection class -------------------------------------------------------------

    fn connection_method(&mut self, method: Method) -> Result<()> {
        let Method::Other(AMQPClass::Connection(m)) = method else {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                "non-connection method on channel 0",
            ));
        };
        use connection::AMQPMethod as C;
        match (self.phase, m) {
            (Phase::StartOk, C::StartOk(s)) => {
                if let Some(AMQPValue::FieldTable(caps)) =
                    s.client_properties.inner().get("capabilities")
                {
                    let on =
                        |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
                    self.caps = ClientCaps {
                        consumer_cancel_notify: on("consumer_cancel_notify"),
                        connection_blocked: on("connection.blocked"),
                    };
                }
                let mech = s.mechanism.as_str();
                if mech != "PLAIN" && mech != "AMQPLAIN" {
                    return Err(AmqpError::new(
                        code::COMMAND_INVALID,
                        format!("unknown authentication mechanism '{mech}'"),
                    ));
                }
                let ok = match check_credentials(mech, s.response.as_bytes()) {
                    Some((u, p)) => {
                        let ok = u == "guest" && p == "guest" && self.peer.ip().is_loopback();
                        self.user = u;
                        ok
                    }
                    None => false,
                };
                if !ok {
                    return Err(AmqpError::new(
                        code::ACCESS_REFUSED,
                        format!("Login was refused using authentication mechanism {mech}. For details see the broker logfile."),
                    ));
                }
                let cfg = &self.broker.config;
                self.send_method(
                    0,
                    AMQPClass::Connection(C::Tune(connection::Tune {
                        channel_max: cfg.channel_max,
                        frame_max: cfg.frame_max,
                        heartbeat: cfg.heartbeat,
                    })),
                );
                self.phase = Phase::TuneOk;
                Ok(())
            }
            (Phase::TuneOk, C::TuneOk(t)) => {
                let cfg = &self.broker.config;
                if t.frame_max != 0 && t.frame_max < 4096 {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("frame_max={} < 4096 min size", t.frame_max),
                    ));
                }
                if t.frame_max > cfg.frame_max || (t.frame_max == 0 && cfg.frame_max != 0) {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("frame_max={} > {} max size", t.frame_max, cfg.frame_max),
                    ));
                }
                self.frame_max = t.frame_max;
                self.channel_max = if t.channel_max == 0 {
                    cfg.channel_max
                } else {
                    t.channel_max.min(cfg.channel_max)
                };
                self.heartbeat = t.heartbeat;
                self.phase = Phase::Open;
                Ok(())
            }
            (Phase::Open, C::Open(o)) => {
                let Some(vhost) = self.broker.vhost(o.virtual_host.as_str()) else {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("vhost {} not found", o.virtual_host),
                    ));
                };
                self.vhost = Some(vhost);
                self.send_method(0, AMQPClass::Connection(C::OpenOk(connection::OpenOk {})));
                self.phase = Phase::Running;
                Ok(())
            }
            (Phase::Running, C::Close(_)) => {
                self.send_method(0, AMQPClass::Connection(C::CloseOk(connection::CloseOk {})));
                self.phase = Phase::Closing;
                self.closing_since = None;
                Ok(())
            }
            (Phase::Running, C::CloseOk(_)) => Ok(()),
            (Phase::Running, C::UpdateSecret(_)) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(C::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            (Phase::Running, C::Blocked(_) | C::Unblocked(_)) => Ok(()),
            (phase, m) => Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("unexpected method {m:?} in connection phase {phase:?}"),
            )),
        }
    }

    // ---- channel-level dispatch ---------------------------------------------------------

    async fn channel_method(&mut self, ch: u16, method: Method<'_>) -> Result<()> {
        // Frames on a channel we are closing are dropped, except the close handshake.
        if let Some(c) = self.channels.get(&ch) {
            if c.state == ChannelState::Closing {
                match method {
                    Method::Other(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                        self.channels.remove(&ch);
                    }
                    Method::Other(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                        self.send_method(
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                    }
                    _ => {}
                }
                return Ok(());
            }
            if c.partial.is_some() {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    format!("expected content header for class 60, got non content header frame instead (channel {ch})"),
                ));
            }
        }
        match method {
            Method::Publish(p) => {
                let c = self.open_channel(ch)?;
                if p.immediate {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "immediate=true"));
                }
                c.asm.clear();
                c.asm.extend_from_slice(p.exchange);
                c.asm.extend_from_slice(p.routing_key);
                c.partial = Some(Partial {
                    mandatory: p.mandatory,
                    exchange_len: p.exchange.len(),
                    routing_key_len: p.routing_key.len(),
                    header: None,
                    received: 0,
                    big_body: None,
                });
                Ok(())
            }
            Method::Ack {
                delivery_tag,
                multiple,
            } => self.settle(ch, delivery_tag, multiple, Settle::Ack),
            Method::Nack {
                delivery_tag,
                multiple,
                requeue,
            } => self.settle(
                ch,
                delivery_tag,
                multiple,
                if requeue {
                    Settle::Requeue
                } else {
                    Settle::Drop
                },
            ),
            Method::Reject {
                delivery_tag,
                requeue,
            } => self.settle(
                ch,
                delivery_tag,
                false,
                if requeue {
                    Settle::Requeue
                } else {
                    Settle::Drop
                },
            ),
            Method::Qos {
                prefetch_size,
                prefetch_count,
                global,
            } => {
                if prefetch_size != 0 {
                    return Err(AmqpError::new(
                        code::NOT_IMPLEMENTED,
                        format!("prefetch_size!=0 ({prefetch_size})"),
                    ));
                }
                self.flush_pending();
                let qos = basic::Qos {
                    prefetch_count,
                    global,
                };
                self.other_method(ch, AMQPClass::Basic(basic::AMQPMethod::Qos(qos)))
                    .await
            }
            Method::Other(m) => {
                // Anything but the hot methods sees every earlier publish and ack applied.
                self.flush_pending();
                self.other_method(ch, m).await
            }
        }
    }

    fn open_channel(&mut self, ch: u16) -> Result<&mut Channel> {
        self.channels.get_mut(&ch).ok_or_else(|| {
            AmqpError::new(
                code::CHANNEL_ERROR,
                format!("expected 'channel.open' for channel {ch}"),
            )
        })
    }

    async fn other_method(&mut self, ch: u16, m: AMQPClass) -> Result<()> {
        use AMQPClass as K;
        if let K::Channel(channel::AMQPMethod::Open(_)) = m {
            if self.channels.contains_key(&ch) {
                return Err(AmqpError::new(
                    code::CHANNEL_ERROR,
                    format!("second 'channel.open' seen on channel {ch}"),
                ));
            }
            if ch > self.channel_max {
                return Err(AmqpError::new(
                    code::NOT_ALLOWED,
                    format!(
                        "channel number {ch} exceeds channel_max {}",
                        self.channel_max
                    ),
                ));
            }
            self.channels.insert(ch, Channel::new());
            self.send_method(
                ch,
                K::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            );
            return Ok(());
        }
        self.open_channel(ch)?;
        let (class_id, method_id) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let r = match m {
            K::Channel(m) => self.channel_class(ch, m).await,
            K::Exchange(m) => self.exchange_class(ch, m),
            K::Queue(m) => self.queue_class(ch, m).await,
            K::Basic(m) => self.basic_class(ch, m).await,
            K::Confirm(confirm::AMQPMethod::Select(s)) => {
                let c = self.open_channel(ch)?;
                if c.tx.is_some() {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                c.confirm = true;
                if !s.nowait {
                    self.send_method(
                        ch,
                        K::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            K::Tx(m) => self.tx_class(ch, m),
            K::Access(_) => Ok(()),
            other => Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("method {other:?} not valid from a client"),
            )),
        };
        match r {
            Err(e) if !e.is_connection_error() => {
                self.close_channel(ch, e, class_id, method_id);
                Ok(())
            }
            r => r,
        }
    }

    async fn channel_class(&mut self, ch: u16, m: channel::AMQPMethod) -> Result<()> {
        use channel::AMQPMethod as M;
        match m {
            M::Close(_) => {
                self.release_channel(ch);
                self.channels.remove(&ch);
                self.send_method(ch, AMQPClass::Channel(M::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            M::CloseOk(_) => Ok(()),
            M::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "active=false"));
                }
                self.open_channel(ch)?.flow_active = true;
                self.send_method(
                    ch,
                    AMQPClass::Channel(M::FlowOk(channel::FlowOk { active: true })),
                );
                Ok(())
            }
            M::FlowOk(_) => Ok(()),
            other => Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("unexpected {other:?}"),
            )),
        }
    }

    // ---- exchange class ---------------------------------------------------------------

    fn exchange_class(&mut self, ch: u16, m: exchange::AMQPMethod) -> Result<()> {
        use exchange::AMQPMethod as M;
        let conn = self.id;
        match m {
            M::Declare(d) => {
                let kind = match ExchangeKind::parse(d.kind.as_str()) {
                    Some(k) => k,
                    None if d.passive => ExchangeKind::Direct,
                    None => {
                        return Err(AmqpError::new(
                            code::COMMAND_INVALID,
                            format!("invalid exchange type '{}'", d.kind),
                        ))
                    }
                };
                let spec = ExchangeSpec {
                    name: d.exchange.as_str().into(),
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                };
                if d.passive && d.exchange.as_str().is_empty() {
                    // The default exchange always exists.
                } else {
                    self.vh()?.declare_exchange(spec, d.passive)?;
                }
                if !d.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(M::DeclareOk(exchange::DeclareOk {})),
                    );
                }
            }
            M::Delete(d) => {
                self.vh()?
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.send_method(ch, AMQPClass::Exchange(M::DeleteOk(exchange::DeleteOk {})));
                }
            }
            M::Bind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    Dest::Exchange(b.destination.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                self.vh()?.bind(binding, conn)?;
                if !b.nowait {
                    self.send_method(ch, AMQPClass::Exchange(M::BindOk(exchange::BindOk {})));
                }
            }
            M::Unbind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    Dest::Exchange(b.destination.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                self.vh()?.unbind(&binding, conn)?;
                if !b.nowait {
                    self.send_method(ch, AMQPClass::Exchange(M::UnbindOk(exchange::UnbindOk {})));
                }
            }
            other => {
                return Err(AmqpError::new(
                    code::COMMAND_INVALID,
                    format!("unexpected {other:?}"),
                ))
            }
        }
        Ok(())
    }

    // ---- queue class ------------------------------------------------------------------

    async fn queue_class(&mut self, ch: u16, m: queue::AMQPMethod) -> Result<()> {
        use queue::AMQPMethod as M;
        let conn = self.id;
        match m {
            M::Declare(d) => {
                let name = if d.queue.as_str().is_empty() {
                    if d.passive {
                        return Err(CoreError::not_found("queue", "").into());
                    }
                    random_name("amq.gen-")
                } else {
                    if !d.passive {
                        ferrymq_core::topology::check_queue_name(d.queue.as_str())?;
                    }
                    d.queue.as_str().to_owned()
                };
                if !d.passive {
                    ferrymq_core::topology::validate_queue_args(&name, &d.arguments)?;
                }
                let spec = QueueSpec {
                    name: name.as_str().into(),
                    durable: d.durable,
                    exclusive_owner: d.exclusive.then_some(conn),
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                if !d.passive {
                    ferrymq_core::args::validate_queue_type(&spec)?;
                }
                let declared = self.vh()?.declare_queue(spec, d.passive, conn)?;
                let handle = match declared {
                    Declared::Created(q) => {
                        if q.spec.exclusive_owner.is_some() {
                            self.exclusive_queues.push(q.handle.clone());
                        }
                        q.handle
                    }
                    Declared::Existing(q) => {
                        q.handle.send(QueueCmd::Touch);
                        q.handle
                    }
                };
                if !d.nowait {
                    let (messages, consumers) = handle
                        .ask(|reply| QueueCmd::Stats { reply })
                        .await
                        .ok_or_else(|| CoreError::not_found("queue", &name))?;
                    self.send_method(
                        ch,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: sstr(&name),
                            message_count: messages as u32,
                            consumer_count: consumers as u32,
                        })),
                    );
                }
            }
            M::Bind(b) => {
                let binding = binding(
                    b.exchange.as_str(),
                    Dest::Queue(b.queue.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                self.vh()?.bind(binding, conn)?;
                if !b.nowait {
                    self.send_method(ch, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
            }
            M::Unbind(b) => {
                let binding = binding(
                    b.exchange.as_str(),
                    Dest::Queue(b.queue.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                match self.vh()?.unbind(&binding, conn) {
                    Ok(()) | Err(CoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                self.send_method(ch, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
            }
            M::Purge(p) => {
                let q = self.queue_ref(p.queue.as_str())?;
                let n = q
                    .ask(|reply| QueueCmd::Purge { reply })
                    .await
                    .ok_or_else(|| CoreError::not_found("queue", p.queue.as_str()))?;
                if !p.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk {
                            message_count: n as u32,
                        })),
                    );
                }
            }
            M::Delete(d) => {
                let q = match self.queue_ref(d.queue.as_str()) {
                    Ok(q) => Some(q),
                    Err(e) if e.code == code::NOT_FOUND => None,
                    Err(e) => return Err(e),
                };
                let mut count = 0;
                if let Some(q) = q {
                    let r = q
                        .ask(|reply| QueueCmd::Delete {
                            if_unused: d.if_unused,
                            if_empty: d.if_empty,
                            reply,
                        })
                        .await;
                    match r {
                        Some(Ok(n)) => count = n,
                        Some(Err(e)) => return Err(e.into()),
                        None => {}
                    }
                    self.exclusive_queues.retain(|x| *x != q);
                }
                if !d.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk {
                            message_count: count as u32,
                        })),
                    );
                }
            }
            other => {
                return Err(AmqpError::new(
                    code::COMMAND_INVALID,
                    format!("unexpected {other:?}"),
                ))
            }
        }
        Ok(())
    }

    fn queue_ref(&self, name: &str) -> Result<QueueHandle> {
        let conn = self.id;
        Ok(self
            .vh()?
            .read(|t| t.queue_for(name, conn).map(|q| q.handle.clone()))?)
    }

    // ---- basic class ------------------------------------------------------------------

    async fn basic_class(&mut self, ch: u16, m: basic::AMQPMethod) -> Result<()> {
        use basic::AMQPMethod as M;
        match m {
            M::Qos(q) => {
                let c = self.open_channel(ch)?;
                if q.global {
                    c.credit.set_limit(q.prefetch_count as u32);
                    let queues: Vec<QueueHandle> = c
                        .consumers
                        .values()
                        .filter_map(|x| x.queue.clone())
                        .collect();
                    for q in queues {
                        q.send(QueueCmd::Kick);
                    }
                } else {
                    c.consumer_prefetch = q.prefetch_count as u32;
                }
                self.send_method(ch, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
            }
            M::Consume(c) => self.consume(ch, c).await?,
            M::Cancel(c) => {
                let tag = c.consumer_tag.as_str().to_owned();
                let consumer = self.open_channel(ch)?.consumers.remove(&tag);
                if let Some(consumer) = consumer {
                    self.consumers.remove(&consumer.id);
                    match &consumer.queue {
                        Some(q) => {
                            q.ask(|reply| QueueCmd::Cancel {
                                consumer: consumer.id,
                                reply: Some(reply),
                            })
                            .await;
                        }
                        None => self.stop_reply_consumer(ch),
                    }
                }
                if !c.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Basic(M::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            M::Get(g) => {
                let q = self.queue_ref(g.queue.as_str())?;
                let r = q
                    .ask(|reply| QueueCmd::Get {
                        no_ack: g.no_ack,
                        reply,
                    })
                    .await
                    .ok_or_else(|| CoreError::not_found("queue", g.queue.as_str()))?;
                match r {
                    None => self.send_method(ch, AMQPClass::Basic(M::GetEmpty(basic::GetEmpty {}))),
                    Some((entry, remaining)) => {
                        let frame_max = self.frame_max;
                        let c = self.open_channel(ch)?;
                        let tag = if g.no_ack {
                            c.skip_tag()
                        } else {
                            c.push_unacked(Unacked {
                                queue: q,
                                offset: entry.offset,
                                generation: entry.delivery_count,
                                consumed: false,
                            })
                        };
                        encode::get_ok(
                            &mut self.wbuf,
                            ch,
                            tag,
                            entry.redelivered(),
                            remaining as u32,
                            &entry.msg,
                            frame_max,
                        );
                    }
                }
            }
            M::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "requeue=false"));
                }
                self.requeue_all(ch);
                self.send_method(ch, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
            }
            M::RecoverAsync(r) => {
                if !r.requeue {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "requeue=false"));
                }
                self.requeue_all(ch);
            }
            other => {
                return Err(AmqpError::new(
                    code::COMMAND_INVALID,
                    format!("unexpected {other:?}"),
                ))
            }
        }
        Ok(())
    }

    async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<()> {
        if c.queue.as_str() == DIRECT_REPLY_TO {
            return self.consume_direct_reply_to(ch, c);
        }
        let q = self.queue_ref(c.queue.as_str())?;
        let mut tag = c.consumer_tag.as_str().to_owned();
        if tag.is_empty() {
            tag = random_name("amq.ctag-");
        }
        let id = ConsumerId(self.broker.next_id());
        let (conn_id, outbound, backlog) =
            (self.id, self.outbound_tx.clone(), self.backlog.clone());
        let chan = self.open_channel(ch)?;
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let link = ConsumerLink {
            id,
            connection: conn_id,
            outbound,
            credit: chan.credit.clone(),
            backlog,
            no_ack: c.no_ack,
        };
        let prefetch = chan.consumer_prefetch;
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => ferrymq_core::topology::int_value(v).ok_or_else(|| {
                AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "invalid arg 'x-priority' for consumer on queue '{}'",
                        c.queue
                    ),
                )
            })?,
        };
        let r = q
            .ask(|reply| QueueCmd::Consume {
                link,
                prefetch,
                exclusive: c.exclusive,
                priority,
                reply,
            })
            .await
            .ok_or_else(|| CoreError::not_found("queue", c.queue.as_str()))?;
        if let Err(e) = r {
            return Err(match e {
                CoreError::AccessRefused(_) => AmqpError::new(
                    code::ACCESS_REFUSED,
                    format!("queue '{}' in vhost '/' in exclusive use", c.queue),
                ),
                e => e.into(),
            });
        }
        let chan = self.open_channel(ch)?;
        chan.consumers
            .insert(tag.clone(), ChannelConsumer { id, queue: Some(q) });
        self.consumers.insert(id, (ch, tag.clone()));
        if !c.nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: sstr(&tag),
                })),
            );
        }
        Ok(())
    }

    /// `basic.consume` from `amq.rabbitmq.reply-to`: a pseudo consumer that receives
    /// replies published to this channel's private reply name, without acks.
    fn consume_direct_reply_to(&mut self, ch: u16, c: basic::Consume) -> Result<()> {
        if !c.no_ack {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
            ));
        }
        let id = ConsumerId(self.broker.next_id());
        let outbound = self.outbound_tx.clone();
        let mut tag = c.consumer_tag.as_str().to_owned();
        if tag.is_empty() {
            tag = random_name("amq.ctag-");
        }
        let chan = self.open_channel(ch)?;
        if chan.reply_name.is_some() {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                "reply consumer already set",
            ));
        }
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let name = random_name(&format!("{DIRECT_REPLY_TO}."));
        chan.reply_name = Some(name.clone());
        chan.consumers
            .insert(tag.clone(), ChannelConsumer { id, queue: None });
        self.consumers.insert(id, (ch, tag.clone()));
        self.vh()?.register_reply_to(
            name,
            ReplyConsumer {
                consumer: id,
                outbound,
            },
        );
        if !c.nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: sstr(&tag),
                })),
            );
        }
        Ok(())
    }

    fn stop_reply_consumer(&mut self, ch: u16) {
        if let Some(name) = self.channels.get_mut(&ch).and_then(|c| c.reply_name.take()) {
            if let Some(v) = &self.vhost {
                v.unregister_reply_to(&name);
            }
        }
    }

    fn requeue_all(&mut self, ch: u16) {
        if let Some(c) = self.channels.get_mut(&ch) {
            let all = c.take_all_unacked();
            let credit = c.credit.clone();
            let consumed = all.iter().filter(|u| u.consumed).count() as u32;
            credit.release(consumed);
            for u in all {
                self.push_op(&u.queue, QueueOp::Return(u.offset, u.generation));
            }
        }
    }

    // ---- ack / nack / reject ----------------------------------------------------------

    fn settle(&mut self, ch: u16, tag: u64, multiple: bool, how: Settle) -> Result<()> {
        let c = self.open_channel(ch)?;
        if let Some(tx) = &mut c.tx {
            // Validate now, apply at commit.
            let known = tag == 0 && multiple
                || (tag >= c.unacked_base
                    && matches!(
                        c.unacked.get((tag - c.unacked_base) as usize),
                        Some(Some(_))
                    ));
            if !known {
                let e = AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!("unknown delivery tag {tag}"),
                );
                self.close_channel(ch, e, 60, 80);
                return Ok(());
            }
            tx.settles.push((tag, multiple, how));
            return Ok(());
        }
        self.apply_settle(ch, tag, multiple, how)
    }

    fn apply_settle(&mut self, ch: u16, tag: u64, multiple: bool, how: Settle) -> Result<()> {
        let c = self.open_channel(ch)?;
        let Some(done) = c.take_settled(tag, multiple) else {
            let (cls, mth) = match how {
                Settle::Ack => (60, 80),
                _ => (60, 120),
            };
            let e = AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            );
            self.close_channel(ch, e, cls, mth);
            return Ok(());
        };
        let consumed = done.iter().filter(|u| u.consumed).count() as u32;
        let was_full = c.credit.release(consumed);
        let kick: Vec<QueueHandle> = if was_full {
            c.consumers
                .values()
                .filter_map(|x| x.queue.clone())
                .collect()
        } else {
            Vec::new()
        };
        for u in done {
            let op = match how {
                Settle::Ack => QueueOp::Ack(u.offset, u.generation),
                Settle::Requeue => QueueOp::Requeue(u.offset, u.generation),
                Settle::Drop => QueueOp::Drop(u.offset, u.generation),
            };
            self.push_op(&u.queue, op);
        }
        self.flush_pending();
        for q in kick {
            q.send(QueueCmd::Kick);
        }
        Ok(())
    }

    // ---- tx class ---------------------------------------------------------------------

    fn tx_class(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<()> {
        use tx::AMQPMethod as M;
        match m {
            M::Select(_) => {
                let c = self.open_channel(ch)?;
                if c.confirm {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if c.tx.is_none() {
                    c.tx = Some(TxBuffer::default());
                }
                self.send_method(ch, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
            }
            M::Commit(_) => {
                let c = self.open_channel(ch)?;
                let Some(buf) = c.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                for (p, msg) in buf.publishes {
                    self.route_and_enqueue(ch, p, msg)?;
                }
                for (tag, multiple, how) in buf.settles {
                    self.apply_settle(ch, tag, multiple, how)?;
                    if self
                        .channels
                        .get(&ch)
                        .is_none_or(|c| c.state != ChannelState::Open)
                    {
                        return Ok(());
                    }
                }
                self.flush_pending();
                self.send_method(ch, AMQPClass::Tx(M::CommitOk(tx::CommitOk {})));
            }
            M::Rollback(_) => {
                let c = self.open_channel(ch)?;
                if c.tx.is_none() {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                c.tx = Some(TxBuffer::default());
                self.send_method(ch, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
            }
            other => {
                return Err(AmqpError::new(
                    code::COMMAND_INVALID,
                    format!("unexpected {other:?}"),
                ))
            }
        }
        Ok(())
    }

    // ---- content ----------------------------------------------------------------------

    fn content_frame(&mut self, kind: u8, ch: u16, payload: &[u8]) -> Result<()> {
        let max_size = self.broker.config.max_message_size;
        let Some(c) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                format!("expected 'channel.open' for channel {ch}"),
            ));
        };
        if c.state == ChannelState::Closing {
            return Ok(());
        }
        let Some(partial) = c.partial.as_mut() else {
            return Err(AmqpError::new(
                code::UNEXPECTED_FRAME,
                format!("expected method frame, got non method frame instead (channel {ch})"),
            ));
        };
        if kind == FRAME_HEADER {
            if partial.header.is_some() {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    "expected content body, got content header",
                ));
            }
            let h = decode_content_header(payload)?;
            if h.class_id != 60 {
                return Err(AmqpError::new(
                    code::FRAME_ERROR,
                    format!("content header for class {}", h.class_id),
                ));
            }
            if h.body_size > max_size {
                let e = AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "message size {} is larger than configured max size {max_size}",
                        h.body_size
                    ),
                );
                self.close_channel(ch, e, 60, 40);
                return Ok(());
            }
            if let Some(exp) = h.expiration {
                let valid =
                    !exp.is_empty() && exp.len() <= 19 && exp.iter().all(u8::is_ascii_digit);
                if !valid {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        format!("invalid expiration '{}': {{error,no_integer}}", short(exp)),
                    )
                    .in_method(60, 40));
                }
            }
            if let Some(uid) = h.user_id {
                if uid != self.user.as_bytes() {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        format!(
                            "user_id property set to '{}' but authenticated user was '{}'",
                            short(uid),
                            self.user
                        ),
                    ));
                }
            }
            let mut rewritten = None;
            if h.reply_to == Some(DIRECT_REPLY_TO.as_bytes()) {
                let Some(name) = &c.reply_name else {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "fast reply consumer does not exist",
                    ));
                };
                rewritten =
                    Some(rewrite_reply_to(h.raw_properties, name).ok_or_else(|| {
                        AmqpError::new(code::SYNTAX_ERROR, "malformed properties")
                    })?);
            }
            let props = rewritten.as_deref().unwrap_or(h.raw_properties);
            c.asm.extend_from_slice(props);
            let small = c.asm.len() as u64 + h.body_size <= COPY_LIMIT as u64;
            if small {
                c.asm.reserve(h.body_size as usize);
            } else {
                partial.big_body = Some(BytesMut::with_capacity(h.body_size as usize));
            }
            let done = h.body_size == 0;
            partial.header = Some(HeaderInfo {
                properties_len: props.len(),
                body_size: h.body_size,
                persistent: h.persistent,
                priority: h.priority,
                headers: h.headers,
                ttl_ms: h
                    .expiration
                    .and_then(|e| std::str::from_utf8(e).ok()?.parse().ok()),
            });
            if !done {
                return Ok(());
            }
        } else {
            let Some(h) = &partial.header else {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    "expected content header, got content body",
                ));
            };
            let total = partial.received + payload.len() as u64;
            if total > h.body_size {
                return Err(AmqpError::new(
                    code::FRAME_ERROR,
                    format!(
                        "content body of {total} bytes exceeds declared size {}",
                        h.body_size
                    ),
                ));
            }
            partial.received = total;
            match &mut partial.big_body {
                Some(b) => b.extend_from_slice(payload),
                None => c.asm.extend_from_slice(payload),
            }
            if total < h.body_size {
                return Ok(());
            }
        }
        let partial = c.partial.take().expect("checked above");
        let mandatory = partial.mandatory;
        let msg = build_message(partial, &c.asm);
        let msg = Arc::new(msg);
        if let Some(tx) = &mut c.tx {
            tx.publishes.push((mandatory, msg));
            return Ok(());
        }
        self.route_and_enqueue(ch, mandatory, msg)
    }

    /// Routes a complete message and queues it for delivery to its queues at the next
    /// flush. Sends `basic.return` for unroutable mandatory messages and counts the publish
    /// for confirms.
    fn route_and_enqueue(&mut self, ch: u16, mandatory: bool, msg: Arc<Message>) -> Result<()> {
        self.has_published = true;
        let mut msg = msg;
        let (targets, direct) =
            if msg.exchange.is_empty() && msg.routing_key.starts_with(DIRECT_REPLY_TO.as_bytes()) {
                // Direct reply-to: straight to the requesting channel's pseudo consumer.
                let name = String::from_utf8_lossy(&msg.routing_key);
                let sent = self.vh()?.reply_consumer(&name).is_some_and(|r| {
                    r.outbound
                        .send(Outbound::Reply {
                            consumer: r.consumer,
                            msg: msg.clone(),
                        })
                        .is_ok()
                });
                (Arc::from(Vec::new()), sent)
            } else if msg.headers.is_some() {
                // CC/BCC, delayed and de-duplication exchanges all work from headers.
                match crate::routing::classify(self.vh()?, msg.clone())? {
                    crate::routing::Publish::Hold(handle, due) => {
                        return self.hold_delayed(ch, msg, handle, due);
                    }
                    crate::routing::Publish::Route(m, targets) => {
                        msg = m;
                        (Arc::from(targets), false)
                    }
                }
            } else {
                (self.route(&msg)?, false)
            };
        if targets.is_empty() && !direct && mandatory {
            encode::basic_return(
                &mut self.wbuf,
                ch,
                code::NO_ROUTE,
                "NO_ROUTE",
                &msg,
                self.frame_max,
            );
        }
        let c = self.open_channel(ch)?;
        let seq = if c.confirm {
            c.publish_seq += 1;
            Some(c.publish_seq)
        } else {
            None
        };
        // A persistent message to a durable queue is confirmed only once that queue has
        // stored it (fsync under the default policy); anything else once it is enqueued.
        let mut waiting = 0;
        for q in targets.iter() {
            let token = match seq {
                Some(seq) if (msg.persistent && q.is_durable()) || q.may_reject_publish() => {
                    waiting += 1;
                    Some(ConfirmToken {
                        outbound: self.outbound_tx.clone(),
                        connection: self.id,
                        channel: ch,
                        seq,
                    })
                }
                _ => None,
            };
            self.push_op(q, QueueOp::Publish(msg.clone(), token));
        }
        if let (Some(seq), true) = (seq, waiting > 0) {
            self.open_channel(ch)?
                .unconfirmed
                .insert(seq, (waiting, false));
        }
        Ok(())
    }

    /// Hands a publish with a positive `x-delay` to its delayed exchange. It is never
    /// returned (routing happens at due time); a persistent message to a durable delayed
    /// exchange is confirmed once the delay log has stored it.
    fn hold_delayed(
        &mut self,
        ch: u16,
        msg: Arc<Message>,
        handle: crate::delayed::DelayedHandle,
        due: u64,
    ) -> Result<()> {
        let outbound = self.outbound_tx.clone();
        let connection = self.id;
        let c = self.open_channel(ch)?;
        let token = if c.confirm {
            c.publish_seq += 1;
            let seq = c.publish_seq;
            (msg.persistent && handle.durable).then(|| {
                c.unconfirmed.insert(seq, (1, false));
                ConfirmToken {
                    outbound,
                    connection,
                    channel: ch,
                    seq,
                }
            })
        } else {
            None
        };
        handle.hold(msg, due, token);
        Ok(())
    }

    /// Resolves a message's destinations. Routes of messages without headers depend only on
    /// (exchange, routing key) and the topology, so the last one is cached per connection
    /// until the topology changes.
    fn route(&mut self, msg: &Message) -> Result<Arc<[QueueHandle]>> {
        let epoch = self.vh()?.epoch();
        if msg.headers.is_none() {
            if let Some(c) = &self.route_cache {
                if c.epoch == epoch
                    && c.exchange == msg.exchange
                    && c.routing_key == msg.routing_key
                {
                    return Ok(c.targets.clone());
                }
            }
        }
        let exchange = std::str::from_utf8(&msg.exchange)
            .map_err(|_| AmqpError::new(code::SYNTAX_ERROR, "exchange name is not UTF-8"))?;
        let rk = String::from_utf8_lossy(&msg.routing_key);
        let mut targets: Vec<QueueHandle> = Vec::with_capacity(1);
        self.vh()?
            .read(|t| t.route(exchange, &rk, msg.headers.as_ref(), &mut targets))?;
        let targets: Arc<[QueueHandle]> = Arc::from(targets);
        if msg.headers.is_none() {
            self.route_cache = Some(RouteCache {
                epoch,
                exchange: msg.exchange.clone(),
                routing_key: msg.routing_key.clone(),
                targets: targets.clone(),
            });
        }
        Ok(targets)
    }

    fn push_op(&mut self, q: &QueueHandle, op: QueueOp) {
        let pending = match op {
            QueueOp::Publish(..) => &mut self.pending,
            _ => &mut self.pending_settles,
        };
        match pending.iter_mut().rev().find(|(h, _)| h == q) {
            Some((_, ops)) => ops.push(op),
            None => pending.push((q.clone(), vec![op])),
        }
    }

    /// Sends the batch's queue operations and the batch's publisher confirms.
    fn flush_pending(&mut self) {
        for (q, ops) in self.pending.drain(..) {
            q.send_batch(ops);
            if self.throttle.is_none() && q.is_congested() {
                self.throttle = Some(q);
            }
        }
        for (q, ops) in self.pending_settles.drain(..) {
            q.send_settles(ops);
        }
        for (ch, c) in self.channels.iter_mut() {
            c.emit_confirms(*ch, &mut self.wbuf);
        }
    }

    // ---- deliveries from queues -------------------------------------------------------

    fn handle_outbound(&mut self, o: Outbound) {
        match o {
            Outbound::Deliveries { queue, items } => {
                let n = items.len();
                for d in items {
                    self.deliver(&queue, d);
                }
                let before = self.backlog.fetch_sub(n, Ordering::Relaxed);
                if before >= CONNECTION_BACKLOG_HIGH {
                    self.backlog_stalled = true;
                }
                if self.backlog_stalled && before - n <= CONNECTION_BACKLOG_LOW {
                    // Queues held back for us: tell them to go on.
                    self.backlog_stalled = false;
                    let mut queues: Vec<QueueHandle> = Vec::new();
                    for c in self.channels.values() {
                        for q in c.consumers.values().filter_map(|x| x.queue.as_ref()) {
                            if !queues.contains(q) {
                                queues.push(q.clone());
                            }
                        }
                    }
                    for q in queues {
                        q.send(QueueCmd::Kick);
                    }
                }
            }
            Outbound::Confirms { channel, seqs, ok } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    if c.state == ChannelState::Open {
                        c.queue_confirmed(&seqs, ok);
                        c.emit_confirms(channel, &mut self.wbuf);
                    }
                }
            }
            Outbound::Reply { consumer, msg } => {
                let frame_max = self.frame_max;
                let Some((ch, tag)) = self.consumers.get(&consumer) else {
                    return;
                };
                if let Some(c) = self.channels.get_mut(ch) {
                    if c.state == ChannelState::Open {
                        let tag_no = c.skip_tag();
                        encode::deliver(
                            &mut self.wbuf,
                            *ch,
                            tag.as_bytes(),
                            tag_no,
                            false,
                            &msg,
                            frame_max,
                        );
                    }
                }
            }
            Outbound::Cancelled { consumer } => {
                let Some((ch, tag)) = self.consumers.remove(&consumer) else {
                    return;
                };
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.consumers.remove(&tag);
                    if c.state == ChannelState::Open && self.caps.consumer_cancel_notify {
                        self.send_method(
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: sstr(&tag),
                                nowait: true,
                            })),
                        );
                    }
                }
            }
        }
    }

    fn deliver(&mut self, queue: &QueueHandle, d: Delivery) {
        let frame_max = self.frame_max;
        let target = self.consumers.get(&d.consumer).and_then(|(ch, tag)| {
            let c = self.channels.get_mut(ch)?;
            (c.state == ChannelState::Open).then_some((*ch, tag, c))
        });
        let Some((ch, tag, c)) = target else {
            // The consumer is gone (cancelled or its channel closed): give it back.
            if d.needs_ack {
                self.push_op(
                    queue,
                    QueueOp::Return(d.entry.offset, d.entry.delivery_count),
                );
            }
            return;
        };
        let delivery_tag = if d.needs_ack {
            c.push_unacked(Unacked {
                queue: queue.clone(),
                offset: d.entry.offset,
                generation: d.entry.delivery_count,
                consumed: true,
            })
        } else {
            c.skip_tag()
        };
        encode::deliver(
            &mut self.wbuf,
            ch,
            tag.as_bytes(),
            delivery_tag,
            d.entry.redelivered(),
            &d.entry.msg,
            frame_max,
        );
    }

    // ---- closing ----------------------------------------------------------------------

    fn send_method(&mut self, ch: u16, m: AMQPClass) {
        encode::method(&mut self.wbuf, ch, m);
    }

    /// Gives back a channel's deliveries and cancels its consumers.
    fn release_channel(&mut self, ch: u16) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.partial = None;
        c.tx = None;
        let consumers: Vec<ChannelConsumer> = c.consumers.drain().map(|(_, v)| v).collect();
        let unacked = c.take_all_unacked();
        for consumer in consumers {
            self.consumers.remove(&consumer.id);
            match consumer.queue {
                Some(q) => q.send(QueueCmd::Cancel {
                    consumer: consumer.id,
                    reply: None,
                }),
                None => self.stop_reply_consumer(ch),
            }
        }
        // Requeues travel on the ordered inbox, behind the cancels above, so a queue never
        // hands them back to a consumer of this channel.
        let mut by_queue: Vec<(QueueHandle, Vec<QueueOp>)> = Vec::new();
        for u in unacked {
            match by_queue.iter_mut().find(|(q, _)| *q == u.queue) {
                Some((_, ops)) => ops.push(QueueOp::Return(u.offset, u.generation)),
                None => by_queue.push((u.queue, vec![QueueOp::Return(u.offset, u.generation)])),
            }
        }
        for (q, ops) in by_queue {
            q.send_batch(ops);
        }
        self.flush_pending();
    }

    /// Closes a channel with a soft error.
    fn close_channel(&mut self, ch: u16, e: AmqpError, class_id: u16, method_id: u16) {
        tracing::debug!(peer = %self.peer, channel = ch, "channel error {}: {}", e.code, e.text);
        if !self.channels.contains_key(&ch) {
            return;
        }
        self.release_channel(ch);
        if let Some(c) = self.channels.get_mut(&ch) {
            c.state = ChannelState::Closing;
        }
        self.send_method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: sstr(&e.reply_text()),
                class_id,
                method_id,
            })),
        );
    }

    /// Closes the connection with a hard error (or 320 on shutdown).
    fn close_connection(&mut self, e: AmqpError) {
        if self.phase == Phase::Closing {
            return;
        }
        tracing::debug!(peer = %self.peer, "connection error {}: {}", e.code, e.text);
        let before_open = matches!(
            self.phase,
            Phase::Header | Phase::StartOk | Phase::TuneOk | Phase::Open
        );
        if self.phase == Phase::Header {
            self.phase = Phase::Closing;
            return;
        }
        // A refused login before tune: RabbitMQ closes with the error only if the client
        // asked for authentication_failure_close; sending it is harmless for others.
        let _ = before_open;
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: sstr(&e.reply_text()),
                class_id: e.method.map_or(0, |m| m.0),
                method_id: e.method.map_or(0, |m| m.1),
            })),
        );
        self.phase = Phase::Closing;
        self.closing_since = Some(Instant::now());
    }

    /// Runs when the task ends: requeue, cancel, delete exclusive queues.
    async fn cleanup(&mut self) {
        let chans: Vec<u16> = self.channels.keys().copied().collect();
        for ch in chans {
            self.release_channel(ch);
        }
        self.channels.clear();
        for q in std::mem::take(&mut self.exclusive_queues) {
            let _ = q
                .ask(|reply| QueueCmd::Delete {
                    if_unused: false,
                    if_empty: false,
                    reply,
                })
                .await;
        }
        // Deliveries still in flight to us go back to their queues.
        self.outbound_rx.close();
        while let Ok(o) = self.outbound_rx.try_recv() {
            if let Outbound::Deliveries { queue, items } = o {
                for d in items.into_iter().filter(|d| d.needs_ack) {
                    self.push_op(
                        &queue,
                        QueueOp::Return(d.entry.offset, d.entry.delivery_count),
                    );
                }
            }
        }
        self.flush_pending();
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
