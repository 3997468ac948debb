//! Synthetic event histories with the edge cases real archives have (docs/SOURCES.md,
//! "The canonical envelope").
//!
//! [`generate`] writes an archive of bank-account streams that matches the example
//! catalog in `examples/accounts/contracts`: `AccountOpened` v1..v3, `Deposited` and
//! `Withdrawn` v1..v2, `AccountClosed` v1, as Parquet segments in Hive folders
//! `partition=N/part-XXXXX.parquet`, with the canonical envelope columns.
//!
//! Guarantees the replay's tests build on:
//!
//! - **Determinism**: the same [`GenerateSpec`] gives byte-identical files (ChaCha8
//!   seeded from the seed, hand-written FNV-1a for partitioning, no clock, no hash-map
//!   iteration).
//! - **Layout**: every event of a stream lives in one partition; `seq` is one global
//!   sequence from 1, strictly increasing inside each partition's segments in file
//!   order unless [`EdgeCases::out_of_order`] swaps rows inside a segment.
//! - **Validity**: every payload is valid for its version's schema, except the rows of
//!   [`EdgeCases::invalid_payloads`] (and the types and versions the catalog does not
//!   know, from `unknown_types` and `future_versions`).
//! - **Balances**: per stream, in `seq` order over valid, deduplicated events, the
//!   balance in cents never drops below zero; anomalous events never move it.
//!
//! Generation runs in two phases: `schedule` decides the global commit order
//! (which stream commits at which `seq`, where resends go) in 16 bytes per row, then
//! `history` makes up the events one partition and one segment at a time.
//!
//! This crate writes archives; it never reads them and knows nothing of replays.

mod error;
mod history;
mod ids;
mod schedule;
mod segment;
mod spec;
mod summary;

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use replayfleet_archive::Location;

pub use error::{Error, Result};
pub use spec::{EdgeCases, GenerateSpec, default_start_time};
pub use summary::{EdgeCaseCounts, GenerateSummary, VersionCount};

/// Characters (ASCII, so also bytes) of the `long_strings` memo: 100 KiB.
pub const LONG_STRING_CHARS: usize = 100 * 1024;

/// Writes the history described by `spec` under `out`, which must be empty.
///
/// Memory holds the schedule (16 bytes per row) and one segment's rows at a time.
pub async fn generate(out: &Location, spec: &GenerateSpec) -> Result<GenerateSummary> {
    spec.validate()?;
    ensure_empty(out).await?;

    let schedule = schedule::plan(spec);
    let clock = history::Clock::new(spec.start_time, schedule.last_seq, spec.seed);
    let props = segment::writer_properties();
    let long_string = history::long_string();
    let mut streams = vec![history::StreamState::default(); schedule.stream_events.len()];
    let mut tally = history::Tally::default();
    let mut files = Vec::new();
    let mut partitions = 0;

    for (partition, slots) in schedule.partitions.iter().enumerate() {
        if slots.is_empty() {
            continue;
        }
        partitions += 1;
        let mut history = history::PartitionHistory::new(
            spec,
            partition as u32,
            clock,
            schedule.last_seq,
            &schedule.stream_events,
            &mut streams,
            &mut tally,
            &long_string,
        );
        let per_segment = spec
            .segment_rows
            .unwrap_or_else(|| (slots.len() as u64).div_ceil(3))
            .clamp(1, slots.len() as u64) as usize;
        for (number, chunk) in slots.chunks(per_segment).enumerate() {
            let first_row = number * per_segment;
            let mut rows: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, slot)| history.row((first_row + i) as u32, slot))
                .collect();
            history.disorder(&mut rows);
            let relative = format!("partition={partition}/part-{number:05}.parquet");
            let bytes = segment::encode(&rows, partition as i32, &props).map_err(|source| {
                Error::Encode {
                    path: relative.clone(),
                    source,
                }
            })?;
            let path = out.child(&relative);
            out.store()
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|source| Error::Storage {
                    path: path.to_string(),
                    source,
                })?;
            files.push(relative);
        }
    }

    let versions = tally
        .versions
        .iter()
        .map(|(&(event_type, schema_version), &rows)| VersionCount {
            event_type: event_type.to_owned(),
            schema_version,
            rows,
        })
        .collect();
    Ok(GenerateSummary {
        seed: spec.seed,
        events: spec.events,
        events_written: schedule.last_seq,
        segments: files.len() as u64,
        partitions,
        streams: tally.streams,
        closed_streams: tally.closed_streams,
        edge_cases: tally.edge,
        versions,
        files,
    })
}

/// Refuses a location that already holds objects: two histories in one archive would
/// share `seq` values and event ids.
async fn ensure_empty(out: &Location) -> Result<()> {
    let prefix = Some(out.prefix()).filter(|p| !p.as_ref().is_empty());
    let first = out.store().list(prefix).next().await;
    match first {
        None | Some(Err(object_store::Error::NotFound { .. })) => Ok(()),
        Some(Ok(meta)) => Err(Error::NotEmpty {
            location: out.url().to_string(),
            found: meta.location.to_string(),
        }),
        Some(Err(source)) => Err(Error::Storage {
            path: out.url().to_string(),
            source,
        }),
    }
}
