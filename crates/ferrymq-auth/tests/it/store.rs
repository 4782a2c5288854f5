//! The durable store: persistence, seeding, writes and what connections see.

use ferrymq_auth::{AuthError, AuthStore, PasswordSpec, Permission, Seed};

#[test]
fn changes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    {
        let s = AuthStore::open(&path, Seed::default()).unwrap();
        s.put_user(
            "bob",
            Some(PasswordSpec::Plain("pw".into())),
            vec!["management".into()],
        )
        .unwrap();
        s.put_vhost(ferrymq_auth::VhostInfo::new("v1")).unwrap();
        s.set_permissions(
            "bob",
            "v1",
            Permission {
                configure: "^app\\.".into(),
                write: ".*".into(),
                read: ".*".into(),
            },
        )
        .unwrap();
    }
    let s = AuthStore::open(&path, Seed::default()).unwrap();
    let bob = s.authenticate_plain("bob", b"pw", false).unwrap();
    assert!(bob.has_tag("management"));
    let access = s.access("bob", "v1").unwrap();
    assert_eq!(
        access
            .check(
                ferrymq_auth::Perm::Configure,
                ferrymq_auth::ResourceKind::Queue,
                "other.q"
            )
            .unwrap_err()
            .to_string(),
        "configure access to queue 'other.q' in vhost 'v1' refused for user 'bob'"
    );
    assert!(matches!(
        s.open_vhost("bob", "nope"),
        Err(AuthError::VhostAccessRefused { .. })
    ));
}
