//! A user working in a vhost: the one place where the engine authorises an operation and
//! performs it, whichever protocol front asked. The AMQP connection holds one per
//! connection, the Kafka front one per authenticated connection, the HTTP API one per
//! request. Permission checks follow RabbitMQ's table (`rabbit_channel`):
//!
//! | operation | needs |
//! |---|---|
//! | queue.declare | configure(q); with `x-dead-letter-exchange` also read(q) + write(DLX) |
//! | exchange.declare | configure(x); with `alternate-exchange` also read(x) + write(AE) |
//! | passive declare | any one of configure / write / read (RabbitMQ main since 2026-04) |
//! | queue / exchange delete | configure |
//! | purge, get, consume | read(q) |
//! | queue.bind / unbind | write(q), read(x), topic read on the binding key |
//! | exchange.bind / unbind | write(destination), read(source), topic read on the binding key |
//! | publish | write(x); topic exchanges: topic write on every routing key (CC/BCC too) |
//!
//! The default exchange `""` is checked as `amq.default`. Permissions are re-read from the
//! user store whenever its version moves, so a revoked or changed permission applies to
//! open sessions at their next operation (RabbitMQ's per-channel cache can miss a revoke).

use std::sync::Arc;

use ferrymq_auth::{Access, AuthStore, CompiledPermission, Perm, Permission, ResourceKind, User};
use ferrymq_core::topology::{Binding, Declared, Dest, ExchangeKind, ExchangeSpec, QueueSpec};
use ferrymq_core::CoreError;

use crate::queue_task::{
    Confirm, ConfirmTo, ConfirmToken, Outbound, QueueCmd, QueueHandle, QueueOp,
};
use crate::vhost::VHost;

/// How messages taken by [`Session::get`] are settled (the management API's `ackmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMode {
    /// `ack_requeue_true`: given back to the queue (redelivered).
    AckRequeue,
    /// `ack_requeue_false`: acknowledged (removed).
    Ack,
    /// `reject_requeue_true`: rejected with requeue (counts towards a delivery limit).
    RejectRequeue,
    /// `reject_requeue_false`: rejected (dead-lettered if the queue has a DLX).
    Reject,
}

/// A message taken by [`Session::get`], with the ready count left after it.
pub struct Got {
    pub entry: ferrymq_core::queue::Entry,
    pub remaining: usize,
}

/// An authenticated user in a vhost.
pub struct Session {
    auth: Arc<AuthStore>,
    pub vhost: Arc<VHost>,
    user: Arc<User>,
    access: Arc<Access>,
    /// The store version `access` was read at.
    version: u64,
}

fn refused(e: impl std::fmt::Display) -> CoreError {
    CoreError::AccessRefused(e.to_string())
}

/// An access that allows nothing (the user lost its permissions or was deleted).
fn nothing(user: &str, vhost: &str) -> Arc<Access> {
    let none = Permission {
        configure: String::new(),
        write: String::new(),
        read: String::new(),
    };
    Arc::new(Access::new(
        user,
        vhost,
        Arc::new(CompiledPermission::compile_lenient(&none)),
        [],
    ))
}

impl Session {
    /// A session for `user` in `vhost` with the permissions it has there now.
    pub fn new(auth: Arc<AuthStore>, vhost: Arc<VHost>, user: Arc<User>) -> Session {
        let version = auth.version();
        let access = auth
            .access(&user.name, &vhost.name)
            .unwrap_or_else(|| nothing(&user.name, &vhost.name));
        Session {
            auth,
            vhost,
            user,
            access,
            version,
        }
    }

    pub fn user(&self) -> &User {
        &self.user
    }

    pub fn user_name(&self) -> &str {
        &self.user.name
    }

    /// Re-reads the permissions if the user store changed since they were read.
    #[inline]
    fn refresh(&mut self) {
        let v = self.auth.version();
        if v != self.version {
            self.version = v;
            self.access = match self.auth.user(&self.user.name) {
                Some(u) => {
                    self.user = u;
                    self.auth
                        .access(&self.user.name, &self.vhost.name)
                        .unwrap_or_else(|| nothing(&self.user.name, &self.vhost.name))
                }
                None => nothing(&self.user.name, &self.vhost.name),
            };
        }
    }

