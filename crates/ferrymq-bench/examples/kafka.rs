//! `ferrymq bench kafka` without the broker binary, for when only this crate builds:
//! `cargo run --release -p ferrymq-bench --example kafka -- --bootstrap HOST:PORT ...`.

use clap::Parser;

/// Same options as `ferrymq bench kafka`.
#[derive(Debug, Parser)]
#[command(name = "kafka-bench")]
struct Cli {
    #[command(flatten)]
    args: ferrymq_bench::KafkaArgs,
}

fn main() -> anyhow::Result<()> {
    ferrymq_bench::run(ferrymq_bench::BenchCommand::Kafka(Cli::parse().args))
}
