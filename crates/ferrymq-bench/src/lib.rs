//! `ferrymq bench`: load generators that work against any AMQP 0-9-1 or Kafka-protocol
//! broker, FerryMQ or not. `amqp` holds the lean AMQP client and its test modes, `kafka`
//! the Kafka produce/consume generator; `stats` the counters, latency histograms and CPU
//! sampling they report from; `tls` the rustls client configuration both use.

pub mod amqp;
pub mod kafka;
pub mod stats;
pub mod tls;

pub use amqp::AmqpArgs;
pub use kafka::KafkaArgs;

/// The `ferrymq bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// AMQP 0-9-1 load generator: publish/consume rates, end-to-end latency, queue declaration.
    Amqp(AmqpArgs),
    /// Kafka-protocol load generator: produce/consume rates, produce and end-to-end latency.
    Kafka(KafkaArgs),
}

/// Runs one benchmark to completion, printing its report.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Amqp(args) => amqp::run(args),
        BenchCommand::Kafka(args) => kafka::run(args),
    }
}
