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
//! error answer).

pub mod amqp_json;
pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod history;
pub mod list;
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
