//! A tiny in-memory Kafka-protocol broker for testing `ferrymq bench kafka` without a real
//! one: ApiVersions, Metadata, CreateTopics, Produce (CRC32C checked, offsets assigned by
//! rewriting the base offset), Fetch (whole batches from the fetch offset, long poll).
//! Requests are decoded and responses encoded with kafka-protocol's broker side, an
//! implementation independent of the bench's hand-built batches. Optionally TLS
//! (tokio-rustls) and SASL (SaslHandshake + SaslAuthenticate with PLAIN and SCRAM, the
//! server side from ferrymq-auth) before anything else is served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrymq_auth::scram::{ScramCredential, ScramMechanism, ScramServer, ScramServerState};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Debug, Clone, Default)]
pub struct KafkaMockOptions {
    /// Answer every produced partition with this error code.
    pub produce_error: Option<i16>,
    /// Fully decode every produced batch with kafka-protocol (records, keys) for checks.
    pub decode_records: bool,
    /// Speak TLS (Kafka's SSL / SASL_SSL listeners).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require SASL with one of these (user, password) pairs before any request other than
    /// ApiVersions; empty = no authentication.
    pub sasl_users: Vec<(String, String)>,
    /// Mechanisms offered [default: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512].
    pub sasl_mechanisms: Option<Vec<&'static str>>,
}

#[derive(Default)]
pub struct Partition {
    /// (base offset, last offset, batch bytes)
    pub batches: Vec<(i64, i64, Bytes)>,
    pub next: i64,
    /// Keys of decoded records (with `decode_records`).
    pub keys: Vec<Option<Bytes>>,
}

#[derive(Default)]
pub struct KafkaMockState {
    pub topics: HashMap<String, Vec<Partition>>,
}

#[derive(Debug, Default)]
pub struct KafkaMockStats {
    pub produced_records: AtomicU64,
    pub produce_requests: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub crc_failures: AtomicU64,
    pub connections: AtomicU64,
    pub tls_handshakes: AtomicU64,
    /// Successful SASL authentications, per mechanism name.
    pub authenticated: Mutex<HashMap<String, u64>>,
    pub auth_failures: AtomicU64,
}

pub struct KafkaMock {
    pub port: u16,
    pub state: Arc<Mutex<KafkaMockState>>,
    pub stats: Arc<KafkaMockStats>,
}

struct Shared {
    port: u16,
    options: KafkaMockOptions,
    /// SCRAM credentials per (user, mechanism).
    scram: HashMap<(String, ScramMechanism), ScramCredential>,
    state: Arc<Mutex<KafkaMockState>>,
    stats: Arc<KafkaMockStats>,
    appended: Notify,
}

impl KafkaMock {
    pub fn start(options: KafkaMockOptions) -> KafkaMock {
        Self::start_on(0, options)
    }

    /// Starts the mock on `port` (0 = any free port), on its own thread and runtime.
    pub fn start_on(port: u16, options: KafkaMockOptions) -> KafkaMock {
        let state = Arc::new(Mutex::new(KafkaMockState::default()));
        let stats = Arc::new(KafkaMockStats::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (state2, stats2) = (state.clone(), stats.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("mock runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
                let port = listener.local_addr().expect("addr").port();
                let mut scram = HashMap::new();
                for (user, password) in &options.sasl_users {
                    for m in ScramMechanism::ALL {
                        let cred = ScramCredential::derive(m, password, 4096).expect("credential");
                        scram.insert((user.clone(), m), cred);
                    }
                }
                let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                let shared = Arc::new(Shared {
                    port,
                    options,
                    scram,
                    state: state2,
                    stats: stats2,
                    appended: Notify::new(),
                });
                tx.send(port).expect("port");
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    let shared = shared.clone();
                    let acceptor = acceptor.clone();
                    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        sock.set_nodelay(true)?;
                        match acceptor {
                            None => serve(sock, shared).await,
                            Some(acceptor) => {
                                let tls = acceptor.accept(sock).await?;
                                shared.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                                serve(tls, shared).await
                            }
                        }
                    });
                }
            });
        });
        let port = rx.recv().expect("mock started");
        KafkaMock { port, state, stats }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Successful authentications with `mechanism`.
    pub fn authenticated(&self, mechanism: &str) -> u64 {
        self.stats
            .authenticated
            .lock()
            .unwrap()
            .get(mechanism)
            .copied()
            .unwrap_or(0)
    }

    /// Records stored per partition of `topic`.
    pub fn counts(&self, topic: &str) -> Vec<i64> {
        let st = self.state.lock().unwrap();
        st.topics
            .get(topic)
            .map(|ps| ps.iter().map(|p| p.next).collect())
            .unwrap_or_default()
    }
}

