//! Access control through an unmodified client (lapin) against the real binary: users,
//! vhosts, permissions, topic permissions and limits imported at boot from a RabbitMQ
//! definitions file (`--load-definitions`), checked with the reply codes and texts
//! RabbitMQ sends (`rabbit_channel`, `rabbit_reader`, `rabbit_access_control`; see
//! SECURITY-NOTES §1–4).
//!
//! Each group of tests runs against a broker of its own, started with that group's
//! definitions and shared by the group's tests that run at the same time. As with
//! RabbitMQ, a broker that loads definitions creates no guest user, so every connection
//! names a user the definitions declare.
//!
//! The permission-table tests name resources after the rights `bob` has on them: `c-…`
//! configure only, `cw-…` configure and write, `n-…` nothing, and so on (his three
//! patterns look for `c`, `w` and `r` before the first `-`).
//!
//! Publishing has no reply of its own: a refused publish closes the channel
//! asynchronously, so those tests publish in confirm mode and read the channel.close
//! from the confirm, which lapin fails with the close reason.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};

use crate::harness::*;
use crate::raw::{id, Args, Frame, RawConn};

// ---- definitions -----------------------------------------------------------------------

/// A RabbitMQ definitions document under construction.
#[derive(Default)]
struct Defs {
    users: Vec<String>,
    vhosts: Vec<String>,
    permissions: Vec<String>,
    topic_permissions: Vec<String>,
    parameters: Vec<String>,
    exchanges: Vec<String>,
    queues: Vec<String>,
    bindings: Vec<String>,
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Defs {
    fn new() -> Defs {
        Defs::default()
    }

    /// A user with a clear-text password (hashed on import).
    fn user(self, name: &str, password: &str, tags: &[&str]) -> Defs {
        self.user_with_limits(name, password, tags, "{}")
    }

    /// A user with a clear-text password and `limits` (a JSON object).
    fn user_with_limits(mut self, name: &str, password: &str, tags: &[&str], limits: &str) -> Defs {
        let tags: Vec<String> = tags.iter().map(|t| js(t)).collect();
        self.users.push(format!(
            r#"{{"name":{},"password":{},"tags":[{}],"limits":{limits}}}"#,
            js(name),
            js(password),
            tags.join(",")
        ));
        self
    }

    /// A user as RabbitMQ exports it: a base64 salted hash and its algorithm.
    fn user_with_hash(mut self, name: &str, hash: &str, algorithm: &str) -> Defs {
        self.users.push(format!(
            r#"{{"name":{},"password_hash":{},"hashing_algorithm":{},"tags":[]}}"#,
            js(name),
            js(hash),
            js(algorithm)
        ));
        self
    }

    fn vhost(mut self, name: &str) -> Defs {
        self.vhosts.push(format!(r#"{{"name":{}}}"#, js(name)));
        self
    }

    fn permit(mut self, user: &str, vhost: &str, configure: &str, write: &str, read: &str) -> Defs {
        self.permissions.push(format!(
            r#"{{"user":{},"vhost":{},"configure":{},"write":{},"read":{}}}"#,
            js(user),
            js(vhost),
            js(configure),
            js(write),
            js(read)
        ));
        self
    }

    fn topic_permit(
        mut self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Defs {
        self.topic_permissions.push(format!(
            r#"{{"user":{},"vhost":{},"exchange":{},"write":{},"read":{}}}"#,
            js(user),
            js(vhost),
            js(exchange),
            js(write),
            js(read)
        ));
        self
    }

    /// The `vhost-limits` runtime parameter (`value` a JSON object).
    fn vhost_limits(mut self, vhost: &str, value: &str) -> Defs {
        self.parameters.push(format!(
            r#"{{"vhost":{},"component":"vhost-limits","name":"limits","value":{value}}}"#,
            js(vhost)
        ));
        self
    }

    fn exchange(mut self, vhost: &str, name: &str, kind: &str) -> Defs {
        self.exchanges.push(format!(
            r#"{{"name":{},"vhost":{},"type":{},"durable":false,"auto_delete":false,"internal":false,"arguments":{{}}}}"#,
            js(name),
            js(vhost),
            js(kind)
        ));
        self
    }

    fn queue(mut self, vhost: &str, name: &str) -> Defs {
        self.queues.push(format!(
            r#"{{"name":{},"vhost":{},"durable":false,"auto_delete":false,"arguments":{{}}}}"#,
            js(name),
            js(vhost)
        ));
        self
    }

    fn bind(mut self, vhost: &str, source: &str, dest: &str, dest_type: &str, key: &str) -> Defs {
        self.bindings.push(format!(
            r#"{{"source":{},"vhost":{},"destination":{},"destination_type":{},"routing_key":{},"arguments":{{}}}}"#,
            js(source),
            js(vhost),
            js(dest),
            js(dest_type),
            js(key)
        ));
        self
    }

    fn json(&self) -> String {
        let list = |items: &[String]| format!("[{}]", items.join(",\n  "));
        format!(
            "{{\"rabbit_version\":\"3.13.7\",\n\"users\":{},\n\"vhosts\":{},\n\"permissions\":{},\n\
             \"topic_permissions\":{},\n\"parameters\":{},\n\"policies\":[],\n\"queues\":{},\n\
             \"exchanges\":{},\n\"bindings\":{}}}\n",
            list(&self.users),
            list(&self.vhosts),
            list(&self.permissions),
            list(&self.topic_permissions),
            list(&self.parameters),
            list(&self.queues),
            list(&self.exchanges),
            list(&self.bindings),
        )
    }
}

/// The broker of one test group: started with `defs()` on first use and shared by the
/// group's tests that run at the same time (killed when the last of them finishes).
fn group_broker(slot: &'static OnceLock<Mutex<Weak<Broker>>>, defs: fn() -> Defs) -> Arc<Broker> {
    let slot = slot.get_or_init(|| Mutex::new(Weak::new()));
    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(broker) = guard.upgrade() {
        return broker;
    }
    let broker = Arc::new(Broker::with_definitions(&defs().json(), &[]));
    *guard = Arc::downgrade(&broker);
    broker
}

// ---- client helpers ----------------------------------------------------------------------

async fn try_connect(
    broker: &Broker,
    user: &str,
    password: &str,
    vhost: &str,
) -> lapin::Result<Connection> {
    within(Connection::connect(
        &broker.url_for(user, password, vhost),
        ConnectionProperties::default(),
    ))
    .await
}

async fn connect_as(broker: &Broker, user: &str, password: &str, vhost: &str) -> Connection {
    try_connect(broker, user, password, vhost)
        .await
        .unwrap_or_else(|e| panic!("connect as {user} to vhost {vhost}: {e:?}"))
}

async fn chan(conn: &Connection) -> Channel {
    within(conn.create_channel()).await.expect("channel.open")
}

async fn confirm_chan(conn: &Connection) -> Channel {
    let ch = chan(conn).await;
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .expect("confirm.select");
    ch
}

/// The (code, text) of the AMQP reply that failed `result`.
#[track_caller]
fn reply_of<T: Debug>(result: lapin::Result<T>) -> (u16, String) {
    match result {
        Ok(v) => panic!("expected an AMQP error reply, got success: {v:?}"),
        Err(e) => match e.kind() {
            ErrorKind::ProtocolError(err) => (err.get_id(), err.get_message().to_string()),
            _ => panic!("expected an AMQP error reply, got {e:?}"),
        },
    }
}

/// Asserts that `result` failed with the AMQP reply `code` and exactly `text`.
#[track_caller]
fn assert_reply<T: Debug>(result: lapin::Result<T>, code: u16, text: &str) {
    assert_eq!(reply_of(result), (code, text.to_owned()));
}

/// Asserts a 403 refusal `text` of an operation on `ch`: the channel is closed, its
/// connection is not.
#[track_caller]
fn assert_refused<T: Debug>(conn: &Connection, ch: &Channel, result: lapin::Result<T>, text: &str) {
    assert_reply(result, 403, text);
    assert!(!ch.status().connected(), "a 403 closes the channel");
    assert!(
        conn.status().connected(),
        "a 403 leaves the connection open"
    );
}

/// RabbitMQ's text for a refused queue or exchange access.
fn denied(perm: &str, kind: &str, name: &str, vhost: &str, user: &str) -> String {
    format!("ACCESS_REFUSED - {perm} access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")
}

/// RabbitMQ's text for a refused topic (routing key) access.
fn denied_topic(perm: &str, key: &str, exchange: &str, vhost: &str, user: &str) -> String {
    format!(
        "ACCESS_REFUSED - {perm} access to topic '{key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
    )
}

/// RabbitMQ's text for any refused login over PLAIN.
const LOGIN_REFUSED: &str = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.";

/// RabbitMQ's text for a vhost the user may not open.
fn vhost_refused(vhost: &str, user: &str) -> String {
    format!("NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}'")
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    t
}

fn no_args() -> FieldTable {
    FieldTable::default()
}

async fn declare_q(ch: &Channel, name: &str, args: FieldTable) -> lapin::Result<lapin::Queue> {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)).await
}

async fn declare_x(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
) -> lapin::Result<()> {
    within(ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), args)).await
}

