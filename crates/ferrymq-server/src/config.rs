//! Broker configuration: embedded defaults, overridden by a TOML file, then by
//! `FERRYMQ_*` environment variables and command-line flags (the binary applies those).

use std::path::PathBuf;

use serde::Deserialize;

/// Everything the broker needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for durable data.
    pub data_dir: PathBuf,
    /// Address the listeners bind to.
    pub bind: String,
    /// AMQP 0-9-1 port (0 picks a free one).
    pub amqp_port: u16,
    /// Kafka port (0 picks a free one).
    pub kafka_port: u16,
    /// Host advertised to Kafka clients in Metadata and FindCoordinator (the port
    /// advertised is the bound one).
    pub kafka_advertised_host: String,
    /// Create unknown topics when a Metadata request allows it (Kafka's
    /// `auto.create.topics.enable`).
    pub kafka_auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with `num_partitions = -1`.
    pub kafka_default_partitions: i32,
    /// Kafka's `offsets.retention.minutes`: how long committed offsets of a group without
    /// members (or of topics it no longer subscribes to) are kept (KIP-211).
    pub kafka_offsets_retention_minutes: u64,
    /// Kafka's `offsets.retention.check.interval.ms`: how often expired offsets are removed.
    pub kafka_offsets_retention_check_interval_ms: u64,
    /// Kafka's `group.max.size`: most members of one classic consumer group.
    pub kafka_group_max_size: u32,
    /// Fetch sessions (KIP-227) the broker keeps at most (Kafka's
    /// `max.incremental.fetch.session.cache.slots`; 0: sessionless fetches only).
    pub kafka_fetch_session_cache_slots: usize,
    /// Kafka's `log.cleaner.dedupe.buffer.size`: bytes of the offset map of a compaction
    /// pass (one pass runs at a time; 24 bytes a key).
    pub kafka_cleaner_dedupe_buffer_bytes: usize,
    /// HTTP port of the management API, web UI and metrics (0 picks a free one).
    pub http_port: u16,
    /// Largest frame the broker accepts and proposes in `connection.tune`.
    pub frame_max: u32,
    /// Channels per connection.
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, seconds (0 disables).
    pub heartbeat: u16,
    /// Largest message body accepted, bytes.
    pub max_message_size: u64,
    /// Bytes of message bodies one AMQP connection may have in assembly (content header
    /// received, body frames still arriving) across all its channels. RabbitMQ has no such
    /// cap; without one, many channels each declaring a large message would reserve
    /// buffers the memory alarm could not take back (it stops reading the very frames that
    /// would complete them). A content header over it closes its channel (406).
    pub max_assembly_bytes: u64,
    /// When durable queues fsync: `always` (group commit before every publisher confirm),
    /// `interval:<ms>` or `never`. See docs/durability.md.
    pub fsync: String,
    /// Free disk space (bytes) below which publishers are blocked (`connection.blocked`).
    pub disk_free_limit: u64,
    /// Bytes of messages all queues together keep in memory before paging their backlogs
    /// to disk (`--queue-memory-budget`); 0 derives it: half of the memory high
    /// watermark's limit. See ARCHITECTURE.md.
    pub queue_memory_budget: u64,
    /// Memory use above which publishers are blocked: a fraction of RAM or of the cgroup
    /// limit (`0.4`, RabbitMQ's default) or a size (`2GiB`, `300MB`). See `memory`.
    pub memory_high_watermark: String,
    /// Open AMQP connections the broker accepts (RabbitMQ's `connection_max`); a client
    /// beyond it is refused at `connection.open` with 530. `None`: no limit.
    pub connection_max: Option<usize>,
    /// Consumers per channel (RabbitMQ's `consumer_max_per_channel`); one more closes
    /// the connection with 530. `None`: no limit.
    pub consumer_max_per_channel: Option<usize>,
    /// Delivery acknowledgement timeout, ms (0 = off; RabbitMQ's default is 30 minutes).
    /// A queue's `x-consumer-timeout` overrides it.
    pub consumer_timeout: u64,
    /// Policies: queue arguments applied to queues whose name matches a pattern.
    pub policies: Vec<PolicyConfig>,
    /// Operator policies: caps on queue limits (the stricter value wins).
    pub operator_policies: Vec<PolicyConfig>,
    /// First boot only: create this administrator (allowed from anywhere) instead of
    /// `guest` (loopback only). RabbitMQ's container image reads the same variables.
    pub default_user: Option<String>,
    pub default_pass: Option<String>,
    /// A RabbitMQ definitions JSON file imported at boot (users, vhosts, permissions,
    /// topic permissions, policies, exchanges, queues, bindings).
    pub load_definitions: Option<PathBuf>,
    /// PEM certificate chain and private key: with both, the TLS listeners open (AMQPS,
    /// Kafka SSL/SASL_SSL, HTTPS). Reloaded on SIGHUP.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle that client certificates are verified against.
    pub tls_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `tls_ca_file` (RabbitMQ's
    /// `verify_peer` + `fail_if_no_peer_cert`). Without it a client certificate is
    /// verified when offered (Kafka's `ssl.client.auth=requested`).
    pub tls_verify_peer: bool,
    /// AMQPS port (0 picks a free one).
    pub amqps_port: u16,
    /// Kafka SSL / SASL_SSL port (0 picks a free one).
    pub kafka_tls_port: u16,
    /// HTTPS port for the management API (0 picks a free one).
    pub https_port: u16,
    /// Port of the Prometheus metrics listener (`/metrics`, `/metrics/per-object`,
    /// `/metrics/detailed`, no authentication; RabbitMQ's 15692; 0 picks a free one).
    pub prometheus_port: u16,
    /// The vhost Kafka clients work in unless their SASL name is `vhost:user`.
    pub kafka_vhost: String,
    /// SASL mechanisms offered on the Kafka ports.
    pub kafka_sasl_mechanisms: Vec<String>,
}

