//! RabbitMQ's definitions JSON (`rabbit_definitions.erl`): the serde shape only.
//!
//! One struct for the whole document, so the broker engine can apply queues, exchanges,
//! bindings and policies from the same parse that
//! [`AuthStore::import_access`](crate::store::AuthStore::import_access) takes users,
//! vhosts, permissions, topic permissions and limits from.
//!
//! Tolerance, as RabbitMQ's importer: unknown fields are ignored; a missing list is empty;
//! `null` counts as missing; user `tags` may be a list or one comma-separated string
//! (HTTP exports before ~3.8.10); a user may carry `password` (clear text, hashed on
//! import) instead of `password_hash`, but not both. A missing `hashing_algorithm` means
//! MD5 in exports from RabbitMQ 3.0–3.5 (per `rabbit_version`) and SHA-256 otherwise.
//!
//! Export writes every top-level key (empty lists included) and tags as a list, like
//! current RabbitMQ.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::model::{split_tags, UserLimits, VhostInfo, VhostLimits};
use crate::password::{HashingAlgorithm, PasswordHash};

/// The RabbitMQ version whose definitions format exports follow (written to
/// `rabbit_version` / `rabbitmq_version`).
pub const RABBIT_COMPAT_VERSION: &str = "4.1.0";

/// A definitions document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub rabbit_version: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub rabbitmq_version: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub users: Vec<UserDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub vhosts: Vec<VhostDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub permissions: Vec<PermissionDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub topic_permissions: Vec<TopicPermissionDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub parameters: Vec<ParameterDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub global_parameters: Vec<GlobalParameterDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub policies: Vec<PolicyDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub queues: Vec<QueueDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub exchanges: Vec<ExchangeDefinition>,
    #[serde(default, deserialize_with = "nullable")]
    pub bindings: Vec<BindingDefinition>,
    /// FerryMQ's Kafka ACL bindings (not a RabbitMQ key: RabbitMQ ignores it, and a
    /// RabbitMQ export has none).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub kafka_acls: Vec<KafkaAclDefinition>,
}

/// `kafka_acls[]`: one Kafka ACL binding of a vhost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaAclDefinition {
    pub vhost: String,
    #[serde(flatten)]
    pub binding: crate::acl::AclBinding,
}

/// `users[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserDefinition {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Clear-text password (import only; never exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashing_algorithm: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub limits: UserLimitsDefinition,
}

/// `users[].limits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UserLimitsDefinition {
    #[serde(
        rename = "max-connections",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_i64"
    )]
    pub max_connections: Option<i64>,
    #[serde(
        rename = "max-channels",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_i64"
    )]
    pub max_channels: Option<i64>,
}

impl From<UserLimitsDefinition> for UserLimits {
    fn from(d: UserLimitsDefinition) -> Self {
        UserLimits {
            max_connections: d.max_connections,
            max_channels: d.max_channels,
        }
        .normalized()
    }
}

impl From<UserLimits> for UserLimitsDefinition {
    fn from(l: UserLimits) -> Self {
        UserLimitsDefinition {
            max_connections: l.max_connections,
            max_channels: l.max_channels,
        }
    }
}

/// `vhosts[]`. RabbitMQ ≥ 3.11 writes description/tags/default_queue_type both at the top
/// level and inside `metadata`; import prefers `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VhostDefinition {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_tags"
    )]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_bool"
    )]
    pub tracing: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_bool"
    )]
    pub protected_from_deletion: Option<bool>,
    /// Limits if given inline (an object with `max-connections` / `max-queues`, or a list
    /// of such objects); RabbitMQ normally exports them as `vhost-limits` parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<VhostMetadata>,
}

/// `vhosts[].metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VhostMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_tags"
    )]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_bool"
    )]
    pub protected_from_deletion: Option<bool>,
}