/// Where a connection is in the SASL exchange.
enum Auth {
    /// No SaslHandshake yet.
    Start,
    /// SaslHandshake accepted this mechanism; its first token comes next.
    Mechanism(&'static str),
    /// SCRAM: server-first sent, client-final next.
    ScramFinal(ScramServerState),
    Done,
}

fn offered(shared: &Shared) -> Vec<&'static str> {
    shared
        .options
        .sasl_mechanisms
        .clone()
        .unwrap_or_else(|| vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
}

/// The next step of an exchange for one SaslAuthenticate token: `Ok((reply, next))` or
/// `Err(message)` for a failed authentication.
fn sasl_step(shared: &Shared, auth: Auth, token: &[u8]) -> Result<(Vec<u8>, Auth), String> {
    match auth {
        Auth::Mechanism("PLAIN") => {
            let mut parts = token.split(|b| *b == 0);
            let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
            let ok = shared
                .options
                .sasl_users
                .iter()
                .any(|(u, p)| Some(u.as_bytes()) == user && Some(p.as_bytes()) == pass);
            if ok {
                Ok((Vec::new(), Auth::Done))
            } else {
                Err("Authentication failed: Invalid username or password".into())
            }
        }
        Auth::Mechanism(name) => {
            let mech = ScramMechanism::from_name(name).ok_or("unknown mechanism")?;
            let first = ScramServer::client_first(mech, token).map_err(|e| e.to_string())?;
            let cred = shared.scram.get(&(first.username.clone(), mech));
            let (s1, state) = first.server_first(cred, "mockservernonce");
            Ok((s1, Auth::ScramFinal(state)))
        }
        Auth::ScramFinal(state) => {
            let s2 = state
                .client_final(token)
                .map_err(|_| "Authentication failed during authentication due to invalid credentials with SASL mechanism".to_string())?;
            Ok((s2, Auth::Done))
        }
        Auth::Start | Auth::Done => Err("unexpected SaslAuthenticate".into()),
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut auth = if shared.options.sasl_users.is_empty() {
        Auth::Done
    } else {
        Auth::Start
    };
    loop {
        while buf.len() < 4 || buf.len() < 4 + (&buf[..4]).get_i32() as usize {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let n = (&buf[..4]).get_i32() as usize;
        buf.advance(4);
        let mut frame = buf.split_to(n).freeze();
        let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)?;
        let v = header.request_api_version;
        let mut out = BytesMut::new();
        let key = ApiKey::try_from(header.request_api_key).map_err(|_| anyhow::anyhow!("key"))?;
        let pre_auth = matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        );
        if !matches!(auth, Auth::Done) && !pre_auth {
            // As Kafka: a request before authentication closes the connection.
            anyhow::bail!("{key:?} before SASL authentication");
        }
        match key {
            ApiKey::SaslHandshake => {
                let req = SaslHandshakeRequest::decode(&mut frame, v)?;
                let mut r = SaslHandshakeResponse::default();
                let offered = offered(&shared);
                r.mechanisms = offered
                    .iter()
                    .map(|m| StrBytes::from_static_str(m))
                    .collect();
                match offered.iter().find(|m| **m == req.mechanism.as_str()) {
                    Some(m) if matches!(auth, Auth::Start) => auth = Auth::Mechanism(m),
                    Some(_) => r.error_code = 34, // ILLEGAL_SASL_STATE
                    None => r.error_code = 33,    // UNSUPPORTED_SASL_MECHANISM
                }
                respond(&mut out, &header, &r, v)?;
            }
            ApiKey::SaslAuthenticate => {
                let req = SaslAuthenticateRequest::decode(&mut frame, v)?;
                let mut r = SaslAuthenticateResponse::default();
                let mechanism = match &auth {
                    Auth::Mechanism(m) => m.to_string(),
                    Auth::ScramFinal(s) => s.mechanism().name().to_string(),
                    _ => String::new(),
                };
                let mut failed = false;
                match sasl_step(
                    &shared,
                    std::mem::replace(&mut auth, Auth::Start),
                    &req.auth_bytes,
                ) {
                    Ok((reply, next)) => {
                        r.auth_bytes = Bytes::from(reply);
                        if matches!(next, Auth::Done) {
                            *shared
                                .stats
                                .authenticated
                                .lock()
                                .unwrap()
                                .entry(mechanism)
                                .or_default() += 1;
                        }
                        auth = next;
                    }
                    Err(message) => {
                        r.error_code = 58; // SASL_AUTHENTICATION_FAILED
                        r.error_message = Some(StrBytes::from_string(message));
                        shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                        failed = true;
                    }
                }
                respond(&mut out, &header, &r, v)?;
                if failed {
                    sock.write_all(&out).await?;
                    sock.flush().await?;
                    return Ok(());
                }
            }
            ApiKey::ApiVersions => {
                let _ = ApiVersionsRequest::decode(&mut frame, v)?;
                let mut r = ApiVersionsResponse::default();
                for (k, lo, hi) in [
                    (0, 3, 9),
                    (1, 4, 12),
                    (3, 0, 12),
                    (17, 0, 1),
                    (18, 0, 3),
                    (19, 0, 7),
                    (36, 0, 2),
                ] {
                    let mut a = ApiVersion::default();
                    a.api_key = k;
                    a.min_version = lo;
                    a.max_version = hi;
                    r.api_keys.push(a);
                }
                respond(&mut out, &header, &r, 0)?;
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut frame, v)?;
                let mut r = MetadataResponse::default();
                let mut b = MetadataResponseBroker::default();
                b.node_id = BrokerId(0);
                b.host = StrBytes::from_static_str("127.0.0.1");
                b.port = shared.port as i32;
                r.brokers.push(b);
                r.controller_id = BrokerId(0);
                let st = shared.state.lock().unwrap();
                for t in req.topics.unwrap_or_default() {
                    let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
                    let mut mt = MetadataResponseTopic::default();
                    match st.topics.get(&name) {
                        Some(ps) => {
                            for i in 0..ps.len() {
                                let mut p = MetadataResponsePartition::default();
                                p.partition_index = i as i32;
                                p.leader_id = BrokerId(0);
                                mt.partitions.push(p);
                            }
                        }
                        None => mt.error_code = 3,
                    }
                    mt.name = Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        name,
                    )));
                    r.topics.push(mt);
                }
                drop(st);
                respond(&mut out, &header, &r, v)?;
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut frame, v)?;
                let mut r = CreateTopicsResponse::default();
                let mut st = shared.state.lock().unwrap();
                for t in req.topics {
                    let mut res = CreatableTopicResult::default();
                    let name = t.name.0.to_string();
                    match st.topics.entry(name) {
                        std::collections::hash_map::Entry::Occupied(_) => res.error_code = 36,
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(
                                (0..t.num_partitions)
                                    .map(|_| Partition::default())
                                    .collect(),
                            );
                        }
                    }
                    res.name = t.name;
                    r.topics.push(res);
                }
                drop(st);
                respond(&mut out, &header, &r, v)?;
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut frame, v)?;
                shared
                    .stats
                    .produce_requests
                    .fetch_add(1, Ordering::Relaxed);
                let mut r = ProduceResponse::default();
                for td in req.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    for pd in td.partition_data {
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = pd.index;
                        pr.error_code = append(&shared, td.name.0.as_str(), pd.index, pd.records)
                            .unwrap_or_else(|e| e);
                        if let Some(e) = shared.options.produce_error {
                            pr.error_code = e;
                        }
                        tr.partition_responses.push(pr);
                    }
                    tr.name = td.name;
                    r.responses.push(tr);
                }
                shared.appended.notify_waiters();
                if req.acks != 0 {
                    respond(&mut out, &header, &r, v)?;
                }
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut frame, v)?;
                shared.stats.fetch_requests.fetch_add(1, Ordering::Relaxed);
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms as u64);
                let r = loop {
                    let notified = shared.appended.notified();
                    let (r, bytes) = fetch(&shared, &req);
                    if bytes > 0 || tokio::time::Instant::now() >= deadline {
                        break r;
                    }
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                };
                respond(&mut out, &header, &r, v)?;
            }
            other => anyhow::bail!("mock does not do {other:?}"),
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            sock.flush().await?;
        }
    }
}

