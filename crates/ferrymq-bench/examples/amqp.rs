//! `ferrymq bench amqp` without the broker binary, for when only this crate builds:
//! `cargo run --release -p ferrymq-bench --example amqp -- --uri amqp://... --time 10`.

use clap::Parser;

/// Same options as `ferrymq bench amqp`.
#[derive(Debug, Parser)]
#[command(name = "amqp-bench")]
struct Cli {
    #[command(flatten)]
    args: ferrymq_bench::AmqpArgs,
}

fn main() -> anyhow::Result<()> {
    ferrymq_bench::run(ferrymq_bench::BenchCommand::Amqp(Cli::parse().args))
}
