//! The lineage manifest (`runs/<run>/shards/<shard>/lineage.json`): which attempt won a
//! shard, what it read, what it applied and what it wrote.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::Build;

/// Version of the lineage manifest format.
pub const LINEAGE_FORMAT_VERSION: u32 = 1;

/// A shard's lineage manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// [`LINEAGE_FORMAT_VERSION`].
    pub format_version: u32,
    /// The run.
    pub run_id: String,
    /// The shard.
    pub shard: String,
    /// The winning attempt (the folder its part files are in).
    pub attempt: String,
    /// The worker that ran it.
    pub worker: String,
    /// The build that ran it.
    pub build: Build,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Its partitions.
    pub partitions: Vec<i32>,
    /// For a sub-shard, the share of its partition's streams it replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<crate::plan::Split>,
    /// Every segment it read.
    pub inputs: Vec<LineageInput>,
    /// What it applied.
    pub applied: Applied,
    /// The projection segments, in key order.
    pub outputs: Vec<OutputFile>,
    /// The quarantined events, when any.
    pub anomalies_file: Option<OutputFile>,
}

/// One input segment as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageInput {
    /// Path relative to the archive.
    pub path: String,
    /// Entity tag checked when it was read.
    pub etag: Option<String>,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows of this shard's partitions (inside the window) read from it.
    pub rows: u64,
    /// Smallest seq of those rows.
    pub seq_min: Option<i64>,
    /// Largest seq of those rows.
    pub seq_max: Option<i64>,
}

/// What a shard's replay did to its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Rows read (this shard's partitions, inside the window, duplicates included).
    pub events_read: u64,
    /// Exact duplicates dropped.
    pub duplicates_dropped: u64,
    /// Rows found out of seq order inside their segment (re-sorted, not an anomaly).
    pub out_of_order: u64,
    /// Events that reached the projection.
    pub events_projected: u64,
    /// Events per (type, input version) and the upcaster chain each went through.
    pub versions: Vec<VersionApplied>,
    /// Anomalies per kind (only kinds that occurred).
    pub anomalies: BTreeMap<String, u64>,
    /// Events set aside in the anomalies file (policy `quarantine`).
    pub quarantined: u64,
    /// Events skipped by policy `allow`.
    pub allowed: u64,
    /// Projection rows written.
    pub rows_out: u64,
}

/// Events of one (type, input version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionApplied {
    /// The event type.
    pub event_type: String,
    /// The input version.
    pub schema_version: i32,
    /// Events (after deduplication).
    pub events: u64,
    /// Versions whose upcasters ran, in order (empty: already at the target).
    pub chain: Vec<i32>,
    /// Step kinds applied, in order (`version 2: sql, drop, default`).
    pub steps: Vec<String>,
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the target.
    pub path: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// The key of its first row (one JSON value per key column), when it has rows and a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_min: Option<Vec<serde_json::Value>>,
    /// The key of its last row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_max: Option<Vec<serde_json::Value>>,
    /// A part file's content fingerprint (the rows it holds, as written), 64 hex digits:
    /// the worker's share of the run's fingerprint, which the finalizer sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// A part file's Delta `add.stats`: its rows, and the null count, minimum and maximum
    /// of each key column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
}

impl Lineage {
    /// The digests that must match between two attempts of the same shard.
    pub fn output_digests(&self) -> Vec<&str> {
        self.outputs
            .iter()
            .chain(self.anomalies_file.iter())
            .map(|o| o.sha256.as_str())
            .collect()
    }
}
