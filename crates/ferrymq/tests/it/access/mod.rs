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

mod authn;
mod bad_defs;
mod isolation;
mod limits;
mod table;
mod topic;

// Users and vhosts the groups' definitions name.
const V1: &str = "v1";
const BOB: &str = "bob";
const BOB_PW: &str = "bob-pw";
const ADMIN: &str = "admin";
const ADMIN_PW: &str = "admin-pw";
const GEN: &str = "gen";
const GEN_PW: &str = "gen-pw";
const T: &str = "t";
const TOM: &str = "tom";
const TINA: &str = "tina";
const TESS: &str = "tess";
const IMP: &str = "imp";
const PW: &str = "pw";
const VIC: &str = "vic";
const V2: &str = "v2";
const ALICE: &str = "alice";

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
