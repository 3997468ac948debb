//! The file as written: serde structs that reject unknown keys by name.
//!
//! These mirror `backfill.toml` one to one; [`crate::Config`] is the validated model
//! built from them. Every field's doc comment is the reference for its key
//! (docs/CONFIG.md repeats them for users).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{ColumnMapping, KeyPatterns, SegmentGlob};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// `[run]`: what this backfill is called.
    pub run: RawRun,
    /// `[source]`: the archive.
    pub source: RawSource,
    /// `[contracts]`: the catalog.
    pub contracts: RawContracts,
    /// `[projection]`: the fold.
    pub projection: RawProjection,
    /// `[target]`: the projection's home.
    pub target: RawTarget,
    /// `[shards]`: how the archive is cut into leases.
    #[serde(default)]
    pub shards: RawShards,
    /// `[window]`: canary and prefix windows.
    #[serde(default)]
    pub window: RawWindow,
    /// `[checks]`: what must hold before a commit.
    #[serde(default)]
    pub checks: RawChecks,
    /// `[pacing]`: fleet-wide rate limit.
    #[serde(default)]
    pub pacing: RawPacing,
    /// `[fleet]`: NATS and lease settings.
    #[serde(default)]
    pub fleet: RawFleet,
    /// `[lineage]`: OpenLineage endpoint.
    #[serde(default)]
    pub lineage: RawLineage,
    /// `[limits]`: per-worker resource limits.
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    /// Human name; run ids are `<name>-<ULID>`.
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    /// The archive: a URL object_store parses, or a path relative to the config file.
    pub url: String,
    /// Where each envelope column comes from; defaults to the envelope's own names.
    #[serde(default)]
    pub columns: ColumnMapping,
    /// What segment paths say: one pattern or a list, captures for `{ key = ... }` entries.
    #[serde(default)]
    pub key_pattern: KeyPatterns,
    /// Which objects under the URL are segments (default `*.parquet`).
    #[serde(default)]
    pub segments: SegmentGlob,
    /// object_store options for the source (region, endpoint...); never secrets.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The archive promises gap-free per-partition offsets: enables the `gap` anomaly.
    #[serde(default)]
    pub contiguous_seq: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawContracts {
    /// The catalog folder: one YAML file per event type.
    pub dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProjection {
    /// The projection's name.
    pub name: String,
    /// Its unique key columns.
    pub key: Vec<String>,
    /// The fold: SQL over the table `events`.
    pub sql: Option<String>,
    /// The fold, from a file relative to the config file.
    pub sql_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    /// The projection's home: a URL or a path relative to the config file.
    pub url: String,
    /// object_store options for the target; never secrets.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShards {
    /// Shards are groups of whole partitions of about this many events (default 5,000,000).
    pub target_events: Option<i64>,
}

/// One entry of `window.partitions`: a number or a `"lo-hi"` range.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPartitionSpec {
    /// A single partition.
    One(i64),
    /// An inclusive range `"0-3"` (or a single number as a string).
    Range(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    /// A canary subset of partitions.
    pub partitions: Option<Vec<RawPartitionSpec>>,
    /// Replay only events with `seq <= until_seq`.
    pub until_seq: Option<i64>,
    /// Replay only events with `occurred_at <= until_time` (RFC 3339).
    pub until_time: Option<toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChecks {
    /// SQL queries over `projection` selecting violating rows.
    #[serde(default)]
    pub invariants: Vec<String>,
    /// Policies per anomaly kind and the quarantine budget.
    #[serde(default)]
    pub anomalies: RawAnomalies,
    /// Limits on the diff against the current version.
    #[serde(default)]
    pub baseline: RawBaseline,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnomalies {
    pub no_upcast_path: Option<crate::Policy>,
    pub unknown_type: Option<crate::Policy>,
    pub unknown_version: Option<crate::Policy>,
    pub invalid_payload: Option<crate::Policy>,
    pub upcast_failed: Option<crate::Policy>,
    pub conflicting_duplicate: Option<crate::Policy>,
    pub gap: Option<crate::Policy>,
    pub undecodable: Option<crate::Policy>,
    /// Quarantined / events read, over the run (0..1, default 0).
    pub max_quarantined_ratio: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBaseline {
    /// Share of keys that may differ from the current version (0..1, default 1).
    pub max_changed_ratio: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPacing {
    /// Events per second for the whole fleet; 0 is unlimited.
    pub events_per_second: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    /// NATS server URL; none means the embedded fleet.
    pub nats_url: Option<String>,
    /// A NATS credentials file (JWT + nkey seed).
    pub nats_creds: Option<String>,
    /// A file holding a NATS user nkey seed (`SU...`), for nkey authentication.
    pub nats_nkey: Option<String>,
    /// A CA bundle to verify the NATS server's TLS certificate.
    pub nats_tls_ca: Option<String>,
    /// A client certificate for NATS mutual TLS.
    pub nats_tls_cert: Option<String>,
    /// The client certificate's private key.
    pub nats_tls_key: Option<String>,
    /// A lease not heartbeated for this long is redelivered (default "30s").
    pub lease_ttl: Option<String>,
    /// Real failures of a shard before the run halts (default 3).
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLineage {
    /// An OpenLineage HTTP endpoint.
    pub url: Option<String>,
    /// The OpenLineage namespace of the run's jobs (default `replayfleet`).
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    /// Memory per worker ("2GiB"); above it, sorting and dedupe spill to disk.
    pub memory: Option<toml::Value>,
    /// The folder spill files go in (default: the OS temp folder, `TMPDIR`).
    pub spill_dir: Option<String>,
    /// How much one shard may spill (size), `limits.spill_max`.
    pub spill_max: Option<toml::Value>,
    /// The time one shard's projection may take ("1h").
    pub projection_time: Option<String>,
    /// The time one jq step may run on one event ("60s").
    pub step_time: Option<String>,
    /// How a shard's spilled rows are written: "none" or "lz4".
    pub spill_compression: Option<String>,
}
