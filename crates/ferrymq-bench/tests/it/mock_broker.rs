//! A tiny in-memory AMQP 0-9-1 broker for testing the bench client without RabbitMQ:
//! handshake, channels, queue/exchange declare/bind/delete, fanout routing, consumers
//! (round-robin, no prefetch accounting), publisher confirms (multiple acks per read
//! chunk), optionally over TLS (tokio-rustls). Control methods go through the independent
//! `amq-protocol` codec; the per-message frames (publish, header, body, ack, deliver) are
//! handled by hand so the mock can also measure the client's ceiling
//! (`examples/mock_broker.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, LongString, ShortString};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the mock does besides behaving.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// Answer queue.declare with channel.close 406.
    pub refuse_declare: bool,
    /// Required password (user is ignored); `None` accepts anything.
    pub password: Option<String>,
    /// Speak AMQPS: every connection starts with a TLS handshake with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Counters the tests assert on.
#[derive(Debug, Default)]
pub struct MockStats {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    /// Sum over consumer connections of their highest acknowledged delivery tag.
    pub acked: AtomicU64,
    pub declared: AtomicU64,
    pub deleted: AtomicU64,
    pub connections: AtomicU64,
    /// Connections whose TLS handshake completed.
    pub tls_handshakes: AtomicU64,
}

/// A running mock broker.
pub struct MockBroker {
    pub port: u16,
    pub stats: Arc<MockStats>,
    tls: bool,
}

impl MockBroker {
    /// Starts the mock on a free port, on its own thread and runtime.
    pub fn start(options: MockOptions) -> MockBroker {
        Self::start_on(0, options)
    }

    /// Starts the mock on `port` (0 = any free port).
    pub fn start_on(port: u16, options: MockOptions) -> MockBroker {
        let stats = Arc::new(MockStats::default());
        let tls = options.tls.is_some();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let stats2 = stats.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let state = Arc::new(State {
                    options,
                    stats: stats2,
                    topology: Mutex::default(),
                });
                let acceptor = state
                    .options
                    .tls
                    .clone()
                    .map(tokio_rustls::TlsAcceptor::from);
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    state.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let state = state.clone();
                    match &acceptor {
                        None => {
                            let (rd, wr) = stream.into_split();
                            tokio::spawn(serve(rd, wr, state));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                // A failed handshake just ends the connection.
                                let Ok(tls) = acceptor.accept(stream).await else {
                                    return;
                                };
                                state.stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                                let (rd, wr) = tokio::io::split(tls);
                                serve(rd, wr, state).await;
                            });
                        }
                    }
                }
            });
        });
        MockBroker {
            port: port_rx.recv().unwrap(),
            stats,
            tls,
        }
    }

    /// `amqp://` URI of the mock (`amqps://` when it speaks TLS).
    pub fn uri(&self) -> String {
        self.uri_with_host("127.0.0.1")
    }

    /// The URI with another host name for the same loopback port (e.g. `localhost`).
    pub fn uri_with_host(&self, host: &str) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        format!("{scheme}://guest:guest@{host}:{}/%2f", self.port)
    }
}

/// Frames a connection's writer task sends.
enum Out {
    Raw(Vec<u8>),
    Deliver {
        consumer_tag: Arc<str>,
        bodies: Vec<Arc<[u8]>>,
    },
    CloseOk,
}

struct Consumer {
    tag: Arc<str>,
    tx: mpsc::Sender<Out>,
}

#[derive(Default)]
struct Queue {
    consumers: Vec<Consumer>,
    next: usize,
    backlog: Vec<Arc<[u8]>>,
}

#[derive(Default)]
struct Topology {
    queues: HashMap<String, Queue>,
    fanouts: HashMap<String, Vec<String>>,
    generated: u64,
}

struct State {
    options: MockOptions,
    stats: Arc<MockStats>,
    topology: Mutex<Topology>,
}

fn gen(frame: AMQPFrame) -> Vec<u8> {
    cookie_factory::gen(gen_frame(&frame), Vec::new())
        .unwrap()
        .0
}

fn method(channel: u16, m: AMQPClass) -> Out {
    Out::Raw(gen(AMQPFrame::Method(channel, m)))
}

