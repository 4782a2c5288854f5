//! The store's snapshot file: the whole database as one JSON document, rewritten by
//! write-to-temp + fsync + rename + fsync of the directory (format: docs/auth-store.md).

use super::*;
use crate::acl::AclBinding;

/// `format` value of the snapshot.
const FORMAT: &str = "ferrymq-auth";
/// `format_version` value of the snapshot.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: String,
    format_version: u32,
    #[serde(with = "crate::b64")]
    scram_fake_salt_secret: Vec<u8>,
    users: Vec<UserRecord>,
    vhosts: Vec<VhostRecord>,
    permissions: Vec<PermissionRecord>,
    topic_permissions: Vec<TopicPermissionRecord>,
    loopback_users: Vec<String>,
    /// Kafka ACLs (absent in snapshots written before they existed).
    #[serde(default)]
    kafka_acls: Vec<AclRecord>,
}

#[derive(Serialize, Deserialize)]
struct AclRecord {
    vhost: String,
    #[serde(flatten)]
    binding: AclBinding,
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    name: String,
    password_hash: String,
    hashing_algorithm: String,
    tags: Vec<String>,
    limits: UserLimitsRecord,
    scram: Vec<ScramCredential>,
}

#[derive(Serialize, Deserialize, Default)]
struct UserLimitsRecord {
    max_connections: Option<i64>,
    max_channels: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct VhostRecord {
    name: String,
    description: String,
    tags: Vec<String>,
    default_queue_type: Option<String>,
    protected_from_deletion: bool,
    tracing: bool,
    limits: VhostLimitsRecord,
}

#[derive(Serialize, Deserialize, Default)]
struct VhostLimitsRecord {
    max_connections: Option<i64>,
    max_queues: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct PermissionRecord {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

#[derive(Serialize, Deserialize)]
struct TopicPermissionRecord {
    user: String,
    vhost: String,
    exchange: String,
    write: String,
    read: String,
}

pub(super) fn encode_snapshot(db: &Db) -> Vec<u8> {
    let snap = Snapshot {
        format: FORMAT.to_owned(),
        format_version: FORMAT_VERSION,
        scram_fake_salt_secret: db.fake_salt_secret.to_vec(),
        users: db
            .users
            .values()
            .map(|u| UserRecord {
                name: u.name.clone(),
                password_hash: u.password_hash.to_base64(),
                hashing_algorithm: u.password_hash.algorithm.rabbit_name().to_owned(),
                tags: u.tags.clone(),
                limits: UserLimitsRecord {
                    max_connections: u.limits.max_connections,
                    max_channels: u.limits.max_channels,
                },
                scram: u.scram.clone(),
            })
            .collect(),
        vhosts: db
            .vhosts
            .values()
            .map(|v| VhostRecord {
                name: v.name.clone(),
                description: v.description.clone(),
                tags: v.tags.clone(),
                default_queue_type: v.default_queue_type.clone(),
                protected_from_deletion: v.protected_from_deletion,
                tracing: v.tracing,
                limits: VhostLimitsRecord {
                    max_connections: v.limits.max_connections,
                    max_queues: v.limits.max_queues,
                },
            })
            .collect(),
        permissions: db
            .permissions
            .iter()
            .map(|((u, v), p)| PermissionRecord {
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
            .map(|((u, v, _), t)| TopicPermissionRecord {
                user: u.clone(),
                vhost: v.clone(),
                exchange: t.source().exchange.clone(),
                write: t.source().write.clone(),
                read: t.source().read.clone(),
            })
            .collect(),
        loopback_users: db.loopback_users.iter().cloned().collect(),
        kafka_acls: db
            .acls
            .iter()
            .flat_map(|(v, set)| {
                set.iter().map(|b| AclRecord {
                    vhost: v.clone(),
                    binding: b.clone(),
                })
            })
            .collect(),
    };
    // Plain structs with string keys: serialization cannot fail.
    let mut out = serde_json::to_vec_pretty(&snap).unwrap_or_default();
    out.push(b'\n');
    out
}

pub(super) fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<Db, AuthError> {
    let corrupt = |reason: String| AuthError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if snap.format != FORMAT || snap.format_version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unsupported format {:?} version {}",
            snap.format, snap.format_version
        )));
    }
    let fake_salt_secret: [u8; 32] = snap
        .scram_fake_salt_secret
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("scram_fake_salt_secret must be 32 bytes".into()))?;
    let mut db = Db {
        fake_salt_secret,
        loopback_users: snap.loopback_users.into_iter().collect(),
        ..Db::empty()
    };
    for u in snap.users {
        let algorithm = HashingAlgorithm::from_rabbit_name(&u.hashing_algorithm)
            .ok_or_else(|| corrupt(format!("user '{}': unknown hashing algorithm", u.name)))?;
        let password_hash = PasswordHash::from_base64(algorithm, &u.password_hash)
            .map_err(|_| corrupt(format!("user '{}': password hash is not base64", u.name)))?;
        let user = User {
            name: u.name.clone(),
            password_hash,
            tags: u.tags,
            limits: UserLimits {
                max_connections: u.limits.max_connections,
                max_channels: u.limits.max_channels,
            },
            scram: u.scram,
        };
        db.users.insert(u.name, Arc::new(user));
    }
    for v in snap.vhosts {
        db.vhosts.insert(
            v.name.clone(),
            VhostInfo {
                name: v.name,
                description: v.description,
                tags: v.tags,
                default_queue_type: v.default_queue_type,
                protected_from_deletion: v.protected_from_deletion,
                tracing: v.tracing,
                limits: VhostLimits {
                    max_connections: v.limits.max_connections,
                    max_queues: v.limits.max_queues,
                },
            },
        );
    }
    // Rows were valid when written; a pattern the current regex engine rejects denies
    // rather than failing the boot.
    for p in snap.permissions {
        if !db.users.contains_key(&p.user) || !db.vhosts.contains_key(&p.vhost) {
            return Err(corrupt(format!(
                "permission for unknown user '{}' or vhost '{}'",
                p.user, p.vhost
            )));
        }
        let perm = Permission {
            configure: p.configure,
            write: p.write,
            read: p.read,
        };
        db.permissions.insert(
            (p.user, p.vhost),
            Arc::new(CompiledPermission::compile_lenient(&perm)),
        );
    }
    for t in snap.topic_permissions {
        if !db.users.contains_key(&t.user) || !db.vhosts.contains_key(&t.vhost) {
            return Err(corrupt(format!(
                "topic permission for unknown user '{}' or vhost '{}'",
                t.user, t.vhost
            )));
        }
        let tp = TopicPermission {
            exchange: t.exchange,
            write: t.write,
            read: t.read,
        };
        let compiled = CompiledTopicPermission::compile_lenient(&tp, &t.user, &t.vhost);
        db.topic_permissions
            .insert((t.user, t.vhost, tp.exchange), Arc::new(compiled));
    }
    let mut acls: BTreeMap<String, BTreeSet<AclBinding>> = BTreeMap::new();
    for a in snap.kafka_acls {
        if !db.vhosts.contains_key(&a.vhost) {
            return Err(corrupt(format!(
                "kafka ACL for unknown vhost '{}'",
                a.vhost
            )));
        }
        acls.entry(a.vhost).or_default().insert(a.binding);
    }
    db.acls = acls.into_iter().map(|(v, s)| (v, Arc::new(s))).collect();
    Ok(db)
}

pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Write-to-temp, fsync, rename over the snapshot, fsync the directory.
pub(super) fn write_snapshot(path: &Path, db: &Db) -> Result<(), AuthError> {
    let bytes = encode_snapshot(db);
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        Ok(())
    };
    write().map_err(|e| AuthError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| AuthError::io(path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuthError::io(dir, e))?;
    Ok(())
}
