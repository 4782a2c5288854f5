//! A virtual host's topology: exchanges, queues (their declared properties plus an opaque
//! handle the server uses to reach the queue's owner task) and the bindings between them.
//! Declarations follow RabbitMQ's rules (reserved `amq.` names, equivalence checks,
//! exclusive ownership, auto-delete); `route` resolves an exchange and routing key to the
//! set of queues, following exchange-to-exchange bindings without looping.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::CoreError;
use crate::headers;
use crate::topic::TopicTrie;

/// The routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-delayed-message`: holds messages carrying `x-delay`, then routes them like its
    /// `x-delayed-type` (see `crate::delay`).
    Delayed,
    /// `x-message-deduplication`: drops repeated `x-deduplication-header` values (the
    /// server keeps the cache, see `crate::dedup`), routes to every binding like fanout.
    Deduplication,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            crate::delay::DELAYED_TYPE => ExchangeKind::Delayed,
            crate::dedup::DEDUP_TYPE => ExchangeKind::Deduplication,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::Delayed => crate::delay::DELAYED_TYPE,
            ExchangeKind::Deduplication => crate::dedup::DEDUP_TYPE,
        }
    }

    /// Checks the arguments an exchange type requires (406 like the plugins).
    pub fn validate_args(self, args: &FieldTable) -> Result<(), CoreError> {
        match self {
            ExchangeKind::Delayed => crate::delay::underlying_kind(args).map(|_| ()),
            ExchangeKind::Deduplication => crate::dedup::DedupArgs::parse(args).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The algorithm whose bindings index routes for this kind (a delayed exchange routes
    /// like its `x-delayed-type`, a de-duplication exchange like fanout).
    fn index_kind(self, args: &FieldTable) -> ExchangeKind {
        match self {
            ExchangeKind::Delayed => {
                crate::delay::underlying_kind(args).unwrap_or(ExchangeKind::Direct)
            }
            ExchangeKind::Deduplication => ExchangeKind::Fanout,
            k => k,
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    Queue(Arc<str>),
    Exchange(Arc<str>),
}

impl Dest {
    fn kind(&self) -> &'static str {
        match self {
            Dest::Queue(_) => "queue",
            Dest::Exchange(_) => "exchange",
        }
    }
}

/// A binding as declared: from an exchange to a destination with a key and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub source: Arc<str>,
    pub dest: Dest,
    pub routing_key: Arc<str>,
    pub arguments: FieldTable,
}

/// Declared properties of an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    pub name: Arc<str>,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug)]
enum Index {
    Direct(AHashMap<Arc<str>, Vec<Dest>>),
    Fanout(Vec<Dest>),
    Topic(TopicTrie<Dest>),
    Headers(Vec<(FieldTable, Dest)>),
}

#[derive(Debug)]
struct Exchange {
    spec: ExchangeSpec,
    index: Index,
    /// Bindings with this exchange as source, in declaration order.
    bindings: Vec<Binding>,
}

impl Exchange {
    fn new(spec: ExchangeSpec) -> Self {
        let index = match spec.kind.index_kind(&spec.arguments) {
            ExchangeKind::Direct => Index::Direct(AHashMap::new()),
            ExchangeKind::Topic => Index::Topic(TopicTrie::default()),
            ExchangeKind::Headers => Index::Headers(Vec::new()),
            _ => Index::Fanout(Vec::new()),
        };
        Exchange {
            spec,
            index,
            bindings: Vec::new(),
        }
    }

    fn index_add(&mut self, b: &Binding) {
        match &mut self.index {
            Index::Direct(m) => m
                .entry(b.routing_key.clone())
                .or_default()
                .push(b.dest.clone()),
            Index::Fanout(v) => v.push(b.dest.clone()),
            Index::Topic(t) => t.insert(&b.routing_key, b.dest.clone()),
            Index::Headers(v) => v.push((b.arguments.clone(), b.dest.clone())),
        }
    }

    fn index_remove(&mut self, b: &Binding) {
        match &mut self.index {
            Index::Direct(m) => {
                if let Some(v) = m.get_mut(&b.routing_key) {
                    if let Some(i) = v.iter().position(|d| *d == b.dest) {
                        v.swap_remove(i);
                    }
                    if v.is_empty() {
                        m.remove(&b.routing_key);
                    }
                }
            }
            Index::Fanout(v) => {
                if let Some(i) = v.iter().position(|d| *d == b.dest) {
                    v.swap_remove(i);
                }
            }
            Index::Topic(t) => {
                t.remove(&b.routing_key, &b.dest);
            }
            Index::Headers(v) => {
                if let Some(i) = v
                    .iter()
                    .position(|(a, d)| *d == b.dest && *a == b.arguments)
                {
                    v.swap_remove(i);
                }
            }
        }
    }
}

/// Declared properties of a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: Arc<str>,
    pub durable: bool,
    /// The owning connection of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// A queue as the topology knows it: its spec and the server's handle to it.
#[derive(Debug, Clone)]
pub struct QueueEntry<Q> {
    pub spec: QueueSpec,
    pub handle: Q,
}

/// Outcome of `declare_queue`.
#[derive(Debug)]
pub enum Declared<Q> {
    /// The queue already existed (equivalent declaration or passive).
    Existing(QueueEntry<Q>),
    /// The queue was created.
    Created(QueueEntry<Q>),
}

/// Queue arguments RabbitMQ checks for equivalence on redeclaration.
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-delivery-limit",
];

/// Exchange arguments RabbitMQ checks for equivalence on redeclaration.
const EXCHANGE_EQUIVALENCE_ARGS: &[&str] = &["alternate-exchange"];

/// Exchanges every vhost starts with.
pub const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
    // Half-message decisions (`ferrymq_core::half`); publishes to it are intercepted.
    (crate::half::EXCHANGE, ExchangeKind::Direct),
];

