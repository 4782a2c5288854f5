//! The Kafka front: [`KafkaFront`] holds one [`KafkaBroker`] per vhost (topics, partition
//! tasks, consumer groups; opened when a client first works in the vhost, `/` at start),
//! the listeners (plaintext and TLS, each advertising its own port) and the user store.
//! [`connection`] serves one client (SASL, then requests answered in order, pipelined),
//! [`sasl`] drives a connection's authentication, [`authz`] checks every request against
//! the user's permissions in the vhost, [`handlers`] turns each request into a response
//! using the pure rules of `ferrymq-kafka::api`.

mod acls;
mod admin;
mod admin_dynamic;
pub mod authz;
pub mod broker;
pub mod connection;
mod describe;
pub mod dynamic_configs;
pub mod fetch;
pub mod groups;
pub mod handlers;
pub mod partition_task;
mod scram_admin;
pub mod traffic;
pub mod txn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrymq_auth::AuthStore;
use ferrymq_kafka::fetch_session::{self, FetchSessions};
use ferrymq_kafka::sasl::Mechanism;
use ferrymq_store::log::FsyncPolicy;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

pub use broker::{KafkaBroker, Topic, VhostConfig};
pub use connection::Listener;

use crate::paths;
use crate::tls::{self, Tls};
use ferrymq_kafka::group::GroupConfig;

/// Kafka front settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub data_dir: PathBuf,
    pub advertised_host: String,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub fsync: FsyncPolicy,
    /// The vhost clients work in unless their SASL name is `vhost:user`.
    pub default_vhost: String,
    /// The SASL mechanisms offered, in the order SaslHandshake lists them.
    pub sasl_mechanisms: Vec<Mechanism>,
    /// Fetch sessions kept at most (KIP-227).
    pub fetch_session_slots: usize,
    /// Compaction's offset map memory (`log.cleaner.dedupe.buffer.size`).
    pub cleaner_dedupe_buffer_bytes: usize,
    /// The consumer-group coordinator's settings (retention, `group.max.size`).
    pub groups: GroupConfig,
}

impl KafkaConfig {
    /// The Kafka settings of the broker's configuration.
    pub fn from_config(config: &crate::Config, fsync: FsyncPolicy) -> anyhow::Result<KafkaConfig> {
        let mut sasl_mechanisms = Vec::new();
        for name in &config.kafka_sasl_mechanisms {
            let m = Mechanism::from_name(name.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown Kafka SASL mechanism {name:?} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                )
            })?;
            if !sasl_mechanisms.contains(&m) {
                sasl_mechanisms.push(m);
            }
        }
        Ok(KafkaConfig {
            data_dir: config.data_dir.clone(),
            advertised_host: config.kafka_advertised_host.clone(),
            auto_create_topics: config.kafka_auto_create_topics,
            default_partitions: config.kafka_default_partitions,
            fsync,
            default_vhost: config.kafka_vhost.clone(),
            sasl_mechanisms,
            fetch_session_slots: config.kafka_fetch_session_cache_slots,
            cleaner_dedupe_buffer_bytes: config.kafka_cleaner_dedupe_buffer_bytes,
            groups: GroupConfig {
                max_size: config.kafka_group_max_size.max(1) as usize,
                offsets_retention_ms: config
                    .kafka_offsets_retention_minutes
                    .saturating_mul(60_000),
                offsets_retention_check_interval_ms: config
                    .kafka_offsets_retention_check_interval_ms
                    .max(1),
                ..GroupConfig::default()
            },
        })
    }
}

/// Why a client cannot work in a vhost.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("vhost '{0}' does not exist")]
    NoSuchVhost(String),
    #[error("opening the Kafka data of vhost '{vhost}': {reason}")]
    Open { vhost: String, reason: String },
}

/// The Kafka side of the broker: one [`KafkaBroker`] per vhost.
pub struct KafkaFront {
    pub config: KafkaConfig,
    pub auth: Arc<AuthStore>,
    vhosts: RwLock<HashMap<String, Arc<KafkaBroker>>>,
    /// Serializes opening and deleting vhosts (held across their disk work only, never
    /// across an `.await`).
    admin: Mutex<()>,
    /// Deleted vhosts stopping and leaving the trash; awaited by [`KafkaFront::stop`].
    deleting: Mutex<Vec<JoinHandle<()>>>,
    shutdown: watch::Receiver<bool>,
    /// Where connections register for the management API (set by the server).
    registry: std::sync::OnceLock<Arc<crate::stats::Registry>>,
    /// The memory and disk alarms (set by the server): Produce requests wait while one
    /// is in effect.
    alarms: std::sync::OnceLock<(watch::Receiver<bool>, watch::Receiver<bool>)>,
    /// The fetch session cache (KIP-227), one for the listener across vhosts (sessions
    /// belong to a vhost and user).
    pub fetch_sessions: Arc<parking_lot::Mutex<FetchSessions>>,
    /// Request and response bytes per API key.
    pub traffic: traffic::Traffic,
    /// Compaction's offset map buffer, shared by every vhost's partitions.
    cleaner: Arc<partition_task::Cleaner>,
}

