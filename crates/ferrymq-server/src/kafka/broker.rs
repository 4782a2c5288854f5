//! One vhost's Kafka side: [`KafkaBroker`] owns the vhost's topics (metadata in
//! `<vhost dir>/kafka`, one owner task per partition, [`partition_task`]), its consumer-group
//! coordinator ([`GroupService`], offsets journal in `<vhost dir>/kafka/groups`) and its
//! producer-id blocks. The [`KafkaFront`](super::KafkaFront) holds one per vhost.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use ferrymq_kafka::api::configs::TopicConfig;
use ferrymq_kafka::api::create_topics;
use ferrymq_kafka::fetch_session::FetchSessions;
use ferrymq_kafka::kafka_protocol::ResponseError;
use ferrymq_store::log::FsyncPolicy;
use ferrymq_store::topics::{TopicMeta, TopicStore};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use super::dynamic_configs::DynamicConfigs;
use super::partition_task::{self, PartitionHandle};
use crate::kafka_groups::GroupService;
use crate::kafka_txn::TxnService;

/// What a vhost's Kafka side needs to open.
#[derive(Debug, Clone)]
pub struct VhostConfig {
    /// The vhost's name.
    pub vhost: String,
    /// The vhost's directory (`paths::vhost_dir`): topics in `kafka/`, offsets in
    /// `kafka/groups/`.
    pub dir: PathBuf,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub fsync: FsyncPolicy,
    /// The listener's fetch session cache (KIP-227), shared by all vhosts.
    pub fetch_sessions: Arc<Mutex<FetchSessions>>,
    /// The group coordinator's settings.
    pub groups: ferrymq_kafka::group::GroupConfig,
    /// Compaction's shared offset map buffer (one pass at a time in the broker).
    pub cleaner: Arc<partition_task::Cleaner>,
}

/// A topic: metadata and its partitions' handles.
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: RwLock<Vec<PartitionHandle>>,
    /// Config overrides as stored.
    pub overrides: RwLock<BTreeMap<String, String>>,
    /// The resolved configs FerryMQ acts on.
    pub config: RwLock<TopicConfig>,
    /// The replication factor asked for (served as one replica: this node).
    pub replication_factor: u16,
    /// Manual replica assignments as asked, by partition (stored, not acted on).
    pub replicas: RwLock<BTreeMap<u32, Vec<i32>>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<PartitionHandle> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned())
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.read().len()
    }

    fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.clone(),
            id: self.id.as_u128(),
            partitions: self.partition_count() as u32,
            configs: self.overrides.read().clone(),
            replication_factor: self.replication_factor,
            replicas: self.replicas.read().clone(),
        }
    }
}

/// One vhost's Kafka side.
pub struct KafkaBroker {
    pub config: VhostConfig,
    store: TopicStore,
    /// Shared with the group coordinator's "does this partition exist" check.
    topics: Arc<RwLock<BTreeMap<String, Arc<Topic>>>>,
    /// The consumer-group coordinator (`crate::kafka_groups`).
    pub groups: GroupService,
    /// The transaction coordinator (`crate::kafka_txn`).
    pub txns: TxnService,
    /// Dynamic broker and group configs (`super::dynamic_configs`).
    pub dynamic: RwLock<DynamicConfigs>,
    /// Held across an alteration's read-modify-write of `dynamic` (no lost updates).
    pub dynamic_writer: Mutex<()>,
    /// Serializes topic creation, deletion and partition changes (never held across an
    /// `.await`).
    admin: Mutex<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    producer_ids: Arc<Mutex<ProducerIds>>,
    /// The broker's shutdown signal.
    shutdown: watch::Receiver<bool>,
    /// Set when this vhost is deleted: its connections close.
    deleted: watch::Sender<bool>,
}

/// Producer ids are handed out from blocks reserved durably in `<data>/kafka/producer-ids`,
/// so that no id is given twice across restarts.
struct ProducerIds {
    path: PathBuf,
    next: i64,
    reserved: i64,
}

const PRODUCER_ID_BLOCK: i64 = 1000;

impl ProducerIds {
    fn open(path: PathBuf) -> std::io::Result<ProducerIds> {
        let reserved = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().strip_prefix("reserved=")?.parse().ok())
            .unwrap_or(0);
        Ok(ProducerIds {
            path,
            next: reserved,
            reserved,
        })
    }

    fn allocate(&mut self) -> std::io::Result<i64> {
        if self.next >= self.reserved {
            let reserved = self.next + PRODUCER_ID_BLOCK;
            let tmp = self.path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "reserved={reserved}")?;
            ferrymq_store::io_stats::sync_all(&f)?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                crate::paths::sync_dir(dir)?;
            }
            self.reserved = reserved;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

