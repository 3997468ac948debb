//! Errors of finalizing, history and rollback.

use replayfleet_config::ErrorKind;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a finalizer (a refusal is not an error: it is a [`crate::Finalized`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Target I/O or a malformed file.
    #[error(transparent)]
    Replay(#[from] replayfleet_replay::Error),
    /// The source could not be reached to check the inputs.
    #[error(transparent)]
    Archive(#[from] replayfleet_archive::Error),
    /// The run-state store failed or changed under us.
    #[error("run state: {0}")]
    Queue(#[from] replayfleet_queue::Error),
    /// No such run in the target.
    #[error("no run `{run_id}` in `{target}`: `runs/{run_id}/plan.json` does not exist")]
    NoRun {
        /// The run.
        run_id: String,
        /// The target URL.
        target: String,
    },
    /// No such version.
    #[error("no version {version} in `{target}`")]
    NoVersion {
        /// The version asked for.
        version: u64,
        /// The target URL.
        target: String,
    },
    /// Another commit took the version this finalizer was about to create.
    #[error(
        "lost the commit race: version {version} was committed by another finalizer (run {winner}) after run {run_id} was diffed against version {baseline}; finalize again to diff against the new version"
    )]
    LostRace {
        /// The version both wanted.
        version: u64,
        /// This run.
        run_id: String,
        /// The run that won.
        winner: String,
        /// The baseline this run was diffed against (0: none).
        baseline: u64,
    },
    /// The run was halted (or committed/refused) before the finalizer could claim it.
    #[error("run {run_id} cannot be finalized: it is {phase}")]
    NotFinalizable {
        /// The run.
        run_id: String,
        /// Its phase.
        phase: String,
    },
    /// The target's Delta log cannot be read or written by replayfleet (a table another
    /// writer made or changed, a newer protocol, a malformed version, a column Delta
    /// cannot hold).
    #[error("{path}: {message}")]
    Table {
        /// The log file (relative to the target), or the column.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A target written before the Delta log: read-only.
    #[error(
        "`{target}` keeps its versions in `_commits/`, the commit log before the Delta log: `history`, `show`, `verify`, `explain` and `gc` read it, but new versions are Delta commits; run `replayfleet migrate --target {target}` to convert it"
    )]
    LegacyLog {
        /// The target URL.
        target: String,
    },
    /// A check query failed to run (a bad invariant, a DataFusion error).
    #[error("{what}: {message}")]
    Query {
        /// Which check.
        what: String,
        /// DataFusion's message.
        message: String,
    },
}

impl Error {
    /// The user's to fix (exit code 2): a bad invariant SQL, an unknown run or version.
    pub fn is_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }

    /// A lost race or a halted run (exit code 3): [`ErrorKind::Refused`].
    pub fn is_refusal(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }

    /// What kind of failure it is: a missing run or version and a query that does not
    /// plan are the user's; a lost race or a run that cannot be finalized refused; the
    /// errors it wraps keep their kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoRun { .. }
            | Error::NoVersion { .. }
            | Error::Query { .. }
            | Error::Table { .. }
            | Error::LegacyLog { .. } => ErrorKind::Input,
            Error::LostRace { .. } | Error::NotFinalizable { .. } => ErrorKind::Refused,
            Error::Replay(e) => e.kind(),
            Error::Archive(e) => e.kind(),
            Error::Queue(e) => e.kind(),
        }
    }
}
