//! `ferrymq bench`: load generators that work against any AMQP 0-9-1 broker.

/// The `ferrymq bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// AMQP 0-9-1 load generator (placeholder).
    Amqp,
}

/// Runs one benchmark to completion, printing its report.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let _ = cmd;
    anyhow::bail!("not yet implemented")
}
