//! The durable store: persistence, seeding, writes and what connections see.

use std::path::Path;
use std::sync::Arc;

use ferrymq_auth::model::{UserLimits, VhostLimits};
use ferrymq_auth::{
    AuthError, AuthStore, HashingAlgorithm, PasswordHash, PasswordSpec, Perm, Permission,
    ResourceKind, ScramCredential, ScramMechanism, Seed, TopicPermission, VhostInfo,
};

fn perm(c: &str, w: &str, r: &str) -> Permission {
    Permission {
        configure: c.into(),
        write: w.into(),
        read: r.into(),
    }
}

fn open(path: &Path) -> AuthStore {
    AuthStore::open(path, Seed::default()).unwrap()
}

fn mem() -> AuthStore {
    AuthStore::in_memory(Seed::default()).unwrap()
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<AuthStore>();
    check::<Arc<ferrymq_auth::Access>>();
}

#[test]
fn changes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    {
        let s = open(&path);
        s.put_user(
            "bob",
            Some(PasswordSpec::Plain("pw".into())),
            vec!["management".into()],
        )
        .unwrap();
        s.put_vhost(VhostInfo {
            description: "first".into(),
            tags: vec!["t".into()],
            default_queue_type: Some("quorum".into()),
            tracing: true,
            ..VhostInfo::new("v1")
        })
        .unwrap();
        s.set_permissions("bob", "v1", perm("^app\\.", ".*", ".*"))
            .unwrap();
        s.set_topic_permissions(
            "bob",
            "v1",
            TopicPermission {
                exchange: "amq.topic".into(),
                write: "^{username}\\.".into(),
                read: ".*".into(),
            },
        )
        .unwrap();
        s.set_vhost_limits(
            "v1",
            VhostLimits {
                max_connections: Some(3),
                max_queues: Some(-1),
            },
        )
        .unwrap();
        s.set_user_limits(
            "bob",
            UserLimits {
                max_connections: Some(2),
                max_channels: Some(10),
            },
        )
        .unwrap();
        s.set_loopback_users(["guest".to_owned(), "bob".to_owned()])
            .unwrap();
    }
    let s = open(&path);
    assert!(matches!(
        s.authenticate_plain("bob", b"pw", false),
        Err(AuthError::LoopbackOnly { .. })
    ));
    let bob = s.authenticate_plain("bob", b"pw", true).unwrap();
    assert!(bob.has_tag("management"));
    assert_eq!(
        bob.limits,
        UserLimits {
            max_connections: Some(2),
            max_channels: Some(10)
        }
    );
    assert_eq!(bob.scram.len(), 2);
    let v1 = s.vhost("v1").unwrap();
    assert_eq!(v1.description, "first");
    assert_eq!(v1.default_queue_type.as_deref(), Some("quorum"));
    assert!(v1.tracing);
    assert_eq!(
        v1.limits,
        VhostLimits {
            max_connections: Some(3),
            max_queues: None
        }
    );
    let access = s.access("bob", "v1").unwrap();
    assert_eq!(
        access
            .check(Perm::Configure, ResourceKind::Queue, "other.q")
            .unwrap_err()
            .to_string(),
        "configure access to queue 'other.q' in vhost 'v1' refused for user 'bob'"
    );
    assert!(access
        .check(Perm::Configure, ResourceKind::Queue, "app.q")
        .is_ok());
    assert!(access
        .check_topic(Perm::Write, "amq.topic", "bob.x")
        .is_ok());
    assert!(access
        .check_topic(Perm::Write, "amq.topic", "alice.x")
        .is_err());
    assert!(matches!(
        s.open_vhost("bob", "nope"),
        Err(AuthError::VhostAccessRefused { .. })
    ));
    assert_eq!(
        s.open_vhost("bob", "/").unwrap_err().to_string(),
        "access to vhost '/' refused for user 'bob'"
    );
    assert_eq!(s.permissions().len(), 2);
    assert_eq!(s.topic_permissions().len(), 1);
    // The file is the only state: no temp file left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["auth.json"]);
}

