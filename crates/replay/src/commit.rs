//! The commit record (`commitInfo.replayfleet` of `_delta_log/<version>.json`) and the
//! report (`runs/<run>/report.json`): their formats live here with the plan's, the lineage manifest's and the target's layout
//! (`layout.rs`), so that every file of a target has one home; the finalizer writes them.

use std::collections::BTreeMap;

use crate::{Build, Column};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the commit format.
pub const COMMIT_FORMAT_VERSION: u32 = 1;
/// Version of the report format.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// One version of a projection, as replayfleet records it in its Delta commit. Created
/// put-if-absent, never rewritten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// [`COMMIT_FORMAT_VERSION`].
    pub format_version: u32,
    /// This version (1, 2, ...).
    pub version: u64,
    /// The version it replaced; `None` for version 1.
    pub parent: Option<u64>,
    /// `replay` (a run's output) or `rollback` (an older version's segments again).
    pub kind: String,
    /// For a rollback, the version whose segments it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// For a rollback, why (`rollback --reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    /// The run that produced the segments.
    pub run_id: String,
    /// When it was committed.
    pub committed_at: DateTime<Utc>,
    /// Who committed it (`--by` / `REPLAYFLEET_BY`, else `$USER@host`).
    pub committed_by: String,
    /// The projection's name.
    pub projection: String,
    /// Its unique key columns.
    pub key: Vec<String>,
    /// The output Arrow schema.
    pub schema: Vec<Column>,
    /// Hex SHA-256 of the projection SQL.
    pub sql_sha256: String,
    /// Hex SHA-256 of the contract catalog.
    pub catalog_sha256: String,
    /// The build that replayed it.
    pub build: Build,
    /// Every segment, in shard then key order.
    pub segments: Vec<CommitSegment>,
    /// Totals.
    pub totals: CommitTotals,
    /// The row-level content fingerprint (64 hex digits; see docs/FORMATS.md).
    pub fingerprint: String,
    /// The report of the run's verification, relative to the target.
    pub report: Option<String>,
    /// Present when discrepancy checks were overridden with `--accept`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Acceptance>,
}

/// One segment of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSegment {
    /// Path relative to the target.
    pub path: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Key of its first row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_min: Option<Vec<Value>>,
    /// Key of its last row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_max: Option<Vec<Value>>,
    /// The shard that wrote it.
    pub shard: String,
}

/// Totals of a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitTotals {
    /// Projection rows.
    pub rows: u64,
    /// Bytes of the segments.
    pub bytes: u64,
    /// Segments.
    pub segments: u64,
    /// Shards replayed.
    pub shards: u64,
    /// Events read (duplicates included).
    pub events_read: u64,
    /// Exact duplicates dropped.
    pub duplicates_dropped: u64,
    /// Events projected.
    pub events_projected: u64,
    /// Quarantined events.
    pub quarantined: u64,
    /// Anomalies per kind.
    pub anomalies: BTreeMap<String, u64>,
}

/// An override of failed discrepancy checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptance {
    /// The reason given.
    pub reason: String,
    /// Who gave it.
    pub by: String,
    /// The checks it overrode.
    pub overridden: Vec<String>,
}

/// The verification and discrepancy report of one finalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// The run.
    pub run_id: String,
    /// When the checks ran.
    pub created_at: DateTime<Utc>,
    /// `committed`, `refused` or `verified` (a window run: checked, never committed).
    pub outcome: String,
    /// The version committed, if any.
    pub version: Option<u64>,
    /// The version diffed against (none for a first version).
    pub baseline: Option<u64>,
    /// Whether the run was windowed.
    pub windowed: bool,
    /// Every check, in the order run.
    pub checks: Vec<CheckResult>,
    /// The diff against the baseline.
    pub diff: Option<Diff>,
    /// Totals over the run.
    pub totals: CommitTotals,
    /// The content fingerprint of the new projection.
    pub fingerprint: Option<String>,
    /// Present when discrepancy checks were overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Acceptance>,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `output_checksums`, `inputs_unchanged`, `coverage`, `unique_keys`,
    /// `anomaly_budget`, `invariant[i]`, `baseline_diff`.
    pub name: String,
    /// `integrity` (no override) or `discrepancy` (`--accept` can override).
    pub class: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found.
    pub detail: String,
    /// Up to 20 offending rows or items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Value>,
}

/// Keys added, removed and changed against the baseline (docs/FORMATS.md, section 5,
/// `report.json`: `diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The baseline version.
    pub baseline: u64,
    /// Keys only in the new projection.
    pub added: u64,
    /// Keys only in the baseline (always 0 for a window run, which sees only its keys).
    pub removed: u64,
    /// Keys in both whose common columns differ.
    pub changed: u64,
    /// Keys in either.
    pub union: u64,
    /// (added + removed + changed) / union.
    pub changed_ratio: f64,
    /// The limit.
    pub max_changed_ratio: f64,
    /// The columns compared (both versions have them, with the same type).
    pub compared_columns: Vec<String>,
    /// Columns only the new version has (its Delta commit carries a new `metaData`).
    #[serde(default)]
    pub added_columns: Vec<String>,
    /// Columns only the baseline has.
    #[serde(default)]
    pub removed_columns: Vec<String>,
    /// Columns of both whose type changed: `name: <baseline type> -> <new type>`.
    #[serde(default)]
    pub retyped_columns: Vec<String>,
    /// Up to 10 keys of each kind.
    pub samples: BTreeMap<String, Vec<Value>>,
}
