//! The broker under test and the small vocabulary every test module speaks.
//!
//! With `FERRYMQ_TEST_AMQP_URL` set (for example
//! `amqp://guest:guest@127.0.0.1:5673/%2f`) every test talks to that external broker, which is
//! how the suite is validated against RabbitMQ. Otherwise the real `ferrymq` binary is spawned
//! with a fresh data directory and port 0, and its chosen AMQP port is read from stdout. One
//! spawned broker is shared by the tests that run at the same time (it is killed when the last
//! of them drops its handle); tests that stop or restart a broker start a private one.
//!
//! Every wait is bounded by [`within`], so a broken broker fails a test instead of hanging it.

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind, ExchangeKind,
};

/// How long any single step may take before the test is declared failed.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The environment variable naming an external broker to test instead of the binary.
pub const EXTERNAL_URL_VAR: &str = "FERRYMQ_TEST_AMQP_URL";

/// Awaits `fut`, failing the test if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    within_for(TIMEOUT, fut).await
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within_for<F: Future>(limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}"),
    }
}

/// A name no other test (or earlier run against a long-lived external broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("it-{prefix}-{}-{n}-{:x}", std::process::id(), nanos)
}

/// The external broker URL, if the suite runs against one.
pub fn external_url() -> Option<String> {
    std::env::var(EXTERNAL_URL_VAR)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// True (after printing why) when a test about FerryMQ's own binary must not run because the
/// suite targets an external broker.
pub fn skip_if_external(test: &str) -> bool {
    if external_url().is_some() {
        println!(
            "SKIPPED {test}: {EXTERNAL_URL_VAR} is set and this test needs the ferrymq binary"
        );
        true
    } else {
        false
    }
}

/// A broker the tests can reach: either external or a spawned `ferrymq` process.
pub struct Broker {
    url: String,
    host: String,
    port: u16,
    kafka_port: Option<u16>,
    process: Option<Process>,
    /// Files the broker was started with (a definitions file), removed after it stops.
    _files: Option<TempDir>,
}

struct Process {
    /// The sh wrapper (see [`WRAPPER`]).
    child: Child,
    /// The ferrymq process itself.
    pid: Option<u32>,
    data_dir: PathBuf,
    owns_data_dir: bool,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    /// The broker shared by concurrently running tests.
    pub fn shared() -> Arc<Broker> {
        static SHARED: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
        let slot = SHARED.get_or_init(|| Mutex::new(Weak::new()));
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(broker) = guard.upgrade() {
            return broker;
        }
        let broker = Arc::new(match external_url() {
            Some(url) => Broker::external(url),
            None => Broker::spawn(None, &[]),
        });
        *guard = Arc::downgrade(&broker);
        broker
    }

    /// A broker of this test's own, with extra command-line arguments. Panics when the suite
    /// targets an external broker: callers check [`skip_if_external`] first.
    pub fn private(extra_args: &[&str]) -> Broker {
        assert!(
            external_url().is_none(),
            "private brokers need the ferrymq binary"
        );
        Broker::spawn(None, extra_args)
    }

    /// A broker of this test's own on an existing data directory (for restarts). The directory
    /// is left in place when this broker is dropped.
    pub fn private_on(data_dir: &Path, extra_args: &[&str]) -> Broker {
        assert!(
            external_url().is_none(),
            "private brokers need the ferrymq binary"
        );
        Broker::spawn(Some(data_dir.to_path_buf()), extra_args)
    }

    /// A broker of this test's own that imports the RabbitMQ definitions `json` at boot
    /// (`--load-definitions`, the file written to a temp dir of its own), with extra
    /// command-line arguments. As with RabbitMQ, no guest user is created then: connect
    /// with [`url_for`](Self::url_for) as a user the definitions declare.
    pub fn with_definitions(json: &str, extra_args: &[&str]) -> Broker {
        assert!(
            external_url().is_none(),
            "private brokers need the ferrymq binary"
        );
        let files = TempDir::new();
        let path = files.write("definitions.json", json.as_bytes());
        let path = path.to_str().expect("temp paths are UTF-8");
        let mut args = vec!["--load-definitions", path];
        args.extend_from_slice(extra_args);
        let mut broker = Broker::spawn(None, &args);
        broker._files = Some(files);
        broker
    }

    fn external(url: String) -> Broker {
        let uri: lapin::uri::AMQPUri = url
            .parse()
            .unwrap_or_else(|e| panic!("{EXTERNAL_URL_VAR}={url} is not an AMQP URI: {e}"));
        Broker {
            host: uri.authority.host.clone(),
            port: uri.authority.port,
            kafka_port: None,
            url,
            process: None,
            _files: None,
        }
    }

    fn spawn(data_dir: Option<PathBuf>, extra_args: &[&str]) -> Broker {
        let owns_data_dir = data_dir.is_none();
        let data_dir = data_dir.unwrap_or_else(fresh_dir);
        // The broker runs under a small sh wrapper that kills it once our end of the
        // wrapper's stdin closes: when this Broker is dropped, and also when the test process
        // dies without running destructors, so no broker outlives its test run.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("ferrymq-it")
            .arg(env!("CARGO_BIN_EXE_ferrymq"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--amqp-port",
                "0",
                "--kafka-port",
                "0",
                "--http-port",
                "0",
                "--prometheus-port",
                "0",
            ])
            .args(extra_args)
            .env(
                "FERRYMQ_IT_OWNED_DIR",
                if owns_data_dir {
                    data_dir.as_os_str()
                } else {
                    std::ffi::OsStr::new("")
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the ferrymq binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        drain(child.stdout.take().expect("stdout"), log.clone(), Some(tx));
        drain(child.stderr.take().expect("stderr"), log.clone(), None);
        let mut process = Process {
            child,
            pid: None,
            data_dir,
            owns_data_dir,
            log,
        };
        let mut port = None;
        let mut kafka_port = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while port.is_none() || kafka_port.is_none() || process.pid.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Announce::Port(p)) => port = Some(p),
                Ok(Announce::KafkaPort(p)) => kafka_port = Some(p),
                Ok(Announce::Pid(p)) => process.pid = Some(p),
                Err(_) => {
                    drop(process.child.stdin.take());
                    let status = process.child.wait().ok();
                    panic!(
                        "ferrymq did not print `amqp listening on <host>:<port>` \
                         (exit: {status:?}); args {extra_args:?}; output:\n{}",
                        process.log.lock().map(|l| l.join("\n")).unwrap_or_default()
                    );
                }
            }
        }
        let port = port.unwrap_or_default();
        Broker {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            host: "127.0.0.1".into(),
            port,
            kafka_port,
            process: Some(process),
            _files: None,
        }
    }

    /// `127.0.0.1:port` of the Kafka listener (spawned brokers only).
    pub fn kafka_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.kafka_port.expect("a spawned broker has a Kafka port")
        )
    }

    /// `host:port` for raw TCP connections.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The URL with an extra query string (for example `heartbeat=5`).
    pub fn url_with_query(&self, query: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.url)
    }

    /// The URL with other credentials or another vhost.
    pub fn url_for(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost: String = vhost
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!(
            "amqp://{user}:{password}@{}:{}/{vhost}",
            self.host, self.port
        )
    }

    /// Opens a client connection.
    pub async fn connect(&self) -> Connection {
        connect_url(&self.url).await
    }

    /// Opens a connection and a channel on it in confirm mode, so that [`publish`] returns
    /// only once the broker has taken the message: a later `queue.declare` on any channel
    /// then counts it (RabbitMQ answers declare/stat ahead of queued deliveries otherwise).
    pub async fn channel(&self) -> (Connection, Channel) {
        let (conn, ch) = self.plain_channel().await;
        within(ch.confirm_select(ConfirmSelectOptions::default()))
            .await
            .expect("confirm.select");
        (conn, ch)
    }

    /// Opens a connection and a channel on it, without confirms.
    pub async fn plain_channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = within(conn.create_channel()).await.expect("channel.open");
        (conn, ch)
    }

    /// The spawned process id (none for an external broker).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.pid)
    }

    /// Sends SIGTERM to the spawned broker.
    pub fn sigterm(&self) {
        let pid = self.pid().expect("a spawned broker");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Sends SIGKILL to the spawned broker (a crash: nothing is flushed or synced).
    pub fn kill9(&mut self) {
        let pid = self.pid().expect("a spawned broker");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid} failed: {status}");
        self.wait_exit(Duration::from_secs(20));
    }

    /// Waits for the spawned broker to exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let process = self.process.as_mut().expect("a spawned broker");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = process.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "ferrymq did not exit within {limit:?}; output:\n{}",
                    self.output()
                );
            }
            // Polling a child's exit status has no event to await in std.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the spawned broker printed so far.
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .and_then(|p| p.log.lock().ok().map(|l| l.join("\n")))
            .unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            // Closing the wrapper's stdin makes it SIGKILL the broker and exit.
            drop(process.child.stdin.take());
            let _ = process.child.wait();
            if process.owns_data_dir {
                let _ = std::fs::remove_dir_all(&process.data_dir);
            }
        }
    }
}

