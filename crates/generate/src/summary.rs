//! What a generation run wrote, for people (`generate` prints it) and for tests.

use serde::Serialize;

/// What [`generate`](crate::generate) wrote.
///
/// Row accounting: `events_written = events + edge_cases.duplicates +
/// edge_cases.conflicting_duplicates`. Unknown types, invalid payloads and future
/// versions replace ordinary events and are part of `events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerateSummary {
    /// The seed the history was made from.
    pub seed: u64,
    /// Original events (every row that is not a resend).
    pub events: u64,
    /// Rows written, resends included; `seq` runs from 1 to this number.
    pub events_written: u64,
    /// Segment files written.
    pub segments: u64,
    /// Partitions holding at least one row.
    pub partitions: u32,
    /// Streams holding at least one event.
    pub streams: u64,
    /// Streams whose last event is `AccountClosed`.
    pub closed_streams: u64,
    /// Rows per edge case.
    pub edge_cases: EdgeCaseCounts,
    /// Rows per (event type, schema version), resends included, sorted.
    pub versions: Vec<VersionCount>,
    /// Segment paths relative to the output location, in writing order
    /// (`partition=N/part-XXXXX.parquet`).
    pub files: Vec<String>,
}

/// How many rows each edge case touched (see [`EdgeCases`](crate::EdgeCases)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EdgeCaseCounts {
    /// Exact resends (extra rows).
    pub duplicates: u64,
    /// Resends with a different payload (extra rows).
    pub conflicting_duplicates: u64,
    /// Swaps of two rows inside a segment.
    pub out_of_order: u64,
    /// Originals with a null metadata column or a null `correlation_id` in it.
    pub nulls: u64,
    /// Deposits/withdrawals with a 100 KiB memo.
    pub long_strings: u64,
    /// Valid events with an extra `x_legacy_field`.
    pub unknown_fields: u64,
    /// Events of types the catalog does not know.
    pub unknown_types: u64,
    /// Events whose payload fails their version's schema.
    pub invalid_payloads: u64,
    /// Events of a version newer than the catalog knows.
    pub future_versions: u64,
}

/// Rows of one (event type, schema version).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VersionCount {
    /// The event type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: i32,
    /// Rows written, resends included.
    pub rows: u64,
}