impl KafkaBroker {
    /// Opens the topic store and starts every stored partition.
    pub fn open(config: VhostConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<Arc<Self>> {
        let kafka_dir = config.dir.join("kafka");
        crate::paths::create_dir_all(&kafka_dir)?;
        let (store, metas) = TopicStore::open(&kafka_dir)?;
        let dynamic = RwLock::new(DynamicConfigs::load(&kafka_dir)?);
        let producer_ids = Arc::new(Mutex::new(ProducerIds::open(
            kafka_dir.join("producer-ids"),
        )?));
        let topics: Arc<RwLock<BTreeMap<String, Arc<Topic>>>> = Arc::default();
        let lookup = topics.clone();
        let groups = GroupService::start_with(
            &config.dir,
            Arc::new(move |name: &str, partition: i32| {
                lookup
                    .read()
                    .get(name)
                    .is_some_and(|t| partition >= 0 && (partition as usize) < t.partition_count())
            }),
            config.groups.clone(),
        )?;
        let lookup = topics.clone();
        let ids = producer_ids.clone();
        let txns = TxnService::start(
            &config.dir,
            Arc::new(move |name: &str, partition: i32| {
                lookup.read().get(name).and_then(|t| t.partition(partition))
            }),
            groups.clone(),
            Arc::new(move || {
                let mut ids = ids.lock();
                tokio::task::block_in_place(|| ids.allocate())
                    .map_err(|e| warn!(error = %e, "could not allocate a producer id"))
                    .ok()
            }),
        )?;
        let broker = Arc::new(KafkaBroker {
            config,
            store,
            topics,
            groups,
            txns,
            dynamic,
            dynamic_writer: Mutex::new(()),
            admin: Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            producer_ids,
            shutdown,
            deleted: watch::channel(false).0,
        });
        broker
            .groups
            .set_group_configs(broker.dynamic.read().group_overrides());
        for meta in metas {
            let topic = broker.start_topic(&meta)?;
            broker.topics.write().insert(meta.name.clone(), topic);
        }
        let names: Vec<String> = broker.topics.read().keys().cloned().collect();
        if !names.is_empty() {
            info!(vhost = broker.config.vhost, topics = ?names, "kafka topics recovered");
        }
        Ok(broker)
    }

    fn start_topic(&self, meta: &TopicMeta) -> anyhow::Result<Arc<Topic>> {
        let config = TopicConfig::resolve(&self.dynamic.read().effective(&meta.configs));
        let mut handles = Vec::new();
        for p in 0..meta.partitions {
            handles.push(self.start_partition(&meta.name, p, &config)?);
        }
        Ok(Arc::new(Topic {
            name: meta.name.clone(),
            id: Uuid::from_u128(meta.id),
            partitions: RwLock::new(handles),
            overrides: RwLock::new(meta.configs.clone()),
            config: RwLock::new(config),
            replication_factor: meta.replication_factor,
            replicas: RwLock::new(meta.replicas.clone()),
        }))
    }

    fn start_partition(
        &self,
        topic: &str,
        partition: u32,
        config: &TopicConfig,
    ) -> anyhow::Result<PartitionHandle> {
        let dir = self.store.partition_dir(topic, partition);
        let (handle, join) = partition_task::start(
            dir,
            config.clone(),
            self.config.fsync,
            self.config.cleaner.clone(),
        )
        .map_err(|e| anyhow::anyhow!("opening {topic}-{partition}: {e}"))?;
        self.tasks.lock().push(join);
        Ok(handle)
    }

    /// Resolves once the broker shuts down or this vhost is deleted (at once if either
    /// already happened).
    pub async fn closed(&self) {
        tokio::select! {
            _ = raised(self.shutdown.clone()) => {}
            _ = raised(self.deleted.subscribe()) => {}
        }
    }

    /// Whether [`closed`](Self::closed) would resolve at once.
    pub fn is_closed(&self) -> bool {
        *self.shutdown.borrow() || *self.deleted.borrow()
    }

    /// Where a partition's files are (for sizes in the management API).
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.store.partition_dir(topic, partition)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    pub fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    /// Creates a topic (validated by the caller with `create_topics::check`).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, (ResponseError, String)> {
        self.create_topic_replicated(name, partitions, 1, Vec::new(), configs)
    }

