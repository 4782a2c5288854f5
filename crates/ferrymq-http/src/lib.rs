//! The HTTP front: RabbitMQ's management API (`/api/…`, the paths, fields, status codes
//! and quirks its clients rely on: rabbitmqadmin, KEDA, Flower, kombu, Terraform) and
//! FerryMQ's own Kafka endpoints (`/api/kafka/…`), on `http_port` and, with TLS, on
//! `https_port` with the broker's certificate. Like the other fronts it only translates:
//! every change goes through the engine's `Session` (a user in a vhost) or, for users,
//! vhosts and permissions, through admin-only endpoints into the `AuthStore` and
//! `Broker`. Statistics are read from the owners' counters on demand; the sampler
//! ([`stats`]) keeps the short histories rates come from.
//!
//! Layout: [`server`] (listeners, connections, shutdown), [`api`] (routes, one module per
//! area), [`auth`] (basic auth and tag rules), [`body`] (lenient JSON bodies), [`list`]
//! (paging, filtering, sorting, columns), [`ui`] (the embedded web UI), [`amqp_json`] (field tables, properties,
//! payloads, `properties_key`), [`history`] and [`stats`] (rates), [`error`] (every
//! error answer), [`metrics`] (Prometheus, on the management port and on
//! `prometheus_port`).

pub mod amqp_json;
pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod history;
pub mod list;
pub mod metrics;
pub mod server;
pub mod stats;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ferrymq_server::broker::Broker;
use ferrymq_server::kafka::KafkaFront;

pub use server::start;

/// A listener as `/api/overview` lists it and the port-listener health check checks it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub protocol: &'static str,
    pub addr: SocketAddr,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub kafka: Arc<KafkaFront>,
    pub stats: Arc<stats::Stats>,
    pub started: Instant,
    pub listeners: Arc<Vec<ListenerInfo>>,
    /// `ferrymq@<hostname>`.
    pub node: Arc<str>,
    /// The broker's permanent identity (`rabbitmq_cluster_permanent_id` in the metrics),
    /// made at first boot and kept in the data directory.
    pub cluster_id: Arc<str>,
}

/// The permanent id in `data_dir/cluster_id`, created (`ferrymq-cluster-id-` and 22
/// random base64url characters, RabbitMQ's shape) if missing.
pub fn cluster_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("cluster_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    let id = format!(
        "ferrymq-cluster-id-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let tmp = data_dir.join("cluster_id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The node name FerryMQ reports (RabbitMQ's `rabbit@host`).
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("ferrymq@{host}")
}