impl VhostDefinition {
    /// The vhost's metadata (metadata fields win over top-level ones) and inline limits.
    pub fn to_info(&self) -> VhostInfo {
        let meta = self.metadata.clone().unwrap_or_default();
        VhostInfo {
            name: self.name.clone(),
            description: meta
                .description
                .or_else(|| self.description.clone())
                .unwrap_or_default(),
            tags: meta.tags.or_else(|| self.tags.clone()).unwrap_or_default(),
            default_queue_type: meta
                .default_queue_type
                .or_else(|| self.default_queue_type.clone()),
            protected_from_deletion: meta
                .protected_from_deletion
                .or(self.protected_from_deletion)
                .unwrap_or(false),
            tracing: self.tracing.unwrap_or(false),
            limits: self
                .limits
                .as_ref()
                .map(vhost_limits_from_value)
                .unwrap_or_default(),
        }
    }

    /// The export form of a vhost.
    pub fn from_info(v: &VhostInfo) -> Self {
        VhostDefinition {
            name: v.name.clone(),
            description: Some(v.description.clone()),
            tags: Some(v.tags.clone()),
            default_queue_type: v.default_queue_type.clone(),
            tracing: Some(v.tracing),
            protected_from_deletion: None,
            limits: None,
            metadata: Some(VhostMetadata {
                description: Some(v.description.clone()),
                tags: Some(v.tags.clone()),
                default_queue_type: v.default_queue_type.clone(),
                protected_from_deletion: v.protected_from_deletion.then_some(true),
            }),
        }
    }
}

/// Reads `{"max-connections": n, "max-queues": n}` (or a list of such objects, merged).
/// Numbers may be strings; anything unreadable is ignored. Negative = unlimited.
pub fn vhost_limits_from_value(v: &Value) -> VhostLimits {
    let mut out = VhostLimits::default();
    let mut apply = |obj: &Map<String, Value>| {
        if let Some(n) = obj.get("max-connections").and_then(value_i64) {
            out.max_connections = Some(n);
        }
        if let Some(n) = obj.get("max-queues").and_then(value_i64) {
            out.max_queues = Some(n);
        }
    };
    match v {
        Value::Object(o) => apply(o),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_object)
            .for_each(&mut apply),
        _ => {}
    }
    out.normalized()
}

/// `{"max-connections": n, "max-queues": n}` with only the set limits.
pub fn vhost_limits_to_value(l: &VhostLimits) -> Value {
    let mut m = Map::new();
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), n.into());
    }
    if let Some(n) = l.max_queues {
        m.insert("max-queues".into(), n.into());
    }
    Value::Object(m)
}

fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `permissions[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDefinition {
    #[serde(deserialize_with = "nullable")]
    pub user: String,
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    #[serde(default, deserialize_with = "nullable")]
    pub configure: String,
    #[serde(default, deserialize_with = "nullable")]
    pub write: String,
    #[serde(default, deserialize_with = "nullable")]
    pub read: String,
}

/// `topic_permissions[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermissionDefinition {
    #[serde(deserialize_with = "nullable")]
    pub user: String,
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    #[serde(default, deserialize_with = "nullable")]
    pub exchange: String,
    #[serde(default, deserialize_with = "nullable")]
    pub write: String,
    #[serde(default, deserialize_with = "nullable")]
    pub read: String,
}

/// Component of the vhost-limits runtime parameter.
pub const VHOST_LIMITS_COMPONENT: &str = "vhost-limits";

/// `parameters[]` (per-vhost runtime parameters: `vhost-limits`, `federation-upstream`,
/// `shovel`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterDefinition {
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    #[serde(deserialize_with = "nullable")]
    pub component: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub value: Value,
}

/// `global_parameters[]` (`cluster_name`, `internal_cluster_id`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GlobalParameterDefinition {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(default)]
    pub value: Value,
}

/// `policies[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDefinition {
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub pattern: String,
    /// `queues`, `classic_queues`, `quorum_queues`, `streams`, `exchanges` or `all`.
    #[serde(
        rename = "apply-to",
        default = "apply_to_all",
        deserialize_with = "nullable_apply_to"
    )]
    pub apply_to: String,
    #[serde(default, deserialize_with = "lenient_i64_or_zero")]
    pub priority: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub definition: Map<String, Value>,
}

