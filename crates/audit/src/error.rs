//! Errors of the audit commands. A mismatch found by `verify` is not an error: it is a
//! finding in the [`crate::Verification`].

use replayfleet_config::ErrorKind;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop an audit command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Target I/O, or a file replayfleet wrote that does not parse.
    #[error(transparent)]
    Replay(#[from] replayfleet_replay::Error),
    /// The commit log could not be read.
    #[error(transparent)]
    Finalizer(#[from] replayfleet_finalizer::Error),
    /// The archive could not be reached.
    #[error(transparent)]
    Archive(#[from] replayfleet_archive::Error),
    /// The user asked for something the target does not hold, or gave a bad value
    /// (exit code 2).
    #[error("{0}")]
    Input(String),
    /// The target store failed.
    #[error("storage error at `{path}`: {source}")]
    Storage {
        /// The object or prefix.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The scratch folder for re-running shards could not be made.
    #[error("a scratch folder for re-running shards: {0}")]
    Scratch(#[source] std::io::Error),
    /// The target does not hold what a commit says (a file it names is gone), or changed
    /// under a running command (a commit appeared naming a run `gc` was deleting).
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    /// The user's to fix (exit code 2).
    pub fn is_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }

    /// What kind of failure it is; wrapped errors keep their kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Input(_) => ErrorKind::Input,
            Error::Replay(e) => e.kind(),
            Error::Finalizer(e) => e.kind(),
            Error::Archive(e) => e.kind(),
            Error::Storage { source, .. } => replayfleet_archive::storage_kind(source),
            Error::Scratch(_) | Error::Conflict(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn storage(path: &object_store::path::Path, source: object_store::Error) -> Self {
        Error::Storage {
            path: path.to_string(),
            source,
        }
    }
}
