//! rabbitmq_prometheus's metric families, names, HELP texts and labels, rendered from
//! a [`Snapshot`] of the owners' counters (taken with every topology lock held only to
//! clone queue handles; values are loaded and rendered outside any lock).
//!
//! Three views, as RabbitMQ serves them: aggregated (`/metrics`: per-object families
//! summed into one unlabelled sample), per object (`/metrics/per-object`: one sample per
//! queue `{vhost,queue}`, exchange `{vhost,exchange}`, channel `{channel}`), and detailed
//! (`/metrics/detailed?family=…&vhost=…`: only the asked groups, per object, with the
//! `rabbitmq_detailed_` prefix).

use std::sync::atomic::Ordering::Relaxed;

use ferrymq_server::stats::Counts;

use super::exposition::{Exposition, Kind};
use crate::AppState;

/// One queue's numbers.
pub struct QueueRow {
    pub vhost: String,
    pub name: String,
    pub ready: u64,
    pub unacked: u64,
    pub ready_bytes: u64,
    pub consumers: u64,
    pub counts: Counts,
}

pub struct ExchangeRow {
    pub vhost: String,
    pub name: String,
    pub publish_in: u64,
    pub publish_out: u64,
}

pub struct ChannelRow {
    /// The API's channel name, `PEER -> LOCAL (N)`.
    pub name: String,
    pub consumers: u64,
    pub unacked: u64,
    pub unconfirmed: u64,
    pub prefetch: u64,
    pub global_prefetch: u64,
    pub counts: Counts,
}

pub struct ConnectionRow {
    /// The API's connection name, `PEER -> LOCAL`.
    pub name: String,
    pub recv_oct: u64,
    pub send_oct: u64,
    pub recv_cnt: u64,
    pub send_cnt: u64,
    pub channels: u64,
}

/// Node-wide numbers.
pub struct Node {
    pub fd_used: u64,
    pub fd_total: u64,
    pub mem_used: u64,
    pub mem_limit: u64,
    pub disk_free: u64,
    pub disk_free_limit: u64,
    pub disk_alarm: bool,
    pub mem_alarm: bool,
    pub uptime_s: f64,
    /// fsyncs since start and the seconds spent in them (`ferrymq_store::io_stats`).
    pub sync_ops: u64,
    pub sync_seconds: f64,
    pub sockets: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
    pub queues_declared: u64,
    pub queues_created: u64,
    pub queues_deleted: u64,
    pub global: Counts,
}

/// Everything the RabbitMQ families are rendered from.
pub struct Snapshot {
    pub node: Node,
    pub queues: Vec<QueueRow>,
    pub exchanges: Vec<ExchangeRow>,
    pub channels: Vec<ChannelRow>,
    pub connections: Vec<ConnectionRow>,
    pub node_name: String,
    pub cluster_id: String,
    /// Half messages stored and not yet decided (vhosts in view).
    pub half_pending: u64,
}

/// Which vhosts a view covers (`None`: all).
pub type VhostFilter = Option<Vec<String>>;

fn wanted(filter: &VhostFilter, vhost: &str) -> bool {
    match filter {
        None => true,
        Some(f) => f.iter().any(|v| v == vhost),
    }
}