/// A fresh temporary directory, removed when dropped (even when the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        TempDir(fresh_dir())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to the file `name` in this directory and returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// Runs the `ferrymq` binary on a fresh data directory and free ports with `extra_args`,
/// for a broker expected to refuse to start: waits up to `limit` for it to exit and
/// returns its exit status (`None` if it was still running, then killed) and everything it
/// printed.
pub fn run_to_exit(extra_args: &[&str], limit: Duration) -> (Option<ExitStatus>, String) {
    let dir = TempDir::new();
    let data_dir = dir.path().join("data");
    let out = std::fs::File::create(dir.path().join("output")).expect("create output file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrymq"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .args([
            "--amqp-port",
            "0",
            "--kafka-port",
            "0",
            "--http-port",
            "0",
            "--prometheus-port",
            "0",
        ])
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup output file"))
        .stderr(out)
        .spawn()
        .expect("spawn the ferrymq binary");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling a child's exit status has no event to await in std.
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(dir.path().join("output")).unwrap_or_default();
    (status, output)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new empty directory under the system temp dir.
fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("ferrymq-data"));
    std::fs::create_dir_all(&dir).expect("create temp data dir");
    dir
}

/// Runs `"$@"` (the broker) with stdin from /dev/null, prints its pid, and SIGKILLs it as
/// soon as the wrapper's own stdin reaches EOF (then removes the data dir the harness
/// created, once the killed broker has let go of it); exits with the broker's status.
const WRAPPER: &str = r#"exec 3<&0 0</dev/null
"$@" &
broker=$!
echo "ferrymq-it: broker pid $broker"
{ while read -r _ <&3; do :; done; kill -9 "$broker" 2>/dev/null
  if [ -n "$FERRYMQ_IT_OWNED_DIR" ]; then sleep 1; rm -rf "$FERRYMQ_IT_OWNED_DIR"; fi; } &
