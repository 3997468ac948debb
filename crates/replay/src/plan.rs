//! `plan.json`: the run's inputs, its shards, and a snapshot of everything a replay
//! depends on. Workers, `finalize` and `verify` read a run from its plan, never from a
//! local config file.

use chrono::{DateTime, Utc};
use replayfleet_archive::{PartitionRange, SegmentRef};
use replayfleet_config::{Policy, SourceMapping, Window};
use replayfleet_contracts::{Catalog, CatalogFile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Result;

/// Version of the `plan.json` format.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// The replayfleet build that wrote a file; part of every replay's inputs. Two builds are
/// the same build when every field is equal: a worker refuses a plan of another build,
/// whose shards it could not promise to replay to the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Always `replayfleet`.
    pub name: String,
    /// The crate version.
    pub version: String,
    /// A digest of the workspace's sources (every file under `crates/`, `Cargo.toml`,
    /// `Cargo.lock`; 16 hex digits, from `crates/replay/build.rs`): differs whenever the
    /// code differs. Empty in files of builds before it was recorded.
    #[serde(default)]
    pub sources: String,
    /// The compiler (`rustc -V`).
    #[serde(default)]
    pub rustc: String,
    /// The target triple.
    #[serde(default)]
    pub target: String,
    /// The cargo profile (`debug`, `release`).
    #[serde(default)]
    pub profile: String,
}

/// This build's `--version` line: the crate version and the build's identity.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (sources ",
    env!("REPLAYFLEET_BUILD_SOURCES"),
    ", ",
    env!("REPLAYFLEET_BUILD_RUSTC"),
    ", ",
    env!("REPLAYFLEET_BUILD_TARGET"),
    ", ",
    env!("REPLAYFLEET_BUILD_PROFILE"),
    ")"
);

impl Build {
    /// This build.
    pub fn current() -> Self {
        Build {
            name: "replayfleet".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            sources: env!("REPLAYFLEET_BUILD_SOURCES").into(),
            rustc: env!("REPLAYFLEET_BUILD_RUSTC").into(),
            target: env!("REPLAYFLEET_BUILD_TARGET").into(),
            profile: env!("REPLAYFLEET_BUILD_PROFILE").into(),
        }
    }
}

impl std::fmt::Display for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)?;
        if !self.sources.is_empty() {
            write!(
                f,
                " (sources {}, {}, {}, {})",
                self.sources, self.rustc, self.target, self.profile
            )?;
        }
        Ok(())
    }
}

/// A run's plan (`runs/<run_id>/plan.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT_VERSION`].
    pub format_version: u32,
    /// `<name>-<ULID>`.
    pub run_id: String,
    /// The run's human name.
    pub name: String,
    /// When the plan was made.
    pub created_at: DateTime<Utc>,
    /// The build that planned it; workers of another build refuse its shards.
    pub build: Build,
    /// The archive and how its columns map.
    pub source: SourceSnapshot,
    /// The projection's home (URL).
    pub target: String,
    /// The contract catalog, file by file.
    pub contracts: ContractsSnapshot,
    /// The projection.
    pub projection: ProjectionSnapshot,
    /// Anomaly policies, budget, invariants and the baseline limit.
    pub checks: ChecksSnapshot,
    /// Canary and prefix windows (a windowed run never commits).
    pub window: Window,
    /// Shards are groups of whole partitions of about this many events.
    pub shard_target_events: u64,
    /// Memory per worker, bytes.
    pub memory_limit_bytes: u64,
    /// The folder spill files go in, on each worker's machine (`limits.spill_dir`);
    /// absent: the OS temp folder (`TMPDIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<String>,
    /// How many bytes one shard may spill, for its rows and for its projection each
    /// (`limits.spill_max`); unbounded in plans written before it was recorded.
    #[serde(default = "unbounded")]
    pub spill_max_bytes: u64,
    /// How the shard's spilled rows are written (`limits.spill_compression`).
    #[serde(default)]
    pub spill_compression: replayfleet_config::SpillCompression,
    /// The time one shard's projection may run, milliseconds (`limits.projection_time`);
    /// past it the shard fails. 0 (plans of older builds): no limit.
    #[serde(default)]
    pub projection_time_ms: u64,
    /// The time one jq step may run on one event, milliseconds (`limits.step_time`); past
    /// it the process ends with exit 2. 0 (plans of older builds): the default.
    #[serde(default)]
    pub step_time_ms: u64,
    /// Real failures of a shard before the run halts.
    pub max_attempts: u32,
    /// Lease time-to-live, milliseconds.
    pub lease_ttl_ms: u64,
    /// The fleet-wide pace, events read a second (`pacing.events_per_second`); 0: unlimited.
    #[serde(default)]
    pub pacing_events_per_second: u64,
    /// OpenLineage endpoint, if any.
    pub lineage_url: Option<String>,
    /// Every input segment the shards read.
    pub segments: Vec<InputSegment>,
    /// The shards, in name order.
    pub shards: Vec<ShardPlan>,
    /// (event type, version) pairs present in the planned partitions and where each stands.
    pub event_types: Vec<TypeCoverage>,
    /// The projection's output columns, as planned.
    pub output_columns: Vec<Column>,
}

