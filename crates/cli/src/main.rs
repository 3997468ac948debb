//! `replayfleet`: the one binary. Thin: parses flags, runs a command, maps its
//! outcome to the exit codes of docs/CONCEPTS.md ("Exit codes").

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod exit;
mod output;
mod serve;

// Upcasting allocates per event (payload maps, keys, strings) with many short lifetimes
// interleaved, between the SQL steps' larger arrays: mimalloc serves that pattern with far
// fewer slow paths than glibc's malloc. Built without transparent huge pages (`no_thp`):
// with them, re-used arena memory faults in whole cleared pages and the replay as a whole
// got slower than on glibc (docs/PERFORMANCE.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Some(by) = &cli.global.by {
        let _ = commands::finalize::BY.set(by.clone());
    }
    if let Err(e) = output::init_tracing(&cli.global) {
        eprintln!("error: {}", exit::message(&e));
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let outcome = runtime.block_on(commands::dispatch(cli.command));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_of(&e);
            eprintln!("error: {}", exit::message(&e));
            ExitCode::from(code)
        }
    }
}