impl Snapshot {
    /// Reads every owner's counters. Topology locks are held only while cloning the
    /// handles of a vhost's queues and listing its exchange names.
    pub fn take(s: &AppState, vhosts: &VhostFilter) -> Snapshot {
        let broker = &s.broker;
        let mut queues = Vec::new();
        let mut exchanges = Vec::new();
        let (mut declared, mut created, mut deleted) = (0, 0, 0);
        let mut half_pending = 0;
        for v in broker.vhosts() {
            declared += v.queue_churn.declared.load(Relaxed);
            created += v.queue_churn.created.load(Relaxed);
            deleted += v.queue_churn.deleted.load(Relaxed);
            if !wanted(vhosts, &v.name) {
                continue;
            }
            half_pending += v.half_pending();
            let (handles, names) = v.read(|t| {
                (
                    t.queues().map(|q| q.handle.clone()).collect::<Vec<_>>(),
                    t.exchanges().map(|e| e.name.clone()).collect::<Vec<_>>(),
                )
            });
            queues.reserve(handles.len());
            for h in handles {
                let st = h.stats();
                queues.push(QueueRow {
                    vhost: v.name.clone(),
                    name: h.name().to_owned(),
                    ready: st.ready.load(Relaxed),
                    unacked: st.unacked.load(Relaxed),
                    ready_bytes: st.ready_bytes.load(Relaxed),
                    consumers: st.consumers.load(Relaxed),
                    counts: st.counters.load(),
                });
            }
            for name in names {
                let (publish_in, publish_out) = v.exchange_counts(&name);
                exchanges.push(ExchangeRow {
                    vhost: v.name.clone(),
                    name: name.to_string(),
                    publish_in,
                    publish_out,
                });
            }
        }
        queues.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        exchanges.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        let mut channels = Vec::new();
        let mut connections = Vec::new();
        for c in broker.registry.connections() {
            if !wanted(vhosts, &c.meta.vhost) {
                continue;
            }
            let chans = c.channels.lock().clone();
            connections.push(ConnectionRow {
                name: c.name.clone(),
                recv_oct: c.counters.recv_oct.load(Relaxed),
                send_oct: c.counters.send_oct.load(Relaxed),
                recv_cnt: c.counters.recv_cnt.load(Relaxed),
                send_cnt: c.counters.send_cnt.load(Relaxed),
                channels: chans.len() as u64,
            });
            for ch in chans {
                channels.push(ChannelRow {
                    name: format!("{} ({})", c.name, ch.number),
                    consumers: ch.consumers.lock().len() as u64,
                    unacked: ch.unacked.load(Relaxed),
                    unconfirmed: ch.unconfirmed.load(Relaxed),
                    prefetch: u64::from(ch.prefetch_count.load(Relaxed)),
                    global_prefetch: u64::from(ch.global_prefetch_count.load(Relaxed)),
                    counts: ch.counters.load(),
                });
            }
        }
        let (fd_used, fd_total) = crate::api::overview::fds();
        let registry = &broker.registry;
        let node = Node {
            fd_used,
            fd_total,
            mem_used: crate::api::overview::resident_memory(),
            mem_limit: broker.memory.limit(),
            disk_free: crate::api::overview::disk_free(&broker.config.data_dir),
            disk_free_limit: broker.config.disk_free_limit,
            disk_alarm: *broker.disk_alarm_signal().borrow(),
            mem_alarm: broker.memory.alarm(),
            uptime_s: s.started.elapsed().as_secs_f64(),
            sync_ops: ferrymq_store::io_stats::sync_ops(),
            sync_seconds: ferrymq_store::io_stats::sync_seconds(),
            sockets: registry.len() as u64,
            connections_opened: registry.opened.load(Relaxed),
            connections_closed: registry.closed.load(Relaxed),
            channels_opened: registry.channel_churn.opened.load(Relaxed),
            channels_closed: registry.channel_churn.closed.load(Relaxed),
            queues_declared: declared,
            queues_created: created,
            queues_deleted: deleted,
            global: broker.global.load(),
        };
        Snapshot {
            node,
            queues,
            exchanges,
            channels,
            connections,
            node_name: s.node.to_string(),
            cluster_id: s.cluster_id.to_string(),
            half_pending,
        }
    }
}

/// A per-object family: name (without prefix), type, help, and how to read a row.
struct Fam<R> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    get: fn(&R) -> u64,
}

const fn fam<R>(name: &'static str, kind: Kind, help: &'static str, get: fn(&R) -> u64) -> Fam<R> {
    Fam {
        name,
        kind,
        help,
        get,
    }
}

use Kind::{Counter, Gauge};

const QUEUE_COARSE: &[Fam<QueueRow>] = &[
    fam(
        "queue_messages_ready",
        Gauge,
        "Messages ready to be delivered to consumers",
        |q| q.ready,
    ),
    fam(
        "queue_messages_unacked",
        Gauge,
        "Messages delivered to consumers but not yet acknowledged",
        |q| q.unacked,
    ),
    fam(
        "queue_messages",
        Gauge,
        "Sum of ready and unacknowledged messages - total queue depth",
        |q| q.ready + q.unacked,
    ),
];
const QUEUE_CONSUMERS: &[Fam<QueueRow>] =
    &[fam("queue_consumers", Gauge, "Consumers on a queue", |q| {
        q.consumers
    })];
