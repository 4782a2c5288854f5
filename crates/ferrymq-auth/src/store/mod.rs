//! The durable auth database: users, vhosts, permissions, topic permissions, limits.
//!
//! Small and rarely written, so it is kept whole in memory and persisted as one JSON
//! snapshot (format in `docs/auth-store.md`), rewritten on every change by
//! write-to-temp + fsync + rename + fsync of the directory. A write returns only after
//! the new snapshot is durable; if persisting fails the change is not applied.
//!
//! Concurrency: readers take a read lock just long enough to clone an `Arc` of the
//! current database (or look one thing up); writers are serialized by a mutex, build the
//! next database from a clone, persist it, then swap it in — so readers never wait for an
//! fsync. [`AuthStore::version`] is bumped after every swap: connections cache their
//! [`Access`] and re-fetch it when the version moves, so a revoke applies on the next
//! check rather than when a cache happens to expire (RabbitMQ's per-channel cache can
//! miss revokes on busy channels; FerryMQ does not).
//!
//! First boot (no snapshot file) seeds like RabbitMQ's `maybe_insert_default_data`:
//! vhost `/`, and unless definitions are configured, either `guest`/`guest`
//! (administrator, `.* .* .*` on `/`, loopback-only) or the configured default user
//! (administrator, `.* .* .*` on `/`, from anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::definitions::{
    vhost_limits_from_value, vhost_limits_to_value, Definitions, ParameterDefinition,
    PermissionDefinition, TopicPermissionDefinition, UserDefinition, VhostDefinition,
    RABBIT_COMPAT_VERSION, VHOST_LIMITS_COMPONENT,
};
use crate::error::AuthError;
use crate::model::{User, UserLimits, VhostInfo, VhostLimits, TAG_ADMINISTRATOR};
use crate::password::{HashingAlgorithm, PasswordHash};
use crate::perm::{
    Access, CompiledPermission, CompiledTopicPermission, Permission, TopicPermission,
};
use crate::scram::{self, ScramCredential, ScramMechanism, DEFAULT_ITERATIONS};

mod acls;
mod kafka_scram;
mod snapshot;
pub use acls::AclSet;
use snapshot::{decode_snapshot, temp_path, write_snapshot};

/// The vhost every broker starts with.
pub const DEFAULT_VHOST: &str = "/";
/// RabbitMQ's description of the default vhost.
pub const DEFAULT_VHOST_DESCRIPTION: &str = "Default virtual host";
/// The default user on first boot when none is configured.
pub const GUEST: &str = "guest";

/// What first boot seeds.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    /// `default_user` / `default_pass` from the configuration; `None` ⇒ `guest`/`guest`.
    pub default_user: Option<(String, String)>,
    /// Definitions are configured to load at boot: seed no user (RabbitMQ does the same).
    pub definitions_present: bool,
}

/// How `put_user` sets the password.
#[derive(Clone)]
pub enum PasswordSpec {
    /// Clear text: hashed with SHA-256 (RabbitMQ's default) and SCRAM-SHA-256/512
    /// credentials derived (4096 iterations) so Kafka SCRAM logins work too.
    Plain(String),
    /// A ready hash (e.g. from definitions): kept as is; no SCRAM credentials can be
    /// derived from it.
    Hash(PasswordHash),
}

impl std::fmt::Debug for PasswordSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSpec::Plain(_) => f.write_str("Plain(..)"),
            PasswordSpec::Hash(h) => f.debug_tuple("Hash").field(h).finish(),
        }
    }
}

/// A permission row with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionEntry {
    pub user: String,
    pub vhost: String,
    pub permission: Permission,
}

/// A topic-permission row with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermissionEntry {
    pub user: String,
    pub vhost: String,
    pub permission: TopicPermission,
}

