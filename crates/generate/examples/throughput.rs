//! Times the generator: `cargo run --release -p replayfleet-generate --example throughput -- [EVENTS] [OUT]`.
//!
//! Writes into a temporary folder unless OUT is given, and prints the summary's
//! counts and the events per second.

use std::{collections::BTreeMap, time::Instant};

use replayfleet_archive::Location;
use replayfleet_generate::{EdgeCases, GenerateSpec, generate};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir()?;
    let out = args
        .next()
        .unwrap_or_else(|| temp.path().display().to_string());
    let location = Location::parse(&out, None, &BTreeMap::new())?;
    let spec = GenerateSpec::new(events, 16, events / 50 + 1, 42).with_edge_cases(EdgeCases::all());
    let started = Instant::now();
    let summary = generate(&location, &spec).await?;
    let elapsed = started.elapsed();
    let bytes: u64 = summary
        .files
        .iter()
        .map(|f| {
            std::fs::metadata(temp.path().join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    println!("{}", serde_json::to_string_pretty(&summary.edge_cases)?);
    println!(
        "{} rows in {} segments, {:.1} MB, {:.2?}: {:.0} rows/s",
        summary.events_written,
        summary.segments,
        bytes as f64 / 1e6,
        elapsed,
        summary.events_written as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
