//! The coordinator role (docs/CONCEPTS.md, "Coordinator"; docs/FLEET.md): plan a run —
//! inventory, shards of whole partitions, upcaster coverage, the snapshot of every replay
//! input — publish one lease per shard, watch the shards, and hand the run to the
//! finalizer. [`run_embedded`] does all of it in one process with worker tasks over the
//! in-process queue and store.
//!
//! The coordinator never replays a shard and never commits: workers replay, the
//! finalizer commits.

mod controls;
mod embedded;
mod error;
mod openlineage;
mod planning;

pub use controls::{ShardCounts, Status, halt, pause, resume, status};
pub use embedded::{
    CoordinateOptions, EmbeddedOptions, Fleet, Progress, RunResult, coordinate, hostname,
    publish_leases, run_embedded,
};
pub use error::{Error, Result};
pub use planning::{Estimate, Planned, new_run_id, plan_run};