fn apply_to_all() -> String {
    "all".to_owned()
}

fn nullable_apply_to<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(apply_to_all))
}

fn default_true() -> bool {
    true
}

/// `queues[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDefinition {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    /// `classic`, `quorum`, `stream` (absent in old exports: classic, or `x-queue-type`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<String>,
    /// Missing ⇒ durable (definitions describe durable topology).
    #[serde(default = "default_true", deserialize_with = "lenient_bool_true")]
    pub durable: bool,
    #[serde(default, deserialize_with = "lenient_bool_false")]
    pub auto_delete: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub arguments: Map<String, Value>,
}

/// `exchanges[]` (`amq.*` and `""` are skipped by importers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDefinition {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub exchange_type: String,
    #[serde(default = "default_true", deserialize_with = "lenient_bool_true")]
    pub durable: bool,
    #[serde(default, deserialize_with = "lenient_bool_false")]
    pub auto_delete: bool,
    #[serde(default, deserialize_with = "lenient_bool_false")]
    pub internal: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub arguments: Map<String, Value>,
}

/// `bindings[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDefinition {
    #[serde(default, deserialize_with = "nullable")]
    pub source: String,
    #[serde(deserialize_with = "nullable")]
    pub vhost: String,
    #[serde(deserialize_with = "nullable")]
    pub destination: String,
    /// `queue` or `exchange`.
    #[serde(deserialize_with = "nullable")]
    pub destination_type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub routing_key: String,
    #[serde(default, deserialize_with = "nullable")]
    pub arguments: Map<String, Value>,
}

impl Definitions {
    /// Parses and validates a definitions document. The error names the JSON position or
    /// the offending user.
    pub fn parse(bytes: &[u8]) -> Result<Definitions, AuthError> {
        // serde would also read a struct from a JSON array; a document must be an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(AuthError::InvalidDefinitions(
                "expected a JSON object".into(),
            ));
        }
        let defs: Definitions = serde_json::from_slice(bytes)
            .map_err(|e| AuthError::InvalidDefinitions(e.to_string()))?;
        defs.validate()?;
        Ok(defs)
    }

    /// Serializes as pretty JSON (what `GET /api/definitions` returns).
    pub fn to_json_pretty(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail (string keys, no NaN floats can be
        // produced from parsed JSON).
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The algorithm of users without `hashing_algorithm`: MD5 for exports of RabbitMQ
    /// 3.0–3.5, which had only MD5; SHA-256 (3.6.0's default) otherwise.
    pub fn default_hashing_algorithm(&self) -> HashingAlgorithm {
        let version = self
            .rabbit_version
            .as_deref()
            .or(self.rabbitmq_version.as_deref());
        let mut parts = version.unwrap_or("").trim().split('.');
        let major = parts.next().and_then(|p| p.parse::<u32>().ok());
        let minor = parts.next().and_then(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
                .ok()
        });
        match (major, minor) {
            (Some(3), Some(0..=5)) => HashingAlgorithm::Md5,
            _ => HashingAlgorithm::Sha256,
        }
    }

    /// The password hash a user definition describes: `Ok(None)` when it carries a clear
    /// `password` (to be hashed by the store), a passwordless hash when it has neither.
    pub fn user_password_hash(
        &self,
        u: &UserDefinition,
    ) -> Result<Option<PasswordHash>, AuthError> {
        match (&u.password_hash, &u.password) {
            (Some(_), Some(_)) => Err(AuthError::InvalidDefinitions(format!(
                "user '{}' has both password and password_hash",
                u.name
            ))),
            (None, Some(_)) => Ok(None),
            (hash, None) => {
                let alg = match &u.hashing_algorithm {
                    Some(name) => HashingAlgorithm::from_rabbit_name(name).ok_or_else(|| {
                        AuthError::InvalidDefinitions(format!(
                            "user '{}': unknown hashing_algorithm '{name}'",
                            u.name
                        ))
                    })?,
                    None => self.default_hashing_algorithm(),
                };
                let hash = PasswordHash::from_base64(alg, hash.as_deref().unwrap_or("")).map_err(
                    |_| {
                        AuthError::InvalidDefinitions(format!(
                            "user '{}': password_hash is not base64",
                            u.name
                        ))
                    },
                )?;
                Ok(Some(hash))
            }
        }
    }

    /// Checks what the auth store will need: user names, password fields, vhost names.
    /// (Cross references and regexes are checked by the import itself.)
    pub fn validate(&self) -> Result<(), AuthError> {
        for u in &self.users {
            if u.name.is_empty() {
                return Err(AuthError::InvalidDefinitions(
                    "a user has an empty name".into(),
                ));
            }
            self.user_password_hash(u)?;
        }
        for v in &self.vhosts {
            if v.name.is_empty() {
                return Err(AuthError::InvalidDefinitions(
                    "a vhost has an empty name".into(),
                ));
            }
        }
        Ok(())
    }
}