/// A policy as written in the config file (`[[policies]]`) or given on the command line
/// (`--policy 'NAME PATTERN {JSON definition}'`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    pub pattern: String,
    #[serde(default = "apply_to_all", alias = "apply_to", rename = "apply-to")]
    pub apply_to: String,
    #[serde(default)]
    pub priority: i64,
    pub definition: std::collections::BTreeMap<String, serde_json::Value>,
}

fn apply_to_all() -> String {
    "all".into()
}

impl PolicyConfig {
    /// Parses the command-line form `NAME PATTERN DEFINITION`, DEFINITION being a JSON
    /// object as `rabbitmqctl set_policy` takes it.
    pub fn parse_cli(s: &str) -> anyhow::Result<PolicyConfig> {
        let s = s.trim();
        let (name, rest) = s
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow::anyhow!("policy {s:?}: expected NAME PATTERN DEFINITION"))?;
        let (pattern, def) = rest
            .trim_start()
            .split_once(char::is_whitespace)
            .ok_or_else(|| anyhow::anyhow!("policy {s:?}: expected NAME PATTERN DEFINITION"))?;
        let definition = serde_json::from_str(def.trim()).map_err(|e| {
            anyhow::anyhow!("policy {name:?}: definition is not a JSON object: {e}")
        })?;
        Ok(PolicyConfig {
            name: name.into(),
            pattern: pattern.into(),
            apply_to: apply_to_all(),
            priority: 0,
            definition,
        })
    }

    fn compile(&self, operator: bool) -> anyhow::Result<ferrymq_core::policy::Policy> {
        use amq_protocol::types::{AMQPValue, LongString};
        let apply_to = ferrymq_core::policy::ApplyTo::parse(&self.apply_to).ok_or_else(|| {
            anyhow::anyhow!(
                "policy {:?}: apply-to must be queues, exchanges or all",
                self.name
            )
        })?;
        let mut def = Vec::new();
        for (k, v) in &self.definition {
            let v = match v {
                serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
                serde_json::Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
                serde_json::Value::Number(n) if n.is_i64() => {
                    AMQPValue::LongLongInt(n.as_i64().unwrap_or_default())
                }
                other => anyhow::bail!("policy {:?}: {k} = {other}: unsupported value", self.name),
            };
            def.push((k.clone(), v));
        }
        ferrymq_core::policy::Policy::new(
            &self.name,
            &self.pattern,
            apply_to,
            self.priority,
            def,
            operator,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Compiles policies and operator policies (from the configuration or definitions).
pub fn compile_policies(
    policies: &[PolicyConfig],
    operator: &[PolicyConfig],
) -> anyhow::Result<ferrymq_core::policy::Policies> {
    Ok(ferrymq_core::policy::Policies {
        policies: policies
            .iter()
            .map(|p| p.compile(false))
            .collect::<anyhow::Result<_>>()?,
        operator: operator
            .iter()
            .map(|p| p.compile(true))
            .collect::<anyhow::Result<_>>()?,
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./ferrymq-data"),
            bind: "0.0.0.0".into(),
            amqp_port: 5672,
            kafka_port: 9092,
            kafka_advertised_host: "127.0.0.1".into(),
            kafka_auto_create_topics: true,
            kafka_default_partitions: 1,
            kafka_offsets_retention_minutes: 7 * 24 * 60,
            kafka_offsets_retention_check_interval_ms: 600_000,
            kafka_group_max_size: i32::MAX as u32,
            kafka_fetch_session_cache_slots: 1000,
            kafka_cleaner_dedupe_buffer_bytes: 128 << 20,
            http_port: 15672,
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            max_assembly_bytes: 256 * 1024 * 1024,
            fsync: "always".into(),
            disk_free_limit: 50_000_000,
            queue_memory_budget: 0,
            memory_high_watermark: "0.4".into(),
            connection_max: None,
            consumer_max_per_channel: None,
            consumer_timeout: 1_800_000,
            policies: Vec::new(),
            operator_policies: Vec::new(),
            default_user: None,
            default_pass: None,
            load_definitions: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_verify_peer: false,
            amqps_port: 5671,
            kafka_tls_port: 9093,
            https_port: 15671,
            prometheus_port: 15692,
            kafka_vhost: "/".into(),
            kafka_sasl_mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
        }
    }
}

impl Config {
    /// Whether the TLS listeners open (both a certificate and a key are configured).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// The queue memory budget in bytes: `queue_memory_budget`, or when 0, half of the
    /// memory high watermark's limit (`memory_limit`, bytes), at least 64 MiB: backlogs
    /// alone page to disk well before the memory alarm blocks publishers.
    pub fn queue_memory_budget_bytes(&self, memory_limit: u64) -> usize {
        if self.queue_memory_budget > 0 {
            return usize::try_from(self.queue_memory_budget).unwrap_or(usize::MAX);
        }
        usize::try_from(memory_limit / 2)
            .unwrap_or(usize::MAX)
            .max(64 << 20)
    }

    /// The parsed memory high watermark.
    pub fn memory_watermark(&self) -> anyhow::Result<crate::memory::Watermark> {
        Ok(self.memory_high_watermark.parse()?)
    }

    /// The parsed fsync policy.
    pub fn fsync_policy(&self) -> anyhow::Result<ferrymq_store::log::FsyncPolicy> {
        self.fsync
            .parse()
            .map_err(|e| anyhow::anyhow!("fsync = {:?}: {e}", self.fsync))
    }

    /// The policies, compiled and checked.
    pub fn compiled_policies(&self) -> anyhow::Result<ferrymq_core::policy::Policies> {
        compile_policies(&self.policies, &self.operator_policies)
    }

    /// Reads a TOML file on top of the defaults.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_from_toml_and_cli() {
        let c: Config = toml::from_str(
            r#"
            [[policies]]
            name = "orders"
            pattern = "^orders\\."
            apply-to = "queues"
            priority = 2
            definition = { message-ttl = 60000, dead-letter-exchange = "dlx" }

            [[operator_policies]]
            name = "cap"
            pattern = ".*"
            definition = { max-length = 1000 }
            "#,
        )
        .unwrap();
        assert_eq!(c.policies[0].priority, 2);
        let compiled = c.compiled_policies().unwrap();
        assert_eq!(compiled.policies.len(), 1);
        assert_eq!(compiled.operator.len(), 1);
        let e = compiled.effective("orders.eu", &Default::default());
        assert_eq!(e.policy.as_deref(), Some("orders"));
        assert_eq!(e.operator_policy.as_deref(), Some("cap"));
        assert_eq!(e.arguments.inner().len(), 3);

        let p = PolicyConfig::parse_cli(
            r#"ttl ^a\.  {"message-ttl": 5, "overflow": "reject-publish"}"#,
        )
        .unwrap();
        assert_eq!((p.name.as_str(), p.pattern.as_str()), ("ttl", "^a\\."));
        assert_eq!(p.definition.len(), 2);
        assert!(PolicyConfig::parse_cli("only-a-name").is_err());
        assert!(PolicyConfig::parse_cli("n p not-json").is_err());
        let bad = Config {
            operator_policies: vec![
                PolicyConfig::parse_cli(r#"x .* {"overflow": "drop-head"}"#).unwrap()
            ],
            ..Config::default()
        };
        assert!(
            bad.compiled_policies().is_err(),
            "operator policies only cap limits"
        );
    }
}

/// Parses a size: bytes, or a number with a `KB`/`MB`/`GB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        use super::parse_size;
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("2XB").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
