//! What `replayfleet` shares with the workspace's other binaries (the bench,
//! `crates/bench`): exit codes and how errors map onto them, tables and JSON for output,
//! log setup.

pub mod exit;
pub mod output;

use std::process::ExitCode;

/// Runs `command` on a Tokio runtime of `threads` worker threads and maps its outcome to
/// the process's exit code, printing the error (with its causes, once) on stderr.
pub fn run(threads: usize, command: impl Future<Output = anyhow::Result<u8>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", exit::message(&e));
            ExitCode::from(exit::code_of(&e))
        }
    }
}
