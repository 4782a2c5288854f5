//! The one FerryMQ binary: `ferrymq [serve]` runs the broker (AMQP, Kafka and the HTTP
//! management API), `ferrymq bench …` the load generator, `ferrymq admin …` the
//! operator's CLI over the management API. Configuration: embedded defaults, then `--config ferrymq.toml`, then
//! `FERRYMQ_*` environment variables and flags.

use std::path::PathBuf;

mod admin;

use clap::{Args, Parser, Subcommand};
use ferrymq_server::Config;

/// jemalloc: its count of allocated bytes is what the memory alarm measures (it falls as
/// soon as queues drain, where RSS under glibc's allocator may stay high), and freed
/// memory goes back to the system from a background thread.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes allocated by the process, as jemalloc counts them (refreshed by advancing its
/// statistics epoch).
fn allocated_bytes() -> u64 {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return ferrymq_server::memory::process_rss();
    }
    stats::allocated::read().map_or_else(|_| ferrymq_server::memory::process_rss(), |b| b as u64)
}

#[derive(Debug, Parser)]
#[command(name = "ferrymq", version, about = "FerryMQ message broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

// Parsed once at start: the size of the arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default).
    Serve(ServeArgs),
    /// Load generators that work against any broker.
    #[command(subcommand)]
    Bench(ferrymq_bench::BenchCommand),
    /// Operate a running broker over its management API (queues, exchanges, bindings,
    /// connections, users, vhosts, permissions, Kafka topics and groups, definitions).
    Admin(admin::AdminArgs),
    /// Kafka topics: list, describe, create, delete (over the management API).
    Topics(admin::TopicsArgs),
    /// Kafka consumer groups: list, describe with committed offsets and lag (over the
    /// management API).
    Groups(admin::GroupsArgs),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "FERRYMQ_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "FERRYMQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to bind listeners to.
    #[arg(long, env = "FERRYMQ_BIND")]
    bind: Option<String>,
    /// AMQP port (0 picks a free port).
    #[arg(long, env = "FERRYMQ_AMQP_PORT")]
    amqp_port: Option<u16>,
    /// Kafka port (0 picks a free port).
    #[arg(long, env = "FERRYMQ_KAFKA_PORT")]
    kafka_port: Option<u16>,
    /// Host advertised to Kafka clients (the bound port is advertised with it).
    #[arg(long, env = "FERRYMQ_KAFKA_ADVERTISED_HOST")]
    kafka_advertised_host: Option<String>,
    /// Create topics on Metadata requests that allow it (true|false).
    #[arg(long, env = "FERRYMQ_KAFKA_AUTO_CREATE_TOPICS")]
    kafka_auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics.
    #[arg(long, env = "FERRYMQ_KAFKA_DEFAULT_PARTITIONS")]
    kafka_default_partitions: Option<i32>,
    /// Kafka `offsets.retention.minutes`: committed offsets of groups without members expire
    /// after this (default 7 days).
    #[arg(long, env = "FERRYMQ_KAFKA_OFFSETS_RETENTION_MINUTES")]
    kafka_offsets_retention_minutes: Option<u64>,
    /// Kafka `offsets.retention.check.interval.ms` (default 600000).
    #[arg(long, env = "FERRYMQ_KAFKA_OFFSETS_RETENTION_CHECK_INTERVAL_MS")]
    kafka_offsets_retention_check_interval_ms: Option<u64>,
    /// Kafka `group.max.size`: most members of a consumer group (default 2147483647).
    #[arg(long, env = "FERRYMQ_KAFKA_GROUP_MAX_SIZE")]
    kafka_group_max_size: Option<u32>,
    /// Fetch sessions kept at most (KIP-227; Kafka's max.incremental.fetch.session.cache.slots).
    #[arg(long, env = "FERRYMQ_KAFKA_FETCH_SESSION_CACHE_SLOTS")]
    kafka_fetch_session_cache_slots: Option<usize>,
    /// Bytes of a compaction pass's offset map, 24 a key (Kafka's
    /// log.cleaner.dedupe.buffer.size; default 134217728; one pass runs at a time).
    #[arg(long, env = "FERRYMQ_KAFKA_CLEANER_DEDUPE_BUFFER_BYTES")]
    kafka_cleaner_dedupe_buffer_bytes: Option<usize>,
    /// HTTP port (0 picks a free port).
    #[arg(long, env = "FERRYMQ_HTTP_PORT")]
    http_port: Option<u16>,
    /// Prometheus metrics port (no authentication; 0 picks a free port).
    #[arg(long, env = "FERRYMQ_PROMETHEUS_PORT")]
    prometheus_port: Option<u16>,
    /// Largest frame accepted and proposed to clients.
    #[arg(long, env = "FERRYMQ_FRAME_MAX")]
    frame_max: Option<u32>,
    /// Heartbeat proposed to clients, seconds.
    #[arg(long, env = "FERRYMQ_HEARTBEAT")]
    heartbeat: Option<u16>,
    /// Largest message body accepted, bytes.
    #[arg(long, env = "FERRYMQ_MAX_MESSAGE_SIZE")]
    max_message_size: Option<u64>,
    /// Bytes of message bodies one AMQP connection may have in assembly across its
    /// channels (default 256 MiB, at least --max-message-size).
    #[arg(long, env = "FERRYMQ_MAX_ASSEMBLY_BYTES")]
    max_assembly_bytes: Option<u64>,
    /// Fsync policy of durable queues: always | interval:<ms> | never.
    #[arg(long, env = "FERRYMQ_FSYNC")]
    fsync: Option<String>,
    /// Free disk space (bytes) below which publishers are blocked.
    #[arg(long, env = "FERRYMQ_DISK_FREE_LIMIT")]
    disk_free_limit: Option<u64>,
    /// Bytes of messages all queues together keep in memory before paging backlogs to
    /// disk (e.g. `256MiB`); default: 0.2 × RAM (half the default memory watermark).
    #[arg(long, env = "FERRYMQ_QUEUE_MEMORY_BUDGET", value_parser = ferrymq_server::config::parse_size)]
    queue_memory_budget: Option<u64>,
    /// Memory use above which publishers are blocked: a fraction of RAM or of the cgroup
    /// limit (0.4) or a size (2GiB, 300MB, bytes).
    #[arg(long, env = "FERRYMQ_MEMORY_HIGH_WATERMARK")]
    memory_high_watermark: Option<String>,
    /// Open AMQP connections accepted; more are refused with 530 at connection.open.
    #[arg(long, env = "FERRYMQ_CONNECTION_MAX")]
    connection_max: Option<usize>,
    /// Consumers per channel; one more closes the connection with 530.
    #[arg(long, env = "FERRYMQ_CONSUMER_MAX_PER_CHANNEL")]
    consumer_max_per_channel: Option<usize>,
    /// Delivery acknowledgement timeout in ms (0 = off): a consumer holding a delivery
    /// longer is cancelled and its deliveries requeued; its channel stays open.
    #[arg(long, env = "FERRYMQ_CONSUMER_TIMEOUT")]
    consumer_timeout: Option<u64>,
    /// A policy, as `NAME PATTERN DEFINITION` (DEFINITION a JSON object of policy keys such
    /// as message-ttl, max-length, dead-letter-exchange); repeatable.
    #[arg(long = "policy", value_name = "NAME PATTERN JSON")]
    policies: Vec<String>,
    /// An operator policy (caps: message-ttl, expires, max-length, max-length-bytes,
    /// delivery-limit, consumer-timeout), same form; repeatable.
    #[arg(long = "operator-policy", value_name = "NAME PATTERN JSON")]
    operator_policies: Vec<String>,
    /// First boot only: an administrator to create instead of guest (allowed from anywhere).
    #[arg(long, env = "FERRYMQ_DEFAULT_USER")]
    default_user: Option<String>,
    /// Password of `--default-user`.
    #[arg(long, env = "FERRYMQ_DEFAULT_PASS")]
    default_pass: Option<String>,
    /// A RabbitMQ definitions JSON file to import at boot.
    #[arg(long, env = "FERRYMQ_LOAD_DEFINITIONS")]
    load_definitions: Option<PathBuf>,
    /// PEM certificate chain: with --tls-key-file, opens AMQPS, Kafka SSL and HTTPS.
    #[arg(long, env = "FERRYMQ_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "FERRYMQ_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA bundle client certificates are verified against.
    #[arg(long, env = "FERRYMQ_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --tls-ca-file (true|false).
    #[arg(long, env = "FERRYMQ_TLS_VERIFY_PEER", num_args = 0..=1, default_missing_value = "true")]
    tls_verify_peer: Option<bool>,
    /// AMQPS port (0 picks a free port).
    #[arg(long, env = "FERRYMQ_AMQPS_PORT")]
    amqps_port: Option<u16>,
    /// Kafka SSL/SASL_SSL port (0 picks a free port).
    #[arg(long, env = "FERRYMQ_KAFKA_TLS_PORT")]
    kafka_tls_port: Option<u16>,
    /// HTTPS port (0 picks a free port).
    #[arg(long, env = "FERRYMQ_HTTPS_PORT")]
    https_port: Option<u16>,
    /// The vhost Kafka clients use unless their SASL user name is `vhost:user`.
    #[arg(long, env = "FERRYMQ_KAFKA_VHOST")]
    kafka_vhost: Option<String>,
    /// SASL mechanisms offered to Kafka clients, comma separated
    /// (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    #[arg(long, env = "FERRYMQ_KAFKA_SASL_MECHANISMS", value_delimiter = ',')]
    kafka_sasl_mechanisms: Option<Vec<String>>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.bind {
            c.bind = v;
        }
        if let Some(v) = self.amqp_port {
            c.amqp_port = v;
        }
        if let Some(v) = self.kafka_port {
            c.kafka_port = v;
        }
        if let Some(v) = self.kafka_advertised_host {
            c.kafka_advertised_host = v;
        }
        if let Some(v) = self.kafka_auto_create_topics {
            c.kafka_auto_create_topics = v;
        }
        if let Some(v) = self.kafka_default_partitions {
            c.kafka_default_partitions = v;
        }
        if let Some(v) = self.kafka_offsets_retention_minutes {
            c.kafka_offsets_retention_minutes = v;
        }
        if let Some(v) = self.kafka_offsets_retention_check_interval_ms {
            c.kafka_offsets_retention_check_interval_ms = v;
        }
        if let Some(v) = self.kafka_group_max_size {
            c.kafka_group_max_size = v;
        }
        if let Some(v) = self.kafka_fetch_session_cache_slots {
            c.kafka_fetch_session_cache_slots = v;
        }
        if let Some(v) = self.kafka_cleaner_dedupe_buffer_bytes {
            c.kafka_cleaner_dedupe_buffer_bytes = v;
        }
        if let Some(v) = self.http_port {
            c.http_port = v;
        }
        if let Some(v) = self.prometheus_port {
            c.prometheus_port = v;
        }
        if let Some(v) = self.frame_max {
            c.frame_max = v;
        }
        if let Some(v) = self.heartbeat {
            c.heartbeat = v;
        }
        if let Some(v) = self.max_message_size {
            c.max_message_size = v;
        }
        if let Some(v) = self.max_assembly_bytes {
            c.max_assembly_bytes = v;
        }
        if let Some(v) = self.fsync {
            c.fsync = v;
        }
        if let Some(v) = self.disk_free_limit {
            c.disk_free_limit = v;
        }
        if let Some(v) = self.memory_high_watermark {
            c.memory_high_watermark = v;
        }
        if self.connection_max.is_some() {
            c.connection_max = self.connection_max;
        }
        if self.consumer_max_per_channel.is_some() {
            c.consumer_max_per_channel = self.consumer_max_per_channel;
        }
        c.memory_watermark()?;
        if let Some(v) = self.consumer_timeout {
            c.consumer_timeout = v;
        }
        if let Some(v) = self.queue_memory_budget {
            c.queue_memory_budget = v;
        }
        if self.default_user.is_some() {
            c.default_user = self.default_user;
        }
        if self.default_pass.is_some() {
            c.default_pass = self.default_pass;
        }
        if self.load_definitions.is_some() {
            c.load_definitions = self.load_definitions;
        }
        if self.tls_cert_file.is_some() {
            c.tls_cert_file = self.tls_cert_file;
        }
        if self.tls_key_file.is_some() {
            c.tls_key_file = self.tls_key_file;
        }
        if self.tls_ca_file.is_some() {
            c.tls_ca_file = self.tls_ca_file;
        }
        if let Some(v) = self.tls_verify_peer {
            c.tls_verify_peer = v;
        }
        if let Some(v) = self.amqps_port {
            c.amqps_port = v;
        }
        if let Some(v) = self.kafka_tls_port {
            c.kafka_tls_port = v;
        }
        if let Some(v) = self.https_port {
            c.https_port = v;
        }
        if let Some(v) = self.kafka_vhost {
            c.kafka_vhost = v;
        }
        if let Some(v) = self.kafka_sasl_mechanisms {
            c.kafka_sasl_mechanisms = v;
        }
        if c.default_user.is_some() != c.default_pass.is_some() {
            anyhow::bail!("--default-user and --default-pass go together");
        }
        if c.tls_cert_file.is_some() != c.tls_key_file.is_some() {
            anyhow::bail!("--tls-cert-file and --tls-key-file go together");
        }
        for p in &self.policies {
            c.policies
                .push(ferrymq_server::config::PolicyConfig::parse_cli(p)?);
        }
        for p in &self.operator_policies {
            c.operator_policies
                .push(ferrymq_server::config::PolicyConfig::parse_cli(p)?);
        }
        // Bad policies stop the broker from starting, with the reason.
        c.compiled_policies()?;
        Ok(c)
    }
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Bench(cmd)) => ferrymq_bench::run(cmd),
        Some(Command::Admin(args)) => std::process::exit(admin::run(args)),
        Some(Command::Topics(args)) => std::process::exit(admin::run_topics(args)),
        Some(Command::Groups(args)) => std::process::exit(admin::run_groups(args)),
    };
    if let Err(e) = r {
        // The chain of causes, without a backtrace: these are operator errors (a bad
        // definitions file, a port in use), not bugs.
        eprintln!("ferrymq: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRYMQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = args.into_config()?;
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("jemalloc background purging unavailable: {e}");
    }
    ferrymq_server::memory::set_process_sampler(allocated_bytes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        ferrymq_server::paths::create_dir_all(&config.data_dir)?;
        // Signal handlers first: a SIGHUP right after the listening lines must reload, not
        // kill (SIGHUP's default action).
        let signals = Signals::install()?;
        let mut running = ferrymq_server::run(config).await?;
        ferrymq_http::start(&mut running).await?;
        // Tests and tools parse this line to find the chosen port.
        println!("ferrymq: amqp listening on {}", running.amqp_addr);
        if let Some(a) = running.amqps_addr {
            println!("ferrymq: amqps listening on {a}");
        }
        println!("ferrymq: kafka listening on {}", running.kafka_addr);
        if let Some(addr) = running.kafka_tls_addr {
            println!("ferrymq: kafka-tls listening on {addr}");
        }
        if let Some(a) = running.http_addr {
            println!("ferrymq: http listening on {a}");
        }
        if let Some(a) = running.https_addr {
            println!("ferrymq: https listening on {a}");
        }
        if let Some(a) = running.prometheus_addr {
            println!("ferrymq: prometheus listening on {a}");
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        signals.wait(&running).await;
        tracing::info!("shutting down");
        running.shutdown().await;
        anyhow::Ok(())
    })
}

/// The signals the broker handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; SIGHUP reloads the TLS certificate meanwhile.
    async fn wait(mut self, running: &ferrymq_server::Running) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    if let Err(e) = running.reload_tls() {
                        tracing::error!("TLS reload failed, keeping the old certificate: {e:#}");
                    }
                }
            }
        }
    }
}
