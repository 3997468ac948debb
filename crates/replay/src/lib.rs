//! One shard's replay (docs/FORMATS.md: "Duplicates and anomalies", sections 2–4), a pure
//! function of the plan's snapshot and the input bytes: read the shard's segments in `seq`
//! order, drop exact duplicates, upcast and validate every event, apply the anomaly
//! policies, fold the `events` table through the projection SQL (DataFusion, one
//! partition), and write the projection segments, the quarantined events and the lineage
//! manifest.
//!
//! The crate also owns the formats a replay reads and writes — [`Plan`] (`plan.json`),
//! [`Lineage`] (the lineage manifest) and the [`Target`] layout — and the row-level
//! [`Fingerprint`]. It never knows about queues, leases or commits: the worker calls
//! [`replay_shard`], the finalizer reads what it wrote.
//!
//! Determinism: the same plan and input bytes give byte-identical part files, whatever the
//! worker, the attempt or the number of shards around it.

mod anomaly;
mod canonical;
mod commit;
mod dedupe;
mod error;
mod events;
mod fingerprint;
mod fold;
pub use fold::split_hazard;
mod layout;
mod lineage;
mod merge;
mod order;
mod plan;
mod project;
mod raw;
mod read;
mod shard;
mod stats;
mod store;
mod write;

pub use anomaly::anomalies_schema;
pub use commit::{
    Acceptance, COMMIT_FORMAT_VERSION, CheckResult, Commit, CommitSegment, CommitTotals, Diff,
    REPORT_FORMAT_VERSION, Report,
};
pub use error::{Error, Result};
pub use fingerprint::Fingerprint;
pub use layout::{
    COMMITS_DIR, Created, LEGACY_COMMITS_DIR, Target, TargetPath, WRITE_RETRIES_METRIC, sha256_hex,
    to_json_bytes,
};
pub use lineage::{
    Applied, LINEAGE_FORMAT_VERSION, Lineage, LineageInput, OutputFile, VersionApplied,
};
pub use merge::key_order;
pub use plan::{
    Build, ChecksSnapshot, Column, ContractFile, ContractsSnapshot, InputSegment, LONG_VERSION,
    PLAN_FORMAT_VERSION, Plan, ProjectionSnapshot, ShardPlan, SourceSnapshot, Split, TypeCoverage,
    shard_id, stream_bucket,
};
pub use project::{
    check_invariants, check_projection, checks_session, columns, events_schema, keyed_query,
    limit_message, map_types, query_only, quote, session,
};
pub use shard::{PaceError, Pacer, ShardJob, ShardOutcome, replay_shard};
pub use stats::file_stats;
pub use store::SpillDir;
pub use write::{PARQUET_FORMAT_VERSION, SEGMENT_ROWS, json_value, key_of, parquet_bytes};
