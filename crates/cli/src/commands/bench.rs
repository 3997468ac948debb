//! `replayfleet bench`: throughput figures measured side by side in one run.

use crate::{cli::BenchUpcastArgs, exit, output::print_json};

/// Upcast + validate per core next to a bare serde_json parse (CPU-bound: runs on a
/// blocking thread so the runtime stays responsive).
pub async fn upcast(args: BenchUpcastArgs) -> anyhow::Result<u8> {
    let events = args.events;
    let report =
        tokio::task::spawn_blocking(move || replayfleet_contracts::bench_upcast(events)).await?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    Ok(exit::SUCCESS)
}
