//! The finalizer role (docs/FORMATS.md, "Commit protocol"): re-verify everything a run
//! wrote and read, run the checks, and commit the new projection version with
//! `PutMode::Create` of its Delta commit (`_delta_log/<version>.json`) — or refuse with a
//! report. Also the commit log: history and rollback.
//!
//! Only the finalizer commits, and a commit file is never rewritten. A refused run
//! commits nothing, so readers of the projection never see it.

mod commits;
mod delta;
mod error;
mod finalize;

pub use commits::{
    Migrated, check_target, commit_of, committed_version, current, history,
    history_and_added_files, migrate, rollback, table_files,
};
pub use delta::FileAction;
pub use error::{Error, Result};
pub use finalize::{FinalizeOptions, Finalized, finalize, summary};
/// The commit and report formats, which live with the target's layout in
/// `replayfleet_replay`.
pub use replayfleet_replay::{
    Acceptance, COMMIT_FORMAT_VERSION, CheckResult, Commit, CommitSegment, CommitTotals, Diff,
    REPORT_FORMAT_VERSION, Report,
};
