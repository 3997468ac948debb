//! `replayfleet`: the one binary. Thin: parses flags, runs a command, maps its
//! outcome to the exit codes of docs/CONCEPTS.md ("Exit codes").

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod serve;

use replayfleet_cli::{exit, output};

// Upcasting allocates per event (payload maps, keys, strings) with many short lifetimes
// interleaved, between the SQL steps' larger arrays: mimalloc serves that pattern with far
// fewer slow paths than glibc's malloc. Built without transparent huge pages (`no_thp`):
// with them, re-used arena memory faults in whole cleared pages and the replay as a whole
// got slower than on glibc (docs/PERFORMANCE.md, "The allocator"). Wrapped in the count
// of what a jq step allocates on one event, which ends the process past its bound
// (`replayfleet_contracts::watch`).
#[global_allocator]
static ALLOCATOR: replayfleet_contracts::watch::Metered<mimalloc::MiMalloc> =
    replayfleet_contracts::watch::Metered(mimalloc::MiMalloc);

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Some(by) = &cli.global.by {
        let _ = commands::finalize::BY.set(by.clone());
    }
    if let Err(e) = output::init_tracing(
        &cli.global.log_level,
        matches!(cli.global.log_format, cli::LogFormat::Json),
    ) {
        eprintln!("error: {}", exit::message(&e));
        return ExitCode::from(exit::USAGE);
    }
    let threads = cli.threads();
    replayfleet_cli::run(threads, commands::dispatch(cli.command))
}
