//! `replayfleet-bench`: replayfleet's benchmarks, each printing figures measured side by
//! side in one run (docs/PERFORMANCE.md). Not shipped: the product binary is
//! `replayfleet`. Built with the same allocator as `replayfleet`, so that what it
//! measures is what ships.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use replayfleet_cli::{exit, output};

mod fleet;
mod run;

#[global_allocator]
static ALLOCATOR: replayfleet_contracts::watch::Metered<mimalloc::MiMalloc> =
    replayfleet_contracts::watch::Metered(mimalloc::MiMalloc);

/// replayfleet's benchmarks: throughput measured side by side in one run.
#[derive(Debug, Parser)]
#[command(name = "replayfleet-bench", version = replayfleet_replay::LONG_VERSION, about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `replayfleet=debug`.
    #[arg(long, global = true, env = "REPLAYFLEET_LOG", default_value = "warn")]
    log_level: String,
    /// Threads of this process. Default: `--workers` for `run`, the machine's cores
    /// otherwise.
    #[arg(long, global = true, env = "REPLAYFLEET_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upcast + validate throughput per core against a bare serde_json parse.
    Upcast(UpcastArgs),
    /// The embedded `run` end to end, side by side with a bare Parquet decode of the
    /// same segments (the floor) and DuckDB doing the same job (when `python3 -c
    /// "import duckdb"` works), on one generated archive.
    Run(RunArgs),
    /// The fleet's lease path over a real NATS server: publishing leases, the
    /// claim-to-ack overhead of one lease, and worker processes 2 versus 1 on a
    /// local-folder archive. Use a NATS server of its own (scripts/bench-fleet.sh).
    Fleet(FleetArgs),
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The NATS server (JetStream on), used by nothing else meanwhile.
    #[arg(long, env = "REPLAYFLEET_NATS")]
    pub nats: String,
    /// Leases to publish in the publishing measurement.
    #[arg(long, default_value_t = 10_000)]
    pub leases: usize,
    /// Leases claimed and acked one after the other in the overhead measurement.
    #[arg(long, default_value_t = 500)]
    pub overhead_leases: usize,
    /// Events of the archive the worker processes replay (0 skips the measurement).
    #[arg(long, default_value_t = 800_000)]
    pub events: u64,
    /// Its partitions (shards are groups of partitions).
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// `shards.target_events` of the scaling runs.
    #[arg(long, default_value_t = 50_000)]
    pub shard_events: u64,
    /// Rounds of each worker count (alternating); the best of each is kept.
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Original events to generate (exact duplicates come on top).
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Archive partitions to generate.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// Streams (accounts) to generate (default: one per 100 events, as in the example).
    #[arg(long)]
    pub streams: Option<u64>,
    /// Seed of the generated archive.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Worker tasks of the run, threads of the decode floor and of DuckDB.
    #[arg(long, default_value_t = default_workers())]
    pub workers: usize,
    /// Reuse this local archive folder instead of generating one.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// `shards.target_events` of the run (default: the config's default, 5,000,000).
    #[arg(long, conflicts_with = "one_shard")]
    pub shard_events: Option<u64>,
    /// Put the whole archive into one shard (a huge `shards.target_events`): the
    /// worst case for one worker's memory.
    #[arg(long)]
    pub one_shard: bool,
    /// Keep the temporary folder (archive, catalog, config, projections).
    #[arg(long)]
    pub keep: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpcastArgs {
    /// Number of generated payloads per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Rounds: every measurement runs this many times, interleaved, and the best time
    /// of each is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = output::init_tracing(&cli.log_level, false) {
        eprintln!("error: {}", exit::message(&e));
        return ExitCode::from(exit::USAGE);
    }
    let threads = cli
        .threads
        .map(usize::from)
        .or(match &cli.command {
            Command::Run(args) => Some(args.workers),
            _ => None,
        })
        .unwrap_or_else(default_workers)
        .max(1);
    replayfleet_cli::run(threads, async {
        match cli.command {
            Command::Upcast(args) => run::upcast(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Fleet(args) => fleet::fleet(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