async fn passive_x(ch: &Channel, name: &str) -> lapin::Result<()> {
    within(ch.exchange_declare(
        name.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        no_args(),
    ))
    .await
}

/// Publishes on a confirm channel and waits for the confirm (or the channel's close).
async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> lapin::Result<()> {
    within(async {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        let confirmation = confirm.await?;
        assert!(
            confirmation.is_ack(),
            "publish was nacked: {confirmation:?}"
        );
        Ok(())
    })
    .await
}

/// The bodies `queue` holds, taken with `basic.get` (auto-ack) until it is empty.
async fn drain_bodies(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

/// Completes a handshake on a raw socket as `user` on `vhost` (for a connection whose end
/// the test must observe: the broker releases a connection's limit slots before it closes
/// the socket).
async fn raw_open_as(broker: &Broker, user: &str, password: &str, vhost: &str) -> RawConn {
    let (mut conn, _) = RawConn::start(&broker.addr()).await;
    conn.send_start_ok("PLAIN", format!("\0{user}\0{password}").as_bytes())
        .await;
    let tune = conn
        .expect_method(0, id::CONNECTION, id::CONNECTION_TUNE)
        .await;
    conn.send_method(0, id::CONNECTION, id::CONNECTION_TUNE_OK, &tune)
        .await;
    let open = Args::new().short(vhost).short("").u8(0);
    conn.send_method(0, id::CONNECTION, id::CONNECTION_OPEN, open.bytes())
        .await;
    conn.expect_method(0, id::CONNECTION, id::CONNECTION_OPEN_OK)
        .await;
    conn
}

/// Closes a raw connection cleanly and waits until the broker has closed the socket.
async fn raw_close(mut conn: RawConn) {
    let close = Args::new().u16(200).short("bye").u16(0).u16(0);
    conn.send_method(0, id::CONNECTION, id::CONNECTION_CLOSE, close.bytes())
        .await;
    conn.expect_method(0, id::CONNECTION, id::CONNECTION_CLOSE_OK)
        .await;
    conn.expect_eof().await;
}

// ---- the permission table (vhost v1) -----------------------------------------------------

const V1: &str = "v1";
const BOB: &str = "bob";
const BOB_PW: &str = "bob-pw";
const ADMIN: &str = "admin";
const ADMIN_PW: &str = "admin-pw";
const GEN: &str = "gen";
const GEN_PW: &str = "gen-pw";

fn table_defs() -> Defs {
    let mut d = Defs::new()
        .user(ADMIN, ADMIN_PW, &["administrator"])
        .user(BOB, BOB_PW, &[])
        .user(GEN, GEN_PW, &[])
        .vhost(V1)
        .permit(ADMIN, V1, ".*", ".*", ".*")
        .permit(BOB, V1, "^[^-]*c[^-]*-", "^[^-]*w[^-]*-", "^[^-]*r[^-]*-")
        // Server-named queues only.
        .permit(GEN, V1, "^amq\\.gen-.*", "", "");
    for (name, kind) in [
        ("w-px", "fanout"),
        ("cr-px", "fanout"),
        ("w-dx", "fanout"),
        ("cr-dx", "fanout"),
        ("r-sx", "direct"),
        ("cw-sx", "direct"),
        ("r-bx", "direct"),
        ("cw-bx", "direct"),
        ("c-xd", "direct"),
        ("wr-xd", "direct"),
        ("c-pe", "direct"),
        ("w-pe", "direct"),
        ("r-pe", "direct"),
        ("n-pe", "direct"),
    ] {
        d = d.exchange(V1, name, kind);
    }
    for q in [
        "r-sink", "r-q", "cw-q", "w-bq", "cr-bq", "c-dq", "wr-dq", "c-pq", "w-pq", "r-pq", "n-pq",
    ] {
        d = d.queue(V1, q);
    }
    d.bind(V1, "w-px", "r-sink", "queue", "")
        .bind(V1, "r-bx", "cr-bq", "queue", "k")
        .bind(V1, "cw-bx", "w-bq", "queue", "k")
        .bind(V1, "r-sx", "cr-dx", "exchange", "k")
        .bind(V1, "cw-sx", "w-dx", "exchange", "k")
}

fn table_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, table_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_declare_needs_configure_and_dead_letter_rights() {
    if skip_if_external("queue_declare_needs_configure_and_dead_letter_rights") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    declare_q(&ch, "c-q1", no_args())
        .await
        .expect("configure on the queue suffices");
    let r = declare_q(&ch, "wr-q1", no_args()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "queue", "wr-q1", V1, BOB),
    );

    // x-dead-letter-exchange: also read on the queue and write on the DLX.
    let ch = chan(&bob).await;
    declare_q(&ch, "cr-dlq", table(&[("x-dead-letter-exchange", "w-dlx")]))
        .await
        .expect("configure+read on the queue and write on the DLX suffice");
    let r = declare_q(&ch, "c-dlq", table(&[("x-dead-letter-exchange", "w-dlx")])).await;
    assert_refused(&bob, &ch, r, &denied("read", "queue", "c-dlq", V1, BOB));
    let ch = chan(&bob).await;
    let r = declare_q(
        &ch,
        "cr-dlq2",
        table(&[("x-dead-letter-exchange", "r-dlx")]),
    )
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "r-dlx", V1, BOB));
    // The default exchange as DLX is checked under its name amq.default.
    let ch = chan(&bob).await;
    let r = declare_q(&ch, "cr-dlq3", table(&[("x-dead-letter-exchange", "")])).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("write", "exchange", "amq.default", V1, BOB),
    );
    // Configure is checked first.
    let ch = chan(&bob).await;
    let r = declare_q(&ch, "wr-dlq", table(&[("x-dead-letter-exchange", "w-dlx")])).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "queue", "wr-dlq", V1, BOB),
    );

    // The refused declarations created nothing.
    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    for q in ["wr-q1", "c-dlq", "cr-dlq2", "cr-dlq3", "wr-dlq"] {
        let ch = chan(&admin).await;
        assert_reply(
            passive_declare(&ch, q).await,
            404,
            &format!("NOT_FOUND - no queue '{q}' in vhost 'v1'"),
        );
    }
    let ch = chan(&admin).await;
    passive_declare(&ch, "cr-dlq").await.expect("cr-dlq exists");
}

