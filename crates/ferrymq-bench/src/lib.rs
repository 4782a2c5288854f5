//! `ferrymq bench`: load generators that work against any AMQP 0-9-1 broker, FerryMQ or
//! not. `amqp` holds the lean protocol client and the test modes; `stats` the counters,
//! latency histograms and CPU sampling they report from.

pub mod amqp;
pub mod stats;

pub use amqp::AmqpArgs;

/// The `ferrymq bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// AMQP 0-9-1 load generator: publish/consume rates, end-to-end latency, queue declaration.
    Amqp(AmqpArgs),
}

/// Runs one benchmark to completion, printing its report.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Amqp(args) => amqp::run(args),
    }
}