impl KafkaFront {
    /// Lets connections register in the broker's connection registry.
    pub fn set_registry(&self, registry: Arc<crate::stats::Registry>) {
        let _ = self.registry.set(registry);
    }

    /// Lets Produce requests wait for the memory and disk alarms.
    pub fn set_alarms(&self, memory: watch::Receiver<bool>, disk: watch::Receiver<bool>) {
        let _ = self.alarms.set((memory, disk));
    }

    /// The memory and disk alarm receivers, once set.
    pub fn alarms(&self) -> Option<&(watch::Receiver<bool>, watch::Receiver<bool>)> {
        self.alarms.get()
    }

    /// The connection registry, once set.
    pub fn registry(&self) -> Option<&Arc<crate::stats::Registry>> {
        self.registry.get()
    }

    /// Opens vhost `/` (so a data dir from before vhosts keeps its topics and offsets where
    /// they are); other vhosts open on first use.
    pub fn open(
        config: KafkaConfig,
        auth: Arc<AuthStore>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<KafkaFront>> {
        let fetch_sessions = Arc::new(parking_lot::Mutex::new(FetchSessions::new(
            config.fetch_session_slots,
            fetch_session::DEFAULT_EVICTION_MS,
            rand::random(),
        )));
        let cleaner = Arc::new(partition_task::Cleaner::new(
            config.cleaner_dedupe_buffer_bytes,
        ));
        let front = KafkaFront {
            config,
            fetch_sessions,
            traffic: Default::default(),
            cleaner,
            auth,
            vhosts: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
            deleting: Mutex::new(Vec::new()),
            shutdown,
            registry: std::sync::OnceLock::new(),
            alarms: std::sync::OnceLock::new(),
        };
        let root = KafkaBroker::open(front.vhost_config("/"), front.shutdown.clone())?;
        front.vhosts.write().insert("/".to_owned(), root);
        Ok(Arc::new(front))
    }

    fn vhost_config(&self, vhost: &str) -> VhostConfig {
        VhostConfig {
            vhost: vhost.to_owned(),
            dir: paths::vhost_dir(&self.config.data_dir, vhost),
            auto_create_topics: self.config.auto_create_topics,
            default_partitions: self.config.default_partitions,
            fsync: self.config.fsync,
            fetch_sessions: self.fetch_sessions.clone(),
            groups: self.config.groups.clone(),
            cleaner: self.cleaner.clone(),
        }
    }

    /// The Kafka side of vhost `name`, opened on first use (its disk work runs under
    /// `block_in_place`). The vhost must exist in the user store.
    pub fn vhost(&self, name: &str) -> Result<Arc<KafkaBroker>, VhostError> {
        if self.auth.vhost(name).is_none() {
            return Err(VhostError::NoSuchVhost(name.to_owned()));
        }
        if let Some(b) = self.vhosts.read().get(name) {
            return Ok(b.clone());
        }
        let _admin = self.admin.lock();
        if let Some(b) = self.vhosts.read().get(name) {
            return Ok(b.clone());
        }
        let broker = tokio::task::block_in_place(|| {
            KafkaBroker::open(self.vhost_config(name), self.shutdown.clone())
        })
        .map_err(|e| VhostError::Open {
            vhost: name.to_owned(),
            reason: e.to_string(),
        })?;
        info!(vhost = name, "kafka: vhost opened");
        self.vhosts.write().insert(name.to_owned(), broker.clone());
        Ok(broker)
    }

    /// The vhosts whose Kafka side is open, by name.
    pub fn open_vhosts(&self) -> Vec<(String, Arc<KafkaBroker>)> {
        let mut v: Vec<_> = self
            .vhosts
            .read()
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Deletes vhost `name`'s Kafka side: its connections close at once, its topics and
    /// committed offsets (`<vhost dir>/kafka`) move into `<data>/trash` (one atomic,
    /// durable rename), and in the background its partition tasks and group coordinator
    /// stop and the trash entry is removed ([`stop`](Self::stop) waits for that). Call it
    /// after removing the vhost from the user store, so no client enters it in between.
    /// Deleting a vhost that was never opened still removes its data; a vhost created
    /// again under the same name starts empty. Needs a tokio runtime.
    pub fn delete_vhost(&self, name: &str) -> std::io::Result<()> {
        let _admin = self.admin.lock();
        let broker = self.vhosts.write().remove(name);
        if let Some(b) = &broker {
            b.mark_deleted();
        }
        let dir = paths::vhost_dir(&self.config.data_dir, name).join("kafka");
        let moved = if dir.exists() {
            let trash = self.config.data_dir.join("trash");
            crate::paths::create_dir_all(&trash)?;
            let target = trash.join(format!(
                "kafka-{}-{:016x}",
                paths::encode(name),
                rand::random::<u64>()
            ));
            std::fs::rename(&dir, &target)?;
            paths::sync_dir(&trash)?;
            if let Some(parent) = dir.parent() {
                paths::sync_dir(parent)?;
            }
            Some(target)
        } else {
            None
        };
        let task = tokio::spawn(async move {
            if let Some(b) = broker {
                b.stop().await;
            }
            if let Some(target) = moved {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(target)).await;
            }
        });
        let mut deleting = self.deleting.lock();
        deleting.retain(|t| !t.is_finished());
        deleting.push(task);
        info!(vhost = name, "kafka: vhost deleted");
        Ok(())
    }

    /// Stops every vhost's tasks (after the listeners' connections are gone: call it after
    /// the shutdown signal and the listener tasks ended) and waits for them, and for
    /// deleted vhosts still being removed.
    pub async fn stop(&self) {
        let all: Vec<Arc<KafkaBroker>> = {
            let _admin = self.admin.lock();
            self.vhosts.write().drain().map(|(_, b)| b).collect()
        };
        for b in all {
            b.stop().await;
        }
        let deleting = std::mem::take(&mut *self.deleting.lock());
        for t in deleting {
            let _ = t.await;
        }
    }
}

/// Binds a Kafka listener (plaintext) on `bind:port`; returns its address and the
/// accept-loop task. Its connections advertise its port.
pub async fn listen(
    front: Arc<KafkaFront>,
    bind: &str,
    port: u16,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = format!("{bind}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding Kafka listener on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let this = Listener {
        port: local.port(),
        tls: false,
    };
    let task = tokio::spawn(accept_loop(front, listener, this));
    Ok((local, task))
}

async fn accept_loop(front: Arc<KafkaFront>, listener: TcpListener, this: Listener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    connections.spawn(connection::serve_tcp(
                        front.clone(),
                        this.clone(),
                        stream,
                        peer,
                    ));
                }
                Err(e) => {
                    warn!("kafka accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = broker::raised(front.shutdown.clone()) => break,
        }
    }
    drop(listener);
    drain(connections).await;
}