/// A reply text over 255 bytes is cut to 252 and marked with `...`, as RabbitMQ's
/// `rabbit_binary_generator:amqp_exception_explanation` does (a queue name may take 255
/// bytes itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_refusal_texts_are_cut_as_rabbitmq_cuts_them() {
    if skip_if_external("long_refusal_texts_are_cut_as_rabbitmq_cuts_them") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    let name = format!("wr-{}", "q".repeat(240));
    let full = denied("configure", "queue", &name, V1, BOB);
    assert!(full.len() > 255);
    let r = declare_q(&ch, &name, no_args()).await;
    assert_refused(&bob, &ch, r, &format!("{}...", &full[..252]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_need_configure_on_amq_gen() {
    if skip_if_external("server_named_queues_need_configure_on_amq_gen") {
        return;
    }
    let broker = table_broker();
    // bob's configure pattern does not match amq.gen-…
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    let (code, text) = reply_of(declare_q(&ch, "", no_args()).await);
    assert_eq!(code, 403, "{text}");
    let name = text
        .strip_prefix("ACCESS_REFUSED - configure access to queue '")
        .and_then(|t| t.strip_suffix("' in vhost 'v1' refused for user 'bob'"))
        .unwrap_or_else(|| panic!("unexpected refusal text {text:?}"));
    assert!(
        name.starts_with("amq.gen-") && name.len() > "amq.gen-".len(),
        "the refusal names the generated queue: {text:?}"
    );
    assert!(bob.status().connected());

    // gen may configure amq.gen-.* and nothing else.
    let gen = connect_as(&broker, GEN, GEN_PW, V1).await;
    let ch = chan(&gen).await;
    let q = within(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        no_args(),
    ))
    .await
    .expect("server-named queue with configure on amq.gen-.*");
    assert!(q.name().as_str().starts_with("amq.gen-"), "{:?}", q.name());
    passive_declare(&ch, q.name().as_str())
        .await
        .expect("passive declare of its own server-named queue");
    let r = declare_q(&ch, "c-gen", no_args()).await;
    assert_refused(
        &gen,
        &ch,
        r,
        &denied("configure", "queue", "c-gen", V1, GEN),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_declare_needs_configure_and_alternate_exchange_rights() {
    if skip_if_external("exchange_declare_needs_configure_and_alternate_exchange_rights") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    declare_x(&ch, "c-x1", ExchangeKind::Direct, no_args())
        .await
        .expect("configure on the exchange suffices");
    let r = declare_x(&ch, "wr-x1", ExchangeKind::Direct, no_args()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "wr-x1", V1, BOB),
    );

    // alternate-exchange: also read on the exchange and write on the AE.
    let ch = chan(&bob).await;
    declare_x(
        &ch,
        "cr-xae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "w-ae")]),
    )
    .await
    .expect("configure+read on the exchange and write on the AE suffice");
    let r = declare_x(
        &ch,
        "c-xae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "w-ae")]),
    )
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "c-xae", V1, BOB));
    let ch = chan(&bob).await;
    let r = declare_x(
        &ch,
        "cr-xae2",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "r-ae")]),
    )
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "r-ae", V1, BOB));
    let ch = chan(&bob).await;
    let r = declare_x(
        &ch,
        "w-xae",
        ExchangeKind::Direct,
        table(&[("alternate-exchange", "w-ae")]),
    )
    .await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "w-xae", V1, BOB),
    );

    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    for x in ["wr-x1", "c-xae", "cr-xae2", "w-xae"] {
        let ch = chan(&admin).await;
        assert_reply(
            passive_x(&ch, x).await,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost 'v1'"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declares_need_any_one_permission() {
    if skip_if_external("passive_declares_need_any_one_permission") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    for q in ["c-pq", "w-pq", "r-pq"] {
        let ok = passive_declare(&ch, q)
            .await
            .unwrap_or_else(|e| panic!("passive declare of {q}: {e:?}"));
        assert_eq!(ok.message_count(), 0);
    }
    for x in ["c-pe", "w-pe", "r-pe"] {
        passive_x(&ch, x)
            .await
            .unwrap_or_else(|e| panic!("passive declare of {x}: {e:?}"));
    }
    let r = passive_declare(&ch, "n-pq").await;
    assert_refused(&bob, &ch, r, &denied("configure", "queue", "n-pq", V1, BOB));
    let ch = chan(&bob).await;
    let r = passive_x(&ch, "n-pe").await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "n-pe", V1, BOB),
    );

    // With a permission, a missing resource is 404 naming the vhost.
    let ch = chan(&bob).await;
    assert_reply(
        passive_declare(&ch, "c-missing").await,
        404,
        "NOT_FOUND - no queue 'c-missing' in vhost 'v1'",
    );
    let ch = chan(&bob).await;
    assert_reply(
        passive_x(&ch, "w-missing").await,
        404,
        "NOT_FOUND - no exchange 'w-missing' in vhost 'v1'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_need_configure() {
    if skip_if_external("deletes_need_configure") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    within(ch.queue_delete("c-dq".into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete with configure");
    within(ch.exchange_delete("c-xd".into(), ExchangeDeleteOptions::default()))
        .await
        .expect("exchange.delete with configure");
    let r = within(ch.queue_delete("wr-dq".into(), QueueDeleteOptions::default())).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "queue", "wr-dq", V1, BOB),
    );
    let ch = chan(&bob).await;
    let r = within(ch.exchange_delete("wr-xd".into(), ExchangeDeleteOptions::default())).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("configure", "exchange", "wr-xd", V1, BOB),
    );

    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ch = chan(&admin).await;
    passive_declare(&ch, "wr-dq")
        .await
        .expect("the refused queue.delete left wr-dq");
    passive_x(&ch, "wr-xd")
        .await
        .expect("the refused exchange.delete left wr-xd");
    assert_reply(
        passive_declare(&ch, "c-dq").await,
        404,
        "NOT_FOUND - no queue 'c-dq' in vhost 'v1'",
    );
    let ch = chan(&admin).await;
    assert_reply(
        passive_x(&ch, "c-xd").await,
        404,
        "NOT_FOUND - no exchange 'c-xd' in vhost 'v1'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_get_and_consume_need_read() {
    if skip_if_external("purge_get_and_consume_need_read") {
        return;
    }
    let broker = table_broker();
    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ach = confirm_chan(&admin).await;
    for q in ["r-q", "cw-q"] {
        publish_confirmed(&ach, "", q, b"m", BasicProperties::default())
            .await
            .expect("admin publishes through the default exchange");
    }

    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    let got = within(ch.basic_get("r-q".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get with read")
        .expect("the message");
    assert_eq!(got.delivery.data, b"m");
    within(ch.queue_purge("r-q".into(), QueuePurgeOptions::default()))
        .await
        .expect("queue.purge with read");
    within(ch.basic_consume(
        "r-q".into(),
        "".into(),
        BasicConsumeOptions::default(),
        no_args(),
    ))
    .await
    .expect("basic.consume with read");

    let text = denied("read", "queue", "cw-q", V1, BOB);
    let ch = chan(&bob).await;
    let r = within(ch.basic_get("cw-q".into(), BasicGetOptions { no_ack: true })).await;
    assert_refused(&bob, &ch, r, &text);
    let ch = chan(&bob).await;
    let r = within(ch.queue_purge("cw-q".into(), QueuePurgeOptions::default())).await;
    assert_refused(&bob, &ch, r, &text);
    let ch = chan(&bob).await;
    let r = within(ch.basic_consume(
        "cw-q".into(),
        "".into(),
        BasicConsumeOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &text);

    assert_eq!(
        passive_declare(&ach, "cw-q")
            .await
            .expect("cw-q")
            .message_count(),
        1,
        "the refused get and purge took nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bind_and_unbind_need_write_on_queue_and_read_on_exchange() {
    if skip_if_external("queue_bind_and_unbind_need_write_on_queue_and_read_on_exchange") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    within(ch.queue_bind(
        "w-bq".into(),
        "r-bx".into(),
        "k2".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("queue.bind with write on the queue and read on the exchange");
    within(ch.queue_unbind("w-bq".into(), "r-bx".into(), "k2".into(), no_args()))
        .await
        .expect("queue.unbind with write on the queue and read on the exchange");

    let ch = chan(&bob).await;
    let r = within(ch.queue_bind(
        "cr-bq".into(),
        "r-bx".into(),
        "k9".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "queue", "cr-bq", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.queue_bind(
        "w-bq".into(),
        "cw-bx".into(),
        "k9".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-bx", V1, BOB));
    // Unbinding existing bindings is refused the same way.
    let ch = chan(&bob).await;
    let r = within(ch.queue_unbind("cr-bq".into(), "r-bx".into(), "k".into(), no_args())).await;
    assert_refused(&bob, &ch, r, &denied("write", "queue", "cr-bq", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.queue_unbind("w-bq".into(), "cw-bx".into(), "k".into(), no_args())).await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-bx", V1, BOB));

    // The imported bindings are still in place.
    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ach = confirm_chan(&admin).await;
    publish_confirmed(&ach, "r-bx", "k", b"via-r-bx", BasicProperties::default())
        .await
        .expect("publish");
    publish_confirmed(&ach, "cw-bx", "k", b"via-cw-bx", BasicProperties::default())
        .await
        .expect("publish");
    assert_eq!(drain_bodies(&ach, "cr-bq").await, ["via-r-bx"]);
    assert_eq!(drain_bodies(&ach, "w-bq").await, ["via-cw-bx"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_and_unbind_need_write_on_destination_and_read_on_source() {
    if skip_if_external("exchange_bind_and_unbind_need_write_on_destination_and_read_on_source") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = chan(&bob).await;
    within(ch.exchange_bind(
        "w-dx".into(),
        "r-sx".into(),
        "k2".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("exchange.bind with write on the destination and read on the source");
    within(ch.exchange_unbind(
        "w-dx".into(),
        "r-sx".into(),
        "k2".into(),
        ExchangeUnbindOptions::default(),
        no_args(),
    ))
    .await
    .expect("exchange.unbind with write on the destination and read on the source");

    let ch = chan(&bob).await;
    let r = within(ch.exchange_bind(
        "cr-dx".into(),
        "r-sx".into(),
        "k9".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "cr-dx", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.exchange_bind(
        "w-dx".into(),
        "cw-sx".into(),
        "k9".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-sx", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.exchange_unbind(
        "cr-dx".into(),
        "r-sx".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "cr-dx", V1, BOB));
    let ch = chan(&bob).await;
    let r = within(ch.exchange_unbind(
        "w-dx".into(),
        "cw-sx".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&bob, &ch, r, &denied("read", "exchange", "cw-sx", V1, BOB));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_needs_write_on_the_exchange() {
    if skip_if_external("publish_needs_write_on_the_exchange") {
        return;
    }
    let broker = table_broker();
    let bob = connect_as(&broker, BOB, BOB_PW, V1).await;
    let ch = confirm_chan(&bob).await;
    publish_confirmed(&ch, "w-px", "", b"allowed", BasicProperties::default())
        .await
        .expect("publish with write on the exchange");
    assert_eq!(drain_bodies(&ch, "r-sink").await, ["allowed"]);

    let r = publish_confirmed(&ch, "cr-px", "", b"refused", BasicProperties::default()).await;
    assert_refused(&bob, &ch, r, &denied("write", "exchange", "cr-px", V1, BOB));
    // The default exchange is named amq.default in the refusal.
    let ch = confirm_chan(&bob).await;
    let r = publish_confirmed(&ch, "", "r-q", b"refused", BasicProperties::default()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("write", "exchange", "amq.default", V1, BOB),
    );

    // Permission comes before existence: a missing exchange is 403 without write, 404
    // with it.
    let ch = confirm_chan(&bob).await;
    let r = publish_confirmed(&ch, "cr-missing", "", b"x", BasicProperties::default()).await;
    assert_refused(
        &bob,
        &ch,
        r,
        &denied("write", "exchange", "cr-missing", V1, BOB),
    );
    let ch = confirm_chan(&bob).await;
    assert_reply(
        publish_confirmed(&ch, "w-missing", "", b"x", BasicProperties::default()).await,
        404,
        "NOT_FOUND - no exchange 'w-missing' in vhost 'v1'",
    );

    let admin = connect_as(&broker, ADMIN, ADMIN_PW, V1).await;
    let ach = chan(&admin).await;
    assert!(
        drain_bodies(&ach, "r-sink").await.is_empty(),
        "the refused publish to cr-px (bound nowhere else) routed nothing"
    );
}

// ---- topic permissions and user-id (vhost t) ---------------------------------------------

const T: &str = "t";
const TOM: &str = "tom";
const TINA: &str = "tina";
const TESS: &str = "tess";
const IMP: &str = "imp";
const PW: &str = "pw";
const VIC: &str = "vic";

fn topic_defs() -> Defs {
    Defs::new()
        .user(TOM, PW, &[])
        .user(TINA, PW, &[])
        .user(TESS, PW, &[])
        .user(IMP, PW, &["impersonator"])
        .user(VIC, PW, &[])
        .vhost(T)
        .permit(TOM, T, ".*", ".*", ".*")
        .permit(TINA, T, ".*", ".*", ".*")
        .permit(TESS, T, ".*", ".*", ".*")
        .permit(IMP, T, ".*", ".*", ".*")
        .permit(VIC, T, ".*", ".*", ".*")
        .topic_permit(VIC, T, "tx", "^{vhost}\\.", "^{vhost}\\.")
        .topic_permit(TOM, T, "tx", "^{username}\\.", "^public\\.|^{username}\\.")
        .topic_permit(TINA, T, "tx", "^{username}\\.", "^public\\.|^{username}\\.")
        // Topic permissions apply to topic exchanges only.
        .topic_permit(TOM, T, "dx", "^nothing$", "^nothing$")
        .exchange(T, "tx", "topic")
        .exchange(T, "tx2", "topic")
        .exchange(T, "dx", "direct")
        .queue(T, "tq")
        .queue(T, "tq2")
        .queue(T, "dq")
        .queue(T, "uq")
        .bind(T, "tx", "tq", "queue", "#")
        .bind(T, "tx2", "tq2", "queue", "#")
        .bind(T, "dx", "dq", "queue", "rk")
}

fn topic_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, topic_defs)
}

fn with_header_list(name: &str, keys: &[&str]) -> BasicProperties {
    let list: Vec<AMQPValue> = keys
        .iter()
        .map(|k| AMQPValue::LongString(LongString::from(*k)))
        .collect();
    let mut headers = FieldTable::default();
    headers.insert(name.into(), AMQPValue::FieldArray(FieldArray::from(list)));
    BasicProperties::default().with_headers(headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_write_permissions_on_publish() {
    if skip_if_external("topic_write_permissions_on_publish") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = confirm_chan(&tom).await;
    publish_confirmed(&ch, "tx", "tom.a", b"tom.a", BasicProperties::default())
        .await
        .expect("{username} expands to tom");
    let r = publish_confirmed(&ch, "tx", "rk", b"rk", BasicProperties::default()).await;
    assert_refused(&tom, &ch, r, &denied_topic("write", "rk", "tx", T, TOM));

    // CC and BCC routing keys are checked too.
    let ch = confirm_chan(&tom).await;
    let r = publish_confirmed(
        &ch,
        "tx",
        "tom.b",
        b"cc",
        with_header_list("CC", &["tom.c", "other.d"]),
    )
    .await;
    assert_refused(
        &tom,
        &ch,
        r,
        &denied_topic("write", "other.d", "tx", T, TOM),
    );
    let ch = confirm_chan(&tom).await;
    let r = publish_confirmed(
        &ch,
        "tx",
        "tom.b",
        b"bcc",
        with_header_list("BCC", &["other.e"]),
    )
    .await;
    assert_refused(
        &tom,
        &ch,
        r,
        &denied_topic("write", "other.e", "tx", T, TOM),
    );
    let ch = confirm_chan(&tom).await;
    publish_confirmed(
        &ch,
        "tx",
        "tom.f",
        b"tom.f",
        with_header_list("CC", &["tom.g"]),
    )
    .await
    .expect("CC keys within the pattern");
    // No topic-permission row for the exchange (or a non-topic exchange): allowed.
    publish_confirmed(&ch, "tx2", "other.x", b"tx2", BasicProperties::default())
        .await
        .expect("no row for tx2");
    publish_confirmed(
        &ch,
        "amq.topic",
        "other.x",
        b"amq.topic",
        BasicProperties::default(),
    )
    .await
    .expect("no row for amq.topic");
    publish_confirmed(&ch, "dx", "rk", b"dx", BasicProperties::default())
        .await
        .expect("topic rows do not apply to a direct exchange");

    // {username} is per user.
    let tina = connect_as(&broker, TINA, PW, T).await;
    let ch = confirm_chan(&tina).await;
    publish_confirmed(&ch, "tx", "tina.a", b"tina.a", BasicProperties::default())
        .await
        .expect("tina.a for tina");
    let r = publish_confirmed(
        &ch,
        "tx",
        "tom.a",
        b"tina-as-tom",
        BasicProperties::default(),
    )
    .await;
    assert_refused(
        &tina,
        &ch,
        r,
        &denied_topic("write", "tom.a", "tx", T, TINA),
    );

    // {vhost} expands to the connection's vhost.
    let vic = connect_as(&broker, VIC, PW, T).await;
    let ch = confirm_chan(&vic).await;
    publish_confirmed(&ch, "tx", "t.vic", b"t.vic", BasicProperties::default())
        .await
        .expect("{vhost} expands to t");
    let r = publish_confirmed(&ch, "tx", "vic.t", b"vic.t", BasicProperties::default()).await;
    assert_refused(&vic, &ch, r, &denied_topic("write", "vic.t", "tx", T, VIC));

    // A user without topic-permission rows publishes any key.
    let tess = connect_as(&broker, TESS, PW, T).await;
    let ch = confirm_chan(&tess).await;
    publish_confirmed(&ch, "tx", "other.z", b"tess", BasicProperties::default())
        .await
        .expect("no topic permissions at all");

    assert_eq!(
        drain_bodies(&ch, "tq").await,
        ["tom.a", "tom.f", "tina.a", "t.vic", "tess"],
        "exactly the allowed publishes were routed"
    );
    assert_eq!(drain_bodies(&ch, "tq2").await, ["tx2"]);
    assert_eq!(drain_bodies(&ch, "dq").await, ["dx"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_read_permissions_on_queue_bind() {
    if skip_if_external("topic_read_permissions_on_queue_bind") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = chan(&tom).await;
    declare_q(&ch, "tom-bq", no_args()).await.expect("declare");
    for key in ["public.#", "tom.#"] {
        within(ch.queue_bind(
            "tom-bq".into(),
            "tx".into(),
            key.into(),
            QueueBindOptions::default(),
            no_args(),
        ))
        .await
        .unwrap_or_else(|e| panic!("bind with {key}: {e:?}"));
    }
    within(ch.queue_bind(
        "tom-bq".into(),
        "tx2".into(),
        "other.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("no row for tx2");
    within(ch.queue_bind(
        "tom-bq".into(),
        "dx".into(),
        "other".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("topic rows do not apply to a direct exchange");
    let r = within(ch.queue_bind(
        "tom-bq".into(),
        "tx".into(),
        "other.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&tom, &ch, r, &denied_topic("read", "other.#", "tx", T, TOM));
    let ch = chan(&tom).await;
    let r =
        within(ch.queue_unbind("tom-bq".into(), "tx".into(), "other.#".into(), no_args())).await;
    assert_refused(&tom, &ch, r, &denied_topic("read", "other.#", "tx", T, TOM));

    let tina = connect_as(&broker, TINA, PW, T).await;
    let ch = chan(&tina).await;
    declare_q(&ch, "tina-bq", no_args()).await.expect("declare");
    within(ch.queue_bind(
        "tina-bq".into(),
        "tx".into(),
        "tina.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("tina.# for tina");
    let r = within(ch.queue_bind(
        "tina-bq".into(),
        "tx".into(),
        "tom.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&tina, &ch, r, &denied_topic("read", "tom.#", "tx", T, TINA));

    let tess = connect_as(&broker, TESS, PW, T).await;
    let ch = chan(&tess).await;
    declare_q(&ch, "tess-bq", no_args()).await.expect("declare");
    within(ch.queue_bind(
        "tess-bq".into(),
        "tx".into(),
        "other.#".into(),
        QueueBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("no topic permissions at all");
}

/// RabbitMQ's `binding_action` checks topic read on the binding key whatever the
/// destination, so an exchange-to-exchange binding from a topic exchange is checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_read_permissions_on_exchange_bind() {
    if skip_if_external("topic_read_permissions_on_exchange_bind") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = chan(&tom).await;
    declare_x(&ch, "tom-dest", ExchangeKind::Fanout, no_args())
        .await
        .expect("declare");
    within(ch.exchange_bind(
        "tom-dest".into(),
        "tx".into(),
        "public.#".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await
    .expect("public.# for tom");
    let r = within(ch.exchange_bind(
        "tom-dest".into(),
        "tx".into(),
        "other.#".into(),
        ExchangeBindOptions::default(),
        no_args(),
    ))
    .await;
    assert_refused(&tom, &ch, r, &denied_topic("read", "other.#", "tx", T, TOM));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_match_unless_impersonator() {
    if skip_if_external("user_id_must_match_unless_impersonator") {
        return;
    }
    let broker = topic_broker();
    let tom = connect_as(&broker, TOM, PW, T).await;
    let ch = confirm_chan(&tom).await;
    publish_confirmed(
        &ch,
        "",
        "uq",
        b"own",
        BasicProperties::default().with_user_id(TOM.into()),
    )
    .await
    .expect("user-id equal to the user");
    let r = publish_confirmed(
        &ch,
        "",
        "uq",
        b"foreign",
        BasicProperties::default().with_user_id("someone".into()),
    )
    .await;
    assert_reply(
        r,
        406,
        "PRECONDITION_FAILED - user_id property set to 'someone' but authenticated user was 'tom'",
    );
    assert!(!ch.status().connected(), "406 closes the channel");
    assert!(tom.status().connected(), "406 leaves the connection open");

    let imp = connect_as(&broker, IMP, PW, T).await;
    let ch = confirm_chan(&imp).await;
    publish_confirmed(
        &ch,
        "",
        "uq",
        b"impersonated",
        BasicProperties::default().with_user_id("someone".into()),
    )
    .await
    .expect("an impersonator may set any user-id");

    let mut got = Vec::new();
    while let Some(m) = within(ch.basic_get("uq".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        got.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery
                .properties
                .user_id()
                .as_ref()
                .map(|u| u.to_string()),
        ));
    }
    assert_eq!(
        got,
        [
            ("own".to_owned(), Some("tom".to_owned())),
            ("impersonated".to_owned(), Some("someone".to_owned())),
        ]
    );
}

// ---- vhost isolation ---------------------------------------------------------------------

const V2: &str = "v2";
const ALICE: &str = "alice";

fn isolation_defs() -> Defs {
    let mut d = Defs::new().user(ALICE, PW, &[]);
    for v in [V1, V2] {
        d = d
            .vhost(v)
            .permit(ALICE, v, ".*", ".*", ".*")
            .exchange(v, "same-x", "fanout")
            .queue(v, "same")
            .bind(v, "same-x", "same", "queue", "");
    }
    d.queue(V1, "only1")
}

fn isolation_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, isolation_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_isolated() {
    if skip_if_external("vhosts_are_isolated") {
        return;
    }
    let broker = isolation_broker();
    let c1 = connect_as(&broker, ALICE, PW, V1).await;
    let c2 = connect_as(&broker, ALICE, PW, V2).await;
    let ch1 = confirm_chan(&c1).await;
    let ch2 = confirm_chan(&c2).await;

    // The predeclared exchanges exist in each vhost.
    for x in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        passive_x(&ch1, x)
            .await
            .unwrap_or_else(|e| panic!("{x} in v1: {e:?}"));
        passive_x(&ch2, x)
            .await
            .unwrap_or_else(|e| panic!("{x} in v2: {e:?}"));
    }

    // Same names, imported and declared, in both vhosts: messages never cross.
    for ch in [&ch1, &ch2] {
        declare_q(ch, "dyn", no_args()).await.expect("declare dyn");
    }
    let none = BasicProperties::default;
    publish_confirmed(&ch1, "", "same", b"v1-direct", none())
        .await
        .expect("publish");
    publish_confirmed(&ch1, "same-x", "", b"v1-fanout", none())
        .await
        .expect("publish");
    publish_confirmed(&ch2, "same-x", "", b"v2-fanout", none())
        .await
        .expect("publish");
    publish_confirmed(&ch2, "", "dyn", b"v2-dyn", none())
        .await
        .expect("publish");
    // only1 exists in v1 only: unroutable in v2.
    publish_confirmed(&ch2, "", "only1", b"v2-only1", none())
        .await
        .expect("publish");
    assert_eq!(drain_bodies(&ch1, "same").await, ["v1-direct", "v1-fanout"]);
    assert_eq!(drain_bodies(&ch2, "same").await, ["v2-fanout"]);
    assert!(drain_bodies(&ch1, "dyn").await.is_empty());
    assert_eq!(drain_bodies(&ch2, "dyn").await, ["v2-dyn"]);
    assert!(drain_bodies(&ch1, "only1").await.is_empty());

    // NOT_FOUND names the connection's vhost.
    assert_reply(
        passive_declare(&ch2, "only1").await,
        404,
        "NOT_FOUND - no queue 'only1' in vhost 'v2'",
    );
    let ch = chan(&c1).await;
    assert_reply(
        within(ch.basic_get("nope".into(), BasicGetOptions { no_ack: true })).await,
        404,
        "NOT_FOUND - no queue 'nope' in vhost 'v1'",
    );
    let ch = chan(&c2).await;
    assert_reply(
        passive_x(&ch, "nope-x").await,
        404,
        "NOT_FOUND - no exchange 'nope-x' in vhost 'v2'",
    );
    let ch = chan(&c1).await;
    assert_reply(
        within(ch.queue_bind(
            "same".into(),
            "nope-x".into(),
            "".into(),
            QueueBindOptions::default(),
            no_args(),
        ))
        .await,
        404,
        "NOT_FOUND - no exchange 'nope-x' in vhost 'v1'",
    );
    let ch = confirm_chan(&c2).await;
    assert_reply(
        publish_confirmed(&ch, "nope-x", "", b"lost", none()).await,
        404,
        "NOT_FOUND - no exchange 'nope-x' in vhost 'v2'",
    );
    assert!(c1.status().connected() && c2.status().connected());
}

/// Names are echoed as they are, whatever they contain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_texts_echo_names_verbatim() {
    if skip_if_external("not_found_texts_echo_names_verbatim") {
        return;
    }
    let broker = isolation_broker();
    let c1 = connect_as(&broker, ALICE, PW, V1).await;
    let ch = chan(&c1).await;
    assert_reply(
        passive_declare(&ch, "q in vhost '/'").await,
        404,
        "NOT_FOUND - no queue 'q in vhost '/'' in vhost 'v1'",
    );
}

// ---- limits ------------------------------------------------------------------------------

fn limits_defs() -> Defs {
    Defs::new()
        .user("lu", PW, &[])
        .user("free", PW, &[])
        .user_with_limits("uc", PW, &[], r#"{"max-connections":2}"#)
        .user_with_limits("uch", PW, &[], r#"{"max-channels":2}"#)
        .user_with_limits("uz", PW, &[], r#"{"max-connections":0}"#)
        .user_with_limits("uzc", PW, &[], r#"{"max-channels":0}"#)
        .user_with_limits("un", PW, &[], r#"{"max-connections":-1,"max-channels":-1}"#)
        .vhost("lv")
        .vhost("qv")
        .vhost("zv")
        .vhost("uv")
        .vhost("nv")
        .permit("lu", "lv", ".*", ".*", ".*")
        .permit("lu", "nv", ".*", ".*", ".*")
        .permit("uz", "uv", ".*", ".*", ".*")
        .permit("uzc", "uv", ".*", ".*", ".*")
        .permit("un", "uv", ".*", ".*", ".*")
        .permit("lu", "qv", ".*", ".*", ".*")
        .permit("lu", "zv", ".*", ".*", ".*")
        .permit("free", "lv", ".*", ".*", ".*")
        .permit("uc", "uv", ".*", ".*", ".*")
        .permit("uch", "uv", ".*", ".*", ".*")
        .vhost_limits("lv", r#"{"max-connections":2}"#)
        .vhost_limits("qv", r#"{"max-queues":2}"#)
        .vhost_limits("zv", r#"{"max-connections":0}"#)
        // Negative: unlimited.
        .vhost_limits("nv", r#"{"max-connections":-1,"max-queues":-1}"#)
}

fn limits_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, limits_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_connection_limit() {
    if skip_if_external("vhost_connection_limit") {
        return;
    }
    let broker = limits_broker();
    let first = raw_open_as(&broker, "lu", PW, "lv").await;
    let second = connect_as(&broker, "lu", PW, "lv").await;
    // The limit counts every user's connections to the vhost.
    assert_reply(
        try_connect(&broker, "free", PW, "lv").await,
        530,
        "NOT_ALLOWED - access to vhost 'lv' refused for user 'free': connection limit (2) is reached",
    );
    assert_reply(
        try_connect(&broker, "lu", PW, "lv").await,
        530,
        "NOT_ALLOWED - access to vhost 'lv' refused for user 'lu': connection limit (2) is reached",
    );
    // Closing a connection frees its slot.
    raw_close(first).await;
    let third = connect_as(&broker, "free", PW, "lv").await;
    round_trip(&chan(&third).await).await;
    round_trip(&chan(&second).await).await;

    assert_reply(
        try_connect(&broker, "lu", PW, "zv").await,
        530,
        "NOT_ALLOWED - access to vhost 'zv' refused for user 'lu': connection limit (0) is reached",
    );
    // A negative limit is no limit.
    let mut unlimited = Vec::new();
    for _ in 0..3 {
        unlimited.push(connect_as(&broker, "lu", PW, "nv").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_queue_limit() {
    if skip_if_external("vhost_queue_limit") {
        return;
    }
    let broker = limits_broker();
    let conn = connect_as(&broker, "lu", PW, "qv").await;
    let ch = chan(&conn).await;
    declare_q(&ch, "q1", no_args()).await.expect("first queue");
    declare_q(&ch, "q2", no_args()).await.expect("second queue");
    declare_q(&ch, "q1", no_args())
        .await
        .expect("redeclaring an existing queue at the limit");
    passive_declare(&ch, "q2")
        .await
        .expect("passive declare at the limit");
    let r = declare_q(&ch, "q3", no_args()).await;
    assert_reply(
        r,
        406,
        "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost 'qv' (2) is reached",
    );
    assert!(!ch.status().connected() && conn.status().connected());

    // Server-named queues count too.
    let ch = chan(&conn).await;
    let (code, text) = reply_of(declare_q(&ch, "", no_args()).await);
    assert_eq!(code, 406, "{text}");
    let name = text
        .strip_prefix("PRECONDITION_FAILED - cannot declare queue '")
        .and_then(|t| t.strip_suffix("': queue limit in vhost 'qv' (2) is reached"))
        .unwrap_or_else(|| panic!("unexpected text {text:?}"));
    assert!(name.starts_with("amq.gen-"), "{text:?}");

    // Deleting a queue frees its slot.
    let ch = chan(&conn).await;
    within(ch.queue_delete("q1".into(), QueueDeleteOptions::default()))
        .await
        .expect("delete q1");
    declare_q(&ch, "q3", no_args())
        .await
        .expect("q3 after deleting q1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_connection_limit() {
    if skip_if_external("user_connection_limit") {
        return;
    }
    let broker = limits_broker();
    let first = raw_open_as(&broker, "uc", PW, "uv").await;
    let second = connect_as(&broker, "uc", PW, "uv").await;
    assert_reply(
        try_connect(&broker, "uc", PW, "uv").await,
        530,
        "NOT_ALLOWED - connection refused for user 'uc': user connection limit (2) is reached",
    );
    raw_close(first).await;
    let third = connect_as(&broker, "uc", PW, "uv").await;
    round_trip(&chan(&third).await).await;
    round_trip(&chan(&second).await).await;

    // 0 allows no connection at all; a negative limit is no limit.
    assert_reply(
        try_connect(&broker, "uz", PW, "uv").await,
        530,
        "NOT_ALLOWED - connection refused for user 'uz': user connection limit (0) is reached",
    );
    let mut unlimited = Vec::new();
    for _ in 0..3 {
        unlimited.push(connect_as(&broker, "un", PW, "uv").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_channel_limit() {
    if skip_if_external("user_channel_limit") {
        return;
    }
    let broker = limits_broker();
    let text = "NOT_ALLOWED - number of channels opened for user 'uch' has reached the maximum allowed user limit of 2";
    let first = connect_as(&broker, "uch", PW, "uv").await;
    let ch1 = chan(&first).await;
    let ch2 = chan(&first).await;
    // The limit is per user, across connections; exceeding it is a connection error.
    let second = connect_as(&broker, "uch", PW, "uv").await;
    assert_reply(within(second.create_channel()).await, 530, text);
    assert!(!second.status().connected(), "530 closes the connection");
    assert!(first.status().connected());

    // Closing a channel frees its slot.
    within(ch1.close(200, "bye".into())).await.expect("close");
    let third = connect_as(&broker, "uch", PW, "uv").await;
    let ch3 = chan(&third).await;
    round_trip(&ch3).await;
    assert_reply(within(third.create_channel()).await, 530, text);
    round_trip(&ch2).await;

    // 0 allows no channel at all; a negative limit is no limit.
    let zero = connect_as(&broker, "uzc", PW, "uv").await;
    assert_reply(
        within(zero.create_channel()).await,
        530,
        "NOT_ALLOWED - number of channels opened for user 'uzc' has reached the maximum allowed user limit of 0",
    );
    let unlimited = connect_as(&broker, "un", PW, "uv").await;
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(chan(&unlimited).await);
    }
}

// ---- authentication ----------------------------------------------------------------------

/// `test12` hashed by RabbitMQ (salt 908DC60A, SHA-256), as `export_definitions` writes it.
const TEST12_HASH: &str = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";

fn auth_defs() -> Defs {
    Defs::new()
        .user_with_hash("hashed", TEST12_HASH, "rabbit_password_hashing_sha256")
        .user("plain", "s3cret", &[])
        .user(ALICE, PW, &[])
        .user("nov", PW, &[])
        .vhost("/")
        .vhost(V1)
        .vhost(V2)
        .permit("hashed", "/", ".*", ".*", ".*")
        .permit("plain", "/", ".*", ".*", ".*")
        .permit(ALICE, V1, ".*", ".*", ".*")
}

fn auth_broker() -> Arc<Broker> {
    static SLOT: OnceLock<Mutex<Weak<Broker>>> = OnceLock::new();
    group_broker(&SLOT, auth_defs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_rabbitmq_hash_logs_in() {
    if skip_if_external("imported_rabbitmq_hash_logs_in") {
        return;
    }
    let broker = auth_broker();
    let conn = connect_as(&broker, "hashed", "test12", "/").await;
    round_trip(&chan(&conn).await).await;
    assert_reply(
        try_connect(&broker, "hashed", "test13", "/").await,
        403,
        LOGIN_REFUSED,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_and_vhosts() {
    if skip_if_external("refused_logins_and_vhosts") {
        return;
    }
    let broker = auth_broker();
    // lapin announces authentication_failure_close, so a refused login is a 403 close.
    for (user, password) in [
        ("plain", "wrong"),
        ("ghost", "s3cret"),
        // No guest is created when definitions are loaded.
        ("guest", "guest"),
    ] {
        assert_reply(
            try_connect(&broker, user, password, "/").await,
            403,
            LOGIN_REFUSED,
        );
    }
    // No permission row in an existing vhost, or no such vhost: the same 530.
    assert_reply(
        try_connect(&broker, ALICE, PW, V2).await,
        530,
        &vhost_refused(V2, ALICE),
    );
    assert_reply(
        try_connect(&broker, ALICE, PW, "nope").await,
        530,
        &vhost_refused("nope", ALICE),
    );
    assert_reply(
        try_connect(&broker, "nov", PW, "/").await,
        530,
        &vhost_refused("/", "nov"),
    );
    // The refusal names the mechanism used.
    let amqplain = |user: &str, password: &str| {
        format!(
            "{}?auth_mechanism=amqplain",
            broker.url_for(user, password, "/")
        )
    };
    let r = within(Connection::connect(
        &amqplain("plain", "wrong"),
        ConnectionProperties::default(),
    ))
    .await;
    assert_reply(
        r,
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For details see the broker logfile.",
    );
    let conn = within(Connection::connect(
        &amqplain("hashed", "test12"),
        ConnectionProperties::default(),
    ))
    .await
    .expect("AMQPLAIN login with the imported hash");
    round_trip(&chan(&conn).await).await;

    let ok = connect_as(&broker, ALICE, PW, V1).await;
    round_trip(&chan(&ok).await).await;
}

/// Without `authentication_failure_close` a refused client is told nothing: RabbitMQ
/// closes the socket after a pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_login_without_the_capability_is_dropped_silently() {
    if skip_if_external("refused_login_without_the_capability_is_dropped_silently") {
        return;
    }
    let broker = auth_broker();
    let (mut conn, _) = RawConn::start(&broker.addr()).await;
    let start_ok = Args::new()
        .client_properties(&["consumer_cancel_notify"])
        .short("PLAIN")
        .long(b"\0plain\0wrong")
        .short("en_US");
    conn.send_method(0, id::CONNECTION, id::CONNECTION_START_OK, start_ok.bytes())
        .await;
    let sent = Instant::now();
    let rest = conn.read_to_end_raw(1 << 16).await;
    assert!(
        rest.is_empty(),
        "nothing is sent to a refused client without the capability: {rest:?}"
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "the socket is closed after a pause, not at once ({:?})",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_passwords_are_refused_cleanly() {
    if skip_if_external("huge_passwords_are_refused_cleanly") {
        return;
    }
    let broker = auth_broker();
    let bystander = connect_as(&broker, "plain", "s3cret", "/").await;
    let bystander_ch = chan(&bystander).await;

    // A long password in a start-ok that fits RabbitMQ's pre-authentication frame limit
    // (4096 bytes before 4.1, 8192 since) is just a wrong password.
    let long = "p".repeat(3000);
    assert_reply(
        try_connect(&broker, "plain", &long, "/").await,
        403,
        LOGIN_REFUSED,
    );

    // A 1 MiB start-ok exceeds any pre-authentication frame limit. RabbitMQ drops such a
    // client without a word (after a pause); a connection.close is acceptable too, but only
    // with FRAME_ERROR, and the login must never proceed to connection.tune.
    let (mut raw, _) = RawConn::start(&broker.addr()).await;
    let mut response = b"\0plain\0".to_vec();
    response.extend(std::iter::repeat_n(b'p', 1 << 20));
    let start_ok = Args::new()
        .client_properties(&["authentication_failure_close"])
        .short("PLAIN")
        .long(&response)
        .short("en_US");
    raw.send_lenient(&crate::raw::method_frame(
        0,
        id::CONNECTION,
        id::CONNECTION_START_OK,
        start_ok.bytes(),
    ))
    .await;
    loop {
        match raw.read_frame().await {
            // EOF, or a reset because the broker closed with our bytes unread.
            Ok(None) | Err(_) => break,
            Ok(Some((
                Frame::Method {
                    channel: 0,
                    class: id::CONNECTION,
                    method: id::CONNECTION_CLOSE,
                    args,
                },
                _,
            ))) => {
                let close = crate::raw::parse_close(&args);
                assert_eq!(close.code, 501, "{close:?}");
                assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
                raw.expect_eof().await;
                break;
            }
            Ok(Some((Frame::Heartbeat { .. }, _))) => continue,
            Ok(Some((other, _))) => panic!("unexpected frame after a 1 MiB start-ok: {other:?}"),
        }
    }

    // Through lapin the 1 MiB password fails too, promptly. (lapin cannot frame a start-ok
    // that large: the broker sees a malformed frame, so no particular reply is expected.)
    let huge = "p".repeat(1 << 20);
    let started = Instant::now();
    let err = try_connect(&broker, "plain", &huge, "/")
        .await
        .expect_err("a 1 MiB password cannot log in");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused after {:?}: {err:?}",
        started.elapsed()
    );

    // Everyone else carries on.
    assert!(bystander.status().connected());
    round_trip(&bystander_ch).await;
    let again = connect_as(&broker, "plain", "s3cret", "/").await;
    round_trip(&chan(&again).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_user_replaces_guest_on_first_boot_only() {
    if skip_if_external("default_user_replaces_guest_on_first_boot_only") {
        return;
    }
    let data = TempDir::new();
    {
        let broker = Broker::private_on(
            data.path(),
            &["--default-user", "boss", "--default-pass", "boss-pw"],
        );
        assert_reply(
            try_connect(&broker, "guest", "guest", "/").await,
            403,
            LOGIN_REFUSED,
        );
        let conn = connect_as(&broker, "boss", "boss-pw", "/").await;
        round_trip(&chan(&conn).await).await;
    }
    // A later boot with another default user keeps the database as it is.
    let broker = Broker::private_on(
        data.path(),
        &["--default-user", "other", "--default-pass", "other-pw"],
    );
    assert_reply(
        try_connect(&broker, "other", "other-pw", "/").await,
        403,
        LOGIN_REFUSED,
    );
    assert_reply(
        try_connect(&broker, "guest", "guest", "/").await,
        403,
        LOGIN_REFUSED,
    );
    let conn = connect_as(&broker, "boss", "boss-pw", "/").await;
    round_trip(&chan(&conn).await).await;
}

// ---- bad definitions -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_permission_regex_stops_the_broker() {
    if skip_if_external("invalid_permission_regex_stops_the_broker") {
        return;
    }
    let files = TempDir::new();
    let base = || Defs::new().user("u", PW, &[]).vhost("v");
    let cases = [
        (
            "bad-permission.json",
            base().permit("u", "v", "^(unclosed", ".*", ".*"),
        ),
        (
            "bad-topic-permission.json",
            base().permit("u", "v", ".*", ".*", ".*").topic_permit(
                "u",
                "v",
                "amq.topic",
                "[a-",
                ".*",
            ),
        ),
    ];
    for (file, defs) in cases {
        let path = files.write(file, defs.json().as_bytes());
        let path = path.to_str().expect("UTF-8 temp path");
        let (status, output) = run_to_exit(&["--load-definitions", path], Duration::from_secs(30));
        let status =
            status.unwrap_or_else(|| panic!("{file}: the broker kept running; output:\n{output}"));
        assert!(
            !status.success(),
            "{file}: exit status {status}; output:\n{output}"
        );
        assert!(
            output.contains(path),
            "{file}: the error names the definitions file {path}; output:\n{output}"
        );
        assert!(
            !output.contains("amqp listening"),
            "{file}: the broker must not serve with half-imported definitions; output:\n{output}"
        );
    }
}