/// The in-memory database (cheap to clone: values are `Arc`s or small).
#[derive(Clone)]
struct Db {
    users: BTreeMap<String, Arc<User>>,
    vhosts: BTreeMap<String, VhostInfo>,
    /// (user, vhost) → row.
    permissions: BTreeMap<(String, String), Arc<CompiledPermission>>,
    /// (user, vhost, exchange) → row, compiled for that user and vhost.
    topic_permissions: BTreeMap<(String, String, String), Arc<CompiledTopicPermission>>,
    loopback_users: BTreeSet<String>,
    /// vhost → its Kafka ACL bindings (`acls.rs`).
    acls: BTreeMap<String, AclSet>,
    /// Secret for SCRAM fake salts of unknown users (persisted so they are stable).
    fake_salt_secret: [u8; 32],
}

impl Db {
    fn empty() -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Db {
            users: BTreeMap::new(),
            vhosts: BTreeMap::new(),
            permissions: BTreeMap::new(),
            topic_permissions: BTreeMap::new(),
            loopback_users: BTreeSet::new(),
            acls: BTreeMap::new(),
            fake_salt_secret: secret,
        }
    }

    fn seeded(seed: &Seed) -> Result<Self, AuthError> {
        let mut db = Db::empty();
        db.vhosts.insert(
            DEFAULT_VHOST.to_owned(),
            VhostInfo {
                description: DEFAULT_VHOST_DESCRIPTION.to_owned(),
                ..VhostInfo::new(DEFAULT_VHOST)
            },
        );
        let (name, password, loopback) = match &seed.default_user {
            Some((u, p)) => (u.as_str(), p.as_str(), false),
            None => (GUEST, GUEST, true),
        };
        if loopback {
            // RabbitMQ's `loopback_users` defaults to [guest] whatever the database holds;
            // a configured default user is meant to be reachable from anywhere.
            db.loopback_users.insert(GUEST.to_owned());
        }
        if !seed.definitions_present {
            check_name("user", name)?;
            let user = new_user(
                name,
                PasswordSpec::Plain(password.to_owned()),
                vec![TAG_ADMINISTRATOR.to_owned()],
                None,
            )?;
            db.users.insert(name.to_owned(), Arc::new(user));
            db.set_permission(name, DEFAULT_VHOST, &Permission::all())?;
        }
        Ok(db)
    }

    fn require_user(&self, user: &str) -> Result<(), AuthError> {
        if self.users.contains_key(user) {
            Ok(())
        } else {
            Err(AuthError::NoSuchUser(user.to_owned()))
        }
    }

    fn require_vhost(&self, vhost: &str) -> Result<(), AuthError> {
        if self.vhosts.contains_key(vhost) {
            Ok(())
        } else {
            Err(AuthError::NoSuchVhost(vhost.to_owned()))
        }
    }

    fn set_permission(&mut self, user: &str, vhost: &str, p: &Permission) -> Result<(), AuthError> {
        self.require_user(user)?;
        self.require_vhost(vhost)?;
        let compiled = CompiledPermission::compile(p)?;
        self.permissions
            .insert((user.to_owned(), vhost.to_owned()), Arc::new(compiled));
        Ok(())
    }

    fn set_topic_permission(
        &mut self,
        user: &str,
        vhost: &str,
        tp: &TopicPermission,
    ) -> Result<(), AuthError> {
        self.require_user(user)?;
        self.require_vhost(vhost)?;
        let compiled = CompiledTopicPermission::compile(tp, user, vhost)?;
        self.topic_permissions.insert(
            (user.to_owned(), vhost.to_owned(), tp.exchange.clone()),
            Arc::new(compiled),
        );
        Ok(())
    }

    fn topic_rows<'a>(
        &'a self,
        user: &'a str,
        vhost: &'a str,
    ) -> impl Iterator<
        Item = (
            &'a (String, String, String),
            &'a Arc<CompiledTopicPermission>,
        ),
    > + 'a {
        self.topic_permissions
            .range((user.to_owned(), vhost.to_owned(), String::new())..)
            .take_while(move |((u, v, _), _)| u == user && v == vhost)
    }

    fn access(&self, user: &str, vhost: &str) -> Option<Arc<Access>> {
        if !self.vhosts.contains_key(vhost) {
            return None;
        }
        let perm = self.permissions.get(&(user.to_owned(), vhost.to_owned()))?;
        let topics = self.topic_rows(user, vhost).map(|(_, t)| t.clone());
        Some(Arc::new(Access::new(user, vhost, perm.clone(), topics)))
    }

    fn remove_user_rows(&mut self, user: &str) {
        self.permissions.retain(|(u, _), _| u != user);
        self.topic_permissions.retain(|(u, _, _), _| u != user);
    }

    fn remove_vhost_rows(&mut self, vhost: &str) {
        self.permissions.retain(|(_, v), _| v != vhost);
        self.topic_permissions.retain(|(_, v, _), _| v != vhost);
        self.acls.remove(vhost);
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        Err(AuthError::InvalidName {
            what,
            name: name.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Builds a user; `existing` supplies what a partial update keeps (hash, SCRAM, limits).
fn new_user(
    name: &str,
    password: PasswordSpec,
    tags: Vec<String>,
    existing: Option<&User>,
) -> Result<User, AuthError> {
    let (password_hash, scram) = match password {
        PasswordSpec::Plain(p) => (
            PasswordHash::new(HashingAlgorithm::Sha256, p.as_bytes()),
            derive_scram(&p)?,
        ),
        PasswordSpec::Hash(h) => {
            // Keep SCRAM credentials if the hash is unchanged (re-importing an export).
            let scram = existing
                .filter(|e| e.password_hash == h)
                .map(|e| e.scram.clone())
                .unwrap_or_default();
            (h, scram)
        }
    };
    Ok(User {
        name: name.to_owned(),
        password_hash,
        tags,
        limits: existing.map(|e| e.limits).unwrap_or_default(),
        scram,
    })
}

fn derive_scram(password: &str) -> Result<Vec<ScramCredential>, AuthError> {
    ScramMechanism::ALL
        .into_iter()
        .map(|m| ScramCredential::derive(m, password, DEFAULT_ITERATIONS))
        .collect()
}

enum Backend {
    File(PathBuf),
    Memory,
}

/// The auth database. `Send + Sync`; share it behind an `Arc`.
pub struct AuthStore {
    backend: Backend,
    db: RwLock<Arc<Db>>,
    writer: Mutex<()>,
    version: AtomicU64,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match &self.backend {
            Backend::File(p) => Some(p.as_path()),
            Backend::Memory => None,
        };
        f.debug_struct("AuthStore")
            .field("path", &path)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl AuthStore {
    /// Opens the snapshot at `path`, or seeds and writes it on first boot (file absent).
    /// A snapshot that exists but does not parse is an error, never a re-seed.
    pub fn open(path: &Path, seed: Seed) -> Result<AuthStore, AuthError> {
        let tmp = temp_path(path);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuthError::io(&tmp, e)),
        }
        let db = match fs::read(path) {
            Ok(bytes) => decode_snapshot(path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(|e| AuthError::io(dir, e))?;
                }
                let db = Db::seeded(&seed)?;
                write_snapshot(path, &db)?;
                db
            }
            Err(e) => return Err(AuthError::io(path, e)),
        };
        scram::set_fake_salt_secret(db.fake_salt_secret);
        Ok(AuthStore::from_db(Backend::File(path.to_path_buf()), db))
    }

    /// A store that is never persisted (tests, tools), seeded like a first boot.
    pub fn in_memory(seed: Seed) -> Result<AuthStore, AuthError> {
        Ok(AuthStore::from_db(Backend::Memory, Db::seeded(&seed)?))
    }

    fn from_db(backend: Backend, db: Db) -> AuthStore {
        AuthStore {
            backend,
            db: RwLock::new(Arc::new(db)),
            writer: Mutex::new(()),
            version: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> Arc<Db> {
        self.db.read().clone()
    }

    /// Applies `f` to a copy of the database, persists it, swaps it in and bumps the
    /// version. `f` returns whether it changed anything (no write, no bump otherwise).
    fn update(&self, f: impl FnOnce(&mut Db) -> Result<bool, AuthError>) -> Result<(), AuthError> {
        let _writer = self.writer.lock();
        let mut next = Db::clone(&self.snapshot());
        if !f(&mut next)? {
            return Ok(());
        }
        if let Backend::File(path) = &self.backend {
            write_snapshot(path, &next)?;
        }
        *self.db.write() = Arc::new(next);
        self.version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Bumped on every change. Cache an [`Access`] together with the version it was
    /// fetched at and re-fetch when this differs.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    // ---- reads ------------------------------------------------------------------------

    /// Checks a PLAIN (or AMQPLAIN) login. Unknown users, passwordless users and blank
    /// passwords fail like a wrong password, after a hash verification of the same cost.
    /// A correct password for a loopback-only user from a non-loopback peer fails with
    /// [`AuthError::LoopbackOnly`] (checked after the password, as RabbitMQ does).
    pub fn authenticate_plain(
        &self,
        user: &str,
        password: &[u8],
        from_loopback: bool,
    ) -> Result<Arc<User>, AuthError> {
        let db = self.snapshot();
        let found = db.users.get(user);
        let hash = found
            .map(|u| &u.password_hash)
            .unwrap_or(PasswordHash::dummy());
        let verified = hash.verify(password);
        match found {
            Some(u) if verified && !password.is_empty() => {
                if !from_loopback && db.loopback_users.contains(user) {
                    return Err(AuthError::LoopbackOnly {
                        username: user.to_owned(),
                    });
                }
                Ok(u.clone())
            }
            _ => Err(AuthError::InvalidCredentials {
                username: user.to_owned(),
            }),
        }
    }

    /// Refuses a loopback-only user from a non-loopback peer (for EXTERNAL and SCRAM
    /// logins, which do not go through [`authenticate_plain`](Self::authenticate_plain)).
    pub fn check_loopback(&self, user: &str, from_loopback: bool) -> Result<(), AuthError> {
        if !from_loopback && self.db.read().loopback_users.contains(user) {
            Err(AuthError::LoopbackOnly {
                username: user.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.db.read().users.get(name).cloned()
    }

    /// All users, by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.db.read().users.values().cloned().collect()
    }

    /// The user's SCRAM credential for `mechanism` (`None` for unknown users too: pass it
    /// on to [`ClientFirst::server_first`](crate::scram::ClientFirst::server_first)).
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<ScramCredential> {
        self.db
            .read()
            .users
            .get(user)
            .and_then(|u| u.scram_credential(mechanism).cloned())
    }

    pub fn vhost(&self, name: &str) -> Option<VhostInfo> {
        self.db.read().vhosts.get(name).cloned()
    }

    /// All vhosts, by name.
    pub fn vhosts(&self) -> Vec<VhostInfo> {
        self.db.read().vhosts.values().cloned().collect()
    }

    /// What `user` may do in `vhost`; `None` if the vhost does not exist or the user has
    /// no permission row there (both refuse `connection.open` the same way).
    pub fn access(&self, user: &str, vhost: &str) -> Option<Arc<Access>> {
        self.db.read().access(user, vhost)
    }

    /// [`access`](Self::access) as the error `connection.open` sends (530
    /// `NOT_ALLOWED - access to vhost 'v' refused for user 'u'`).
    pub fn open_vhost(&self, user: &str, vhost: &str) -> Result<Arc<Access>, AuthError> {
        self.access(user, vhost)
            .ok_or_else(|| AuthError::VhostAccessRefused {
                vhost: vhost.to_owned(),
                user: user.to_owned(),
            })
    }

    /// All permission rows, by (user, vhost).
    pub fn permissions(&self) -> Vec<PermissionEntry> {
        self.db
            .read()
            .permissions
            .iter()
            .map(|((u, v), p)| PermissionEntry {
                user: u.clone(),
                vhost: v.clone(),
                permission: p.source().clone(),
            })
            .collect()
    }

    /// All topic-permission rows, by (user, vhost, exchange).
    pub fn topic_permissions(&self) -> Vec<TopicPermissionEntry> {
        self.db
            .read()
            .topic_permissions
            .iter()
            .map(|((u, v, _), p)| TopicPermissionEntry {
                user: u.clone(),
                vhost: v.clone(),
                permission: p.source().clone(),
            })
            .collect()
    }

    /// Users that may connect only from loopback addresses.
    pub fn loopback_users(&self) -> Vec<String> {
        self.db.read().loopback_users.iter().cloned().collect()
    }

    // ---- writes (each durable before it returns) ---------------------------------------

    /// Creates or updates a user. `password: None` keeps an existing user's password (a
    /// new user is then passwordless). Tags are replaced; limits are kept.
    pub fn put_user(
        &self,
        name: &str,
        password: Option<PasswordSpec>,
        tags: Vec<String>,
    ) -> Result<(), AuthError> {
        check_name("user", name)?;
        // Hash outside the writer lock (PBKDF2 takes a while).
        let prepared = match password {
            Some(PasswordSpec::Plain(p)) => Some((
                PasswordHash::new(HashingAlgorithm::Sha256, p.as_bytes()),
                derive_scram(&p)?,
            )),
            Some(PasswordSpec::Hash(h)) => Some((h, Vec::new())),
            None => None,
        };
        let tags: Vec<String> = tags.into_iter().filter(|t| !t.is_empty()).collect();
        self.update(|db| {
            let existing = db.users.get(name).cloned();
            let user = match (prepared, existing.as_deref()) {
                (Some((hash, scram)), existing) => {
                    let scram = if scram.is_empty() {
                        existing
                            .filter(|e| e.password_hash == hash)
                            .map(|e| e.scram.clone())
                            .unwrap_or_default()
                    } else {
                        scram
                    };
                    User {
                        name: name.to_owned(),
                        password_hash: hash,
                        tags,
                        limits: existing.map(|e| e.limits).unwrap_or_default(),
                        scram,
                    }
                }
                (None, Some(e)) => User { tags, ..e.clone() },
                (None, None) => User {
                    name: name.to_owned(),
                    password_hash: PasswordHash::passwordless(),
                    tags,
                    limits: UserLimits::default(),
                    scram: Vec::new(),
                },
            };
            db.users.insert(name.to_owned(), Arc::new(user));
            Ok(true)
        })
    }

    /// Deletes a user and all its permission and topic-permission rows.
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        self.update(|db| {
            if db.users.remove(name).is_none() {
                return Err(AuthError::NoSuchUser(name.to_owned()));
            }
            db.remove_user_rows(name);
            Ok(true)
        })
    }

    /// Sets (replaces) one SCRAM credential of a user (Kafka AlterUserScramCredentials
    /// upsert). Leaves the RabbitMQ password hash alone.
    pub fn set_scram_credential(
        &self,
        user: &str,
        credential: ScramCredential,
    ) -> Result<(), AuthError> {
        self.update(|db| {
            let u = db
                .users
                .get(user)
                .ok_or_else(|| AuthError::NoSuchUser(user.to_owned()))?;
            let mut u = User::clone(u);
            u.scram.retain(|c| c.mechanism != credential.mechanism);
            u.scram.push(credential);
            u.scram.sort_by_key(|c| c.mechanism);
            db.users.insert(user.to_owned(), Arc::new(u));
            Ok(true)
        })
    }

    /// Removes one SCRAM credential (Kafka AlterUserScramCredentials deletion). Returns
    /// `Ok` also when there was none.
    pub fn delete_scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<(), AuthError> {
        self.update(|db| {
            let u = db
                .users
                .get(user)
                .ok_or_else(|| AuthError::NoSuchUser(user.to_owned()))?;
            if u.scram_credential(mechanism).is_none() {
                return Ok(false);
            }
            let mut u = User::clone(u);
            u.scram.retain(|c| c.mechanism != mechanism);
            db.users.insert(user.to_owned(), Arc::new(u));
            Ok(true)
        })
    }

    /// Creates a vhost, or updates an existing one's metadata (description, tags,
    /// default queue type, protection, tracing). `info.limits` is used only on creation;
    /// change limits with [`set_vhost_limits`](Self::set_vhost_limits) (RabbitMQ keeps
    /// them as a separate runtime parameter too). Declaring the `amq.*` exchanges is the
    /// engine's job.
    pub fn put_vhost(&self, info: VhostInfo) -> Result<(), AuthError> {
        check_name("vhost", &info.name)?;
        self.update(|db| {
            let limits = match db.vhosts.get(&info.name) {
                Some(old) => old.limits,
                None => info.limits.normalized(),
            };
            db.vhosts
                .insert(info.name.clone(), VhostInfo { limits, ..info });
            Ok(true)
        })
    }

    /// Deletes a vhost and its permission and topic-permission rows. Refused for a vhost
    /// protected from deletion.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AuthError> {
        self.update(|db| {
            match db.vhosts.get(name) {
                None => return Err(AuthError::NoSuchVhost(name.to_owned())),
                Some(v) if v.protected_from_deletion => {
                    return Err(AuthError::VhostProtected(name.to_owned()))
                }
                Some(_) => {}
            }
            db.vhosts.remove(name);
            db.remove_vhost_rows(name);
            Ok(true)
        })
    }

    /// Sets a user's permissions in a vhost. The patterns must compile; the user and the
    /// vhost must exist.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        permission: Permission,
    ) -> Result<(), AuthError> {
        self.update(|db| db.set_permission(user, vhost, &permission).map(|()| true))
    }

    /// Removes a user's permission row in a vhost (no error if there is none).
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), AuthError> {
        self.update(|db| {
            Ok(db
                .permissions
                .remove(&(user.to_owned(), vhost.to_owned()))
                .is_some())
        })
    }

    /// Sets a topic-permission row (keyed by user, vhost and `permission.exchange`).
    pub fn set_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        permission: TopicPermission,
    ) -> Result<(), AuthError> {
        self.update(|db| {
            db.set_topic_permission(user, vhost, &permission)
                .map(|()| true)
        })
    }

    /// Removes the topic-permission row for one exchange, or all of the user's rows in the
    /// vhost when `exchange` is `None`.
    pub fn clear_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<(), AuthError> {
        self.update(|db| {
            let before = db.topic_permissions.len();
            db.topic_permissions.retain(|(u, v, x), _| {
                !(u == user && v == vhost && exchange.map(|e| e == x).unwrap_or(true))
            });
            Ok(db.topic_permissions.len() != before)
        })
    }

    /// Sets a vhost's limits (negative = unlimited).
    pub fn set_vhost_limits(&self, vhost: &str, limits: VhostLimits) -> Result<(), AuthError> {
        self.update(|db| {
            let v = db
                .vhosts
                .get_mut(vhost)
                .ok_or_else(|| AuthError::NoSuchVhost(vhost.to_owned()))?;
            v.limits = limits.normalized();
            Ok(true)
        })
    }

    /// Sets a user's limits (negative = unlimited).
    pub fn set_user_limits(&self, user: &str, limits: UserLimits) -> Result<(), AuthError> {
        self.update(|db| {
            let u = db
                .users
                .get(user)
                .ok_or_else(|| AuthError::NoSuchUser(user.to_owned()))?;
            let u = User {
                limits: limits.normalized(),
                ..User::clone(u)
            };
            db.users.insert(user.to_owned(), Arc::new(u));
            Ok(true)
        })
    }

    /// Replaces the list of users that may connect only from loopback addresses
    /// (RabbitMQ's `loopback_users`; default `[guest]`).
    pub fn set_loopback_users(
        &self,
        users: impl IntoIterator<Item = String>,
    ) -> Result<(), AuthError> {
        let users: BTreeSet<String> = users.into_iter().collect();
        self.update(|db| {
            if db.loopback_users == users {
                return Ok(false);
            }
            db.loopback_users = users;
            Ok(true)
        })
    }

    // ---- definitions --------------------------------------------------------------------

    /// Applies the access part of a definitions document in RabbitMQ's order (users,
    /// vhosts, permissions, topic permissions, `vhost-limits` parameters), all or nothing,
    /// in one durable write. Existing users and vhosts are updated; nothing is deleted.
    /// Users with a clear `password` get a SHA-256 hash and SCRAM credentials; users with
    /// a `password_hash` keep it (and keep their SCRAM credentials only if the hash is
    /// unchanged). Queues, exchanges, bindings, policies and other parameters are the
    /// engine's.
    pub fn import_access(&self, defs: &Definitions) -> Result<(), AuthError> {
        defs.validate()?;
        // Hash clear passwords before taking the writer lock.
        let mut prepared: Vec<(&UserDefinition, PasswordSpec)> =
            Vec::with_capacity(defs.users.len());
        for u in &defs.users {
            check_name("user", &u.name)?;
            let spec = match defs.user_password_hash(u)? {
                Some(h) => PasswordSpec::Hash(h),
                None => PasswordSpec::Plain(u.password.clone().unwrap_or_default()),
            };
            prepared.push((u, spec));
        }
        let prepared: Vec<(&UserDefinition, User)> = prepared
            .into_iter()
            .map(|(u, spec)| new_user(&u.name, spec, u.tags.clone(), None).map(|user| (u, user)))
            .collect::<Result<_, _>>()?;
        for v in &defs.vhosts {
            check_name("vhost", &v.name)?;
        }
        self.update(|db| {
            for (def, mut user) in prepared {
                if let Some(old) = db.users.get(&def.name) {
                    if user.scram.is_empty() && old.password_hash == user.password_hash {
                        user.scram = old.scram.clone();
                    }
                }
                user.limits = def.limits.into();
                db.users.insert(def.name.clone(), Arc::new(user));
            }
            for v in &defs.vhosts {
                let mut info = v.to_info();
                if v.limits.is_none() {
                    if let Some(old) = db.vhosts.get(&v.name) {
                        info.limits = old.limits;
                    }
                }
                db.vhosts.insert(info.name.clone(), info);
            }
            for p in &defs.permissions {
                let perm = Permission {
                    configure: p.configure.clone(),
                    write: p.write.clone(),
                    read: p.read.clone(),
                };
                db.set_permission(&p.user, &p.vhost, &perm)
                    .map_err(|e| import_error("permission", &p.user, &p.vhost, e))?;
            }
            for t in &defs.topic_permissions {
                let tp = TopicPermission {
                    exchange: t.exchange.clone(),
                    write: t.write.clone(),
                    read: t.read.clone(),
                };
                db.set_topic_permission(&t.user, &t.vhost, &tp)
                    .map_err(|e| import_error("topic permission", &t.user, &t.vhost, e))?;
            }
            for p in defs
                .parameters
                .iter()
                .filter(|p| p.component == VHOST_LIMITS_COMPONENT)
            {
                let v = db.vhosts.get_mut(&p.vhost).ok_or_else(|| {
                    AuthError::InvalidDefinitions(format!(
                        "vhost-limits for unknown vhost '{}'",
                        p.vhost
                    ))
                })?;
                v.limits = vhost_limits_from_value(&p.value);
            }
            db.import_acls(&defs.kafka_acls)?;
            Ok(true)
        })
    }

    /// The access part of a definitions document: users (base64 hash,
    /// `hashing_algorithm`, tags as a list, limits), vhosts, permissions, topic
    /// permissions and `vhost-limits` parameters. The engine fills queues, exchanges,
    /// bindings, policies and global parameters.
    pub fn export_access(&self) -> Definitions {
        let db = self.snapshot();
        Definitions {
            rabbit_version: Some(RABBIT_COMPAT_VERSION.to_owned()),
            rabbitmq_version: Some(RABBIT_COMPAT_VERSION.to_owned()),
            users: db
                .users
                .values()
                .map(|u| UserDefinition {
                    name: u.name.clone(),
                    password_hash: Some(u.password_hash.to_base64()),
                    password: None,
                    hashing_algorithm: Some(u.password_hash.algorithm.rabbit_name().to_owned()),
                    tags: u.tags.clone(),
                    limits: u.limits.into(),
                })
                .collect(),
            vhosts: db.vhosts.values().map(VhostDefinition::from_info).collect(),
            permissions: db
                .permissions
                .iter()
                .map(|((u, v), p)| PermissionDefinition {
                    user: u.clone(),
                    vhost: v.clone(),
                    configure: p.source().configure.clone(),
                    write: p.source().write.clone(),
                    read: p.source().read.clone(),
                })
                .collect(),
            topic_permissions: db
                .topic_permissions
                .iter()
                .map(|((u, v, _), t)| TopicPermissionDefinition {
                    user: u.clone(),
                    vhost: v.clone(),
                    exchange: t.source().exchange.clone(),
                    write: t.source().write.clone(),
                    read: t.source().read.clone(),
                })
                .collect(),
            parameters: db
                .vhosts
                .values()
                .filter(|v| !v.limits.is_empty())
                .map(|v| ParameterDefinition {
                    vhost: v.name.clone(),
                    component: VHOST_LIMITS_COMPONENT.to_owned(),
                    name: "limits".to_owned(),
                    value: vhost_limits_to_value(&v.limits),
                })
                .collect(),
            kafka_acls: db.export_acls(),
            ..Definitions::default()
        }
    }
}

fn import_error(what: &str, user: &str, vhost: &str, e: AuthError) -> AuthError {
    AuthError::InvalidDefinitions(format!("{what} of user '{user}' in vhost '{vhost}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> AuthStore {
        AuthStore::in_memory(Seed::default()).unwrap()
    }

    #[test]
    fn guest_seed() {
        let s = store();
        let guest = s.authenticate_plain("guest", b"guest", true).unwrap();
        assert!(guest.is_administrator());
        assert_eq!(guest.scram.len(), 2);
        let err = s.authenticate_plain("guest", b"guest", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user 'guest' can only connect via localhost"
        );
        assert!(matches!(err, AuthError::LoopbackOnly { .. }));
        // Wrong password from remote: the generic failure, not the loopback one.
        assert!(matches!(
            s.authenticate_plain("guest", b"nope", false),
            Err(AuthError::InvalidCredentials { .. })
        ));
        assert!(s.access("guest", "/").is_some());
        assert_eq!(s.vhost("/").unwrap().description, "Default virtual host");
        assert_eq!(s.version(), 0);
    }

    #[test]
    fn default_user_seed() {
        let s = AuthStore::in_memory(Seed {
            default_user: Some(("admin".into(), "s3cret".into())),
            definitions_present: false,
        })
        .unwrap();
        assert!(s.user("guest").is_none());
        assert!(s
            .authenticate_plain("admin", b"s3cret", false)
            .unwrap()
            .is_administrator());
        assert!(s.access("admin", "/").is_some());
    }

    #[test]
    fn definitions_present_seeds_no_user() {
        let s = AuthStore::in_memory(Seed {
            default_user: None,
            definitions_present: true,
        })
        .unwrap();
        assert!(s.users().is_empty());
        assert_eq!(s.vhosts().len(), 1);
        assert_eq!(s.loopback_users(), vec!["guest"]);
    }

    #[test]
    fn unknown_user_and_blank_password() {
        let s = store();
        assert!(matches!(
            s.authenticate_plain("nobody", b"guest", true),
            Err(AuthError::InvalidCredentials { .. })
        ));
        s.put_user("blank", Some(PasswordSpec::Plain(String::new())), vec![])
            .unwrap();
        assert!(s.authenticate_plain("blank", b"", true).is_err());
        s.put_user("nopw", None, vec![]).unwrap();
        assert!(s.authenticate_plain("nopw", b"", true).is_err());
        assert!(s.user("nopw").unwrap().password_hash.is_passwordless());
    }

    #[test]
    fn version_moves_on_change_only() {
        let s = store();
        let v0 = s.version();
        s.clear_permissions("guest", "nope").unwrap();
        assert_eq!(s.version(), v0);
        s.clear_permissions("guest", "/").unwrap();
        assert_eq!(s.version(), v0 + 1);
        assert!(s.access("guest", "/").is_none());
    }

    #[test]
    fn temp_path_is_beside_the_file() {
        assert_eq!(
            temp_path(Path::new("/a/b/auth.json")),
            Path::new("/a/b/auth.json.tmp")
        );
        assert_eq!(
            temp_path(Path::new("auth.json")),
            Path::new("auth.json.tmp")
        );
    }
}
