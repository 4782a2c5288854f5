//! One virtual host: its topology (exchanges, queues, bindings), its extension exchanges'
//! state, its policies and its definitions journal. Topology changes take the write lock
//! briefly; publishes take the read lock to route. Queue state is never behind a lock: each
//! queue has its owner task. Everything the vhost stores lives under its own directory
//! (`paths::vhost_dir`), so deleting a vhost removes exactly its data.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ferrymq_core::topology::{
    Binding, Declared, Dest, ExchangeKind, ExchangeSpec, QueueSpec, Topology,
};
use ferrymq_core::CoreError;
use ferrymq_store::definitions::{DefOp, DefinitionsJournal};
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinSet;

use crate::config::{Config, PolicyConfig};
use crate::queue_task::{self, Outbound, QueueHandle};
use ahash::AHashMap;
use ferrymq_core::queue::ConsumerId;
use tokio::sync::mpsc;

/// A virtual host.
pub struct VHost {
    pub name: String,
    /// Where the vhost keeps its data (the data dir itself for `/`).
    pub dir: PathBuf,
    pub config: Arc<Config>,
    topology: RwLock<Topology<QueueHandle>>,
    /// Bumped on every topology change, so channels can cache routes.
    epoch: AtomicU64,
    /// Broker-wide id generator (connections, consumers, queues).
    ids: Arc<AtomicU64>,
    /// The broker's owned tasks (queue, delay tasks), stopped and awaited at shutdown.
    tasks: Arc<Mutex<JoinSet<()>>>,
    /// Direct reply-to consumers by their pseudo-queue name (`amq.rabbitmq.reply-to.…`).
    reply_to: Mutex<AHashMap<String, ReplyConsumer>>,
    /// The durable definitions journal (absent until `recover_definitions`).
    definitions: Mutex<Option<DefinitionsJournal>>,
    /// Extension exchange types' state: delay tasks and de-duplication caches.
    exchanges: crate::exchange_state::ExchangeState,
    /// The half-message task (started by `recover_definitions`).
    half: Mutex<Option<crate::halfmsg::HalfHandle>>,
    /// Policies and operator policies in force (compiled from the configuration's, for
    /// vhost `/`, and the stored ones).
    policies: RwLock<ferrymq_core::policy::Policies>,
    /// Policies set through the API or definitions (`policies.json`); writers hold it
    /// while they persist.
    stored_policies: Mutex<PolicySet>,
    /// Open AMQP connections in this vhost (for `max-connections`).
    pub connections: AtomicUsize,
    /// Set when the vhost is deleted: new work is refused.
    deleted: AtomicBool,
    /// Queue declarations (passive ones too), creations and deletions since start.
    pub queue_churn: crate::stats::QueueChurn,
    /// The broker-wide budget for message bodies held in queue memory.
    pub queue_memory: Arc<ferrymq_core::budget::QueueMemory>,
}

/// A binding is durable when both of its ends are.
fn binding_is_durable<Q: Clone>(t: &Topology<Q>, b: &Binding) -> bool {
    let source = t.exchange(&b.source).is_some_and(|e| e.durable);
    let dest = match &b.dest {
        Dest::Queue(q) => t
            .queue(q)
            .is_some_and(|q| q.spec.durable && q.spec.exclusive_owner.is_none()),
        Dest::Exchange(e) => t.exchange(e).is_some_and(|e| e.durable),
    };
    source && dest
}

