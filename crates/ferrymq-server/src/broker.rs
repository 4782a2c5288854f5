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
    /// Policies from the configuration (they apply to vhost `/`).
    config_policies: ferrymq_core::policy::Policies,
    /// Users, vhosts and permissions.
    pub auth: Arc<AuthStore>,
    /// Open AMQP connections and channels per user (for the user limits).
    per_user: Mutex<AHashMap<String, UserCounts>>,
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
        Arc::new(Broker {
            config: Arc::new(config),
            ids: Arc::new(AtomicU64::new(1)),
            shutdown: watch::channel(false).0,
            tasks: Arc::new(Mutex::new(JoinSet::new())),
            vhosts: RwLock::new(AHashMap::new()),
            disk_alarm: watch::channel(false).0,
            config_policies,
            auth,
            per_user: Mutex::new(AHashMap::new()),
        })
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
        std::fs::create_dir_all(&v.dir)?;
        v.recover_definitions()?;
        let mut map = self.vhosts.write();
        Ok(map.entry(name.to_owned()).or_insert(v).clone())
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
        std::fs::create_dir_all(&trash)?;
        let target = trash.join(format!("{}-{}", crate::paths::encode(name), self.next_id()));
        if name == "/" {
            // Vhost `/` is the data dir itself: move what belongs to it, keep the rest.
            std::fs::create_dir_all(&target)?;
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