/// One virtual host's exchanges, queues and bindings.
#[derive(Debug)]
pub struct Topology<Q> {
    exchanges: AHashMap<Arc<str>, Exchange>,
    queues: AHashMap<Arc<str>, QueueEntry<Q>>,
    /// Bindings by destination, so deleting a queue or exchange finds its bindings fast.
    inbound: AHashMap<Dest, Vec<Binding>>,
    /// Auto-delete exchanges removed as a side effect since the last `take_auto_deleted`
    /// (the broker journals durable ones).
    auto_deleted: Vec<ExchangeSpec>,
    /// The vhost's name, for error texts.
    vhost: Arc<str>,
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn inequivalent(
    vhost: &str,
    what: &str,
    arg: &str,
    name: &str,
    received: &str,
    current: &str,
) -> CoreError {
    CoreError::Precondition(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
    ))
}

fn value_str(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".into(),
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        Some(v) => format!("{v:?}"),
    }
}

/// Integer value of an argument regardless of its AMQP integer width.
pub fn int_value(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => *n as i64,
        AMQPValue::ShortShortUInt(n) => *n as i64,
        AMQPValue::ShortInt(n) => *n as i64,
        AMQPValue::ShortUInt(n) => *n as i64,
        AMQPValue::LongInt(n) => *n as i64,
        AMQPValue::LongUInt(n) => *n as i64,
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

fn same_arg(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => match (int_value(x), int_value(y)) {
            (Some(i), Some(j)) => i == j,
            _ => value_str(Some(x)) == value_str(Some(y)),
        },
        (None, None) => true,
        _ => false,
    }
}