    /// [`create_topic`](Self::create_topic) keeping a replication factor and a manual
    /// assignment (one replica list per partition, or none) as asked.
    pub fn create_topic_replicated(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, (ResponseError, String)> {
        let _admin = self.admin.lock();
        if self.topics.read().contains_key(name) {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ));
        }
        let meta = TopicMeta {
            name: name.to_owned(),
            id: uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .as_u128(),
            partitions: partitions as u32,
            configs,
            replication_factor: replication_factor.max(1) as u16,
            replicas: assignment
                .into_iter()
                .enumerate()
                .map(|(p, r)| (p as u32, r))
                .collect(),
        };
        let storage = |e: &dyn std::fmt::Display| {
            warn!(topic = name, error = %e, "could not create topic");
            (ResponseError::KafkaStorageError, e.to_string())
        };
        tokio::task::block_in_place(|| self.store.save(&meta)).map_err(|e| storage(&e))?;
        let topic =
            tokio::task::block_in_place(|| self.start_topic(&meta)).map_err(|e| storage(&e))?;
        self.topics.write().insert(name.to_owned(), topic.clone());
        info!(topic = name, partitions, id = %topic.id, "kafka topic created");
        Ok(topic)
    }

    /// Deletes a topic: it disappears at once, its partition tasks stop (their inboxes
    /// close once the last handle is dropped) and its files are removed.
    pub fn delete_topic(&self, name: &str) -> Result<(), ResponseError> {
        let _admin = self.admin.lock();
        let Some(topic) = self.topics.write().remove(name) else {
            return Err(ResponseError::UnknownTopicOrPartition);
        };
        let meta = topic.meta();
        topic.partitions.write().clear();
        // The partition tasks may still hold files open; removal of open files is fine on
        // Unix, and the tasks end when their inbox closes.
        tokio::task::block_in_place(|| self.store.delete(&meta)).map_err(|e| {
            warn!(topic = name, error = %e, "could not delete topic files");
            ResponseError::KafkaStorageError
        })?;
        info!(topic = name, "kafka topic deleted");
        Ok(())
    }

    /// Raises a topic's partition count.
    pub fn create_partitions(
        &self,
        topic: &Topic,
        count: i32,
        validate_only: bool,
    ) -> Result<(), (ResponseError, String)> {
        self.create_partitions_assigned(topic, count, None, validate_only)
    }

    /// [`create_partitions`](Self::create_partitions) with a manual assignment of the new
    /// partitions (stored as asked).
    pub fn create_partitions_assigned(
        &self,
        topic: &Topic,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), (ResponseError, String)> {
        let _admin = self.admin.lock();
        let current = topic.partition_count();
        create_topics::check_new_count(
            current,
            count,
            assignment.as_deref(),
            usize::from(topic.replication_factor),
            ferrymq_kafka::api::metadata::NODE_ID,
        )?;
        if validate_only {
            return Ok(());
        }
        let config = topic.config.read().clone();
        let mut added = Vec::new();
        for p in current as u32..count as u32 {
            let h = tokio::task::block_in_place(|| self.start_partition(&topic.name, p, &config))
                .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
            added.push(h);
        }
        topic.partitions.write().extend(added);
        if let Some(a) = assignment {
            let mut replicas = topic.replicas.write();
            for (i, r) in a.into_iter().enumerate() {
                replicas.insert((current + i) as u32, r);
            }
        }
        tokio::task::block_in_place(|| self.store.save(&topic.meta()))
            .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
        Ok(())
    }

    /// Replaces a topic's config overrides (validated), durably, and tells its partitions.
    pub fn set_configs(
        &self,
        topic: &Topic,
        overrides: BTreeMap<String, String>,
    ) -> Result<(), ResponseError> {
        let _admin = self.admin.lock();
        let config = TopicConfig::resolve(&self.dynamic.read().effective(&overrides));
        *topic.overrides.write() = overrides;
        *topic.config.write() = config.clone();
        tokio::task::block_in_place(|| self.store.save(&topic.meta())).map_err(|e| {
            warn!(topic = topic.name, error = %e, "could not save topic configs");
            ResponseError::KafkaStorageError
        })?;
        for p in topic.partitions.read().iter() {
            let _ =
                p.tx.try_send(partition_task::Command::Configure(config.clone()));
        }
        Ok(())
    }

    /// Replaces the dynamic broker and group configs (validated), durably, and tells every
    /// partition its topic's configs resolved over the new broker defaults.
    pub fn set_dynamic(&self, configs: DynamicConfigs) -> Result<(), ResponseError> {
        let _admin = self.admin.lock();
        let dir = self.config.dir.join("kafka");
        tokio::task::block_in_place(|| configs.save(&dir)).map_err(|e| {
            warn!(error = %e, "could not save dynamic configs");
            ResponseError::KafkaStorageError
        })?;
        if !self.groups.set_group_configs(configs.group_overrides()) {
            warn!("group configs not passed to the group coordinator (busy or stopped)");
        }
        *self.dynamic.write() = configs;
        let dynamic = self.dynamic.read();
        for topic in self.topics.read().values() {
            let config = TopicConfig::resolve(&dynamic.effective(&topic.overrides.read()));
            *topic.config.write() = config.clone();
            for p in topic.partitions.read().iter() {
                let _ =
                    p.tx.try_send(partition_task::Command::Configure(config.clone()));
            }
        }
        Ok(())
    }

    /// A new producer id.
    pub fn allocate_producer_id(&self) -> std::io::Result<i64> {
        let mut ids = self.producer_ids.lock();
        tokio::task::block_in_place(|| ids.allocate())
    }

    /// Marks this vhost deleted: its connections close (they watch
    /// [`closed`](Self::closed)).
    pub fn mark_deleted(&self) {
        self.deleted.send_replace(true);
    }

    /// Stops the group coordinator and every partition task (after the connections are
    /// gone) and waits for them.
    pub async fn stop(&self) {
        self.txns.clone().shutdown().await;
        self.groups.clone().shutdown().await;
        self.topics.write().clear();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Resolves once `flag` is true (at once if it is; also if its sender is gone).
pub async fn raised(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await.map(|_| ());
}