#[test]
fn first_boot_only_seeds_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("auth.json");
    {
        let s = open(&path);
        s.delete_user("guest").unwrap();
    }
    // Reopening does not bring guest back: seeding happens only without a file.
    let s = open(&path);
    assert!(s.user("guest").is_none());
    assert!(s.vhost("/").is_some());
}

#[test]
fn corrupt_snapshot_is_an_error_not_a_reseed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    std::fs::write(&path, b"{\"format\": \"ferrymq-auth\"").unwrap();
    let err = AuthStore::open(&path, Seed::default()).unwrap_err();
    assert!(matches!(err, AuthError::Corrupt { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"format\": \"ferrymq-auth\""
    );
    std::fs::write(&path, b"").unwrap();
    assert!(AuthStore::open(&path, Seed::default()).is_err());
    std::fs::write(&path, br#"{"format":"other","format_version":1}"#).unwrap();
    assert!(AuthStore::open(&path, Seed::default()).is_err());
}

#[test]
fn leftover_temp_file_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    drop(open(&path));
    std::fs::write(dir.path().join("auth.json.tmp"), b"half a snapsh").unwrap();
    let s = open(&path);
    assert!(s.user("guest").is_some());
    assert!(!dir.path().join("auth.json.tmp").exists());
}

#[test]
fn failed_persist_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    let s = open(&path);
    let before = std::fs::read(&path).unwrap();
    // A directory where the temp file must go makes the write fail.
    std::fs::create_dir(dir.path().join("auth.json.tmp")).unwrap();
    let v = s.version();
    let err = s
        .put_user("eve", Some(PasswordSpec::Plain("pw".into())), vec![])
        .unwrap_err();
    assert!(matches!(err, AuthError::Io { .. }), "{err}");
    assert!(s.user("eve").is_none());
    assert_eq!(s.version(), v);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    std::fs::remove_dir(dir.path().join("auth.json.tmp")).unwrap();
    s.put_user("eve", Some(PasswordSpec::Plain("pw".into())), vec![])
        .unwrap();
    assert!(open(&path).user("eve").is_some());
}

#[test]
fn revoke_applies_on_version_change() {
    let s = mem();
    let (v0, access) = (s.version(), s.access("guest", "/").unwrap());
    assert!(access
        .check(Perm::Write, ResourceKind::Exchange, "")
        .is_ok());
    s.set_permissions("guest", "/", perm(".*", "^nothing$", ".*"))
        .unwrap();
    assert_ne!(s.version(), v0);
    let access = s.access("guest", "/").unwrap();
    assert_eq!(
        access
            .check(Perm::Write, ResourceKind::Exchange, "")
            .unwrap_err()
            .to_string(),
        "write access to exchange 'amq.default' in vhost '/' refused for user 'guest'"
    );
    let v1 = s.version();
    s.clear_permissions("guest", "/").unwrap();
    assert_ne!(s.version(), v1);
    assert!(s.access("guest", "/").is_none());
}

#[test]
fn delete_user_clears_its_rows() {
    let s = mem();
    s.put_user("bob", Some(PasswordSpec::Plain("pw".into())), vec![])
        .unwrap();
    s.set_permissions("bob", "/", Permission::all()).unwrap();
    s.set_topic_permissions(
        "bob",
        "/",
        TopicPermission {
            exchange: "x".into(),
            write: ".*".into(),
            read: ".*".into(),
        },
    )
    .unwrap();
    s.delete_user("bob").unwrap();
    assert!(s.user("bob").is_none());
    assert!(s.permissions().iter().all(|p| p.user != "bob"));
    assert!(s.topic_permissions().is_empty());
    // Re-created: no rights come back.
    s.put_user("bob", Some(PasswordSpec::Plain("pw".into())), vec![])
        .unwrap();
    assert!(s.access("bob", "/").is_none());
    assert!(matches!(
        s.delete_user("nobody"),
        Err(AuthError::NoSuchUser(_))
    ));
}