/// Checks the types and ranges of the queue arguments RabbitMQ knows, as it does on
/// `queue.declare` (406 on a bad one). Unknown arguments are accepted and ignored.
pub fn validate_queue_args(vhost: &str, name: &str, args: &FieldTable) -> Result<(), CoreError> {
    for (k, v) in args.inner() {
        let key = k.as_str();
        let int = int_value(v);
        let is_str = matches!(v, AMQPValue::LongString(_) | AMQPValue::ShortString(_));
        let ok = match key {
            "x-expires" => int.is_some_and(|n| n > 0),
            "x-message-ttl" | "x-max-length" | "x-max-length-bytes" | "x-delivery-limit" => {
                int.is_some_and(|n| n >= 0)
            }
            "x-max-priority" => int.is_some_and(|n| (0..=255).contains(&n)),
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" => is_str,
            "x-overflow" => {
                is_str
                    && matches!(
                        value_str(Some(v)).as_str(),
                        "drop-head" | "reject-publish" | "reject-publish-dlx"
                    )
            }
            "x-queue-mode" => is_str && matches!(value_str(Some(v)).as_str(), "default" | "lazy"),
            "x-single-active-consumer" | "x-message-deduplication" => {
                matches!(v, AMQPValue::Boolean(_))
            }
            "x-consumer-timeout" | "x-delayed-retry-min" | "x-delayed-retry-max" => {
                int.is_some_and(|n| n > 0)
            }
            "x-delayed-retry-type" => {
                is_str && matches!(value_str(Some(v)).as_str(), "all" | "failed" | "returned")
            }
            "x-queue-type" => is_str,
            _ => true,
        };
        if !ok {
            return Err(CoreError::Precondition(format!(
                "invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {}",
                value_str(Some(v))
            )));
        }
    }
    if args.inner().contains_key("x-dead-letter-routing-key")
        && !args.inner().contains_key("x-dead-letter-exchange")
    {
        return Err(CoreError::Precondition(format!(
            "invalid arg 'x-dead-letter-routing-key' for queue '{name}' in vhost '{vhost}': x-dead-letter-exchange is required"
        )));
    }
    Ok(())
}