wait "$broker""#;

enum Announce {
    Port(u16),
    KafkaPort(u16),
    Pid(u32),
}

/// Reads a child's output line by line until EOF, keeping it for diagnostics; on stdout it
/// reports the broker's pid and AMQP port once announced.
fn drain(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    announce: Option<mpsc::Sender<Announce>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = announce.as_ref() {
                if let Some(port) = parse_listening_port(&line, "amqp listening on ") {
                    let _ = tx.send(Announce::Port(port));
                }
                if let Some(port) = parse_listening_port(&line, "kafka listening on ") {
                    let _ = tx.send(Announce::KafkaPort(port));
                }
                if let Some(pid) = line.strip_prefix("ferrymq-it: broker pid ") {
                    if let Ok(pid) = pid.trim().parse() {
                        let _ = tx.send(Announce::Pid(pid));
                    }
                }
            }
            if let Ok(mut log) = log.lock() {
                if log.len() < 10_000 {
                    log.push(line);
                }
            }
        }
    });
}

fn parse_listening_port(line: &str, mark: &str) -> Option<u16> {
    let rest = &line[line.find(mark)? + mark.len()..];
    let addr = rest.split_whitespace().next()?;
    let (_, port) = addr.rsplit_once(':')?;
    port.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// Opens a connection to `url` with lapin's defaults.
pub async fn connect_url(url: &str) -> Connection {
    within(Connection::connect(url, ConnectionProperties::default()))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The AMQP reply code carried by a lapin error, if any.
pub fn reply_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// Asserts that `result` failed with the AMQP reply `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: lapin::Result<T>, code: u16) {
    match result {
        Ok(v) => panic!("expected AMQP error {code}, got success: {v:?}"),
        Err(e) => assert_eq!(
            reply_code(&e),
            Some(code),
            "expected AMQP error {code}, got {e:?}"
        ),
    }
}

/// Catches the reply code that closes a channel (or its connection) because of an
/// asynchronous method (publish, ack, ...) that has no reply of its own.
///
/// lapin hands the close reason to the channel's consumers, whatever the timing, whereas a
/// method sent after the close only sees "channel closing". So the watch is a consumer on a
/// private queue, started before the offending method is sent.
pub struct ChannelWatch(Consumer);

impl ChannelWatch {
    pub async fn new(ch: &Channel) -> ChannelWatch {
        let q = within(ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ))
        .await
        .expect("declare the watch queue");
        let consumer = consume(
            ch,
            q.name().as_str(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await;
        ChannelWatch(consumer)
    }

    /// Waits for the channel (or connection) to be closed by the broker with `code`.
    pub async fn closed_with(mut self, code: u16) {
        match within(self.0.next()).await {
            Some(Err(e)) => assert_eq!(
                reply_code(&e),
                Some(code),
                "expected the channel to close with {code}, got {e:?}"
            ),
            Some(Ok(d)) => panic!("unexpected delivery on the watch queue: {d:?}"),
            None => panic!("the channel ended without an error; expected {code}"),
        }
    }
}

/// Asserts the connection survived (a channel error must not close it): a fresh channel on it
/// can do a round trip.
pub async fn assert_connection_usable(conn: &Connection) {
    assert!(conn.status().connected(), "connection should stay open");
    let ch = within(conn.create_channel())
        .await
        .expect("open a new channel on the surviving connection");
    round_trip(&ch).await;
    within(ch.close(200, "bye".into())).await.expect("close");
}

/// Declares a fresh queue, publishes to it, gets the message back and deletes the queue.
pub async fn round_trip(ch: &Channel) {
    let q = declare_queue(ch).await;
    publish(ch, "", &q, b"round-trip").await;
    let got = get(ch, &q).await.expect("round-trip message");
    assert_eq!(got.delivery.data, b"round-trip");
    within(ch.queue_delete(q.as_str().into(), Default::default()))
        .await
        .expect("queue.delete");
}

/// Declares a uniquely named, non-durable queue.
pub async fn declare_queue(ch: &Channel) -> String {
    declare_queue_with(ch, QueueDeclareOptions::default(), FieldTable::default()).await
}

/// Declares a uniquely named queue with options and arguments.
pub async fn declare_queue_with(
    ch: &Channel,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> String {
    let name = unique("q");
    within(ch.queue_declare(name.as_str().into(), options, args))
        .await
        .expect("queue.declare");
    name
}

/// Declares a uniquely named exchange of `kind`.
pub async fn declare_exchange(ch: &Channel, kind: ExchangeKind) -> String {
    let name = unique("x");
    within(ch.exchange_declare(
        name.as_str().into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.declare");
    name
}

/// Publishes `body` and, on a confirm channel, waits for the confirm.
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(ch, exchange, routing_key, body, BasicProperties::default()).await;
}

/// Publishes `body` with properties.
pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    within(async {
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("basic.publish")
        .await
        .expect("publisher confirm")
    })
    .await;
}

/// `basic.get` with manual acknowledgement.
pub async fn get(ch: &Channel, queue: &str) -> Option<BasicGetMessage> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("basic.get")
}

/// `basic.get` with automatic acknowledgement, returning just the body.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .map(|m| m.delivery.data)
}

/// The number of ready messages in `queue` (passive declare).
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    passive_declare(ch, queue)
        .await
        .expect("passive queue.declare")
        .message_count()
}