// ---- lenient field decoders ------------------------------------------------------------

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn tags_from_value(v: Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(split_tags(&s)),
        Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|t| match t {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        _ => None,
    }
}

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .and_then(tags_from_value)
        .unwrap_or_default())
}

fn opt_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(tags_from_value))
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(value_i64))
}

fn lenient_i64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(lenient_i64(d)?.unwrap_or(0))
}

fn value_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(value_bool))
}

fn lenient_bool_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(lenient_bool(d)?.unwrap_or(true))
}

fn lenient_bool_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(lenient_bool(d)?.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RABBIT_EXPORT: &str = r#"{
      "rabbit_version": "3.13.7",
      "rabbitmq_version": "3.13.7",
      "product_name": "RabbitMQ",
      "users": [
        {"name": "guest", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
         "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}},
        {"name": "old", "password_hash": "", "tags": "management, policymaker",
         "limits": {"max-connections": 5, "max-channels": "-1"}}
      ],
      "vhosts": [
        {"name": "/", "description": "Default virtual host", "tags": [],
         "metadata": {"description": "Default virtual host", "tags": ["a"], "default_queue_type": "quorum"}},
        {"name": "v1", "tracing": true, "limits": {"max-queues": 2}}
      ],
      "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
      "topic_permissions": [{"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": ".*"}],
      "parameters": [{"vhost": "v1", "component": "vhost-limits", "name": "limits",
                      "value": {"max-connections": 10}}],
      "global_parameters": [{"name": "cluster_name", "value": "rabbit@host"}],
      "policies": [{"vhost": "/", "name": "ttl", "pattern": "^t\\.", "apply-to": "queues",
                    "definition": {"message-ttl": 1000}, "priority": 1}],
      "queues": [{"name": "q1", "vhost": "/", "durable": true, "auto_delete": false,
                  "arguments": {"x-queue-type": "classic"}, "type": "classic"}],
      "exchanges": [{"name": "x1", "vhost": "/", "type": "topic", "durable": true,
                     "auto_delete": false, "internal": false, "arguments": {}}],
      "bindings": [{"source": "x1", "vhost": "/", "destination": "q1", "destination_type": "queue",
                    "routing_key": "a.#", "arguments": {}}]
    }"#;

    #[test]
    fn parses_a_rabbitmq_export() {
        let d = Definitions::parse(RABBIT_EXPORT.as_bytes()).unwrap();
        assert_eq!(d.users.len(), 2);
        assert_eq!(d.users[0].tags, vec!["administrator"]);
        assert_eq!(d.users[1].tags, vec!["management", "policymaker"]);
        assert_eq!(
            UserLimits::from(d.users[1].limits),
            UserLimits {
                max_connections: Some(5),
                max_channels: None
            }
        );
        let h = d.user_password_hash(&d.users[0]).unwrap().unwrap();
        assert!(h.verify(b"test12"));
        let h = d.user_password_hash(&d.users[1]).unwrap().unwrap();
        assert!(h.is_passwordless());
        let root = d.vhosts[0].to_info();
        assert_eq!(root.description, "Default virtual host");
        assert_eq!(root.tags, vec!["a"]);
        assert_eq!(root.default_queue_type.as_deref(), Some("quorum"));
        let v1 = d.vhosts[1].to_info();
        assert!(v1.tracing);
        assert_eq!(v1.limits.max_queues, Some(2));
        assert_eq!(d.policies[0].apply_to, "queues");
        assert_eq!(d.policies[0].priority, 1);
        assert_eq!(d.queues[0].queue_type.as_deref(), Some("classic"));
        assert_eq!(d.exchanges[0].exchange_type, "topic");
        assert_eq!(d.bindings[0].routing_key, "a.#");
        assert_eq!(
            vhost_limits_from_value(&d.parameters[0].value).max_connections,
            Some(10)
        );
    }

    #[test]
    fn missing_and_null_fields() {
        let d = Definitions::parse(b"{}").unwrap();
        assert_eq!(d, Definitions::default());
        let d = Definitions::parse(br#"{"users": null, "vhosts": [{"name": "v", "tags": null}],
            "queues": [{"name": "q", "vhost": "v"}], "policies": [{"vhost":"v","name":"p","apply-to":null}]}"#)
        .unwrap();
        assert!(d.users.is_empty());
        assert!(d.queues[0].durable);
        assert!(!d.queues[0].auto_delete);
        assert_eq!(d.policies[0].apply_to, "all");
    }

    #[test]
    fn password_and_hash_is_an_error() {
        let err = Definitions::parse(
            br#"{"users":[{"name":"u","password":"p","password_hash":"AAAA"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid definitions: user 'u' has both password and password_hash"
        );
        assert!(Definitions::parse(
            br#"{"users":[{"name":"u","password_hash":"AAAA","hashing_algorithm":"bcrypt"}]}"#
        )
        .is_err());
        assert!(Definitions::parse(br#"{"users":[{"name":"u","password_hash":"%%%"}]}"#).is_err());
        assert!(Definitions::parse(br#"{"users":[{"name":"","password":"p"}]}"#).is_err());
        assert!(Definitions::parse(br#"{"users":[{"password":"p"}]}"#).is_err());
        let err = Definitions::parse(b"{\"users\": [").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid definitions: "),
            "{err}"
        );
        assert!(Definitions::parse(b"[]").is_err());
        assert!(Definitions::parse(b"").is_err());
    }

    #[test]
    fn default_algorithm_by_version() {
        let alg = |v: &str| {
            Definitions {
                rabbit_version: Some(v.into()),
                ..Default::default()
            }
            .default_hashing_algorithm()
        };
        assert_eq!(alg("3.5.7"), HashingAlgorithm::Md5);
        assert_eq!(alg("3.0.0"), HashingAlgorithm::Md5);
        assert_eq!(alg("3.6.0"), HashingAlgorithm::Sha256);
        assert_eq!(alg("3.13.7"), HashingAlgorithm::Sha256);
        assert_eq!(alg("4.1.0"), HashingAlgorithm::Sha256);
        assert_eq!(alg("garbage"), HashingAlgorithm::Sha256);
        assert_eq!(
            Definitions::default().default_hashing_algorithm(),
            HashingAlgorithm::Sha256
        );
        let d = Definitions::parse(
            br#"{"rabbit_version":"3.5.1","users":[{"name":"u","password_hash":"AAAAAAAA"}]}"#,
        )
        .unwrap();
        assert_eq!(
            d.user_password_hash(&d.users[0])
                .unwrap()
                .unwrap()
                .algorithm,
            HashingAlgorithm::Md5
        );
    }

    #[test]
    fn round_trips_through_serde() {
        let d = Definitions::parse(RABBIT_EXPORT.as_bytes()).unwrap();
        let again = Definitions::parse(&d.to_json_pretty()).unwrap();
        // Comma tags come back as a list; everything else is equal.
        assert_eq!(again, d);
        let v: Value = serde_json::from_slice(&d.to_json_pretty()).unwrap();
        assert!(v["users"][1]["tags"].is_array());
    }
}