    /// The current permissions (refreshed).
    pub fn access(&mut self) -> &Access {
        self.refresh();
        &self.access
    }

    /// Checks one permission on a queue or exchange (`ResourceKind::Topic` for Kafka
    /// topics, which are checked against the same patterns).
    #[inline]
    pub fn authorize(
        &mut self,
        perm: Perm,
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), CoreError> {
        self.refresh();
        self.access.check(perm, kind, name).map_err(refused)
    }

    /// Passes with any one of configure, write or read on the resource.
    pub fn authorize_any(&mut self, kind: ResourceKind, name: &str) -> Result<(), CoreError> {
        self.refresh();
        self.access.check_any(kind, name).map_err(refused)
    }

    /// Checks a topic permission on a routing key of a topic exchange.
    pub fn authorize_topic(
        &mut self,
        perm: Perm,
        exchange: &str,
        key: &str,
    ) -> Result<(), CoreError> {
        self.refresh();
        self.access
            .check_topic(perm, exchange, key)
            .map_err(refused)
    }

    /// Whether per-routing-key checks can be skipped (no topic-permission rows).
    pub fn has_topic_permissions(&mut self) -> bool {
        self.refresh();
        self.access.has_topic_permissions()
    }

    // ---- operations ----------------------------------------------------------------

    /// `exchange.declare`.
    pub fn declare_exchange(&mut self, spec: ExchangeSpec, passive: bool) -> Result<(), CoreError> {
        let name = spec.name.to_string();
        if passive {
            self.authorize_any(ResourceKind::Exchange, &name)?;
        } else {
            self.authorize(Perm::Configure, ResourceKind::Exchange, &name)?;
            if let Some(ae) = string_arg(&spec.arguments, "alternate-exchange") {
                self.authorize(Perm::Read, ResourceKind::Exchange, &name)?;
                self.authorize(Perm::Write, ResourceKind::Exchange, &ae)?;
            }
        }
        if passive && name.is_empty() {
            // The default exchange always exists.
            return Ok(());
        }
        self.vhost.declare_exchange(spec, passive)
    }