/// Client-chosen queue names may not use the reserved `amq.` prefix.
pub fn check_queue_name(name: &str) -> Result<(), CoreError> {
    if reserved(name) {
        return Err(CoreError::AccessRefused(format!(
            "queue name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

fn reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

impl<Q: Clone> Default for Topology<Q> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Q: Clone> Topology<Q> {
    /// A vhost with the predeclared exchanges.
    pub fn new() -> Self {
        Self::for_vhost("/")
    }

    /// An empty topology of vhost `vhost` with its predeclared exchanges.
    pub fn for_vhost(vhost: &str) -> Self {
        let mut t = Topology {
            exchanges: AHashMap::new(),
            queues: AHashMap::new(),
            inbound: AHashMap::new(),
            auto_deleted: Vec::new(),
            vhost: vhost.into(),
        };
        for (name, kind) in PREDECLARED {
            let name: Arc<str> = (*name).into();
            t.exchanges.insert(
                name.clone(),
                Exchange::new(ExchangeSpec {
                    name,
                    kind: *kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::default(),
                }),
            );
        }
        t
    }

    pub fn exchange(&self, name: &str) -> Option<&ExchangeSpec> {
        self.exchanges.get(name).map(|e| &e.spec)
    }

    pub fn exchanges(&self) -> impl Iterator<Item = &ExchangeSpec> {
        self.exchanges.values().map(|e| &e.spec)
    }

    pub fn queue(&self, name: &str) -> Option<&QueueEntry<Q>> {
        self.queues.get(name)
    }

    pub fn queues(&self) -> impl Iterator<Item = &QueueEntry<Q>> {
        self.queues.values()
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Every binding, for listings and persistence.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.exchanges.values().flat_map(|e| e.bindings.iter())
    }

    /// `exchange.declare`. Returns true if the exchange was created.
    pub fn declare_exchange(
        &mut self,
        spec: ExchangeSpec,
        passive: bool,
    ) -> Result<bool, CoreError> {
        if passive {
            return match self.exchanges.get(&*spec.name) {
                Some(_) => Ok(false),
                None => Err(CoreError::not_found("exchange", &*spec.name, &self.vhost)),
            };
        }
        spec.kind.validate_args(&spec.arguments)?;
        // As in RabbitMQ, an existing exchange (even a predeclared one) is checked for
        // equivalence first; only creating a reserved name is refused.
        let existing = self
            .exchanges
            .get(&*spec.name)
            .filter(|_| !spec.name.is_empty());
        if let Some(existing) = existing {
            let cur = &existing.spec;
            let n = &*spec.name;
            if cur.kind != spec.kind {
                return Err(inequivalent(
                    &self.vhost,
                    "exchange",
                    "type",
                    n,
                    spec.kind.as_str(),
                    cur.kind.as_str(),
                ));
            }
            if cur.durable != spec.durable {
                return Err(inequivalent(
                    &self.vhost,
                    "exchange",
                    "durable",
                    n,
                    bool_str(spec.durable),
                    bool_str(cur.durable),
                ));
            }
            if cur.auto_delete != spec.auto_delete {
                return Err(inequivalent(
                    &self.vhost,
                    "exchange",
                    "auto_delete",
                    n,
                    bool_str(spec.auto_delete),
                    bool_str(cur.auto_delete),
                ));
            }
            if cur.internal != spec.internal {
                return Err(inequivalent(
                    &self.vhost,
                    "exchange",
                    "internal",
                    n,
                    bool_str(spec.internal),
                    bool_str(cur.internal),
                ));
            }
            for key in EXCHANGE_EQUIVALENCE_ARGS {
                let (a, b) = (
                    spec.arguments.inner().get(*key),
                    cur.arguments.inner().get(*key),
                );
                if !same_arg(a, b) {
                    return Err(inequivalent(
                        &self.vhost,
                        "exchange",
                        key,
                        n,
                        &value_str(a),
                        &value_str(b),
                    ));
                }
            }
            return Ok(false);
        }
        if spec.name.is_empty() || reserved(&spec.name) {
            return Err(CoreError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        self.exchanges
            .insert(spec.name.clone(), Exchange::new(spec));
        Ok(true)
    }

    /// `exchange.delete`. Deleting a missing exchange succeeds, as in RabbitMQ.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), CoreError> {
        if name.is_empty() {
            return Err(CoreError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        if reserved(name) {
            return Err(CoreError::AccessRefused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.vhost
            )));
        }
        let Some(ex) = self.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && !ex.bindings.is_empty() {
            return Err(CoreError::Precondition(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.vhost
            )));
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn remove_exchange(&mut self, name: &str) {
        let Some(ex) = self.exchanges.remove(name) else {
            return;
        };
        for b in &ex.bindings {
            self.inbound_remove(b);
        }
        // Bindings that lead into this exchange go too.
        if let Some(inb) = self.inbound.remove(&Dest::Exchange(name.into())) {
            for b in inb {
                self.unbind_from_source(&b);
            }
        }
    }

    /// `queue.declare` for a named queue. The session generates server names and refuses
    /// client-chosen `amq.` names (see `check_queue_name`).
    pub fn declare_queue(
        &mut self,
        spec: QueueSpec,
        passive: bool,
        connection: u64,
        make_handle: impl FnOnce(&QueueSpec) -> Q,
    ) -> Result<Declared<Q>, CoreError> {
        let name = spec.name.clone();
        if let Some(existing) = self.queues.get(&*name) {
            if let Some(owner) = existing.spec.exclusive_owner {
                if owner != connection {
                    return Err(locked(&self.vhost, &name));
                }
            }
            if passive {
                return Ok(Declared::Existing(existing.clone()));
            }
            let cur = &existing.spec;
            if cur.durable != spec.durable {
                return Err(inequivalent(
                    &self.vhost,
                    "queue",
                    "durable",
                    &name,
                    bool_str(spec.durable),
                    bool_str(cur.durable),
                ));
            }
            if cur.auto_delete != spec.auto_delete {
                return Err(inequivalent(
                    &self.vhost,
                    "queue",
                    "auto_delete",
                    &name,
                    bool_str(spec.auto_delete),
                    bool_str(cur.auto_delete),
                ));
            }
            if cur.exclusive_owner.is_some() != spec.exclusive_owner.is_some() {
                return Err(locked(&self.vhost, &name));
            }
            for key in EQUIVALENCE_ARGS {
                let (a, b) = (
                    spec.arguments.inner().get(*key),
                    cur.arguments.inner().get(*key),
                );
                if !same_arg(a, b) {
                    return Err(inequivalent(
                        &self.vhost,
                        "queue",
                        key,
                        &name,
                        &value_str(a),
                        &value_str(b),
                    ));
                }
            }
            return Ok(Declared::Existing(existing.clone()));
        }
        if passive {
            return Err(CoreError::not_found("queue", &*name, &self.vhost));
        }
        let handle = make_handle(&spec);
        let entry = QueueEntry { spec, handle };
        self.queues.insert(name, entry.clone());
        Ok(Declared::Created(entry))
    }

    /// Checks that `connection` may use the queue (exclusive queues belong to one connection).
    pub fn queue_for(&self, name: &str, connection: u64) -> Result<&QueueEntry<Q>, CoreError> {
        let q = self
            .queues
            .get(name)
            .ok_or_else(|| CoreError::not_found("queue", name, &self.vhost))?;
        match q.spec.exclusive_owner {
            Some(owner) if owner != connection => Err(locked(&self.vhost, name)),
            _ => Ok(q),
        }
    }

    /// Removes a queue and its bindings (auto-delete exchanges left unbound go too).
    pub fn remove_queue(&mut self, name: &str) -> Option<QueueEntry<Q>> {
        let entry = self.queues.remove(name)?;
        if let Some(inb) = self.inbound.remove(&Dest::Queue(entry.spec.name.clone())) {
            for b in inb {
                self.unbind_from_source(&b);
            }
        }
        Some(entry)
    }

    /// `queue.bind` / `exchange.bind`.
    pub fn bind(&mut self, b: Binding, connection: u64) -> Result<(), CoreError> {
        self.check_binding_ends(&b, connection)?;
        let ex = self.exchanges.get_mut(&*b.source).expect("checked");
        if ex.bindings.contains(&b) {
            return Ok(());
        }
        ex.index_add(&b);
        ex.bindings.push(b.clone());
        self.inbound.entry(b.dest.clone()).or_default().push(b);
        Ok(())
    }

    /// `queue.unbind` / `exchange.unbind`: unbinding something that is not bound succeeds.
    pub fn unbind(&mut self, b: &Binding, connection: u64) -> Result<(), CoreError> {
        self.check_binding_ends(b, connection)?;
        if self.unbind_from_source(b) {
            self.inbound_remove(b);
        }
        Ok(())
    }

    fn check_binding_ends(&self, b: &Binding, connection: u64) -> Result<(), CoreError> {
        if b.source.is_empty() {
            return Err(CoreError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        match &b.dest {
            Dest::Queue(q) => {
                self.queue_for(q, connection)?;
            }
            Dest::Exchange(e) => {
                if e.is_empty() {
                    return Err(CoreError::AccessRefused(
                        "operation not permitted on the default exchange".into(),
                    ));
                }
                if !self.exchanges.contains_key(&**e) {
                    return Err(CoreError::not_found("exchange", &**e, &self.vhost));
                }
            }
        }
        if !self.exchanges.contains_key(&*b.source) {
            return Err(CoreError::not_found("exchange", &*b.source, &self.vhost));
        }
        if let Dest::Exchange(_) = b.dest {
            debug_assert!(b.dest.kind() == "exchange");
        }
        Ok(())
    }

    /// Removes `b` from its source exchange; deletes an auto-delete exchange that loses its
    /// last binding. Returns whether the binding existed.
    fn unbind_from_source(&mut self, b: &Binding) -> bool {
        let Some(ex) = self.exchanges.get_mut(&*b.source) else {
            return false;
        };
        let Some(i) = ex.bindings.iter().position(|x| x == b) else {
            return false;
        };
        ex.bindings.remove(i);
        ex.index_remove(b);
        if ex.spec.auto_delete && ex.bindings.is_empty() {
            let spec = ex.spec.clone();
            self.remove_exchange(&spec.name);
            self.auto_deleted.push(spec);
        }
        true
    }

    /// Exchanges removed because they were auto-delete and lost their last binding.
    pub fn take_auto_deleted(&mut self) -> Vec<ExchangeSpec> {
        std::mem::take(&mut self.auto_deleted)
    }

    fn inbound_remove(&mut self, b: &Binding) {
        if let Some(v) = self.inbound.get_mut(&b.dest) {
            if let Some(i) = v.iter().position(|x| x == b) {
                v.swap_remove(i);
            }
            if v.is_empty() {
                self.inbound.remove(&b.dest);
            }
        }
    }

    /// Resolves a publish to the queues it reaches. Errors if the exchange is missing or
    /// internal (clients may not publish to internal exchanges).
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Q>,
    ) -> Result<(), CoreError> {
        self.route_keys(exchange, &[routing_key], headers, out)
    }

    /// Like `route` with several routing keys (the publish's key plus its `CC` / `BCC`
    /// keys): each queue is reached at most once; the alternate exchange is tried only if
    /// no key routes anywhere.
    pub fn route_keys(
        &self,
        exchange: &str,
        keys: &[&str],
        headers: Option<&FieldTable>,
        out: &mut Vec<Q>,
    ) -> Result<(), CoreError> {
        if exchange.is_empty() {
            let mut seen: Vec<&str> = Vec::new();
            for key in keys {
                if let Some(q) = self.queues.get(*key) {
                    if !seen.contains(&&*q.spec.name) {
                        seen.push(&q.spec.name);
                        out.push(q.handle.clone());
                    }
                }
            }
            return Ok(());
        }
        let ex = self
            .exchanges
            .get(exchange)
            .ok_or_else(|| CoreError::not_found("exchange", exchange, &self.vhost))?;
        if ex.spec.internal {
            return Err(CoreError::AccessRefused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.vhost
            )));
        }
        let mut seen_queues: Vec<&str> = Vec::new();
        let mut seen_ex: AHashSet<&str> = AHashSet::new();
        let mut ex = ex;
        let mut alternates: AHashSet<&str> = AHashSet::new();
        loop {
            let before = out.len();
            self.route_via(ex, keys, headers, &mut seen_queues, &mut seen_ex, out);
            // Nothing routed: try the exchange's `alternate-exchange` (and its own, without
            // looping), as RabbitMQ does. It may be internal.
            if out.len() > before {
                return Ok(());
            }
            alternates.insert(&ex.spec.name);
            let next = match ex.spec.arguments.inner().get("alternate-exchange") {
                Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
                Some(AMQPValue::ShortString(s)) => Some(s.as_str()),
                _ => None,
            };
            match next.and_then(|n| self.exchanges.get(n)) {
                Some(alt) if !alternates.contains(&*alt.spec.name) => {
                    seen_ex.clear();
                    ex = alt;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Routes from one exchange through exchange-to-exchange bindings, adding each queue
    /// once.
    fn route_via<'a>(
        &'a self,
        ex: &'a Exchange,
        keys: &[&str],
        headers: Option<&FieldTable>,
        seen_queues: &mut Vec<&'a str>,
        seen_ex: &mut AHashSet<&'a str>,
        out: &mut Vec<Q>,
    ) {
        let mut stack = vec![ex];
        seen_ex.insert(&ex.spec.name);
        while let Some(ex) = stack.pop() {
            let mut visit = |d: &Dest| match d {
                Dest::Queue(name) => {
                    if !seen_queues.contains(&&**name) {
                        if let Some(q) = self.queues.get(&**name) {
                            seen_queues.push(&q.spec.name);
                            out.push(q.handle.clone());
                        }
                    }
                }
                Dest::Exchange(name) => {
                    if let Some(e) = self.exchanges.get(&**name) {
                        if seen_ex.insert(&e.spec.name) {
                            stack.push(e);
                        }
                    }
                }
            };
            match &ex.index {
                Index::Direct(m) => {
                    for key in keys {
                        if let Some(v) = m.get(*key) {
                            v.iter().for_each(&mut visit);
                        }
                    }
                }
                Index::Fanout(v) => v.iter().for_each(&mut visit),
                Index::Topic(t) => {
                    for key in keys {
                        t.matches(key, &mut visit);
                    }
                }
                Index::Headers(v) => {
                    for (args, d) in v {
                        if headers::matches(args, headers) {
                            visit(d);
                        }
                    }
                }
            }
        }
    }
}

fn locked(vhost: &str, name: &str) -> CoreError {
    CoreError::ResourceLocked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    ))
}

#[cfg(test)]
mod tests;
