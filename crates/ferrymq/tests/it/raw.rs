//! A deliberately small AMQP 0-9-1 frame codec of the suite's own, for what a client library
//! will not do: send malformed input and read the exact bytes a broker answers with
//! (`connection.start` properties, `connection.tune`, `connection.close` reply codes).
//!
//! It shares no code with the broker, so a codec bug on one side is not mirrored by the other.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::within;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

/// Class and method ids used by the tests.
pub mod id {
    pub const CONNECTION: u16 = 10;
    pub const CHANNEL: u16 = 20;
    pub const QUEUE: u16 = 50;
    pub const BASIC: u16 = 60;

    pub const CONNECTION_START: u16 = 10;
    pub const CONNECTION_START_OK: u16 = 11;
    pub const CONNECTION_TUNE: u16 = 30;
    pub const CONNECTION_TUNE_OK: u16 = 31;
    pub const CONNECTION_OPEN: u16 = 40;
    pub const CONNECTION_OPEN_OK: u16 = 41;
    pub const CONNECTION_CLOSE: u16 = 50;
    pub const CONNECTION_CLOSE_OK: u16 = 51;

    pub const CHANNEL_OPEN: u16 = 10;
    pub const CHANNEL_OPEN_OK: u16 = 11;
    pub const CHANNEL_CLOSE: u16 = 40;
    pub const CHANNEL_CLOSE_OK: u16 = 41;

    pub const QUEUE_DECLARE: u16 = 10;
    pub const QUEUE_DECLARE_OK: u16 = 11;

    pub const BASIC_PUBLISH: u16 = 40;
    pub const BASIC_GET: u16 = 70;
    pub const BASIC_GET_OK: u16 = 71;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Method {
        channel: u16,
        class: u16,
        method: u16,
        args: Vec<u8>,
    },
    Header {
        channel: u16,
        class: u16,
        body_size: u64,
        properties: Vec<u8>,
    },
    Body {
        channel: u16,
        data: Vec<u8>,
    },
    Heartbeat {
        channel: u16,
    },
}

/// A `connection.close` or `channel.close` as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    pub code: u16,
    pub text: String,
    pub class: u16,
    pub method: u16,
}

/// What `connection.start` and `connection.tune` told the client.
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub version: (u8, u8),
    pub properties: BTreeMap<String, Value>,
    pub mechanisms: String,
    pub locales: String,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
}

/// A field-table value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(u8, u32),
    Str(Vec<u8>),
    Timestamp(u64),
    Table(BTreeMap<String, Value>),
    Array(Vec<Value>),
    Void,
}

/// Builds method arguments.
#[derive(Default)]
pub struct Args(pub Vec<u8>);

impl Args {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn short(mut self, s: &str) -> Self {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn long(mut self, s: &[u8]) -> Self {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    /// An empty field table.
    pub fn empty_table(self) -> Self {
        self.u32(0)
    }
    /// Client properties announcing the given capabilities (all true).
    pub fn client_properties(self, capabilities: &[&str]) -> Self {
        let mut caps = Vec::new();
        for cap in capabilities {
            caps.push(cap.len() as u8);
            caps.extend_from_slice(cap.as_bytes());
            caps.extend_from_slice(b"t\x01");
        }
        let mut table = Vec::new();
        table.push(12u8);
        table.extend_from_slice(b"capabilities");
        table.push(b'F');
        table.extend_from_slice(&(caps.len() as u32).to_be_bytes());
        table.extend_from_slice(&caps);
        self.long(&table)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Encodes one frame.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

/// Encodes a method frame.
pub fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(args.len() + 4);
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &payload)
}

/// Encodes a content header frame for class basic with no properties.
pub fn header_frame(channel: u16, body_size: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&id::BASIC.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes()); // weight
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes()); // property flags
    frame(FRAME_HEADER, channel, &payload)
}

/// `basic.publish` arguments.
pub fn publish_args(exchange: &str, routing_key: &str) -> Args {
    Args::new().u16(0).short(exchange).short(routing_key).u8(0)
}

