//! One Kafka connection over a tokio socket (plain or TLS), requests encoded and responses
//! decoded with kafka-protocol: size-prefixed frames, ApiVersions negotiation (each API at
//! the highest version both sides know, capped where newer versions need topic ids), SASL
//! authentication (SaslHandshake v1 + SaslAuthenticate up to v2: PLAIN, SCRAM-SHA-256/512),
//! and the setup calls the bench makes (Metadata, CreateTopics). The hot paths (pipelined
//! Produce, Fetch) split the socket and use `encode_request` / `read_frame` /
//! `decode_response`.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrymq_auth::scram::{generate_nonce, ScramClient};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, MetadataRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::SaslMechanism;
use crate::tls::TlsClient;

/// Largest response frame accepted (a fetch is capped well below this).
const MAX_FRAME: usize = 256 * 1024 * 1024;
const CLIENT_ID: &str = "ferrymq-bench";

/// Highest version the bench speaks per API: Produce 9 / Metadata 12 address topics by name
/// (later ones by topic id); Fetch 11 is the last one without tagged fields (tansu 0.6
/// sends a top-level tag at v12 that kafka-protocol's decoder rejects) and what librdkafka
/// 2.0 uses.
fn cap(api_key: i16) -> i16 {
    match api_key {
        0 => 9,  // Produce
        1 => 11, // Fetch
        3 => 12, // Metadata
        19 => 7, // CreateTopics
        18 => 0, // ApiVersions
        17 => 1, // SaslHandshake (v1: tokens in SaslAuthenticate requests)
        36 => 2, // SaslAuthenticate
        _ => 0,
    }
}

/// The versions negotiated with one broker.
#[derive(Debug, Clone, Default)]
pub struct Versions(HashMap<i16, i16>);

impl Versions {
    /// The version to use for `R`, or an error if the broker has no common version.
    pub fn of<R: Request>(&self) -> anyhow::Result<i16> {
        self.0
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| anyhow!("broker supports no usable version of API key {}", R::KEY))
    }
}

/// Encodes `req` as a complete size-prefixed request frame.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
    out: &mut BytesMut,
) -> anyhow::Result<()> {
    let start = out.len();
    out.put_i32(0);
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    header.encode(out, R::header_version(version))?;
    req.encode(out, version)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Decodes a response frame (without its size prefix) to `R::Response`, returning the
/// correlation id too.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> anyhow::Result<(i32, R::Response)> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))?;
    let body = R::Response::decode(&mut frame, version)
        .with_context(|| format!("decoding response to API key {} v{version}", R::KEY))?;
    Ok((header.correlation_id, body))
}

/// How connections are secured: TLS (`ssl`, `sasl_ssl`) and SASL (`sasl_*`).
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<TlsClient>,
    pub sasl: Option<Sasl>,
}

/// SASL credentials and mechanism.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The read side of a connection. Plaintext keeps tokio's owned TCP half (the stream is
/// only matched once per read call, each of which moves up to many kilobytes).
pub enum ReadSide {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The write side of a connection.
pub enum WriteSide {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadSide::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteSide::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteSide::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// The host part of `host:port` (`[v6]:port` too), for TLS server names.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Kafka's name for an error code the SASL exchange can return.
fn sasl_error_name(code: i16) -> &'static str {
    match code {
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        58 => "SASL_AUTHENTICATION_FAILED",
        35 => "UNSUPPORTED_VERSION",
        _ => "error",
    }
}

/// Reads one size-prefixed frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> anyhow::Result<Bytes> {
    loop {
        if buf.len() >= 4 {
            let n = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if n < 0 || n as usize > MAX_FRAME {
                bail!("broker sent a frame of {n} bytes");
            }
            if buf.len() >= 4 + n as usize {
                buf.advance(4);
                return Ok(buf.split_to(n as usize).freeze());
            }
            buf.reserve(4 + n as usize - buf.len());
        } else {
            buf.reserve(64 * 1024);
        }
        if r.read_buf(buf).await? == 0 {
            bail!("broker closed the connection");
        }
    }
}

/// A connection used one request at a time (setup calls), splittable for pipelining.
pub struct Conn {
    pub read: ReadSide,
    pub write: WriteSide,
    pub rbuf: BytesMut,
    pub versions: Versions,
    next_corr: i32,
}