fn respond<R: Encodable + HeaderVersion>(
    out: &mut BytesMut,
    req: &RequestHeader,
    body: &R,
    version: i16,
) -> anyhow::Result<()> {
    let start = out.len();
    out.put_i32(0);
    let mut h = ResponseHeader::default();
    h.correlation_id = req.correlation_id;
    h.encode(out, R::header_version(version))?;
    body.encode(out, version)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn append(
    shared: &Shared,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
) -> Result<i16, i16> {
    let records = records.ok_or(87i16)?;
    if records.len() < 61 || records[16] != 2 {
        return Err(2);
    }
    let crc = u32::from_be_bytes([records[17], records[18], records[19], records[20]]);
    if crc32c::crc32c(&records[21..]) != crc {
        shared.stats.crc_failures.fetch_add(1, Ordering::Relaxed);
        return Err(2); // CORRUPT_MESSAGE
    }
    let count = i32::from_be_bytes([records[57], records[58], records[59], records[60]]) as i64;
    let mut keys = Vec::new();
    if shared.options.decode_records {
        let set = RecordBatchDecoder::decode(&mut records.clone()).map_err(|_| 2i16)?;
        if set.records.len() as i64 != count {
            return Err(2);
        }
        keys = set.records.into_iter().map(|r| r.key).collect();
    }
    let mut st = shared.state.lock().unwrap();
    let p = st
        .topics
        .get_mut(topic)
        .and_then(|ps| ps.get_mut(partition as usize))
        .ok_or(3i16)?;
    let base = p.next;
    let mut batch = BytesMut::from(&records[..]);
    batch[..8].copy_from_slice(&base.to_be_bytes());
    p.batches.push((base, base + count - 1, batch.freeze()));
    p.next += count;
    p.keys.extend(keys);
    shared
        .stats
        .produced_records
        .fetch_add(count as u64, Ordering::Relaxed);
    Ok(0)
}

fn fetch(shared: &Shared, req: &FetchRequest) -> (FetchResponse, usize) {
    let st = shared.state.lock().unwrap();
    let mut r = FetchResponse::default();
    let mut total = 0;
    for t in &req.topics {
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        let ps = st.topics.get(t.topic.0.as_str());
        for fp in &t.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            match ps.and_then(|ps| ps.get(fp.partition as usize)) {
                None => pd.error_code = 3,
                Some(p) => {
                    pd.high_watermark = p.next;
                    pd.last_stable_offset = p.next;
                    pd.log_start_offset = 0;
                    if fp.fetch_offset > p.next {
                        pd.error_code = 1;
                    } else {
                        let mut data = BytesMut::new();
                        let first = p
                            .batches
                            .partition_point(|(_, last, _)| *last < fp.fetch_offset);
                        for (_, _, b) in &p.batches[first..] {
                            if !data.is_empty()
                                && data.len() + b.len() > fp.partition_max_bytes as usize
                            {
                                break;
                            }
                            data.extend_from_slice(b);
                        }
                        total += data.len();
                        pd.records = Some(data.freeze());
                    }
                }
            }
            tr.partitions.push(pd);
        }
        r.responses.push(tr);
    }
    (r, total)
}