#[test]
fn delete_vhost_clears_rows_and_honours_protection() {
    let s = mem();
    s.put_vhost(VhostInfo {
        protected_from_deletion: true,
        ..VhostInfo::new("keep")
    })
    .unwrap();
    s.set_permissions("guest", "keep", Permission::all())
        .unwrap();
    assert_eq!(
        s.delete_vhost("keep").unwrap_err().to_string(),
        "refusing to delete vhost 'keep' because it is protected from deletion"
    );
    assert!(s.access("guest", "keep").is_some());
    s.put_vhost(VhostInfo::new("keep")).unwrap();
    s.delete_vhost("keep").unwrap();
    assert!(s.access("guest", "keep").is_none());
    assert!(s.permissions().iter().all(|p| p.vhost != "keep"));
    // Re-created: no rights come back.
    s.put_vhost(VhostInfo::new("keep")).unwrap();
    assert!(s.access("guest", "keep").is_none());
    assert!(matches!(
        s.delete_vhost("nope"),
        Err(AuthError::NoSuchVhost(_))
    ));
}

#[test]
fn set_permissions_validates() {
    let s = mem();
    assert!(matches!(
        s.set_permissions("nobody", "/", Permission::all()),
        Err(AuthError::NoSuchUser(_))
    ));
    assert!(matches!(
        s.set_permissions("guest", "nope", Permission::all()),
        Err(AuthError::NoSuchVhost(_))
    ));
    let v = s.version();
    assert!(matches!(
        s.set_permissions("guest", "/", perm("(", ".*", ".*")),
        Err(AuthError::InvalidRegex { .. })
    ));
    assert!(matches!(
        s.set_topic_permissions(
            "guest",
            "/",
            TopicPermission {
                exchange: "x".into(),
                write: "[".into(),
                read: "".into()
            }
        ),
        Err(AuthError::InvalidRegex { .. })
    ));
    assert_eq!(s.version(), v);
    assert_eq!(
        s.access("guest", "/").unwrap().permission(),
        &Permission::all()
    );
    assert!(matches!(
        s.put_user("", None, vec![]),
        Err(AuthError::InvalidName { .. })
    ));
    assert!(matches!(
        s.put_vhost(VhostInfo::new("")),
        Err(AuthError::InvalidName { .. })
    ));
}

#[test]
fn topic_permissions_clear_one_or_all() {
    let s = mem();
    for x in ["a", "b"] {
        s.set_topic_permissions(
            "guest",
            "/",
            TopicPermission {
                exchange: x.into(),
                write: "^$".into(),
                read: "^$".into(),
            },
        )
        .unwrap();
    }
    let access = s.access("guest", "/").unwrap();
    assert!(access.check_topic(Perm::Write, "a", "k").is_err());
    assert!(access.check_topic(Perm::Write, "c", "k").is_ok());
    s.clear_topic_permissions("guest", "/", Some("a")).unwrap();
    let access = s.access("guest", "/").unwrap();
    assert!(access.check_topic(Perm::Write, "a", "k").is_ok());
    assert!(access.check_topic(Perm::Write, "b", "k").is_err());
    s.clear_topic_permissions("guest", "/", None).unwrap();
    assert!(!s.access("guest", "/").unwrap().has_topic_permissions());
}

#[test]
fn put_user_keeps_or_replaces_the_password() {
    let s = mem();
    s.put_user("bob", Some(PasswordSpec::Plain("one".into())), vec![])
        .unwrap();
    s.put_user("bob", None, vec!["monitoring".into()]).unwrap();
    let bob = s.authenticate_plain("bob", b"one", true).unwrap();
    assert_eq!(bob.tags, vec!["monitoring"]);
    assert_eq!(bob.scram.len(), 2);
    s.set_user_limits(
        "bob",
        UserLimits {
            max_connections: Some(1),
            max_channels: None,
        },
    )
    .unwrap();
    let hash = PasswordHash::with_salt(
        HashingAlgorithm::Sha256,
        [0x90, 0x8D, 0xC6, 0x0A],
        b"test12",
    );
    s.put_user("bob", Some(PasswordSpec::Hash(hash)), vec![])
        .unwrap();
    assert!(s.authenticate_plain("bob", b"one", true).is_err());
    let bob = s.authenticate_plain("bob", b"test12", true).unwrap();
    assert!(bob.scram.is_empty(), "a hash cannot give SCRAM credentials");
    assert_eq!(
        bob.limits.max_connections,
        Some(1),
        "limits survive a password change"
    );
}