/// Applies one journal op to a scratch topology (errors cannot happen for a journal we
/// wrote; a damaged one is cut at its first bad record, so any left are ignored).
fn replay(t: &mut Topology<()>, op: DefOp) {
    let r = match op {
        DefOp::DeclareExchange {
            name,
            kind,
            auto_delete,
            internal,
            arguments,
        } => match ExchangeKind::parse(&kind) {
            Some(kind) => t
                .declare_exchange(
                    ExchangeSpec {
                        name: name.into(),
                        kind,
                        durable: true,
                        auto_delete,
                        internal,
                        arguments,
                    },
                    false,
                )
                .map(|_| ()),
            None => Ok(()),
        },
        DefOp::DeleteExchange { name } => t.delete_exchange(&name, false),
        DefOp::DeclareQueue {
            name,
            auto_delete,
            arguments,
        } => t
            .declare_queue(
                QueueSpec {
                    name: name.into(),
                    durable: true,
                    exclusive_owner: None,
                    auto_delete,
                    arguments,
                },
                false,
                0,
                |_| (),
            )
            .map(|_| ()),
        DefOp::DeleteQueue { name } => {
            t.remove_queue(&name);
            Ok(())
        }
        DefOp::Bind(b) => t.bind(b, 0),
        DefOp::Unbind(b) => t.unbind(&b, 0),
    };
    if let Err(e) = r {
        tracing::warn!("definitions replay: {e}");
    }
    t.take_auto_deleted();
}

/// The file (in the vhost's directory) with the policies set through the API.
pub const POLICIES_FILE: &str = "policies.json";

/// Policies and operator policies as stored.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PolicySet {
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    #[serde(default)]
    pub operator_policies: Vec<PolicyConfig>,
}

impl PolicySet {
    fn list(&self, operator: bool) -> &[PolicyConfig] {
        if operator {
            &self.operator_policies
        } else {
            &self.policies
        }
    }

    fn list_mut(&mut self, operator: bool) -> &mut Vec<PolicyConfig> {
        if operator {
            &mut self.operator_policies
        } else {
            &mut self.policies
        }
    }
}

/// The configuration's policies not overridden by a stored one of the same name, then the
/// stored ones.
fn merged(config: &[PolicyConfig], stored: &[PolicyConfig]) -> Vec<PolicyConfig> {
    config
        .iter()
        .filter(|c| !stored.iter().any(|s| s.name == c.name))
        .chain(stored.iter())
        .cloned()
        .collect()
}

/// Where replies addressed to a direct reply-to name go.
#[derive(Clone)]
pub struct ReplyConsumer {
    pub consumer: ConsumerId,
    pub outbound: mpsc::UnboundedSender<Outbound>,
}

impl VHost {
    pub(crate) fn new(
        name: &str,
        config: Arc<Config>,
        ids: Arc<AtomicU64>,
        tasks: Arc<Mutex<JoinSet<()>>>,
        policies: ferrymq_core::policy::Policies,
        queue_memory: Arc<ferrymq_core::budget::QueueMemory>,
    ) -> Arc<VHost> {
        Arc::new(VHost {
            name: name.to_owned(),
            dir: crate::paths::vhost_dir(&config.data_dir, name),
            config,
            topology: RwLock::new(Topology::for_vhost(name)),
            epoch: AtomicU64::new(0),
            ids,
            tasks,
            reply_to: Mutex::new(AHashMap::new()),
            definitions: Mutex::new(None),
            half: Mutex::new(None),
            exchanges: Default::default(),
            policies: RwLock::new(policies),
            stored_policies: Mutex::new(PolicySet::default()),
            connections: AtomicUsize::new(0),
            deleted: AtomicBool::new(false),
            queue_churn: Default::default(),
            queue_memory,
        })
    }

    /// Marks the vhost deleted (connections in it are closed by their owners).
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Replaces the vhost's policies in force and applies them to every running queue.
    pub fn set_policies(&self, p: ferrymq_core::policy::Policies) {
        *self.policies.write() = p;
        let queues: Vec<QueueHandle> =
            self.read(|t| t.queues().map(|q| q.handle.clone()).collect());
        for q in queues {
            q.send(queue_task::QueueCmd::Reconfigure);
        }
    }

    /// The configuration's policies (they apply to vhost `/` only).
    fn config_policies(&self, operator: bool) -> &[PolicyConfig] {
        match (self.name == "/", operator) {
            (false, _) => &[],
            (true, false) => &self.config.policies,
            (true, true) => &self.config.operator_policies,
        }
    }

