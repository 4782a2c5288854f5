//! Live statistics and the connection registry, for the management API (and later the
//! metrics endpoints). Nothing here is on the message path's critical section: every
//! counter is owned by one task (a queue task, a connection task) that counts in plain
//! integers ([`Counts`]) and publishes them into shared atomics ([`MessageCounters`]) once
//! per round or socket read; readers load the atomics on demand. There is no central
//! statistics process that could fall behind (RabbitMQ's best-known management problem):
//! a 5 s sampler in the HTTP front keeps the short histories that rates are computed from.
//!
//! [`Registry`] lists the open client connections of every protocol front (AMQP, Kafka)
//! with what the API shows about them and a way to close them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

/// Message counters as one owner accumulates them between publications.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub publish: u64,
    pub publish_bytes: u64,
    pub confirm: u64,
    /// Deliveries to consumers that must ack.
    pub deliver: u64,
    pub deliver_no_ack: u64,
    /// `basic.get` with ack / without.
    pub get: u64,
    pub get_no_ack: u64,
    pub get_empty: u64,
    pub redeliver: u64,
    pub ack: u64,
    /// Unroutable publishes dropped / returned to a `mandatory` publisher.
    pub drop_unroutable: u64,
    pub return_unroutable: u64,
}

macro_rules! each_count {
    ($m:ident) => {
        $m!(
            publish,
            publish_bytes,
            confirm,
            deliver,
            deliver_no_ack,
            get,
            get_no_ack,
            get_empty,
            redeliver,
            ack,
            drop_unroutable,
            return_unroutable
        )
    };
}

impl Counts {
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    /// The field-wise sum.
    pub fn plus(&self, o: &Counts) -> Counts {
        macro_rules! sum {
            ($($f:ident),*) => { Counts { $($f: self.$f.wrapping_add(o.$f)),* } };
        }
        each_count!(sum)
    }

    /// `(name, value)` pairs in RabbitMQ's `message_stats` names (`publish_bytes` is
    /// FerryMQ's).
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        macro_rules! list {
            ($($f:ident),*) => { [$((stringify!($f), self.$f)),*] };
        }
        each_count!(list)
    }
}

/// Shared message counters of one object (queue, channel, the whole broker): monotonic,
/// written only by their owner (or owners, for the broker's), read by anyone.
#[derive(Debug, Default)]
pub struct MessageCounters {
    publish: AtomicU64,
    publish_bytes: AtomicU64,
    confirm: AtomicU64,
    deliver: AtomicU64,
    deliver_no_ack: AtomicU64,
    get: AtomicU64,
    get_no_ack: AtomicU64,
    get_empty: AtomicU64,
    redeliver: AtomicU64,
    ack: AtomicU64,
    drop_unroutable: AtomicU64,
    return_unroutable: AtomicU64,
}

impl MessageCounters {
    /// Adds what the owner counted since its last call and zeroes it.
    pub fn add(&self, d: &Counts) {
        macro_rules! add {
            ($($f:ident),*) => {{ $(if d.$f != 0 { self.$f.fetch_add(d.$f, Ordering::Relaxed); })* }};
        }
        each_count!(add)
    }

    /// The current values.
    pub fn load(&self) -> Counts {
        macro_rules! load {
            ($($f:ident),*) => { Counts { $($f: self.$f.load(Ordering::Relaxed)),* } };
        }
        each_count!(load)
    }
}

/// A queue's live numbers, published by its task at the end of every round.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub counters: MessageCounters,
    pub ready: AtomicU64,
    pub unacked: AtomicU64,
    pub ready_bytes: AtomicU64,
    pub consumers: AtomicU64,
    /// Messages held back by delayed retries.
    pub delayed: AtomicU64,
}

/// An exchange's message counters, as the management API shows them: `publish_in`
/// (messages published into it) and `publish_out` (deliveries it routed to queues: a
/// message routed to three queues counts three, as in RabbitMQ).
#[derive(Debug, Default)]
pub struct ExchangeCounters {
    pub publish_in: AtomicU64,
    pub publish_out: AtomicU64,
}

impl ExchangeCounters {
    pub fn add(&self, publish_in: u64, publish_out: u64) {
        if publish_in != 0 {
            self.publish_in.fetch_add(publish_in, Ordering::Relaxed);
        }
        if publish_out != 0 {
            self.publish_out.fetch_add(publish_out, Ordering::Relaxed);
        }
    }

