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
    /// HTTP port (reserved; the management API arrives with its own issue).
    pub http_port: u16,
    /// Largest frame the broker accepts and proposes in `connection.tune`.
    pub frame_max: u32,
    /// Channels per connection.
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, seconds (0 disables).
    pub heartbeat: u16,
    /// Largest message body accepted, bytes.
    pub max_message_size: u64,
    /// When durable queues fsync: `always` (group commit before every publisher confirm),
    /// `interval:<ms>` or `never`. See docs/durability.md.
    pub fsync: String,
    /// Free disk space (bytes) below which publishers are blocked (`connection.blocked`).
    pub disk_free_limit: u64,
    /// Delivery acknowledgement timeout, ms (0 = off; RabbitMQ's default is 30 minutes).
    /// A queue's `x-consumer-timeout` overrides it.
    pub consumer_timeout: u64,
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
            http_port: 15672,
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            fsync: "always".into(),
            disk_free_limit: 50_000_000,
            consumer_timeout: 1_800_000,
        }
    }
}

impl Config {
    /// The parsed fsync policy.
    pub fn fsync_policy(&self) -> anyhow::Result<ferrymq_store::log::FsyncPolicy> {
        self.fsync
            .parse()
            .map_err(|e| anyhow::anyhow!("fsync = {:?}: {e}", self.fsync))
    }

    /// Reads a TOML file on top of the defaults.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))
    }
}