/// A raw client connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Opens a TCP connection without sending anything.
    pub async fn tcp(addr: &str) -> RawConn {
        let stream = within(TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("tcp connect {addr}: {e}"));
        stream.set_nodelay(true).ok();
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes the handshake as guest on vhost `/`, proposing the server's own
    /// tuning, and returns what the server said.
    pub async fn open(addr: &str) -> (RawConn, ServerHello) {
        Self::open_tuned(addr, None, None).await
    }

    /// Like [`RawConn::open`] but answering tune with the given frame_max / heartbeat.
    pub async fn open_tuned(
        addr: &str,
        frame_max: Option<u32>,
        heartbeat: Option<u16>,
    ) -> (RawConn, ServerHello) {
        let (mut conn, mut hello) = Self::start(addr).await;
        conn.send_start_ok("PLAIN", b"\0guest\0guest").await;
        let tune = conn
            .expect_method(0, id::CONNECTION, id::CONNECTION_TUNE)
            .await;
        let mut r = Reader::new(&tune);
        hello.channel_max = r.u16();
        hello.frame_max = r.u32();
        hello.heartbeat = r.u16();
        let tune_ok = Args::new()
            .u16(hello.channel_max)
            .u32(frame_max.unwrap_or(hello.frame_max))
            .u16(heartbeat.unwrap_or(hello.heartbeat));
        conn.send_method(0, id::CONNECTION, id::CONNECTION_TUNE_OK, tune_ok.bytes())
            .await;
        let open = Args::new().short("/").short("").u8(0);
        conn.send_method(0, id::CONNECTION, id::CONNECTION_OPEN, open.bytes())
            .await;
        conn.expect_method(0, id::CONNECTION, id::CONNECTION_OPEN_OK)
            .await;
        (conn, hello)
    }

    /// Sends the protocol header and reads `connection.start`.
    pub async fn start(addr: &str) -> (RawConn, ServerHello) {
        let mut conn = Self::tcp(addr).await;
        conn.send(PROTOCOL_HEADER).await;
        let start = conn
            .expect_method(0, id::CONNECTION, id::CONNECTION_START)
            .await;
        let mut r = Reader::new(&start);
        let version = (r.u8(), r.u8());
        let properties = r.table();
        let mechanisms = String::from_utf8_lossy(&r.long()).into_owned();
        let locales = String::from_utf8_lossy(&r.long()).into_owned();
        let hello = ServerHello {
            version,
            properties,
            mechanisms,
            locales,
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        };
        (conn, hello)
    }

    /// Sends `connection.start-ok` with the given mechanism and response.
    pub async fn send_start_ok(&mut self, mechanism: &str, response: &[u8]) {
        let args = Args::new()
            .client_properties(&["authentication_failure_close", "consumer_cancel_notify"])
            .short(mechanism)
            .long(response)
            .short("en_US");
        self.send_method(0, id::CONNECTION, id::CONNECTION_START_OK, args.bytes())
            .await;
    }

    /// Opens channel `channel` and waits for open-ok.
    pub async fn open_channel(&mut self, channel: u16) {
        self.send_method(
            channel,
            id::CHANNEL,
            id::CHANNEL_OPEN,
            Args::new().short("").bytes(),
        )
        .await;
        self.expect_method(channel, id::CHANNEL, id::CHANNEL_OPEN_OK)
            .await;
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes))
            .await
            .expect("write to broker");
    }

    /// Writes raw bytes, tolerating a broker that already closed the socket.
    pub async fn send_lenient(&mut self, bytes: &[u8]) {
        let _ = within(self.stream.write_all(bytes)).await;
    }

    /// Sends one method frame.
    pub async fn send_method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        self.send(&method_frame(channel, class, method, args)).await;
    }

    /// Half-closes the connection (no more bytes from the client).
    pub async fn shutdown_write(&mut self) {
        let _ = within(self.stream.shutdown()).await;
    }

    /// Reads raw bytes until EOF or `limit` bytes.
    pub async fn read_to_end_raw(&mut self, limit: usize) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        while out.len() < limit {
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        out
    }

    /// Reads the next frame; `Ok(None)` at EOF, `Err` on a malformed frame.
    pub async fn read_frame(&mut self) -> Result<Option<(Frame, usize)>, String> {
        read_frame_of(&mut self.stream, &mut self.buf).await
    }

    /// Reads frames until a method frame arrives, skipping heartbeats.
    pub async fn next_method(&mut self) -> Option<Frame> {
        loop {
            match self.read_frame().await.expect("well-formed frame") {
                None => return None,
                Some((Frame::Heartbeat { .. }, _)) => continue,
                Some((f, _)) => return Some(f),
            }
        }
    }

    /// Reads until the expected method arrives and returns its arguments. Panics on anything
    /// else (a `connection.close` is shown decoded).
    pub async fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Vec<u8> {
        match self.next_method().await {
            Some(Frame::Method {
                channel: c,
                class: k,
                method: m,
                args,
            }) if c == channel && k == class && m == method => args,
            Some(Frame::Method {
                class: id::CONNECTION,
                method: id::CONNECTION_CLOSE,
                args,
                ..
            }) => panic!(
                "expected {class}.{method} on channel {channel}, got connection.close {:?}",
                parse_close(&args)
            ),
            other => panic!("expected {class}.{method} on channel {channel}, got {other:?}"),
        }
    }

    /// Reads until `connection.close` arrives, answers close-ok, and checks the socket is
    /// then closed by the broker. Panics if the connection ends without a close.
    pub async fn expect_connection_close(&mut self) -> Close {
        loop {
            match self.read_frame().await {
                Ok(Some((
                    Frame::Method {
                        channel: 0,
                        class: id::CONNECTION,
                        method: id::CONNECTION_CLOSE,
                        args,
                    },
                    _,
                ))) => {
                    let close = parse_close(&args);
                    self.send_lenient(&method_frame(
                        0,
                        id::CONNECTION,
                        id::CONNECTION_CLOSE_OK,
                        &[],
                    ))
                    .await;
                    self.expect_eof().await;
                    return close;
                }
                Ok(Some(_)) => continue,
                Ok(None) => panic!("connection ended without connection.close"),
                Err(e) => panic!("while waiting for connection.close: {e}"),
            }
        }
    }

    /// Waits for the broker to close the socket, discarding whatever arrives before.
    pub async fn expect_eof(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    /// Waits up to `limit` for a heartbeat frame on channel 0 while sending our own every
    /// `every` (so the broker has no reason to drop us); any other frame fails.
    pub async fn expect_heartbeat(&mut self, limit: Duration, every: Duration) {
        let mut tick = tokio::time::interval(every);
        crate::harness::within_for(limit, async {
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        self.send(&frame(FRAME_HEARTBEAT, 0, &[])).await;
                    }
                    next = read_frame_of(&mut self.stream, &mut self.buf) => {
                        match next.expect("well-formed frame") {
                            Some((Frame::Heartbeat { channel: 0 }, _)) => return,
                            Some((other, _)) => panic!("expected heartbeat, got {other:?}"),
                            None => panic!("connection closed while waiting for a heartbeat"),
                        }
                    }
                }
            }
        })
        .await;
    }
}