const QUEUE_METRICS: &[Fam<QueueRow>] = &[
    fam("queue_consumers", Gauge, "Consumers on a queue", |q| {
        q.consumers
    }),
    fam(
        "queue_messages_ready_bytes",
        Gauge,
        "Size in bytes of ready messages",
        |q| q.ready_bytes,
    ),
];
const QUEUE_DELIVERY: &[Fam<QueueRow>] = &[
    fam("queue_get_ack_total", Counter, "Total number of messages fetched from a queue with basic.get in manual acknowledgement mode", |q| q.counts.get),
    fam("queue_get_total", Counter, "Total number of messages fetched from a queue with basic.get in automatic acknowledgement mode", |q| q.counts.get_no_ack),
    fam("queue_messages_delivered_ack_total", Counter, "Total number of messages delivered from a queue to consumers in manual acknowledgement mode", |q| q.counts.deliver),
    fam("queue_messages_delivered_total", Counter, "Total number of messages delivered from a queue to consumers in automatic acknowledgement mode", |q| q.counts.deliver_no_ack),
    fam("queue_messages_redelivered_total", Counter, "Total number of messages redelivered from a queue to consumers", |q| q.counts.redeliver),
    fam("queue_messages_acked_total", Counter, "Total number of messages acknowledged by consumers on a queue", |q| q.counts.ack),
    fam("queue_get_empty_total", Counter, "Total number of times basic.get operations fetched no message on a queue", |q| q.counts.get_empty),
];
const QUEUE_PUBLISHED: &[Fam<QueueRow>] = &[fam(
    "queue_messages_published_total",
    Counter,
    "Total number of messages published to queues",
    |q| q.counts.publish,
)];
const EXCHANGE: &[Fam<ExchangeRow>] = &[
    fam(
        "exchange_messages_published_in_total",
        Counter,
        "Count of messages published in to an exchange, i.e. not taking account of routing.",
        |e| e.publish_in,
    ),
    fam(
        "exchange_messages_published_out_total",
        Counter,
        "Count of messages published out of an exchange, i.e. taking account of routing.",
        |e| e.publish_out,
    ),
];
const CHANNEL_METRICS: &[Fam<ChannelRow>] = &[
    fam("channel_consumers", Gauge, "Consumers on a channel", |c| {
        c.consumers
    }),
    fam(
        "channel_messages_unacked",
        Gauge,
        "Delivered but not yet acknowledged messages",
        |c| c.unacked,
    ),
    fam(
        "channel_messages_unconfirmed",
        Gauge,
        "Published but not yet confirmed messages",
        |c| c.unconfirmed,
    ),
    fam(
        "consumer_prefetch",
        Gauge,
        "Limit of unacknowledged messages for each consumer",
        |c| c.prefetch,
    ),
    fam(
        "channel_prefetch",
        Gauge,
        "Total limit of unacknowledged messages for all consumers on a channel",
        |c| c.global_prefetch,
    ),
];
const CHANNEL_EXCHANGE: &[Fam<ChannelRow>] = &[
    fam("channel_messages_published_total", Counter, "Total number of messages published into an exchange on a channel", |c| c.counts.publish),
    fam("channel_messages_confirmed_total", Counter, "Total number of messages published into an exchange and confirmed on the channel", |c| c.counts.confirm),
    fam("channel_messages_unroutable_returned_total", Counter, "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", |c| c.counts.return_unroutable),
    fam("channel_messages_unroutable_dropped_total", Counter, "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", |c| c.counts.drop_unroutable),
];
const CHANNEL_QUEUE: &[Fam<ChannelRow>] = &[
    fam(
        "channel_get_ack_total",
        Counter,
        "Total number of messages fetched with basic.get in manual acknowledgement mode",
        |c| c.counts.get,
    ),
    fam(
        "channel_get_total",
        Counter,
        "Total number of messages fetched with basic.get in automatic acknowledgement mode",
        |c| c.counts.get_no_ack,
    ),
    fam(
        "channel_messages_delivered_ack_total",
        Counter,
        "Total number of messages delivered to consumers in manual acknowledgement mode",
        |c| c.counts.deliver,
    ),
    fam(
        "channel_messages_delivered_total",
        Counter,
        "Total number of messages delivered to consumers in automatic acknowledgement mode",
        |c| c.counts.deliver_no_ack,
    ),
    fam(
        "channel_messages_redelivered_total",
        Counter,
        "Total number of messages redelivered to consumers",
        |c| c.counts.redeliver,
    ),
    fam(
        "channel_messages_acked_total",
        Counter,
        "Total number of messages acknowledged by consumers",
        |c| c.counts.ack,
    ),
    fam(
        "channel_get_empty_total",
        Counter,
        "Total number of times basic.get operations fetched no message",
        |c| c.counts.get_empty,
    ),
];
const CONNECTION_COARSE: &[Fam<ConnectionRow>] = &[
    fam(
        "connection_incoming_bytes_total",
        Counter,
        "Total number of bytes received on a connection",
        |c| c.recv_oct,
    ),
    fam(
        "connection_outgoing_bytes_total",
        Counter,
        "Total number of bytes sent on a connection",
        |c| c.send_oct,
    ),
];
const CONNECTION_METRICS: &[Fam<ConnectionRow>] = &[
    fam(
        "connection_incoming_packets_total",
        Counter,
        "Total number of packets received on a connection",
        |c| c.recv_cnt,
    ),
    fam(
        "connection_outgoing_packets_total",
        Counter,
        "Total number of packets sent on a connection",
        |c| c.send_cnt,
    ),
    fam(
        "connection_channels",
        Gauge,
        "Channels on a connection",
        |c| c.channels,
    ),
];