    /// `(publish_in, publish_out)`.
    pub fn load(&self) -> (u64, u64) {
        (
            self.publish_in.load(Ordering::Relaxed),
            self.publish_out.load(Ordering::Relaxed),
        )
    }
}

/// Exchange counts a connection accumulates between flushes (one entry per exchange it
/// published to since the last flush), then adds to the shared [`ExchangeCounters`].
#[derive(Debug, Default)]
pub struct ExchangeCounts {
    pending: Vec<(bytes::Bytes, u64, u64)>,
}

impl ExchangeCounts {
    /// Counts one publish into `exchange` that went to `routed` queues.
    #[inline]
    pub fn count(&mut self, exchange: &bytes::Bytes, routed: usize) {
        match self.pending.iter_mut().rev().find(|(x, ..)| x == exchange) {
            Some((_, i, o)) => {
                *i += 1;
                *o += routed as u64;
            }
            None => self.pending.push((exchange.clone(), 1, routed as u64)),
        }
    }

    /// Adds what was counted to the vhost's counters and forgets it.
    pub fn flush(&mut self, vhost: &crate::vhost::VHost) {
        for (x, i, o) in self.pending.drain(..) {
            vhost
                .exchange_counters(&String::from_utf8_lossy(&x))
                .add(i, o);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// A vhost's queue churn counters.
#[derive(Debug, Default)]
pub struct QueueChurn {
    pub declared: AtomicU64,
    pub created: AtomicU64,
    pub deleted: AtomicU64,
}

/// A consumer as the API lists it.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    pub tag: String,
    pub queue: String,
    pub ack_required: bool,
    pub exclusive: bool,
    pub prefetch_count: u32,
    pub arguments: FieldTable,
}

/// One AMQP channel's live numbers, shared between its connection (the only writer) and
/// the registry.
#[derive(Debug)]
pub struct ChannelStats {
    pub number: u16,
    pub counters: MessageCounters,
    pub prefetch_count: AtomicU32,
    pub global_prefetch_count: AtomicU32,
    pub unacked: AtomicU64,
    pub unconfirmed: AtomicU64,
    pub confirm: AtomicBool,
    pub transactional: AtomicBool,
    pub consumers: Mutex<Vec<ConsumerInfo>>,
}

impl ChannelStats {
    pub fn new(number: u16) -> ChannelStats {
        ChannelStats {
            number,
            counters: MessageCounters::default(),
            prefetch_count: AtomicU32::new(0),
            global_prefetch_count: AtomicU32::new(0),
            unacked: AtomicU64::new(0),
            unconfirmed: AtomicU64::new(0),
            confirm: AtomicBool::new(false),
            transactional: AtomicBool::new(false),
            consumers: Mutex::new(Vec::new()),
        }
    }
}

/// A connection's byte counters.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub recv_oct: AtomicU64,
    pub recv_cnt: AtomicU64,
    pub send_oct: AtomicU64,
    pub send_cnt: AtomicU64,
}

impl ConnectionCounters {
    #[inline]
    pub fn received(&self, bytes: usize) {
        self.recv_oct.fetch_add(bytes as u64, Ordering::Relaxed);
        self.recv_cnt.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn sent(&self, bytes: usize) {
        self.send_oct.fetch_add(bytes as u64, Ordering::Relaxed);
        self.send_cnt.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which front a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Amqp091,
    Kafka,
}

impl Protocol {
    /// As RabbitMQ names protocols in its connection list.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amqp091 => "AMQP 0-9-1",
            Protocol::Kafka => "Kafka",
        }
    }
}

/// What a connection is, as the API shows it (fixed once the connection is open).
#[derive(Debug, Clone)]
pub struct ConnectionMeta {
    pub protocol: Protocol,
    pub user: String,
    pub vhost: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// AMQP `client_properties`; for Kafka, `client_id` and the like.
    pub client_properties: FieldTable,
    pub frame_max: u32,
    pub channel_max: u16,
    /// Negotiated heartbeat, seconds.
    pub timeout: u16,
    /// Unix ms.
    pub connected_at: u64,
}

/// A registered connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    pub id: u64,
    /// RabbitMQ's form: `"PEER -> LOCAL"`.
    pub name: String,
    pub meta: ConnectionMeta,
    pub counters: ConnectionCounters,
    pub channels: Mutex<Vec<Arc<ChannelStats>>>,
    close: watch::Sender<Option<String>>,
    /// The registry's channel churn counters.
    churn: Arc<ChannelChurn>,
}