    /// `exchange.delete`.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), CoreError> {
        // The default and `amq.*` exchanges are refused before permissions, as RabbitMQ.
        if !name.is_empty() && !name.starts_with("amq.") {
            self.authorize(Perm::Configure, ResourceKind::Exchange, name)?;
        }
        self.vhost.delete_exchange(name, if_unused)
    }

    /// `queue.declare` (the name already chosen: server-named queues are `amq.gen-…`).
    pub fn declare_queue(
        &mut self,
        spec: QueueSpec,
        passive: bool,
        connection: u64,
    ) -> Result<Declared<QueueHandle>, CoreError> {
        let name = spec.name.to_string();
        if passive {
            self.authorize_any(ResourceKind::Queue, &name)?;
            return self.vhost.declare_queue(spec, passive, connection);
        }
        self.authorize(Perm::Configure, ResourceKind::Queue, &name)?;
        if let Some(dlx) = string_arg(&spec.arguments, "x-dead-letter-exchange") {
            self.authorize(Perm::Read, ResourceKind::Queue, &name)?;
            self.authorize(Perm::Write, ResourceKind::Exchange, &dlx)?;
        }
        if let Some(limit) = self
            .auth
            .vhost(&self.vhost.name)
            .and_then(|v| v.limits.max_queues)
        {
            let exists = self.vhost.read(|t| t.queue(&name).is_some());
            if !exists && self.vhost.queue_count() as i64 >= limit {
                return Err(CoreError::Precondition(format!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({limit}) is reached",
                    self.vhost.name
                )));
            }
        }
        self.vhost.declare_queue(spec, passive, connection)
    }

    /// `queue.bind` and `exchange.bind`.
    pub fn bind(&mut self, b: Binding, connection: u64) -> Result<(), CoreError> {
        self.authorize_binding(&b)?;
        self.vhost.bind(b, connection)
    }

    /// `queue.unbind` and `exchange.unbind`.
    pub fn unbind(&mut self, b: &Binding, connection: u64) -> Result<(), CoreError> {
        self.authorize_binding(b)?;
        self.vhost.unbind(b, connection)
    }

    fn authorize_binding(&mut self, b: &Binding) -> Result<(), CoreError> {
        match &b.dest {
            Dest::Queue(q) => self.authorize(Perm::Write, ResourceKind::Queue, q)?,
            Dest::Exchange(x) => self.authorize(Perm::Write, ResourceKind::Exchange, x)?,
        }
        self.authorize(Perm::Read, ResourceKind::Exchange, &b.source)?;
        // Whatever the destination, as RabbitMQ's `binding_action`.
        if self.has_topic_permissions() {
            let topic = self
                .vhost
                .read(|t| t.exchange(&b.source).map(|e| e.kind == ExchangeKind::Topic))
                .unwrap_or(false);
            if topic {
                self.authorize_topic(Perm::Read, &b.source, &b.routing_key)?;
            }
        }
        Ok(())
    }

    /// The queue `name` for purge, get and consume (read permission).
    pub fn queue_to_read(&mut self, name: &str, connection: u64) -> Result<QueueHandle, CoreError> {
        self.authorize(Perm::Read, ResourceKind::Queue, name)?;
        self.vhost
            .read(|t| t.queue_for(name, connection).map(|q| q.handle.clone()))
    }

    /// The queue `name` for deletion (configure permission); `None` if it does not exist.
    pub fn queue_to_delete(
        &mut self,
        name: &str,
        connection: u64,
    ) -> Result<Option<QueueHandle>, CoreError> {
        self.authorize(Perm::Configure, ResourceKind::Queue, name)?;
        match self
            .vhost
            .read(|t| t.queue_for(name, connection).map(|q| q.handle.clone()))
        {
            Ok(q) => Ok(Some(q)),
            Err(CoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `basic.publish`: write on the exchange, and on a topic exchange with topic
    /// permissions, topic write on every routing key the message carries (its own, `CC`
    /// and `BCC`). Returns whether the decision holds for any routing key and headers on
    /// this exchange (so a front may remember it until [`is_current`](Self::is_current)
    /// turns false or the topology changes).
    pub fn authorize_publish(
        &mut self,
        exchange: &str,
        routing_key: &[u8],
        headers: Option<&amq_protocol::types::FieldTable>,
    ) -> Result<bool, CoreError> {
        self.authorize(Perm::Write, ResourceKind::Exchange, exchange)?;
        if !self.has_topic_permissions() {
            return Ok(true);
        }
        let topic = self
            .vhost
            .read(|t| t.exchange(exchange).map(|e| e.kind == ExchangeKind::Topic))
            .unwrap_or(false);
        if !topic {
            return Ok(true);
        }
        self.authorize_topic(Perm::Write, exchange, &String::from_utf8_lossy(routing_key))?;
        for k in ferrymq_core::sender::extra_routing_keys(headers)? {
            self.authorize_topic(Perm::Write, exchange, &k)?;
        }
        Ok(false)
    }

    // ---- operations outside a connection (the HTTP front) ---------------------------

    /// `queue.purge` (read permission). Returns the number of messages purged.
    pub async fn purge(&mut self, name: &str) -> Result<usize, CoreError> {
        let q = self.queue_to_read(name, 0)?;
        q.ask(|reply| QueueCmd::Purge { reply })
            .await
            .ok_or_else(|| CoreError::not_found("queue", name, &self.vhost.name))
    }

    /// `queue.delete` (configure permission); `NotFound` if there is no such queue.
    /// Returns the number of messages it held.
    pub async fn delete_queue(
        &mut self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<usize, CoreError> {
        let Some(q) = self.queue_to_delete(name, 0)? else {
            return Err(CoreError::not_found("queue", name, &self.vhost.name));
        };
        q.ask(|reply| QueueCmd::Delete {
            if_unused,
            if_empty,
            reply,
        })
        .await
        .ok_or_else(|| CoreError::not_found("queue", name, &self.vhost.name))?
    }

    /// Takes up to `count` messages from a queue (read permission) as `basic.get` with
    /// acks would, then settles them all as `mode` says (after taking them all, so a
    /// requeued message is not taken twice).
    pub async fn get(
        &mut self,
        name: &str,
        count: usize,
        mode: GetMode,
    ) -> Result<Vec<Got>, CoreError> {
        let q = self.queue_to_read(name, 0)?;
        let mut out = Vec::new();
        for _ in 0..count {
            let r = q
                .ask(|reply| QueueCmd::Get {
                    no_ack: false,
                    reply,
                })
                .await
                .ok_or_else(|| CoreError::not_found("queue", name, &self.vhost.name))?;
            match r {
                Some((entry, remaining)) => out.push(Got { entry, remaining }),
                None => break,
            }
        }
        let ops: Vec<QueueOp> = out
            .iter()
            .map(|g| {
                let (o, gen) = (g.entry.offset, g.entry.delivery_count);
                match mode {
                    GetMode::AckRequeue => QueueOp::Return(o, gen),
                    GetMode::Ack => QueueOp::Ack(o, gen),
                    GetMode::RejectRequeue => QueueOp::Requeue(o, gen),
                    GetMode::Reject => QueueOp::Drop(o, gen),
                }
            })
            .collect();
        if !ops.is_empty() {
            q.send_settles(ops);
        }
        Ok(out)
    }

    /// `basic.publish` with publisher confirms: authorised like any publish, routed now
    /// (CC/BCC, delayed and de-duplication exchanges included), and answered once every
    /// queue that must store it has (fsync under the default policy). Returns whether
    /// it was routed; a refusal by a queue (`x-overflow` reject-publish) or a failed
    /// store is a `Precondition` error.
    pub async fn publish(&mut self, msg: ferrymq_core::Message) -> Result<bool, CoreError> {
        let exchange = std::str::from_utf8(&msg.exchange)
            .map_err(|_| CoreError::CommandInvalid("exchange name is not UTF-8".into()))?
            .to_owned();
        self.authorize_publish(&exchange, &msg.routing_key, msg.headers.as_ref())?;
        let msg = Arc::new(msg);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let token = |seq: u64| ConfirmToken {
            outbound: tx.clone(),
            channel: 0,
            seq,
        };
        let (msg, targets) = if msg.headers.is_some() {
            match crate::routing::classify(&self.vhost, msg.clone())? {
                crate::routing::Publish::Hold(handle, due) => {
                    self.vhost.exchange_counters(&exchange).add(1, 0);
                    let wait = msg.persistent && handle.durable;
                    handle.hold(msg, due, wait.then(|| token(0)));
                    drop(tx);
                    if wait {
                        return match rx.recv().await {
                            Some(Outbound::Confirms { ok: false, .. }) => Err(nacked()),
                            _ => Ok(true),
                        };
                    }
                    return Ok(true);
                }
                crate::routing::Publish::Route(m, targets) => (m, targets),
            }
        } else {
            let rk = String::from_utf8_lossy(&msg.routing_key).into_owned();
            let mut targets = Vec::new();
            self.vhost
                .read(|t| t.route(&exchange, &rk, None, &mut targets))?;
            (msg, targets)
        };
        self.vhost
            .exchange_counters(&exchange)
            .add(1, targets.len() as u64);
        let mut waiting = 0;
        let to = ConfirmTo {
            outbound: tx.clone(),
        };
        for (i, q) in targets.iter().enumerate() {
            let c = ((msg.persistent && q.is_durable()) || q.may_reject_publish()).then(|| {
                waiting += 1;
                Confirm {
                    channel: 0,
                    seq: i as u64,
                }
            });
            q.send_batch(vec![QueueOp::Publish(msg.clone(), c)], Some(to.clone()));
        }
        drop(to);
        drop(tx);
        let mut ok = true;
        while waiting > 0 {
            match rx.recv().await {
                Some(Outbound::Confirms { seqs, ok: o, .. }) => {
                    waiting -= seqs.len().min(waiting);
                    ok &= o;
                }
                Some(_) => {}
                None => break,
            }
        }
        if !ok {
            return Err(nacked());
        }
        Ok(!targets.is_empty())
    }

    /// Whether the permissions read last are still the store's.
    #[inline]
    pub fn is_current(&self) -> bool {
        self.auth.version() == self.version
    }

    /// The store version the permissions were read at (for caches keyed on it).
    pub fn version(&self) -> u64 {
        self.version
    }
}

fn nacked() -> CoreError {
    CoreError::Precondition("the message was rejected (negatively acknowledged)".into())
}

/// A string-valued argument (`x-dead-letter-exchange`, `alternate-exchange`).
fn string_arg(args: &amq_protocol::types::FieldTable, key: &str) -> Option<String> {
    use amq_protocol::types::AMQPValue;
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}