/// Reads the next frame from `stream`, buffering in `buf`.
async fn read_frame_of(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(Frame, usize)>, String> {
    loop {
        if buf.len() >= 7 {
            let size = u32::from_be_bytes(buf[3..7].try_into().unwrap()) as usize;
            if buf.len() >= size + 8 {
                let raw: Vec<u8> = buf.drain(..size + 8).collect();
                return decode(&raw).map(|f| Some((f, raw.len())));
            }
        }
        let mut chunk = vec![0u8; 65536];
        match within(stream.read(&mut chunk)).await {
            Ok(0) => {
                return if buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!("EOF inside a frame: {buf:?}"))
                }
            }
            // A reset after the broker's last frame is as good as EOF.
            Err(_) if buf.is_empty() => return Ok(None),
            Err(e) => return Err(format!("read error: {e}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Decodes one complete frame.
pub fn decode(raw: &[u8]) -> Result<Frame, String> {
    if raw.len() < 8 {
        return Err(format!("short frame {raw:?}"));
    }
    let kind = raw[0];
    let channel = u16::from_be_bytes([raw[1], raw[2]]);
    let payload = &raw[7..raw.len() - 1];
    if raw[raw.len() - 1] != FRAME_END {
        return Err(format!("bad frame end {:#x}", raw[raw.len() - 1]));
    }
    match kind {
        FRAME_METHOD if payload.len() >= 4 => Ok(Frame::Method {
            channel,
            class: u16::from_be_bytes([payload[0], payload[1]]),
            method: u16::from_be_bytes([payload[2], payload[3]]),
            args: payload[4..].to_vec(),
        }),
        FRAME_HEADER if payload.len() >= 14 => Ok(Frame::Header {
            channel,
            class: u16::from_be_bytes([payload[0], payload[1]]),
            body_size: u64::from_be_bytes(payload[4..12].try_into().unwrap()),
            properties: payload[12..].to_vec(),
        }),
        FRAME_BODY => Ok(Frame::Body {
            channel,
            data: payload.to_vec(),
        }),
        FRAME_HEARTBEAT => Ok(Frame::Heartbeat { channel }),
        _ => Err(format!("undecodable frame {raw:?}")),
    }
}

/// Decodes `connection.close` / `channel.close` arguments.
pub fn parse_close(args: &[u8]) -> Close {
    let mut r = Reader::new(args);
    Close {
        code: r.u16(),
        text: String::from_utf8_lossy(&r.short()).into_owned(),
        class: r.u16(),
        method: r.u16(),
    }
}

/// A cursor over method arguments; panics on short input (a test failure).
pub struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(self.b.len() >= n, "truncated arguments");
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        head
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn short(&mut self) -> Vec<u8> {
        let n = self.u8() as usize;
        self.take(n).to_vec()
    }
    pub fn long(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.take(n).to_vec()
    }
    pub fn table(&mut self) -> BTreeMap<String, Value> {
        let n = self.u32() as usize;
        let mut inner = Reader::new(self.take(n));
        let mut out = BTreeMap::new();
        while !inner.b.is_empty() {
            let key = String::from_utf8_lossy(&inner.short()).into_owned();
            let value = inner.value();
            out.insert(key, value);
        }
        out
    }
    fn value(&mut self) -> Value {
        match self.u8() {
            b't' => Value::Bool(self.u8() != 0),
            b'b' => Value::Int(self.u8() as i8 as i64),
            b'B' => Value::Int(self.u8() as i64),
            b's' => Value::Int(self.u16() as i16 as i64),
            b'u' => Value::Int(self.u16() as i64),
            b'I' => Value::Int(self.u32() as i32 as i64),
            b'i' => Value::Int(self.u32() as i64),
            b'l' | b'L' => Value::Int(self.u64() as i64),
            b'f' => Value::Float(f32::from_bits(self.u32()) as f64),
            b'd' => Value::Float(f64::from_bits(self.u64())),
            b'D' => Value::Decimal(self.u8(), self.u32()),
            b'S' | b'x' => Value::Str(self.long()),
            b'T' => Value::Timestamp(self.u64()),
            b'F' => Value::Table(self.table()),
            b'A' => {
                let n = self.u32() as usize;
                let mut inner = Reader::new(self.take(n));
                let mut items = Vec::new();
                while !inner.b.is_empty() {
                    items.push(inner.value());
                }
                Value::Array(items)
            }
            b'V' => Value::Void,
            other => panic!("unknown field type {:?}", other as char),
        }
    }
}