/// The archive as the plan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    /// The archive's URL (credentials and store options come from each process's environment).
    pub url: String,
    /// Which objects are segments, what their keys say, where each envelope column
    /// comes from (`columns`, `key_pattern`, `segments`).
    #[serde(flatten)]
    pub mapping: SourceMapping,
    /// Gap-free per-partition offsets promised.
    pub contiguous_seq: bool,
}

/// The contract catalog: its files and their digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractsSnapshot {
    /// [`Catalog::sha256`].
    pub sha256: String,
    /// Every file, sorted by path.
    pub files: Vec<ContractFile>,
}

/// One catalog file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractFile {
    /// Path relative to the catalog folder.
    pub path: String,
    /// The file's text.
    pub text: String,
}

impl ContractsSnapshot {
    /// Snapshots a loaded catalog.
    pub fn of(catalog: &Catalog) -> Self {
        ContractsSnapshot {
            sha256: catalog.sha256(),
            files: catalog
                .files()
                .iter()
                .map(|f| ContractFile {
                    path: f.path.clone(),
                    text: String::from_utf8_lossy(&f.bytes).into_owned(),
                })
                .collect(),
        }
    }

    /// Rebuilds the catalog.
    pub fn catalog(&self) -> Result<Catalog> {
        Ok(Catalog::from_files(
            self.files
                .iter()
                .map(|f| CatalogFile {
                    path: f.path.clone(),
                    bytes: f.text.as_bytes().to_vec(),
                })
                .collect(),
        )?)
    }
}

/// The projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionSnapshot {
    /// Its name.
    pub name: String,
    /// Unique key columns.
    pub key: Vec<String>,
    /// The SQL over `events`.
    pub sql: String,
    /// Hex SHA-256 of the SQL text.
    pub sql_sha256: String,
}

impl ProjectionSnapshot {
    /// Snapshots a projection.
    pub fn new(name: &str, key: &[String], sql: &str) -> Self {
        ProjectionSnapshot {
            name: name.to_owned(),
            key: key.to_vec(),
            sql: sql.to_owned(),
            sql_sha256: hex::encode(Sha256::digest(sql.as_bytes())),
        }
    }
}

fn unbounded() -> u64 {
    u64::MAX
}

/// Checks as planned: the config's own (every anomaly kind present), one type for both.
pub type ChecksSnapshot = replayfleet_config::Checks;

/// One input segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSegment {
    /// Path relative to the archive.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Entity tag when listed.
    pub etag: Option<String>,
    /// Last modification time.
    pub last_modified: DateTime<Utc>,
    /// Rows (all partitions).
    pub rows: u64,
    /// Smallest seq.
    pub seq_min: Option<i64>,
    /// Largest seq.
    pub seq_max: Option<i64>,
    /// Its partitions with their rows and seq ranges.
    pub partitions: Vec<PartitionRange>,
}

impl InputSegment {
    /// The listing reference used to read it.
    pub fn segment_ref(&self) -> SegmentRef {
        SegmentRef {
            path: self.path.clone(),
            size: self.bytes,
            etag: self.etag.clone(),
            last_modified: self.last_modified,
        }
    }
}

/// One shard: whole partitions, or one share of the streams of one partition (a
/// sub-shard, [`Split`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// `shard-00000`, ...
    pub id: String,
    /// Its partitions, ascending (one, for a sub-shard).
    pub partitions: Vec<i32>,
    /// The segments holding rows of them, by path.
    pub segments: Vec<String>,
    /// Rows of its partitions in those segments (before windows and deduplication); for
    /// a sub-shard, its estimated share of them.
    pub rows: u64,
    /// Bytes of those segments (a sub-shard reads all of them).
    pub bytes: u64,
    /// `None`: every stream of its partitions. Otherwise the share of the partition's
    /// streams it replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

