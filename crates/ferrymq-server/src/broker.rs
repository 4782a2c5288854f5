//! The broker engine's shared state: the virtual hosts, the user store, broker-wide ids,
//! the resource alarms and the shutdown signal. Every protocol front (AMQP, Kafka, HTTP)
//! reaches a vhost through here, as an authenticated user (`session::Session`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinSet;

use ferrymq_auth::{AuthStore, Seed};

use crate::config::Config;
use crate::vhost::VHost;

/// Shared broker state.
pub struct Broker {
    pub config: Arc<Config>,
    ids: Arc<AtomicU64>,
    shutdown: watch::Sender<bool>,
    /// Queue and exchange owner tasks of every vhost, stopped and awaited at shutdown.
    tasks: Arc<Mutex<JoinSet<()>>>,
    vhosts: RwLock<AHashMap<String, Arc<VHost>>>,
    /// True while free disk space is below `disk_free_limit`: publishers are blocked.
    disk_alarm: watch::Sender<bool>,
    /// Memory use, limit and alarm.
    pub memory: Arc<crate::memory::MemoryMonitor>,
    /// Open AMQP connections (for `connection_max`).
    pub amqp_connections: std::sync::atomic::AtomicUsize,
    /// Policies from the configuration (they apply to vhost `/`).
    config_policies: ferrymq_core::policy::Policies,
    /// Users, vhosts and permissions.
    pub auth: Arc<AuthStore>,
    /// Open AMQP connections and channels per user (for the user limits).
    per_user: Mutex<AHashMap<String, UserCounts>>,
    /// The Kafka front (each vhost's topics and groups), once started.
    kafka: std::sync::OnceLock<Arc<crate::kafka::KafkaFront>>,
    /// Open client connections of every front (for the management API).
    pub registry: Arc<crate::stats::Registry>,
    /// Broker-wide message counters (each connection adds its channels' counts once per
    /// socket read; the HTTP front adds its own publishes and gets).
    pub global: crate::stats::MessageCounters,
}

#[derive(Default, Clone, Copy)]
struct UserCounts {
    connections: usize,
    channels: usize,
}

impl Broker {
    pub fn new(config: Config, auth: Arc<AuthStore>) -> Arc<Broker> {
        let config_policies = config.compiled_policies().unwrap_or_else(|e| {
            tracing::error!("ignoring the policies: {e}");
            Default::default()
        });
        let watermark = config.memory_watermark().unwrap_or_else(|e| {
            tracing::error!("{e}: using {}", crate::memory::DEFAULT_WATERMARK);
            crate::memory::DEFAULT_WATERMARK
        });
        let memory = Arc::new(crate::memory::MemoryMonitor::new(watermark, None));
        Arc::new(Broker {
            memory,
            amqp_connections: Default::default(),
            config: Arc::new(config),
            ids: Arc::new(AtomicU64::new(1)),
            shutdown: watch::channel(false).0,
            tasks: Arc::new(Mutex::new(JoinSet::new())),
            vhosts: RwLock::new(AHashMap::new()),
            disk_alarm: watch::channel(false).0,
            config_policies,
            auth,
            per_user: Mutex::new(AHashMap::new()),
            kafka: std::sync::OnceLock::new(),
            registry: Arc::default(),
            global: Default::default(),
        })
    }

    /// Attaches the Kafka front, so deleting a vhost deletes its Kafka side too.
    pub fn set_kafka(&self, kafka: Arc<crate::kafka::KafkaFront>) {
        let _ = self.kafka.set(kafka);
    }

    /// Opens the user store in the data dir (seeding it on first boot).
    pub fn open_auth(config: &Config) -> anyhow::Result<Arc<AuthStore>> {
        let seed = Seed {
            default_user: config.default_user.clone().zip(config.default_pass.clone()),
            definitions_present: config.load_definitions.is_some(),
        };
        let path = config.data_dir.join(crate::paths::AUTH_FILE);
        Ok(Arc::new(AuthStore::open(&path, seed)?))
    }

    pub fn user_connections(&self, user: &str) -> usize {
        self.per_user.lock().get(user).map_or(0, |c| c.connections)
    }

    pub fn user_channels(&self, user: &str) -> usize {
        self.per_user.lock().get(user).map_or(0, |c| c.channels)
    }

    pub(crate) fn add_user_connection(&self, user: &str) {
        self.per_user
            .lock()
            .entry(user.to_owned())
            .or_default()
            .connections += 1;
    }

    pub(crate) fn add_user_channel(&self, user: &str) {
        self.per_user
            .lock()
            .entry(user.to_owned())
            .or_default()
            .channels += 1;
    }