/// Binds the Kafka TLS listener (SSL and SASL_SSL) on `bind:port`; returns its address
/// and the accept-loop task. Each connection completes its handshake in its own task (a
/// slow or garbage handshake delays nobody else); its connections advertise this port.
pub async fn listen_tls(
    front: Arc<KafkaFront>,
    tls: Arc<Tls>,
    bind: &str,
    port: u16,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = format!("{bind}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding Kafka TLS listener on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let this = Listener {
        port: local.port(),
        tls: true,
    };
    let task = tokio::spawn(accept_tls_loop(front, tls, listener, this));
    Ok((local, task))
}

async fn accept_tls_loop(
    front: Arc<KafkaFront>,
    tls: Arc<Tls>,
    listener: TcpListener,
    this: Listener,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    connections.spawn(serve_tls(
                        front.clone(),
                        tls.clone(),
                        this.clone(),
                        stream,
                        peer,
                    ));
                }
                Err(e) => {
                    warn!("kafka TLS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = broker::raised(front.shutdown.clone()) => break,
        }
    }
    drop(listener);
    drain(connections).await;
}

/// Handshakes (with the TLS module's timeout), takes the CN of a verified client
/// certificate, and serves the connection over the TLS stream's halves.
async fn serve_tls(
    front: Arc<KafkaFront>,
    tls: Arc<Tls>,
    this: Listener,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::select! {
        r = tls::accept(&tls, stream) => r,
        _ = broker::raised(front.shutdown.clone()) => return,
    };
    let stream = match handshake {
        Ok(s) => s,
        Err(e) => {
            debug!(peer = %addr, error = %e, "kafka TLS handshake failed");
            return;
        }
    };
    let certificate_user = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(tls::peer_identity)
        .and_then(|id| id.cn);
    let local = stream.get_ref().0.local_addr().unwrap_or(addr);
    let peer = connection::Peer {
        addr,
        local,
        certificate_user,
    };
    let (rd, wr) = tokio::io::split(stream);
    connection::serve(front, this, peer, rd, wr).await
}

/// Waits for the connections to close (they saw the shutdown signal), then aborts the
/// stragglers.
async fn drain(mut connections: JoinSet<()>) {
    let wait = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .is_err()
    {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests;