impl ConnectionEntry {
    /// Asks the connection to close with 320 CONNECTION_FORCED and `reason`.
    pub fn close(&self, reason: &str) {
        self.close.send_replace(Some(reason.to_owned()));
    }

    pub fn channel_count(&self) -> usize {
        self.channels.lock().len()
    }

    pub fn add_channel(&self, c: Arc<ChannelStats>) {
        self.channels.lock().push(c);
        self.churn.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub fn remove_channel(&self, number: u16) {
        let mut channels = self.channels.lock();
        let before = channels.len();
        channels.retain(|c| c.number != number);
        let gone = (before - channels.len()) as u64;
        self.churn.closed.fetch_add(gone, Ordering::Relaxed);
    }
}

/// The open connections of every front.
#[derive(Debug, Default)]
pub struct Registry {
    connections: RwLock<std::collections::BTreeMap<u64, Arc<ConnectionEntry>>>,
    /// Connections opened and closed since start (churn).
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    /// Channels opened and closed since start.
    pub channel_churn: Arc<ChannelChurn>,
}

/// Channels opened and closed since start (shared by every connection's entry).
#[derive(Debug, Default)]
pub struct ChannelChurn {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
}

/// Unregisters its connection when dropped (however the connection task ends).
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    pub entry: Arc<ConnectionEntry>,
    /// Turns `Some(reason)` when the API asks the connection to close.
    pub close_requested: watch::Receiver<Option<String>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let open = self.entry.channels.lock().len() as u64;
        self.registry
            .channel_churn
            .closed
            .fetch_add(open, Ordering::Relaxed);
        self.registry.connections.write().remove(&self.entry.id);
        self.registry.closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Registry {
    /// Registers a connection; it stays listed until the returned value is dropped.
    pub fn register(self: &Arc<Self>, id: u64, meta: ConnectionMeta) -> Registration {
        let (close, close_requested) = watch::channel(None);
        let entry = Arc::new(ConnectionEntry {
            id,
            name: format!("{} -> {}", meta.peer, meta.local),
            meta,
            counters: ConnectionCounters::default(),
            channels: Mutex::new(Vec::new()),
            close,
            churn: self.channel_churn.clone(),
        });
        self.connections.write().insert(id, entry.clone());
        self.opened.fetch_add(1, Ordering::Relaxed);
        Registration {
            registry: self.clone(),
            entry,
            close_requested,
        }
    }

    /// Every open connection, oldest first.
    pub fn connections(&self) -> Vec<Arc<ConnectionEntry>> {
        self.connections.read().values().cloned().collect()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<ConnectionEntry>> {
        self.connections
            .read()
            .values()
            .find(|c| c.name == name)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.connections.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_publish_into_counters_and_sum() {
        let c = MessageCounters::default();
        let mut d = Counts {
            publish: 3,
            ack: 2,
            ..Counts::default()
        };
        c.add(&d);
        d.publish = 1;
        c.add(&d);
        let now = c.load();
        assert_eq!((now.publish, now.ack, now.deliver), (4, 4, 0));
        assert_eq!(now.plus(&now).publish, 8);
        assert!(Counts::default().is_zero());
        assert_eq!(now.fields()[0], ("publish", 4));
    }

    #[test]
    fn registry_lists_until_dropped_and_closes_on_request() {
        let r = Arc::new(Registry::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let meta = ConnectionMeta {
            protocol: Protocol::Amqp091,
            user: "guest".into(),
            vhost: "/".into(),
            peer: addr,
            local: "127.0.0.1:5672".parse().unwrap(),
            tls: false,
            client_properties: FieldTable::default(),
            frame_max: 131072,
            channel_max: 2047,
            timeout: 60,
            connected_at: 0,
        };
        let reg = r.register(7, meta);
        assert_eq!(reg.entry.name, "127.0.0.1:5000 -> 127.0.0.1:5672");
        let found = r.by_name("127.0.0.1:5000 -> 127.0.0.1:5672").unwrap();
        found.close("bye");
        assert_eq!(reg.close_requested.borrow().as_deref(), Some("bye"));
        assert_eq!(r.len(), 1);
        drop(reg);
        assert!(r.is_empty());
        assert_eq!(r.closed.load(Ordering::Relaxed), 1);
    }
}