/// A share of one partition's streams: bucket `bucket` of `of`, the streams whose
/// [`stream_bucket`] is `bucket`. The `of` sub-shards of a partition together replay
/// every stream of it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Split {
    /// Which share, from 0.
    pub bucket: u32,
    /// How many shares the partition is split into.
    pub of: u32,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.of)
    }
}

/// The hash of a stream id that places it: XXH3-64 of its UTF-8 bytes (seed 0), read as
/// a fraction of 2^64.
pub(crate) fn stream_hash(stream_id: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot(stream_id.as_bytes())
}

/// The share of `of` a stream belongs to: `floor(hash × of / 2^64)`, where `hash` is the
/// XXH3-64 (seed 0) of its id's UTF-8 bytes. A null stream id belongs to share 0.
pub fn stream_bucket(stream_id: Option<&str>, of: u32) -> u32 {
    stream_id.map_or(0, |s| {
        ((u128::from(stream_hash(s)) * u128::from(of)) >> 64) as u32
    })
}

/// An (event type, version) pair present and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCoverage {
    /// The event type (`None`: null in the archive).
    pub event_type: Option<String>,
    /// The version (`None`: null in the archive).
    pub schema_version: Option<i32>,
    /// Events of the pair.
    pub events: u64,
    /// `at_target`, `upcast` or an anomaly kind.
    pub status: String,
    /// Versions whose upcasters run, in order.
    pub chain: Vec<i32>,
    /// The policy that applies when the status is an anomaly kind.
    pub policy: Option<Policy>,
}

/// One output column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its Arrow type, as Arrow displays it (`Int64`, `Utf8`, `Timestamp(µs, "UTC")`).
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

impl Plan {
    /// The shard of this id.
    pub fn shard(&self, id: &str) -> Option<&ShardPlan> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The input segment at this path.
    pub fn segment(&self, path: &str) -> Option<&InputSegment> {
        self.segments.iter().find(|s| s.path == path)
    }

    /// Whether `other` plans the same work as this plan: everything but the run id and
    /// the planning time is equal (the same inputs with the same ETags and sizes, the
    /// same shards, contracts, projection, checks, limits and build). Then the shards
    /// `other`'s run finished are this plan's shards' outputs too.
    pub fn same_work(&self, other: &Plan) -> bool {
        let strip = |plan: &Plan| {
            let mut value = serde_json::to_value(plan).expect("a plan serialises");
            if let Some(object) = value.as_object_mut() {
                object.remove("run_id");
                object.remove("created_at");
            }
            value
        };
        strip(self) == strip(other)
    }

    /// Parses plan JSON, refusing unknown format versions.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Self> {
        let plan: Plan = serde_json::from_slice(bytes).map_err(|e| crate::Error::Format {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if plan.format_version != PLAN_FORMAT_VERSION {
            return Err(crate::Error::Format {
                path: path.to_owned(),
                message: format!(
                    "format_version {} is not supported (this build reads {PLAN_FORMAT_VERSION})",
                    plan.format_version
                ),
            });
        }
        Ok(plan)
    }
}

/// The shard id of index `i`.
pub fn shard_id(i: usize) -> String {
    format!("shard-{i:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_told_apart_by_its_sources_compiler_target_and_profile() {
        let current = Build::current();
        assert_eq!(current.sources.len(), 16, "{current}");
        assert!(current.sources.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(current.rustc.starts_with("rustc "), "{current}");
        assert!(!current.target.is_empty() && !current.profile.is_empty());
        assert!(LONG_VERSION.contains(&current.sources), "{LONG_VERSION}");
        assert!(current.to_string().contains(&current.sources));
        for other in [
            Build {
                sources: "0123456789abcdef".into(),
                ..current.clone()
            },
            Build {
                profile: "another".into(),
                ..current.clone()
            },
        ] {
            assert_ne!(other, current);
        }
        // A file written before the build's identity was recorded still reads.
        let old: Build =
            serde_json::from_str(r#"{"name": "replayfleet", "version": "0.1.0"}"#).unwrap();
        assert_eq!(old.sources, "");
        assert_eq!(old.to_string(), "replayfleet 0.1.0");
    }
}