async fn writer<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut tag = 0u64;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut close = false;
        while let Some(out) = next.take() {
            match out {
                Out::Raw(bytes) => buf.extend_from_slice(&bytes),
                Out::Deliver {
                    consumer_tag,
                    bodies,
                } => {
                    for body in bodies {
                        tag += 1;
                        put_frame(&mut buf, 1, 1, |o| {
                            o.extend_from_slice(&[0, 60, 0, 60]);
                            o.push(consumer_tag.len() as u8);
                            o.extend_from_slice(consumer_tag.as_bytes());
                            o.extend_from_slice(&tag.to_be_bytes());
                            o.extend_from_slice(&[0, 0, 0]); // redelivered, exchange "", routing key ""
                        });
                        put_frame(&mut buf, 2, 1, |o| {
                            o.extend_from_slice(&[0, 60, 0, 0]);
                            o.extend_from_slice(&(body.len() as u64).to_be_bytes());
                            o.extend_from_slice(&[0, 0]);
                        });
                        for part in body.chunks(131_072 - 8) {
                            put_frame(&mut buf, 3, 1, |o| o.extend_from_slice(part));
                        }
                    }
                }
                Out::CloseOk => {
                    buf.extend(gen(AMQPFrame::Method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    )));
                    close = true;
                }
            }
            if buf.len() < 128 * 1024 && !close {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        buf.clear();
        if close {
            return;
        }
    }
}

fn put_frame(out: &mut Vec<u8>, kind: u8, channel: u16, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let size = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    out.push(0xCE);
}

/// A message being received: routing target and body so far.
struct Incoming {
    exchange: String,
    routing_key: String,
    size: u64,
    body: Vec<u8>,
}

fn short_at(p: &[u8], at: usize) -> Option<(String, usize)> {
    let len = *p.get(at)? as usize;
    let s = p.get(at + 1..at + 1 + len)?;
    Some((String::from_utf8_lossy(s).into_owned(), at + 1 + len))
}

async fn serve<R, W>(mut rd: R, wr: W, state: Arc<State>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let writer_task = tokio::spawn(writer(wr, rx));
    let _ = connection_loop(&mut rd, &tx, &state).await;
    // Forget this connection's consumers so its writer can finish.
    if let Ok(mut topo) = state.topology.lock() {
        for q in topo.queues.values_mut() {
            q.consumers.retain(|c| !c.tx.same_channel(&tx));
        }
    }
    drop(tx);
    let _ = writer_task.await;
}

async fn connection_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    tx: &mpsc::Sender<Out>,
    state: &State,
) -> Result<(), ()> {
    let mut header = [0u8; 8];
    rd.read_exact(&mut header).await.map_err(drop)?;
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        amq_protocol::types::AMQPValue::LongString("MockBroker".into()),
    );
    props.insert(
        "version".into(),
        amq_protocol::types::AMQPValue::LongString("0.0".into()),
    );
    let start = connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongString::from("PLAIN"),
        locales: LongString::from("en_US"),
    };
    tx.send(method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Start(start)),
    ))
    .await
    .map_err(drop)?;

    let mut buf = vec![0u8; 256 * 1024];
    let (mut start_at, mut end) = (0usize, 0usize);
    let mut incoming: Option<Incoming> = None;
    let mut confirm_mode = false;
    let mut published = 0u64;
    let mut confirmed = 0u64;
    let mut acked = 0u64;
    loop {
        if buf.len() - end < 16 * 1024 {
            buf.copy_within(start_at..end, 0);
            end -= start_at;
            start_at = 0;
            if buf.len() - end < 16 * 1024 {
                buf.resize(buf.len() * 2, 0);
            }
        }
        let n = rd.read(&mut buf[end..]).await.map_err(drop)?;
        if n == 0 {
            return Err(());
        }
        end += n;
        let mut routed: Vec<(String, String, Arc<[u8]>)> = Vec::new();
        let mut closing = false;
        while end - start_at >= 7 && !closing {
            let d = &buf[start_at..end];
            let size = u32::from_be_bytes([d[3], d[4], d[5], d[6]]) as usize;
            if d.len() < size + 8 {
                break;
            }
            let (kind, payload) = (d[0], &d[7..7 + size]);
            let frame_len = size + 8;
            match kind {
                1 if payload.len() >= 4 && payload[..4] == [0, 60, 0, 40] => {
                    let (exchange, at) = short_at(payload, 6).ok_or(())?;
                    let (routing_key, _) = short_at(payload, at).ok_or(())?;
                    incoming = Some(Incoming {
                        exchange,
                        routing_key,
                        size: 0,
                        body: Vec::new(),
                    });
                }
                1 if payload.len() >= 12 && payload[..4] == [0, 60, 0, 80] => {
                    let tag = u64::from_be_bytes(payload[4..12].try_into().map_err(drop)?);
                    if tag > acked {
                        state.stats.acked.fetch_add(tag - acked, Ordering::Relaxed);
                        acked = tag;
                    }
                }
                2 => {
                    let m = incoming.as_mut().ok_or(())?;
                    m.size =
                        u64::from_be_bytes(payload.get(4..12).ok_or(())?.try_into().map_err(drop)?);
                    if m.size == 0 {
                        let m = incoming.take().ok_or(())?;
                        routed.push((m.exchange, m.routing_key, Arc::from(&[][..])));
                        published += 1;
                    }
                }
                3 => {
                    let m = incoming.as_mut().ok_or(())?;
                    m.body.extend_from_slice(payload);
                    if m.body.len() as u64 >= m.size {
                        let m = incoming.take().ok_or(())?;
                        routed.push((m.exchange, m.routing_key, Arc::from(m.body)));
                        published += 1;
                    }
                }
                1 => {
                    let (_, frame) = parse_frame(&d[..frame_len]).map_err(drop)?;
                    if let AMQPFrame::Method(ch, m) = frame {
                        // Messages before a close in the same chunk are still routed below.
                        closing = control(ch, m, tx, state, &mut confirm_mode).await?;
                    }
                }
                _ => {}
            }
            start_at += frame_len;
        }
        if !routed.is_empty() {
            state
                .stats
                .published
                .fetch_add(routed.len() as u64, Ordering::Relaxed);
            route(state, routed).await?;
        }
        if closing {
            return Ok(());
        }
        if confirm_mode && published > confirmed {
            confirmed = published;
            let ack = basic::Ack {
                delivery_tag: confirmed,
                multiple: true,
            };
            tx.send(method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(ack))))
                .await
                .map_err(drop)?;
        }
    }
}