#[test]
fn scram_credentials_can_be_set_and_removed() {
    let s = mem();
    let cred = ScramCredential::derive(ScramMechanism::Sha512, "kafka-pw", 8192).unwrap();
    s.set_scram_credential("guest", cred.clone()).unwrap();
    assert_eq!(
        s.scram_credential("guest", ScramMechanism::Sha512),
        Some(cred)
    );
    assert!(s
        .scram_credential("guest", ScramMechanism::Sha256)
        .is_some());
    s.delete_scram_credential("guest", ScramMechanism::Sha256)
        .unwrap();
    assert!(s
        .scram_credential("guest", ScramMechanism::Sha256)
        .is_none());
    let v = s.version();
    s.delete_scram_credential("guest", ScramMechanism::Sha256)
        .unwrap();
    assert_eq!(s.version(), v);
    assert!(s
        .scram_credential("nobody", ScramMechanism::Sha256)
        .is_none());
    assert!(s
        .set_scram_credential(
            "nobody",
            ScramCredential::derive(ScramMechanism::Sha256, "x", 4096).unwrap()
        )
        .is_err());
    // The RabbitMQ password is untouched.
    assert!(s.authenticate_plain("guest", b"guest", true).is_ok());
}

#[test]
fn limits_and_vhost_updates() {
    let s = mem();
    s.put_vhost(VhostInfo {
        limits: VhostLimits {
            max_connections: Some(-3),
            max_queues: Some(2),
        },
        ..VhostInfo::new("v")
    })
    .unwrap();
    assert_eq!(
        s.vhost("v").unwrap().limits,
        VhostLimits {
            max_connections: None,
            max_queues: Some(2)
        }
    );
    // Updating metadata keeps limits.
    s.put_vhost(VhostInfo {
        description: "d".into(),
        ..VhostInfo::new("v")
    })
    .unwrap();
    let v = s.vhost("v").unwrap();
    assert_eq!(v.description, "d");
    assert_eq!(v.limits.max_queues, Some(2));
    s.set_vhost_limits("v", VhostLimits::default()).unwrap();
    assert!(s.vhost("v").unwrap().limits.is_empty());
    assert!(s.set_vhost_limits("nope", VhostLimits::default()).is_err());
    assert!(s.set_user_limits("nobody", UserLimits::default()).is_err());
    s.set_user_limits(
        "guest",
        UserLimits {
            max_connections: Some(-1),
            max_channels: Some(0),
        },
    )
    .unwrap();
    assert_eq!(
        s.user("guest").unwrap().limits,
        UserLimits {
            max_connections: None,
            max_channels: Some(0)
        }
    );
}

#[test]
fn loopback_users() {
    let s = mem();
    assert!(s.check_loopback("guest", false).is_err());
    assert!(s.check_loopback("guest", true).is_ok());
    s.set_loopback_users(Vec::new()).unwrap();
    assert!(s.check_loopback("guest", false).is_ok());
    assert!(s.authenticate_plain("guest", b"guest", false).is_ok());
}

#[test]
fn readers_see_consistent_state_while_writers_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir.path().join("auth.json")));
    std::thread::scope(|scope| {
        let writer = {
            let s = s.clone();
            scope.spawn(move || {
                for i in 0..20 {
                    let p = if i % 2 == 0 {
                        perm("", "", "")
                    } else {
                        Permission::all()
                    };
                    s.set_permissions("guest", "/", p).unwrap();
                }
            })
        };
        for _ in 0..2 {
            let s = s.clone();
            scope.spawn(move || {
                for _ in 0..2000 {
                    let a = s.access("guest", "/").unwrap();
                    // Each Access is one whole row: all three allowed or none.
                    let r: Vec<bool> = [Perm::Configure, Perm::Write, Perm::Read]
                        .into_iter()
                        .map(|p| a.check(p, ResourceKind::Queue, "q").is_ok())
                        .collect();
                    assert!(r.iter().all(|x| *x) || r.iter().all(|x| !x));
                }
            });
        }
        writer.join().unwrap();
    });
    assert_eq!(s.version(), 20);
    assert!(open(&dir.path().join("auth.json"))
        .access("guest", "/")
        .is_some());
}