/// The per-object groups, by RabbitMQ's names (`/metrics/detailed?family=NAME`).
pub const GROUPS: &[&str] = &[
    "queue_coarse_metrics",
    "queue_consumer_count",
    "queue_metrics",
    "queue_delivery_metrics",
    "queue_exchange_metrics",
    "exchange_metrics",
    "channel_metrics",
    "channel_exchange_metrics",
    "channel_queue_metrics",
    "connection_coarse_metrics",
    "connection_metrics",
];

/// How the per-object groups are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One unlabelled sample per family: the sum over objects.
    Aggregated,
    /// One labelled sample per object.
    PerObject,
}

fn rows<R>(
    e: &mut Exposition,
    prefix: &str,
    mode: Mode,
    fams: &[Fam<R>],
    items: &[R],
    labels: fn(&R) -> [(&'static str, &str); 2],
    name_buf: &mut String,
) {
    for f in fams {
        name_buf.clear();
        name_buf.push_str(prefix);
        name_buf.push_str(f.name);
        e.family(name_buf, f.kind, f.help);
        match mode {
            Mode::Aggregated => {
                let sum: u64 = items.iter().map(|r| (f.get)(r)).sum();
                e.sample(name_buf, &[], sum);
            }
            Mode::PerObject => {
                for r in items {
                    let l = labels(r);
                    let n = if l[1].0.is_empty() { 1 } else { 2 };
                    e.sample(name_buf, &l[..n], (f.get)(r));
                }
            }
        }
    }
}

fn queue_labels(q: &QueueRow) -> [(&'static str, &str); 2] {
    [("vhost", &q.vhost), ("queue", &q.name)]
}

fn exchange_labels(x: &ExchangeRow) -> [(&'static str, &str); 2] {
    [("vhost", &x.vhost), ("exchange", &x.name)]
}

/// The second pair is empty: one label.
fn channel_labels(c: &ChannelRow) -> [(&'static str, &str); 2] {
    [("channel", &c.name), ("", "")]
}

fn connection_labels(c: &ConnectionRow) -> [(&'static str, &str); 2] {
    [("channel", &c.name), ("", "")]
}

/// Writes group `group` of the per-object families.
pub fn group(e: &mut Exposition, s: &Snapshot, prefix: &str, mode: Mode, group: &str) {
    let mut name = String::with_capacity(64);
    let queue = queue_labels;
    match group {
        "queue_coarse_metrics" => rows(e, prefix, mode, QUEUE_COARSE, &s.queues, queue, &mut name),
        "queue_consumer_count" => rows(
            e,
            prefix,
            mode,
            QUEUE_CONSUMERS,
            &s.queues,
            queue,
            &mut name,
        ),
        "queue_metrics" => rows(e, prefix, mode, QUEUE_METRICS, &s.queues, queue, &mut name),
        "queue_delivery_metrics" => {
            rows(e, prefix, mode, QUEUE_DELIVERY, &s.queues, queue, &mut name)
        }
        "queue_exchange_metrics" => rows(
            e,
            prefix,
            mode,
            QUEUE_PUBLISHED,
            &s.queues,
            queue,
            &mut name,
        ),
        "exchange_metrics" => rows(
            e,
            prefix,
            mode,
            EXCHANGE,
            &s.exchanges,
            exchange_labels,
            &mut name,
        ),
        "channel_metrics" | "channel_exchange_metrics" | "channel_queue_metrics" => {
            let fams = match group {
                "channel_metrics" => CHANNEL_METRICS,
                "channel_exchange_metrics" => CHANNEL_EXCHANGE,
                _ => CHANNEL_QUEUE,
            };
            rows(
                e,
                prefix,
                mode,
                fams,
                &s.channels,
                channel_labels,
                &mut name,
            )
        }
        "connection_coarse_metrics" | "connection_metrics" => {
            let fams = if group == "connection_metrics" {
                CONNECTION_METRICS
            } else {
                CONNECTION_COARSE
            };
            // RabbitMQ labels connection samples with the connection process under
            // `channel` too; FerryMQ puts the connection's name there.
            rows(
                e,
                prefix,
                mode,
                fams,
                &s.connections,
                connection_labels,
                &mut name,
            )
        }
        _ => {}
    }
}

/// `rabbitmq_identity_info` (`endpoint`: `aggregated`, `per-object`, `detailed`) and
/// `rabbitmq_build_info`: Grafana's RabbitMQ dashboards join every query on them.
pub fn identity(e: &mut Exposition, s: &Snapshot, endpoint: &str) {
    e.family(
        "rabbitmq_identity_info",
        Kind::Untyped,
        "RabbitMQ node & cluster identity info",
    );
    e.sample(
        "rabbitmq_identity_info",
        &[
            ("rabbitmq_node", &s.node_name),
            ("rabbitmq_cluster", &s.node_name),
            ("rabbitmq_cluster_permanent_id", &s.cluster_id),
            ("rabbitmq_endpoint", endpoint),
        ],
        1u64,
    );
}

fn build_info(e: &mut Exposition) {
    e.family(
        "rabbitmq_build_info",
        Kind::Untyped,
        "RabbitMQ & Erlang/OTP version info",
    );
    e.sample(
        "rabbitmq_build_info",
        &[
            ("rabbitmq_version", crate::api::overview::RABBITMQ_VERSION),
            ("prometheus_plugin_version", env!("CARGO_PKG_VERSION")),
            ("prometheus_client_version", "ferrymq"),
            ("erlang_version", "none"),
            ("product_name", "FerryMQ"),
            ("product_version", env!("CARGO_PKG_VERSION")),
        ],
        1u64,
    );
}

/// Node families (no labels), the global counters (`protocol="amqp091"`), the object
/// totals and the build info: what both `/metrics` and `/metrics/per-object` carry.
pub fn node(e: &mut Exposition, s: &Snapshot) {
    let n = &s.node;
    e.single(
        "rabbitmq_alarms_file_descriptor_limit",
        Kind::Untyped,
        "is 1 if file descriptor limit alarm is in effect",
        n.fd_total > 0 && n.fd_used >= n.fd_total,
    );
    e.single(
        "rabbitmq_alarms_free_disk_space_watermark",
        Kind::Untyped,
        "is 1 if free disk space watermark alarm is in effect",
        n.disk_alarm,
    );
    e.single(
        "rabbitmq_alarms_memory_used_watermark",
        Kind::Untyped,
        "is 1 if VM memory watermark alarm is in effect",
        n.mem_alarm,
    );
    e.single(
        "rabbitmq_connections_opened_total",
        Counter,
        "Total number of connections opened",
        n.connections_opened,
    );
    e.single(
        "rabbitmq_connections_closed_total",
        Counter,
        "Total number of connections closed or terminated",
        n.connections_closed,
    );
    e.single(
        "rabbitmq_channels_opened_total",
        Counter,
        "Total number of channels opened",
        n.channels_opened,
    );
    e.single(
        "rabbitmq_channels_closed_total",
        Counter,
        "Total number of channels closed",
        n.channels_closed,
    );
    e.single(
        "rabbitmq_queues_declared_total",
        Counter,
        "Total number of queues declared",
        n.queues_declared,
    );
    e.single(
        "rabbitmq_queues_created_total",
        Counter,
        "Total number of queues created",
        n.queues_created,
    );
    e.single(
        "rabbitmq_queues_deleted_total",
        Counter,
        "Total number of queues deleted",
        n.queues_deleted,
    );
    e.single(
        "rabbitmq_process_open_fds",
        Gauge,
        "Open file descriptors",
        n.fd_used,
    );
    e.single(
        "rabbitmq_process_open_tcp_sockets",
        Gauge,
        "Open TCP sockets",
        n.sockets,
    );
    e.single(
        "rabbitmq_process_resident_memory_bytes",
        Gauge,
        "Memory used in bytes",
        n.mem_used,
    );
    e.single(
        "rabbitmq_disk_space_available_bytes",
        Gauge,
        "Disk space available in bytes",
        n.disk_free,
    );
    e.single(
        "rabbitmq_process_max_fds",
        Gauge,
        "Open file descriptors limit",
        n.fd_total,
    );
    e.single(
        "rabbitmq_resident_memory_limit_bytes",
        Gauge,
        "Memory high watermark in bytes",
        n.mem_limit,
    );
    e.single(
        "rabbitmq_disk_space_available_limit_bytes",
        Gauge,
        "Free disk space low watermark in bytes",
        n.disk_free_limit,
    );
    e.single(
        "rabbitmq_erlang_uptime_seconds",
        Gauge,
        "Node uptime",
        n.uptime_s,
    );
    e.single(
        "rabbitmq_io_sync_ops_total",
        Counter,
        "Total number of I/O sync operations",
        n.sync_ops,
    );
    e.single(
        "rabbitmq_io_sync_time_seconds_total",
        Counter,
        "Total I/O sync time",
        n.sync_seconds,
    );
    let g = &n.global;
    let amqp = [("protocol", "amqp091")];
    let typed = [
        ("protocol", "amqp091"),
        ("queue_type", "rabbit_classic_queue"),
    ];
    let consumers: u64 = s.queues.iter().map(|q| q.consumers).sum();
    /// (name, help, labels, value)
    type Global<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u64);
    let global: [Global; 14] = [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", &amqp, g.publish),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", &amqp, g.publish.saturating_sub(g.drop_unroutable + g.return_unroutable)),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", &amqp, g.drop_unroutable),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", &amqp, g.return_unroutable),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", &amqp, g.confirm),
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", &typed, g.deliver + g.deliver_no_ack + g.get + g.get_no_ack),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", &typed, g.deliver),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", &typed, g.deliver_no_ack),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", &typed, g.get),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", &typed, g.get_no_ack),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", &typed, g.get_empty),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", &typed, g.redeliver),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", &typed, g.ack),
        ("rabbitmq_global_consumers", "Current number of consumers", &amqp, consumers),
    ];
    for (name, help, labels, v) in global.iter() {
        let kind = if name.ends_with("_total") {
            Counter
        } else {
            Gauge
        };
        e.family(name, kind, help);
        e.sample(name, labels, *v);
    }
    e.single(
        "rabbitmq_connections",
        Gauge,
        "Connections currently open",
        s.connections.len(),
    );
    e.single(
        "rabbitmq_channels",
        Gauge,
        "Channels currently open",
        s.channels.len(),
    );
    e.single(
        "rabbitmq_consumers",
        Gauge,
        "Consumers currently connected",
        consumers,
    );
    e.single("rabbitmq_queues", Gauge, "Queues available", s.queues.len());
    e.single(
        "ferrymq_half_messages",
        Gauge,
        "Half messages (x-transaction-id publishes) stored and not yet decided",
        s.half_pending,
    );
    build_info(e);
}