impl Conn {
    /// Connects (TLS handshake first when configured), negotiates API versions and
    /// authenticates when SASL is configured.
    pub async fn connect(addr: &str, security: &Security) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = match &security.tls {
            None => {
                let (r, w) = stream.into_split();
                (ReadSide::Plain(r), WriteSide::Plain(w))
            }
            Some(tls) => {
                let tls = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    tls.connect(stream, host_of(addr)),
                )
                .await
                .with_context(|| format!("timed out in the TLS handshake with {addr}"))??;
                let (r, w) = tokio::io::split(tls);
                (ReadSide::Tls(r), WriteSide::Tls(w))
            }
        };
        let mut c = Conn {
            read,
            write,
            rbuf: BytesMut::with_capacity(1 << 20),
            versions: Versions::default(),
            next_corr: 1,
        };
        let resp = c.call(&ApiVersionsRequest::default(), 0).await?;
        if resp.error_code != 0 {
            bail!("ApiVersions failed with error {}", resp.error_code);
        }
        for k in resp.api_keys {
            let top = cap(k.api_key).min(k.max_version);
            if top >= k.min_version {
                c.versions.0.insert(k.api_key, top);
            }
        }
        if let Some(sasl) = &security.sasl {
            c.authenticate(sasl).await.with_context(|| {
                format!(
                    "SASL {} as {:?} at {addr}",
                    sasl.mechanism.name(),
                    sasl.username
                )
            })?;
        }
        Ok(c)
    }

    /// SaslHandshake v1 naming the mechanism, then the mechanism's tokens in
    /// SaslAuthenticate requests: one for PLAIN, two for SCRAM (whose last answer proves
    /// that the broker knows the credential).
    async fn authenticate(&mut self, sasl: &Sasl) -> anyhow::Result<()> {
        let handshake_v = self
            .versions
            .of::<SaslHandshakeRequest>()
            .ok()
            .filter(|v| *v >= 1)
            .context(
                "the broker does not offer SaslHandshake v1 (is SASL enabled on this listener?)",
            )?;
        let mut req = SaslHandshakeRequest::default();
        req.mechanism = StrBytes::from_static_str(sasl.mechanism.name());
        let resp = self.call(&req, handshake_v).await?;
        if resp.error_code != 0 {
            let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            bail!(
                "SaslHandshake: {} ({}); the broker offers {offered:?}",
                sasl_error_name(resp.error_code),
                resp.error_code
            );
        }
        let auth_v = self
            .versions
            .of::<SaslAuthenticateRequest>()
            .context("the broker offers SaslHandshake but not SaslAuthenticate")?;
        match sasl.mechanism.scram() {
            None => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password);
                self.sasl_authenticate(token.into_bytes(), auth_v).await?;
            }
            Some(mechanism) => {
                let nonce = generate_nonce();
                let (mut client, c1) =
                    ScramClient::new(mechanism, &sasl.username, &sasl.password, &nonce);
                let s1 = self.sasl_authenticate(c1, auth_v).await?;
                let c2 = client
                    .server_first(&s1)
                    .map_err(|e| anyhow!("server-first message: {e}"))?;
                let s2 = self.sasl_authenticate(c2, auth_v).await?;
                client
                    .server_final(&s2)
                    .map_err(|e| anyhow!("the broker's server-final message does not prove it knows the password: {e}"))?;
            }
        }
        Ok(())
    }

    /// One SaslAuthenticate round trip; returns the broker's token.
    async fn sasl_authenticate(&mut self, token: Vec<u8>, version: i16) -> anyhow::Result<Bytes> {
        let mut req = SaslAuthenticateRequest::default();
        req.auth_bytes = Bytes::from(token);
        let resp = self.call(&req, version).await?;
        if resp.error_code != 0 {
            bail!(
                "{} ({}){}",
                sasl_error_name(resp.error_code),
                resp.error_code,
                resp.error_message
                    .as_ref()
                    .map(|m| format!(": {}", m.as_str()))
                    .unwrap_or_default()
            );
        }
        Ok(resp.auth_bytes)
    }

    /// The next correlation id.
    pub fn corr(&mut self) -> i32 {
        let c = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1);
        c
    }

    /// Sends `req` at `version` and waits for its response.
    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> anyhow::Result<R::Response> {
        let corr = self.corr();
        let mut out = BytesMut::new();
        encode_request(req, version, corr, &mut out)?;
        self.write.write_all(&out).await?;
        self.write.flush().await?;
        let frame = read_frame(&mut self.read, &mut self.rbuf).await?;
        let (got, resp) = decode_response::<R>(frame, version)?;
        if got != corr {
            bail!("response correlation id {got}, expected {corr}");
        }
        Ok(resp)
    }

    /// Sends `req` at the negotiated version.
    pub async fn call_negotiated<R: Request>(&mut self, req: &R) -> anyhow::Result<R::Response> {
        let v = self.versions.of::<R>()?;
        self.call(req, v).await
    }
}

/// A topic's partitions and the address of each one's leader.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub partitions: Vec<(i32, String)>,
}

/// Reads `topic`'s layout; `Ok(None)` if the broker does not know it.
pub async fn describe_topic(conn: &mut Conn, topic: &str) -> anyhow::Result<Option<TopicLayout>> {
    let mut req = MetadataRequest::default();
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = false;
    let resp = conn.call_negotiated(&req).await?;
    let brokers: HashMap<i32, String> = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let Some(t) = resp.topics.into_iter().next() else {
        return Ok(None);
    };
    match t.error_code {
        0 => {}
        3 => return Ok(None), // UNKNOWN_TOPIC_OR_PARTITION
        e => bail!("metadata for {topic}: error {e}"),
    }
    let mut partitions = Vec::new();
    for p in t.partitions {
        let leader = brokers.get(&p.leader_id.0).cloned().ok_or_else(|| {
            anyhow!(
                "partition {} of {topic} has no known leader",
                p.partition_index
            )
        })?;
        partitions.push((p.partition_index, leader));
    }
    partitions.sort();
    if partitions.is_empty() {
        return Ok(None);
    }
    Ok(Some(TopicLayout { partitions }))
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists.
/// Returns whether it was created.
pub async fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) -> anyhow::Result<bool> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let resp = conn.call_negotiated(&req).await?;
    match resp.topics.first().map(|t| t.error_code) {
        Some(0) => Ok(true),
        Some(36) => Ok(false), // TOPIC_ALREADY_EXISTS
        Some(e) => bail!(
            "CreateTopics {topic}: error {e} {}",
            resp.topics[0]
                .error_message
                .as_ref()
                .map(|m| m.as_str())
                .unwrap_or("")
        ),
        None => bail!("CreateTopics {topic}: empty response"),
    }
}
