//! The audit trail (docs/FORMATS.md, docs/AUDITING.md): what lets an auditor trust a
//! projection without trusting the run that made it.
//!
//! - [`verify`]: re-hash every segment of a commit, re-check every input segment against
//!   its lineage manifest, and replay a deterministic sample of the shards from the
//!   plan's snapshot into a scratch folder, comparing output digests.
//! - [`explain`]: one projection row and every event behind it, found through the lineage
//!   manifest and the input segments (row groups skipped by their statistics), each with
//!   the upcasters applied and its payload before and after.
//! - [`gc`]: delete run folders and losing attempts that no commit references, once older
//!   than a cutoff; never a file a commit names.
//! - [`Emitter`]: a run's OpenLineage events (spec 2-0-2) — START and COMPLETE / FAIL /
//!   ABORT for the run, a child run per shard — written under the run folder and POSTed
//!   to `lineage.url`.
//!
//! The crate reads the target and the archive; it never commits and never changes a file
//! that a commit or a lineage manifest names (it writes only OpenLineage events into a run
//! folder); `gc` deletes only what no commit references.

mod error;
mod explain;
mod gc;
mod load;
mod openlineage;
mod verify;

pub use error::{Error, Result};
pub use explain::{
    ExplainOptions, ExplainedAnomaly, ExplainedEvent, Explanation, UpcastStep, explain,
};
pub use gc::{Collected, GcOptions, Removal, gc};
pub use openlineage::{Emitter, OPENLINEAGE_SCHEMA_URL, RunEnd, run_uuid};
pub use verify::{Mismatch, Verification, VerifyOptions, sample, verify};
