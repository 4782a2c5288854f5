//! Definitions import and export through the store.

use ferrymq_auth::model::{UserLimits, VhostLimits};
use ferrymq_auth::{
    AuthError, AuthStore, Definitions, HashingAlgorithm, Perm, ResourceKind, ScramMechanism, Seed,
};
use serde_json::Value;

const EXPORT: &str = r#"{
  "rabbit_version": "3.13.7",
  "rabbitmq_version": "3.13.7",
  "product_name": "RabbitMQ",
  "product_version": "3.13.7",
  "users": [
    {"name": "alice", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}},
    {"name": "bob", "password": "bobpw", "tags": "management,monitoring",
     "limits": {"max-connections": 2, "max-channels": -1}}
  ],
  "vhosts": [
    {"name": "/", "description": "Default virtual host", "tags": [], "metadata": {"description": "Default virtual host", "tags": []}},
    {"name": "v1", "description": "one", "tags": ["x"], "default_queue_type": "quorum", "tracing": false,
     "metadata": {"description": "one", "tags": ["x"], "default_queue_type": "quorum"}}
  ],
  "permissions": [
    {"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
    {"user": "bob", "vhost": "v1", "configure": "^app\\.", "write": ".*", "read": ".*"}
  ],
  "topic_permissions": [
    {"user": "bob", "vhost": "v1", "exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}
  ],
  "parameters": [
    {"vhost": "v1", "component": "vhost-limits", "name": "limits", "value": {"max-connections": 5, "max-queues": 2}},
    {"vhost": "v1", "component": "shovel", "name": "s", "value": {}}
  ],
  "global_parameters": [{"name": "cluster_name", "value": "rabbit@h"}],
  "policies": [], "queues": [], "exchanges": [], "bindings": []
}"#;

fn store() -> AuthStore {
    AuthStore::in_memory(Seed {
        default_user: None,
        definitions_present: true,
    })
    .unwrap()
}

#[test]
fn boot_import_of_a_rabbitmq_hash() {
    let s = store();
    s.import_access(&Definitions::parse(EXPORT.as_bytes()).unwrap())
        .unwrap();
    let alice = s.authenticate_plain("alice", b"test12", false).unwrap();
    assert!(alice.is_administrator());
    assert!(alice.scram.is_empty());
    let bob = s.authenticate_plain("bob", b"bobpw", false).unwrap();
    assert_eq!(bob.tags, vec!["management", "monitoring"]);
    assert_eq!(
        bob.limits,
        UserLimits {
            max_connections: Some(2),
            max_channels: None
        }
    );
    assert!(s.scram_credential("bob", ScramMechanism::Sha256).is_some());
    assert_eq!(
        s.vhost("v1").unwrap().limits,
        VhostLimits {
            max_connections: Some(5),
            max_queues: Some(2)
        }
    );
    assert_eq!(
        s.vhost("v1").unwrap().default_queue_type.as_deref(),
        Some("quorum")
    );
    let access = s.access("bob", "v1").unwrap();
    assert!(access
        .check(Perm::Configure, ResourceKind::Queue, "other.q")
        .is_err());
    assert!(access
        .check_topic(Perm::Write, "amq.topic", "bob.a")
        .is_ok());
    assert!(access
        .check_topic(Perm::Write, "amq.topic", "eve.a")
        .is_err());
    // guest stays loopback-only should definitions create it.
    assert_eq!(s.loopback_users(), vec!["guest"]);
}

#[test]
fn export_has_rabbitmq_keys_and_list_tags() {
    let s = store();
    s.import_access(&Definitions::parse(EXPORT.as_bytes()).unwrap())
        .unwrap();
    let json: Value = serde_json::from_slice(&s.export_access().to_json_pretty()).unwrap();
    for key in [
        "rabbit_version",
        "rabbitmq_version",
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let users = json["users"].as_array().unwrap();
    let alice = users.iter().find(|u| u["name"] == "alice").unwrap();
    assert_eq!(
        alice["password_hash"],
        "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    );
    assert_eq!(alice["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(alice["tags"], serde_json::json!(["administrator"]));
    assert_eq!(alice["limits"], serde_json::json!({}));
    assert!(alice.get("password").is_none());
    let bob = users.iter().find(|u| u["name"] == "bob").unwrap();
    assert_eq!(bob["tags"], serde_json::json!(["management", "monitoring"]));
    assert_eq!(bob["limits"], serde_json::json!({"max-connections": 2}));
    let v1 = json["vhosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    assert_eq!(v1["description"], "one");
    assert_eq!(v1["metadata"]["default_queue_type"], "quorum");
    assert_eq!(
        json["parameters"],
        serde_json::json!([{"vhost": "v1", "component": "vhost-limits", "name": "limits",
                            "value": {"max-connections": 5, "max-queues": 2}}])
    );
    assert_eq!(json["topic_permissions"][0]["write"], "^{username}\\.");
}

#[test]
fn export_then_import_is_identity() {
    let a = store();
    a.import_access(&Definitions::parse(EXPORT.as_bytes()).unwrap())
        .unwrap();
    let exported = a.export_access();
    let b = store();
    b.import_access(&Definitions::parse(&exported.to_json_pretty()).unwrap())
        .unwrap();
    assert_eq!(b.export_access(), exported);
    assert!(b.authenticate_plain("bob", b"bobpw", true).is_ok());
}

#[test]
fn reimport_keeps_scram_credentials_of_unchanged_hashes() {
    let s = store();
    s.import_access(&Definitions::parse(EXPORT.as_bytes()).unwrap())
        .unwrap();
    let cred = s.scram_credential("bob", ScramMechanism::Sha512).unwrap();
    s.import_access(&s.export_access()).unwrap();
    assert_eq!(
        s.scram_credential("bob", ScramMechanism::Sha512),
        Some(cred)
    );
}

#[test]
fn import_is_all_or_nothing() {
    let s = store();
    let v = s.version();
    for bad in [
        // Permission in a vhost that does not exist.
        r#"{"users":[{"name":"u","password":"p"}],
            "permissions":[{"user":"u","vhost":"nope","configure":".*","write":".*","read":".*"}]}"#,
        // Permission of an unknown user.
        r#"{"permissions":[{"user":"ghost","vhost":"/","configure":".*","write":".*","read":".*"}]}"#,
        // Bad regex.
        r#"{"users":[{"name":"u","password":"p"}],
            "permissions":[{"user":"u","vhost":"/","configure":"(","write":".*","read":".*"}]}"#,
        // Limits of an unknown vhost.
        r#"{"users":[{"name":"u","password":"p"}],
            "parameters":[{"vhost":"nope","component":"vhost-limits","name":"limits","value":{}}]}"#,
    ] {
        let defs = Definitions::parse(bad.as_bytes()).unwrap();
        let err = s.import_access(&defs).unwrap_err();
        assert!(matches!(err, AuthError::InvalidDefinitions(_)), "{err}");
        assert!(s.user("u").is_none());
        assert_eq!(s.version(), v);
    }
}

#[test]
fn import_errors_are_clear() {
    let err = Definitions::parse(br#"{"users":[{"name":"u","password":"p","password_hash":""}]}"#)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid definitions: user 'u' has both password and password_hash"
    );
    let err = Definitions::parse(br#"{"users": 5}"#).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    let err = store()
        .import_access(
            &Definitions::parse(
                br#"{"permissions":[{"user":"ghost","vhost":"/","configure":".*","write":".*","read":".*"}]}"#,
            )
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid definitions: permission of user 'ghost' in vhost '/': user 'ghost' does not exist"
    );
}

#[test]
fn legacy_md5_exports() {
    let s = store();
    // RabbitMQ 3.5 had only MD5 and wrote no hashing_algorithm.
    let hash = ferrymq_auth::PasswordHash::with_salt(HashingAlgorithm::Md5, [1, 2, 3, 4], b"old");
    let json = format!(
        r#"{{"rabbit_version":"3.5.7","users":[{{"name":"old","password_hash":"{}","tags":""}}]}}"#,
        hash.to_base64()
    );
    s.import_access(&Definitions::parse(json.as_bytes()).unwrap())
        .unwrap();
    let old = s.authenticate_plain("old", b"old", true).unwrap();
    assert_eq!(old.password_hash.algorithm, HashingAlgorithm::Md5);
    assert!(old.tags.is_empty());
    let exported: Value = serde_json::from_slice(&s.export_access().to_json_pretty()).unwrap();
    assert_eq!(
        exported["users"][0]["hashing_algorithm"],
        "rabbit_password_hashing_md5"
    );
}