/// `/metrics` or `/metrics/per-object`.
pub fn render(e: &mut Exposition, s: &Snapshot, mode: Mode) {
    identity(
        e,
        s,
        if mode == Mode::Aggregated {
            "aggregated"
        } else {
            "per-object"
        },
    );
    node(e, s);
    for g in GROUPS {
        // `queue_metrics` repeats `queue_consumers` (RabbitMQ reads both from one table and
        // drops `queue_consumer_count` when `queue_metrics` is there).
        if *g == "queue_consumer_count" {
            continue;
        }
        group(e, s, "rabbitmq_", mode, g);
    }
}

/// `/metrics/detailed`: the asked groups per object, `rabbitmq_detailed_` prefix.
pub fn render_detailed(e: &mut Exposition, s: &Snapshot, groups: &[String]) {
    identity(e, s, "detailed");
    let has_queue_metrics = groups.iter().any(|g| g == "queue_metrics");
    let mut done: Vec<&str> = Vec::new();
    for g in GROUPS {
        if !groups.iter().any(|x| x == g) || done.contains(g) {
            continue;
        }
        if *g == "queue_consumer_count" && has_queue_metrics {
            continue;
        }
        done.push(g);
        group(e, s, "rabbitmq_detailed_", Mode::PerObject, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let q = |name: &str, ready, unacked| QueueRow {
            vhost: "/".into(),
            name: name.into(),
            ready,
            unacked,
            ready_bytes: 0,
            consumers: 1,
            counts: Counts {
                ack: 2,
                ..Counts::default()
            },
        };
        Snapshot {
            node: Node {
                fd_used: 10,
                fd_total: 1024,
                mem_used: 1,
                mem_limit: 2,
                disk_free: 3,
                disk_free_limit: 4,
                disk_alarm: false,
                mem_alarm: false,
                uptime_s: 1.5,
                sync_ops: 7,
                sync_seconds: 0.25,
                sockets: 0,
                connections_opened: 0,
                connections_closed: 0,
                channels_opened: 0,
                channels_closed: 0,
                queues_declared: 2,
                queues_created: 2,
                queues_deleted: 0,
                global: Counts::default(),
            },
            queues: vec![q("a", 3, 1), q("b", 4, 0)],
            exchanges: vec![ExchangeRow {
                vhost: "/".into(),
                name: "x".into(),
                publish_in: 5,
                publish_out: 10,
            }],
            channels: Vec::new(),
            connections: Vec::new(),
            node_name: "ferrymq@h".into(),
            cluster_id: "ferrymq-cluster-id-x".into(),
            half_pending: 0,
        }
    }

    fn lines(mode: Mode) -> Vec<String> {
        let mut e = Exposition::default();
        render(&mut e, &snapshot(), mode);
        e.finish().lines().map(str::to_owned).collect()
    }

    #[test]
    fn aggregated_sums_and_per_object_labels() {
        let agg = lines(Mode::Aggregated);
        assert!(agg.contains(&"rabbitmq_queue_messages_ready 7".to_owned()));
        assert!(agg.contains(&"rabbitmq_queue_messages 8".to_owned()));
        assert!(agg.contains(&"rabbitmq_queue_messages_acked_total 4".to_owned()));
        assert!(agg.contains(&"rabbitmq_queues 2".to_owned()));
        assert!(agg.contains(&"rabbitmq_consumers 2".to_owned()));
        assert!(agg.contains(&"# TYPE rabbitmq_queue_messages_ready gauge".to_owned()));
        assert!(agg.contains(&"# TYPE rabbitmq_io_sync_ops_total counter".to_owned()));
        assert!(agg.contains(&"rabbitmq_io_sync_ops_total 7".to_owned()));
        assert!(agg.contains(&"rabbitmq_io_sync_time_seconds_total 0.25".to_owned()));
        assert_eq!(
            agg[0],
            "# HELP rabbitmq_identity_info RabbitMQ node & cluster identity info"
        );
        assert!(agg.contains(&"rabbitmq_identity_info{rabbitmq_node=\"ferrymq@h\",rabbitmq_cluster=\"ferrymq@h\",rabbitmq_cluster_permanent_id=\"ferrymq-cluster-id-x\",rabbitmq_endpoint=\"aggregated\"} 1".to_owned()));
        let per = lines(Mode::PerObject);
        assert!(
            per.contains(&"rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"a\"} 3".to_owned())
        );
        assert!(per.contains(&"rabbitmq_queue_messages{vhost=\"/\",queue=\"b\"} 4".to_owned()));
        assert!(per.contains(
            &"rabbitmq_exchange_messages_published_out_total{vhost=\"/\",exchange=\"x\"} 10"
                .to_owned()
        ));
        // Every family is declared once, before its samples.
        let mut seen = std::collections::HashSet::new();
        for l in per.iter().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(l.clone()), "{l} twice");
        }
    }

    #[test]
    fn detailed_has_only_the_asked_groups() {
        let mut e = Exposition::default();
        render_detailed(
            &mut e,
            &snapshot(),
            &["queue_consumer_count".into(), "nonsense".into()],
        );
        let text = e.finish();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            families,
            [
                "rabbitmq_identity_info untyped",
                "rabbitmq_detailed_queue_consumers gauge"
            ]
        );
        assert!(text.contains("rabbitmq_detailed_queue_consumers{vhost=\"/\",queue=\"a\"} 1\n"));
    }
}