/// Messages for one consumer: its connection, consumer tag and bodies.
type Batch = (mpsc::Sender<Out>, Arc<str>, Vec<Arc<[u8]>>);

/// Delivers a chunk's messages: grouped per consumer, sent outside the topology lock.
async fn route(state: &State, routed: Vec<(String, String, Arc<[u8]>)>) -> Result<(), ()> {
    let mut batches: Vec<Batch> = Vec::new();
    {
        let mut topo = state.topology.lock().map_err(drop)?;
        for (exchange, routing_key, body) in routed {
            let targets = if exchange.is_empty() {
                vec![routing_key]
            } else {
                topo.fanouts.get(&exchange).cloned().unwrap_or_default()
            };
            for name in targets {
                let Some(q) = topo.queues.get_mut(&name) else {
                    continue;
                };
                if q.consumers.is_empty() {
                    q.backlog.push(body.clone());
                    continue;
                }
                q.next = (q.next + 1) % q.consumers.len();
                let c = &q.consumers[q.next];
                match batches
                    .iter_mut()
                    .find(|(tx, tag, _)| tx.same_channel(&c.tx) && *tag == c.tag)
                {
                    Some((_, _, bodies)) => bodies.push(body.clone()),
                    None => batches.push((c.tx.clone(), c.tag.clone(), vec![body.clone()])),
                }
            }
        }
    }
    for (tx, consumer_tag, bodies) in batches {
        state
            .stats
            .delivered
            .fetch_add(bodies.len() as u64, Ordering::Relaxed);
        // A consumer that went away loses its messages; fine for a mock.
        let _ = tx
            .send(Out::Deliver {
                consumer_tag,
                bodies,
            })
            .await;
    }
    Ok(())
}