/// A passive `queue.declare`.
pub async fn passive_declare(ch: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    within(ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
}

/// Starts a consumer with a server-generated tag.
pub async fn consume(ch: &Channel, queue: &str, options: BasicConsumeOptions) -> Consumer {
    within(ch.basic_consume(queue.into(), "".into(), options, FieldTable::default()))
        .await
        .expect("basic.consume")
}

/// The next delivery of `consumer`, failing on timeout, error or cancellation.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within(consumer.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("consumer error: {e}"),
        None => panic!("consumer was cancelled while a delivery was expected"),
    }
}

/// Bodies of a consumer's next `n` deliveries.
pub async fn next_bodies(consumer: &mut Consumer, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_delivery(consumer).await.data);
    }
    out
}

/// Asserts that nothing arrives on `consumer` for a short while. There is no event to await
/// for "the broker did not send something", so this is the one bounded wait the suite uses.
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "unexpected delivery {:?} (tag {})",
                String::from_utf8_lossy(&d.data),
                d.delivery_tag
            ),
            other => panic!("unexpected consumer event: {other:?}"),
        }
    }
}

/// Checks that `queue` holds exactly `expected` as (body, redelivered), in order, by
/// consuming it (no-ack) on a fresh connection. Messages requeued by a channel or connection
/// close come back asynchronously, so this awaits deliveries rather than counting; it
/// empties the queue.
pub async fn assert_queue_holds(broker: &Broker, queue: &str, expected: &[(Vec<u8>, bool)]) {
    let (_conn, ch) = broker.channel().await;
    let mut consumer = consume(
        &ch,
        queue,
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let mut got = Vec::new();
    for _ in expected {
        let d = next_delivery(&mut consumer).await;
        got.push((d.data, d.redelivered));
    }
    assert_eq!(got, expected);
    assert_no_delivery(&mut consumer).await;
}

/// Byte strings `prefix-0`, `prefix-1`, ... for ordering checks.
pub fn numbered(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

/// A deterministic, non-repeating-looking body of `len` bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
