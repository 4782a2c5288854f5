//! The one FerryMQ binary: `ferrymq [serve]` runs the broker, `ferrymq bench …` the load generator.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ferrymq", version, about = "FerryMQ message broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default).
    Serve,
    /// Load generators.
    #[command(subcommand)]
    Bench(ferrymq_bench::BenchCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Serve) => Ok(()),
        Some(Command::Bench(cmd)) => ferrymq_bench::run(cmd),
    }
}
