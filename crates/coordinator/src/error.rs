//! Errors of planning and coordinating a run.

use replayfleet_config::ErrorKind;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a run before or while it is coordinated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The archive could not be listed or read.
    #[error(transparent)]
    Archive(#[from] replayfleet_archive::Error),
    /// The contract catalog does not load.
    #[error(transparent)]
    Contracts(#[from] replayfleet_contracts::Error),
    /// Replay-side formats, projection checks or target I/O.
    #[error(transparent)]
    Replay(#[from] replayfleet_replay::Error),
    /// The finalizer failed.
    #[error(transparent)]
    Finalizer(#[from] replayfleet_finalizer::Error),
    /// The lease queue or run-state store failed.
    #[error("run state: {0}")]
    Queue(#[from] replayfleet_queue::Error),
    /// The plan cannot be made from this config and archive (exit 2).
    #[error("{0}")]
    Plan(String),
    /// An operation the run's phase does not allow (a halt after the finalizer claimed
    /// the run, resuming a run that is not paused).
    #[error("{0}")]
    Refused(String),
    /// Events present in the archive have no upcast path and their policy is halt (exit 2).
    #[error("upcaster coverage: {}", .0.join("; "))]
    Coverage(Vec<String>),
    /// The run halted: a shard's halt policy fired, a shard ran out of attempts, or an
    /// operator halted it.
    #[error("run {run_id} halted: {reason}")]
    Halted {
        /// The run.
        run_id: String,
        /// Why, naming the shard and its error.
        reason: String,
        /// A halt policy or an operator stopped it (exit 3), rather than a shard out of
        /// attempts (exit 1).
        by_policy: bool,
        /// A shard failed on its input (an unreadable segment, a value the mapping cannot
        /// convert): the user's to fix (exit 2).
        input: bool,
    },
}

impl Error {
    /// The user's to fix before any work (exit code 2).
    pub fn is_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }

    /// What kind of failure it is: a plan that cannot be made is the user's; a halt by
    /// policy or operator and a refused control are refusals; a shard that failed on its
    /// input is the user's, one out of attempts internal; wrapped errors keep their kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Plan(_) | Error::Coverage(_) => ErrorKind::Input,
            Error::Refused(_) => ErrorKind::Refused,
            Error::Halted {
                by_policy: true, ..
            } => ErrorKind::Refused,
            Error::Halted { input: true, .. } => ErrorKind::Input,
            Error::Halted { .. } => ErrorKind::Internal,
            Error::Archive(e) => e.kind(),
            Error::Contracts(e) => e.kind(),
            Error::Replay(e) => e.kind(),
            Error::Finalizer(e) => e.kind(),
            Error::Queue(e) => e.kind(),
        }
    }
}
