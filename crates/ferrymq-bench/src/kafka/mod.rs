//! `ferrymq bench kafka`: a produce / consume load generator for any Kafka-protocol broker
//! (FerryMQ, Kafka, tansu, Redpanda), in the spirit of kafka-producer-perf-test. It talks
//! the protocol with kafka-protocol's message types over tokio sockets, builds record
//! batches by hand (`batch`), pipelines Produce requests (`--in-flight`) and reports
//! records/s, MB/s, produce latency (request → response) and end-to-end latency (record
//! CreateTime → fetched), plus the client's own CPU use so a run shows whether the client
//! was the bottleneck. This module owns the options; `load` runs them; `conn` is the
//! connection and its setup calls.

pub mod batch;
mod conn;
mod load;

pub use batch::Codec;

use ferrymq_auth::scram::ScramMechanism;

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[value(name = "plaintext")]
    Plaintext,
    /// TLS, no SASL.
    #[value(name = "ssl")]
    Ssl,
    /// SASL without TLS.
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext")]
    SaslPlaintext,
    /// SASL over TLS.
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections use TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Kafka's `sasl.mechanism` (the ones FerryMQ offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The SCRAM hash, `None` for PLAIN.
    pub fn scram(self) -> Option<ScramMechanism> {
        match self {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Produce `--count` records (or for `--time`), then report.
    Produce,
    /// Fetch from the earliest offset until `--count` records were read.
    Consume,
    /// Produce and consume at the same time (end-to-end latency).
    Both,
}

/// Keys the producers put on records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keys {
    /// No keys; each batch goes to the next partition (sticky round-robin).
    None,
    /// Random 16-hex-digit keys, partitioned by murmur2 as Java clients do.
    Random,
    /// The record's sequence number as decimal, partitioned by murmur2.
    Sequential,
}

/// Options of `ferrymq bench kafka`.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap broker HOST:PORT.
    #[arg(
        long,
        short = 'b',
        env = "FERRYMQ_BENCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Topic to use; created with --partitions if missing.
    #[arg(long, short = 't', default_value = "ferrymq-bench")]
    pub topic: String,
    /// produce, consume or both.
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Record value size in bytes.
    #[arg(long, short = 's', default_value_t = 100)]
    pub size: usize,
    /// Records to produce in total (split over the producers) and to consume
    /// [default: 1 000 000 unless --time is given].
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Produce for this many seconds instead of a count.
    #[arg(long, short = 'z', value_name = "SECONDS")]
    pub time: Option<f64>,
    /// Produce acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Batch compression.
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Codec,
    /// Partitions of the topic when the bench creates it.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: i32,
    /// Record keys.
    #[arg(long, value_enum, default_value = "none")]
    pub keys: Keys,
    /// Close a batch once its uncompressed records reach this many bytes.
    #[arg(long, default_value_t = 128 * 1024)]
    pub batch_bytes: usize,
    /// With --rate: send a non-full batch once its first record is this old.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Records per second per producer (0 = as fast as the broker takes them).
    #[arg(long, short = 'r', default_value_t = 0.0)]
    pub rate: f64,
    /// Producer connections (tasks).
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: u32,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: u32,
    /// Fetch: bytes per partition per request.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub fetch_bytes: i32,
    /// Client worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print the final summary as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// How connections are secured, as Kafka clients' `security.protocol` (every
    /// connection: bootstrap, producers, consumers).
    #[arg(long, value_enum, ignore_case = true, default_value = "plaintext")]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism for sasl_plaintext / sasl_ssl.
    #[arg(long, value_enum, ignore_case = true, value_name = "MECHANISM")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name (`vhost:user` picks a FerryMQ vhost).
    #[arg(long, value_name = "USER")]
    pub sasl_username: Option<String>,
    /// SASL password.
    #[arg(long, env = "FERRYMQ_BENCH_SASL_PASSWORD", value_name = "PASSWORD")]
    pub sasl_password: Option<String>,
    /// With ssl / sasl_ssl: PEM file of the CA certificate(s) the broker's certificate must
    /// chain to; its name must match the host connected to [default: the system bundle].
    #[arg(long, value_name = "PEM")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// With ssl / sasl_ssl: do not verify the broker's certificate (quick runs only).
    #[arg(long, conflicts_with = "tls_ca_file")]
    pub tls_insecure: bool,
}

impl KafkaArgs {
    /// The acks value on the wire.
    pub fn acks_value(&self) -> anyhow::Result<i16> {
        match self.acks.as_str() {
            "0" => Ok(0),
            "1" => Ok(1),
            "all" | "-1" => Ok(-1),
            other => anyhow::bail!("--acks must be 0, 1 or all, not {other:?}"),
        }
    }

    /// The TLS and SASL settings every connection uses; refuses options that the
    /// security protocol would ignore.
    pub fn security(&self) -> anyhow::Result<conn::Security> {
        use anyhow::bail;
        let protocol = self.security_protocol;
        let tls = if protocol.tls() {
            Some(crate::tls::TlsClient::new(&crate::tls::TlsOptions {
                ca_file: self.tls_ca_file.clone(),
                insecure: self.tls_insecure,
            })?)
        } else {
            if self.tls_ca_file.is_some() || self.tls_insecure {
                bail!("--tls-ca-file and --tls-insecure need --security-protocol ssl or sasl_ssl");
            }
            None
        };
        let sasl = if protocol.sasl() {
            let Some(mechanism) = self.sasl_mechanism else {
                bail!("--security-protocol sasl_plaintext/sasl_ssl needs --sasl-mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
            };
            let (Some(username), Some(password)) = (&self.sasl_username, &self.sasl_password)
            else {
                bail!("SASL needs --sasl-username and --sasl-password");
            };
            Some(conn::Sasl {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            })
        } else {
            if self.sasl_mechanism.is_some()
                || self.sasl_username.is_some()
                || self.sasl_password.is_some()
            {
                bail!("--sasl-* options need --security-protocol sasl_plaintext or sasl_ssl");
            }
            None
        };
        Ok(conn::Security { tls, sasl })
    }
}

/// Runs the benchmark the options describe.
pub fn run(args: KafkaArgs) -> anyhow::Result<()> {
    load::run(args)
}