/// Handles a control method; returns true when the connection is to end.
async fn control(
    ch: u16,
    m: AMQPClass,
    tx: &mpsc::Sender<Out>,
    state: &State,
    confirm_mode: &mut bool,
) -> Result<bool, ()> {
    let reply = |m: AMQPClass| method(ch, m);
    let out = match m {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => {
            let ok = match &state.options.password {
                Some(pw) => s
                    .response
                    .as_bytes()
                    .ends_with(format!("\0{pw}").as_bytes()),
                None => true,
            };
            if !ok {
                let close = connection::Close {
                    reply_code: 403,
                    reply_text: ShortString::from("ACCESS_REFUSED - Login was refused"),
                    class_id: 0,
                    method_id: 0,
                };
                tx.send(reply(AMQPClass::Connection(connection::AMQPMethod::Close(
                    close,
                ))))
                .await
                .map_err(drop)?;
                return Ok(true);
            }
            let tune = connection::Tune {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat: 60,
            };
            reply(AMQPClass::Connection(connection::AMQPMethod::Tune(tune)))
        }
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(_)) => return Ok(false),
        AMQPClass::Connection(connection::AMQPMethod::Open(_)) => reply(AMQPClass::Connection(
            connection::AMQPMethod::OpenOk(connection::OpenOk {}),
        )),
        AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
            tx.send(Out::CloseOk).await.map_err(drop)?;
            return Ok(true);
        }
        AMQPClass::Channel(channel::AMQPMethod::Open(_)) => reply(AMQPClass::Channel(
            channel::AMQPMethod::OpenOk(channel::OpenOk {}),
        )),
        AMQPClass::Confirm(confirm::AMQPMethod::Select(_)) => {
            *confirm_mode = true;
            reply(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(
                confirm::SelectOk {},
            )))
        }
        AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
            if state.options.refuse_declare {
                let close = channel::Close {
                    reply_code: 406,
                    reply_text: ShortString::from("PRECONDITION_FAILED - refused by the mock"),
                    class_id: 50,
                    method_id: 10,
                };
                reply(AMQPClass::Channel(channel::AMQPMethod::Close(close)))
            } else {
                state.stats.declared.fetch_add(1, Ordering::Relaxed);
                let mut topo = state.topology.lock().map_err(drop)?;
                let name = if d.queue.as_str().is_empty() {
                    topo.generated += 1;
                    format!("amq.gen-{}", topo.generated)
                } else {
                    d.queue.as_str().to_string()
                };
                let q = topo.queues.entry(name.clone()).or_default();
                let ok = queue::DeclareOk {
                    queue: name.into(),
                    message_count: q.backlog.len() as u32,
                    consumer_count: q.consumers.len() as u32,
                };
                reply(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))
            }
        }
        AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
            state.stats.deleted.fetch_add(1, Ordering::Relaxed);
            let removed = state
                .topology
                .lock()
                .map_err(drop)?
                .queues
                .remove(d.queue.as_str());
            let message_count = removed.map_or(0, |q| q.backlog.len() as u32);
            reply(AMQPClass::Queue(queue::AMQPMethod::DeleteOk(
                queue::DeleteOk { message_count },
            )))
        }
        AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
            let mut topo = state.topology.lock().map_err(drop)?;
            topo.fanouts
                .entry(b.exchange.as_str().to_string())
                .or_default()
                .push(b.queue.as_str().to_string());
            reply(AMQPClass::Queue(queue::AMQPMethod::BindOk(
                queue::BindOk {},
            )))
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(_)) => reply(AMQPClass::Exchange(
            exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
        )),
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
            state
                .topology
                .lock()
                .map_err(drop)?
                .fanouts
                .remove(d.exchange.as_str());
            reply(AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(
                exchange::DeleteOk {},
            )))
        }
        AMQPClass::Basic(basic::AMQPMethod::Qos(_)) => {
            reply(AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
        }
        AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
            let tag: Arc<str> = Arc::from(c.consumer_tag.as_str());
            tx.send(reply(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(
                basic::ConsumeOk {
                    consumer_tag: c.consumer_tag.clone(),
                },
            ))))
            .await
            .map_err(drop)?;
            let backlog = {
                let mut topo = state.topology.lock().map_err(drop)?;
                let q = topo.queues.entry(c.queue.as_str().to_string()).or_default();
                q.consumers.push(Consumer {
                    tag: tag.clone(),
                    tx: tx.clone(),
                });
                std::mem::take(&mut q.backlog)
            };
            if !backlog.is_empty() {
                state
                    .stats
                    .delivered
                    .fetch_add(backlog.len() as u64, Ordering::Relaxed);
                tx.send(Out::Deliver {
                    consumer_tag: tag,
                    bodies: backlog,
                })
                .await
                .map_err(drop)?;
            }
            return Ok(false);
        }
        _ => return Ok(false),
    };
    tx.send(out).await.map_err(drop)?;
    Ok(false)
}