    /// The policies (or operator policies) of this vhost as declared: the configuration's
    /// not overridden by a stored one of the same name, then the stored ones.
    pub fn policy_list(&self, operator: bool) -> Vec<PolicyConfig> {
        let stored = self.stored_policies.lock();
        merged(self.config_policies(operator), stored.list(operator))
    }

    fn compile(&self, set: &PolicySet) -> Result<ferrymq_core::policy::Policies, CoreError> {
        crate::config::compile_policies(
            &merged(self.config_policies(false), &set.policies),
            &merged(self.config_policies(true), &set.operator_policies),
        )
        .map_err(|e| CoreError::Precondition(format!("{e:#}")))
    }

    /// Reads `policies.json` (at start) and puts the vhost's policies in force.
    pub(crate) fn load_policies(&self) -> anyhow::Result<()> {
        let path = self.dir.join(POLICIES_FILE);
        let set: PolicySet = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PolicySet::default(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        let compiled = match self.compile(&set) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(vhost = %self.name, "ignoring stored policies: {e}");
                self.compile(&PolicySet::default())?
            }
        };
        *self.stored_policies.lock() = set;
        *self.policies.write() = compiled;
        Ok(())
    }

    /// Creates or replaces a policy (or operator policy): checked (pattern, keys, values)
    /// before anything changes, durable before it returns, and applied to running queues
    /// at once. Returns whether it is new.
    pub fn put_policy(&self, operator: bool, p: PolicyConfig) -> Result<bool, CoreError> {
        let mut stored = self.stored_policies.lock();
        let mut next = stored.clone();
        let list = next.list_mut(operator);
        let created = !self
            .config_policies(operator)
            .iter()
            .chain(list.iter())
            .any(|x| x.name == p.name);
        match list.iter_mut().find(|x| x.name == p.name) {
            Some(slot) => *slot = p,
            None => list.push(p),
        }
        let compiled = self.compile(&next)?;
        self.persist_policies(&next)?;
        *stored = next;
        drop(stored);
        self.set_policies(compiled);
        Ok(created)
    }

    /// Deletes a stored policy (or operator policy); `Ok(false)` if there is none.
    pub fn delete_policy(&self, operator: bool, name: &str) -> Result<bool, CoreError> {
        let mut stored = self.stored_policies.lock();
        let mut next = stored.clone();
        let list = next.list_mut(operator);
        let before = list.len();
        list.retain(|x| x.name != name);
        if list.len() == before {
            return Ok(false);
        }
        let compiled = self.compile(&next)?;
        self.persist_policies(&next)?;
        *stored = next;
        drop(stored);
        self.set_policies(compiled);
        Ok(true)
    }

    /// Writes `policies.json` atomically (temp file, fsync, rename, directory fsync).
    fn persist_policies(&self, set: &PolicySet) -> Result<(), CoreError> {
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(POLICIES_FILE);
            let tmp = self.dir.join(format!("{POLICIES_FILE}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(set).unwrap_or_default())?;
            ferrymq_store::io_stats::sync_all(&f)?;
            std::fs::rename(&tmp, &path)?;
            crate::paths::sync_dir(&self.dir)
        };
        write().map_err(|e| {
            tracing::error!(vhost = %self.name, "writing policies failed: {e}");
            CoreError::Internal(format!("could not store policies: {e}"))
        })
    }

    /// Number of queues (for `max-queues`).
    pub fn queue_count(&self) -> usize {
        self.topology.read().queue_count()
    }

    /// The arguments a queue runs with: its own, completed by the matching policy and
    /// capped by the matching operator policy.
    pub fn effective_arguments(
        &self,
        spec: &ferrymq_core::topology::QueueSpec,
    ) -> ferrymq_core::policy::Effective {
        self.policies.read().effective(&spec.name, &spec.arguments)
    }

    /// A fresh broker-wide id (connections, consumers, queues).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Reads the topology.
    pub fn read<R>(&self, f: impl FnOnce(&Topology<QueueHandle>) -> R) -> R {
        f(&self.topology.read())
    }

    /// Changes the topology (and invalidates cached routes).
    pub fn write<R>(&self, f: impl FnOnce(&mut Topology<QueueHandle>) -> R) -> R {
        let mut t = self.topology.write();
        let r = f(&mut t);
        self.epoch.fetch_add(1, Ordering::Release);
        r
    }

    /// Changes the topology and makes the durable part of the change durable before
    /// returning: `f` returns the journal ops it implies; exchanges auto-deleted on the way
    /// are added. The journal lock is taken before the topology lock is released, so the
    /// journal's order is the topology's order; the fsync happens outside the topology lock,
    /// and off the async worker (`blocking::run`).
    fn change<R>(
        &self,
        f: impl FnOnce(&mut Topology<QueueHandle>) -> Result<(R, Vec<DefOp>), CoreError>,
    ) -> Result<R, CoreError> {
        let mut t = self.topology.write();
        let result = f(&mut t);
        let removed = t.take_auto_deleted();
        self.epoch.fetch_add(1, Ordering::Release);
        let (r, mut ops) = result?;
        for e in &removed {
            self.exchanges.removed(&e.name);
        }
        ops.extend(
            removed
                .into_iter()
                .filter(|e| e.durable)
                .map(|e| DefOp::DeleteExchange {
                    name: e.name.to_string(),
                }),
        );
        if ops.is_empty() {
            return Ok(r);
        }
        let mut journal = self.definitions.lock();
        drop(t);
        if let Some(j) = journal.as_mut() {
            // The write and fsync run in place (the caller answers `…-ok` after them), but
            // this worker's other tasks move to another worker meanwhile.
            crate::blocking::run(|| j.append(&ops)).map_err(|e| {
                tracing::error!("writing definitions failed: {e}");
                CoreError::Internal(format!("could not store definitions: {e}"))
            })?;
        }
        Ok(r)
    }

    pub fn declare_exchange(
        self: &Arc<Self>,
        spec: ExchangeSpec,
        passive: bool,
    ) -> Result<(), CoreError> {
        let created_spec = spec.clone();
        let created = self.change(|t| {
            let op = (spec.durable && !passive).then(|| DefOp::DeclareExchange {
                name: spec.name.to_string(),
                kind: spec.kind.as_str().to_owned(),
                auto_delete: spec.auto_delete,
                internal: spec.internal,
                arguments: spec.arguments.clone(),
            });
            let created = t.declare_exchange(spec, passive)?;
            Ok((created, op.filter(|_| created).into_iter().collect()))
        })?;
        if created {
            self.exchanges.created(self, &created_spec, None)?;
        }
        Ok(())
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), CoreError> {
        self.change(|t| {
            let durable = t.exchange(name).is_some_and(|e| e.durable);
            t.delete_exchange(name, if_unused)?;
            let op = DefOp::DeleteExchange { name: name.into() };
            Ok(((), durable.then_some(op).into_iter().collect()))
        })?;
        self.exchanges.removed(name);
        Ok(())
    }

    /// The message counters of exchange `name` (`publish_in`, `publish_out`).
    pub fn exchange_counters(&self, name: &str) -> Arc<crate::stats::ExchangeCounters> {
        self.exchanges.counters(name)
    }

    /// `(publish_in, publish_out)` of exchange `name`.
    pub fn exchange_counts(&self, name: &str) -> (u64, u64) {
        self.exchanges.counts(name)
    }

    /// `(name, publish_in, publish_out)` of every exchange of this vhost that saw a
    /// message (for the statistics sampler).
    pub fn all_exchange_counts(&self) -> Vec<(Arc<str>, u64, u64)> {
        self.exchanges.all_counts()
    }

    /// The vhost's half-message task.
    pub fn half_handle(&self) -> Option<crate::halfmsg::HalfHandle> {
        self.half.lock().clone()
    }

    /// Half messages stored and not yet decided.
    pub fn half_pending(&self) -> u64 {
        self.half.lock().as_ref().map_or(0, |h| h.pending())
    }

    /// The delay task of a delayed-message exchange.
    pub fn delayed_handle(&self, exchange: &str) -> Option<crate::delayed::DelayedHandle> {
        self.exchanges.delayed(exchange)
    }

    /// Messages a delayed-message exchange holds (for listings; `None` for other types).
    pub fn delayed_pending(&self, exchange: &str) -> Option<u64> {
        self.exchanges.delayed(exchange).map(|h| h.pending())
    }

    /// Keys a de-duplication exchange's cache holds (for listings; `None` for other
    /// types).
    pub fn dedup_cache_size(&self, exchange: &str) -> Option<usize> {
        self.exchanges.dedup_size(exchange)
    }

    /// Whether a de-duplication exchange saw `key` within its cache bounds (and remembers
    /// it if not).
    pub fn dedup_seen(&self, exchange: &str, key: &[u8], ttl: Option<u64>) -> bool {
        self.exchanges.dedup_seen(exchange, key, ttl)
    }

    /// Spawns a task owned by the broker (stopped and awaited at shutdown).
    pub(crate) fn spawn_owned(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().spawn(task);
    }

    pub fn bind(&self, b: Binding, connection: u64) -> Result<(), CoreError> {
        self.change(|t| {
            let op = binding_is_durable(t, &b).then(|| DefOp::Bind(b.clone()));
            t.bind(b, connection)?;
            Ok(((), op.into_iter().collect()))
        })
    }

    pub fn unbind(&self, b: &Binding, connection: u64) -> Result<(), CoreError> {
        self.change(|t| {
            let op = binding_is_durable(t, b).then(|| DefOp::Unbind(b.clone()));
            t.unbind(b, connection)?;
            Ok(((), op.into_iter().collect()))
        })
    }

    /// Declares a queue, starting its owner task if it is new.
    pub fn declare_queue(
        self: &Arc<Self>,
        spec: QueueSpec,
        passive: bool,
        connection: u64,
    ) -> Result<Declared<QueueHandle>, CoreError> {
        let mut spawned = None;
        let r = self.change(|t| {
            let declared = t.declare_queue(spec, passive, connection, |spec| {
                let (handle, task) = queue_task::create(self.clone(), self.next_id(), spec);
                spawned = Some(task);
                handle
            })?;
            let op = match &declared {
                Declared::Created(q) if q.spec.durable && q.spec.exclusive_owner.is_none() => {
                    Some(DefOp::DeclareQueue {
                        name: q.spec.name.to_string(),
                        auto_delete: q.spec.auto_delete,
                        arguments: q.spec.arguments.clone(),
                    })
                }
                _ => None,
            };
            Ok((declared, op.into_iter().collect()))
        });
        if let Some(task) = spawned {
            self.tasks.lock().spawn(task);
        }
        self.queue_churn.declared.fetch_add(1, Ordering::Relaxed);
        if let Ok(Declared::Created(_)) = &r {
            self.queue_churn.created.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Removes a queue from the topology if `handle` is still the queue under that name.
    pub fn forget_queue(&self, handle: &QueueHandle) {
        let r = self.change(|t| {
            let mut ops = Vec::new();
            if t.queue(handle.name()).is_some_and(|q| q.handle == *handle) {
                if let Some(q) = t.remove_queue(handle.name()) {
                    self.queue_churn.deleted.fetch_add(1, Ordering::Relaxed);
                    if q.spec.durable && q.spec.exclusive_owner.is_none() {
                        ops.push(DefOp::DeleteQueue {
                            name: q.spec.name.to_string(),
                        });
                    }
                }
            }
            Ok(((), ops))
        });
        if let Err(e) = r {
            tracing::error!(queue = handle.name(), "deleting queue definition: {e}");
        }
    }

    /// Opens the definitions journal in the data directory, recreates the durable
    /// exchanges, queues and bindings it describes, and rewrites it compacted.
    pub fn recover_definitions(self: &Arc<Self>) -> anyhow::Result<()> {
        let (mut journal, ops) = DefinitionsJournal::open(&self.dir)?;
        // Replay into a scratch topology with the same rules, then copy the survivors.
        let mut scratch: Topology<()> = Topology::new();
        for op in ops {
            replay(&mut scratch, op);
        }
        let mut snapshot = Vec::new();
        let mut recovered = crate::exchange_state::Recovery::scan(&self.dir);
        for e in scratch.exchanges() {
            if e.name.is_empty() || e.name.starts_with("amq.") {
                continue;
            }
            snapshot.push(DefOp::DeclareExchange {
                name: e.name.to_string(),
                kind: e.kind.as_str().to_owned(),
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
            });
            self.write(|t| t.declare_exchange(e.clone(), false))?;
        }
        for q in scratch.queues() {
            snapshot.push(DefOp::DeclareQueue {
                name: q.spec.name.to_string(),
                auto_delete: q.spec.auto_delete,
                arguments: q.spec.arguments.clone(),
            });
            let mut spawned = None;
            self.write(|t| {
                t.declare_queue(q.spec.clone(), false, 0, |spec| {
                    let (handle, task) = queue_task::create(self.clone(), self.next_id(), spec);
                    spawned = Some(task);
                    handle
                })
            })?;
            if let Some(task) = spawned {
                self.tasks.lock().spawn(task);
            }
        }
        for b in scratch.bindings() {
            snapshot.push(DefOp::Bind(b.clone()));
            self.write(|t| t.bind(b.clone(), 0))?;
        }
        // Extension exchanges last: a delayed exchange's task releases overdue messages as
        // soon as it runs, so the queues and bindings they route to must be back first (else
        // they would be routed nowhere and acked: lost).
        for e in scratch.exchanges() {
            if e.name.is_empty() || e.name.starts_with("amq.") {
                continue;
            }
            self.exchanges.recovered(self, e, &mut recovered)?;
        }
        recovered.remove_unclaimed();
        // Half messages last too: recovered checks and expiries route to queues.
        let (half, task) = crate::halfmsg::create(self.clone())?;
        *self.half.lock() = Some(half);
        self.tasks.lock().spawn(task);
        journal.rewrite(&snapshot)?;
        tracing::info!(
            exchanges = scratch.exchanges().count() - ferrymq_core::topology::PREDECLARED.len(),
            queues = scratch.queue_count(),
            bindings = scratch.bindings().count(),
            "recovered definitions"
        );
        *self.definitions.lock() = Some(journal);
        Ok(())
    }

    pub fn register_reply_to(&self, name: String, c: ReplyConsumer) {
        self.reply_to.lock().insert(name, c);
    }

    pub fn unregister_reply_to(&self, name: &str) {
        self.reply_to.lock().remove(name);
    }

    pub fn reply_consumer(&self, name: &str) -> Option<ReplyConsumer> {
        self.reply_to.lock().get(name).cloned()
    }

    /// Stops every queue and exchange task of the vhost (after connections are gone); the
    /// broker awaits them.
    pub fn stop_queues(&self) {
        self.exchanges.stop_all();
        if let Some(h) = self.half.lock().take() {
            h.stop();
        }
        let handles: Vec<QueueHandle> = self.write(|t| {
            let names: Vec<_> = t.queues().map(|q| q.spec.name.clone()).collect();
            names
                .iter()
                .filter_map(|n| t.remove_queue(n))
                .map(|q| q.handle)
                .collect()
        });
        for h in &handles {
            h.stop();
        }
    }
}