    pub(crate) fn remove_user_channels(&self, user: &str, n: usize) {
        if let Some(c) = self.per_user.lock().get_mut(user) {
            c.channels = c.channels.saturating_sub(n);
        }
    }

    /// A connection of `user` ended, with `channels` channels still counted.
    pub(crate) fn remove_user_connection(&self, user: &str, channels: usize) {
        let mut map = self.per_user.lock();
        if let Some(c) = map.get_mut(user) {
            c.connections = c.connections.saturating_sub(1);
            c.channels = c.channels.saturating_sub(channels);
            if c.connections == 0 && c.channels == 0 {
                map.remove(user);
            }
        }
    }

    /// A fresh broker-wide id (connections, consumers, queues).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The running vhost `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// Every running vhost.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().values().cloned().collect()
    }

    /// Starts vhost `name` (recovering its durable definitions and queues) unless it runs.
    pub fn start_vhost(&self, name: &str) -> anyhow::Result<Arc<VHost>> {
        if let Some(v) = self.vhost(name) {
            return Ok(v);
        }
        let policies = if name == "/" {
            self.config_policies.clone()
        } else {
            Default::default()
        };
        let v = VHost::new(
            name,
            self.config.clone(),
            self.ids.clone(),
            self.tasks.clone(),
            policies,
        );
        crate::paths::create_dir_all(&v.dir)?;
        v.load_policies()?;
        v.recover_definitions()?;
        let mut map = self.vhosts.write();
        Ok(map.entry(name.to_owned()).or_insert(v).clone())
    }

    /// Creates (or updates the metadata of) a vhost and starts it: its `amq.*` exchanges
    /// exist at once. Durable before it returns.
    pub fn create_vhost(&self, info: ferrymq_auth::VhostInfo) -> anyhow::Result<Arc<VHost>> {
        let name = info.name.clone();
        self.auth.put_vhost(info)?;
        self.start_vhost(&name)
    }

    /// Deletes a vhost: its permission rows, then everything in it (queues, exchanges,
    /// bindings, delayed and de-duplication state, Kafka topics and groups), on disk too.
    /// Connections in it are closed (320) within a second.
    pub fn delete_vhost(&self, name: &str) -> anyhow::Result<()> {
        self.auth.delete_vhost(name)?;
        if let Some(k) = self.kafka.get() {
            k.delete_vhost(name)?;
        }
        self.remove_vhost(name)
    }

    /// Stops vhost `name` and removes its data: its directory is first renamed into the
    /// trash (one atomic, durable step), then removed in the background.
    pub fn remove_vhost(&self, name: &str) -> anyhow::Result<()> {
        let Some(v) = self.vhosts.write().remove(name) else {
            return Ok(());
        };
        v.mark_deleted();
        v.stop_queues();
        let trash = self.config.data_dir.join("trash");
        crate::paths::create_dir_all(&trash)?;
        let target = trash.join(format!("{}-{}", crate::paths::encode(name), self.next_id()));
        if name == "/" {
            // Vhost `/` is the data dir itself: move what belongs to it, keep the rest.
            crate::paths::create_dir_all(&target)?;
            for entry in std::fs::read_dir(&v.dir)? {
                let entry = entry?;
                let file = entry.file_name();
                if crate::paths::is_broker_wide(&file.to_string_lossy()) {
                    continue;
                }
                std::fs::rename(entry.path(), target.join(file))?;
            }
        } else if v.dir.exists() {
            std::fs::rename(&v.dir, &target)?;
        }
        crate::paths::sync_dir(&trash)?;
        crate::paths::sync_dir(&self.config.data_dir)?;
        if let Some(parent) = v.dir.parent() {
            let _ = crate::paths::sync_dir(parent);
        }
        std::thread::spawn(move || {
            // Queue tasks may still hold files open for a moment; unlinking is fine.
            std::thread::sleep(std::time::Duration::from_secs(1));
            let _ = std::fs::remove_dir_all(&target);
        });
        Ok(())
    }

    /// Removes what a vhost deletion left in the trash before a crash.
    pub fn empty_trash(&self) {
        let _ = std::fs::remove_dir_all(self.config.data_dir.join("trash"));
    }

    /// Why publishers are blocked, in RabbitMQ's words, or `None` when no resource alarm
    /// is in effect.
    pub fn alarm_reason(&self) -> Option<&'static str> {
        match (self.memory.alarm(), *self.disk_alarm.borrow()) {
            (true, true) => Some("low on memory & disk"),
            (true, false) => Some("low on memory"),
            (false, true) => Some("low on disk"),
            (false, false) => None,
        }
    }

    /// A receiver of the disk alarm state.
    pub fn disk_alarm_signal(&self) -> watch::Receiver<bool> {
        self.disk_alarm.subscribe()
    }

    /// Checks free space in the data directory and raises or clears the disk alarm.
    pub fn check_disk(&self) {
        let limit = self.config.disk_free_limit;
        let free = match nix::sys::statvfs::statvfs(&self.config.data_dir) {
            Ok(s) => s.blocks_available().saturating_mul(s.fragment_size()),
            Err(e) => {
                tracing::warn!("cannot read free disk space: {e}");
                return;
            }
        };
        let alarm = free < limit;
        if self
            .disk_alarm
            .send_if_modified(|a| std::mem::replace(a, alarm) != alarm)
        {
            if alarm {
                tracing::warn!(
                    free,
                    limit,
                    "disk alarm: free disk space below the limit, blocking publishers"
                );
            } else {
                tracing::info!(free, limit, "disk alarm cleared");
            }
        }
    }

    /// A receiver that turns true when the broker shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops every queue and exchange task (after connections are gone) and waits for them.
    pub async fn stop_queues(&self) {
        for v in self.vhosts() {
            v.stop_queues();
        }
        let mut set = std::mem::take(&mut *self.tasks.lock());
        while set.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_core::topology::{ExchangeKind, ExchangeSpec, QueueSpec};

    fn broker(dir: &std::path::Path) -> Arc<Broker> {
        let config = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        let auth = Broker::open_auth(&config).unwrap();
        let b = Broker::new(config, auth);
        for v in b.auth.vhosts() {
            b.start_vhost(&v.name).unwrap();
        }
        b
    }

    fn queue(name: &str) -> QueueSpec {
        QueueSpec {
            name: name.into(),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vhosts_are_isolated_durable_and_deleted_with_their_data() {
        let tmp = tempfile::tempdir().unwrap();
        let b = broker(tmp.path());
        let v1 = b
            .create_vhost(ferrymq_auth::VhostInfo::new("team-a"))
            .unwrap();
        assert!(
            v1.read(|t| t.exchange("amq.topic").is_some()),
            "amq.* exist"
        );
        v1.declare_queue(queue("orders"), false, 0).unwrap();
        v1.declare_exchange(
            ExchangeSpec {
                name: "ex".into(),
                kind: ExchangeKind::Fanout,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: Default::default(),
            },
            false,
        )
        .unwrap();
        let root = b.vhost("/").unwrap();
        assert!(root.read(|t| t.queue("orders").is_none()), "not in /");
        assert!(v1.dir.starts_with(tmp.path().join("vhosts")));
        assert!(
            v1.dir.join(ferrymq_store::definitions::FILE).exists(),
            "its own journal"
        );
        b.stop_queues().await;
        drop((v1, root, b));

        // Restart: the vhost, its queue and exchange come back.
        let b = broker(tmp.path());
        let v1 = b.vhost("team-a").expect("vhost survives a restart");
        assert!(v1.read(|t| t.queue("orders").is_some()));
        assert!(v1.read(|t| t.exchange("ex").is_some()));
        let dir = v1.dir.clone();
        b.delete_vhost("team-a").unwrap();
        assert!(v1.is_deleted());
        assert!(!dir.exists(), "the vhost's directory is gone at once");
        assert!(b.vhost("team-a").is_none());
        assert!(b.auth.vhost("team-a").is_none());
        b.stop_queues().await;
        drop((v1, b));
        let b = broker(tmp.path());
        assert!(b.vhost("team-a").is_none(), "deletion is durable");
        b.stop_queues().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_the_default_vhost_keeps_broker_wide_files() {
        let tmp = tempfile::tempdir().unwrap();
        let b = broker(tmp.path());
        let root = b.vhost("/").unwrap();
        root.declare_queue(queue("q"), false, 0).unwrap();
        b.create_vhost(ferrymq_auth::VhostInfo::new("other"))
            .unwrap();
        b.delete_vhost("/").unwrap();
        assert!(!tmp.path().join("queues").exists());
        assert!(tmp.path().join(crate::paths::AUTH_FILE).exists());
        assert!(b.vhost("other").is_some());
        let again = b.create_vhost(ferrymq_auth::VhostInfo::new("/")).unwrap();
        assert!(
            again.read(|t| t.queue("q").is_none()),
            "a new / starts empty"
        );
        b.stop_queues().await;
    }
}
