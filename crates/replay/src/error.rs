//! Errors of a shard replay, and whether trying again can help.

use replayfleet_config::AnomalyKind;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop a shard's replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the archive failed (storage, malformed or changed segment).
    #[error(transparent)]
    Archive(#[from] replayfleet_archive::Error),
    /// The plan's catalog snapshot does not load.
    #[error("the plan's contract catalog: {0}")]
    Contracts(#[from] replayfleet_contracts::Error),
    /// The target store failed.
    #[error("storage error at `{path}`: {source}")]
    Storage {
        /// The object.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An event raised an anomaly whose policy is `halt`.
    #[error(
        "shard {shard}: event `{event_id}` (segment `{segment}`, partition {partition}, seq {seq}) raised {kind}, whose policy is halt: {message}"
    )]
    Halted {
        /// The shard.
        shard: String,
        /// The anomaly kind.
        kind: AnomalyKind,
        /// The event (`-` when it has none).
        event_id: String,
        /// The segment holding it.
        segment: String,
        /// Its partition.
        partition: i32,
        /// Its seq (`-` when null).
        seq: String,
        /// What went wrong.
        message: String,
    },
    /// The projection SQL failed on this shard's events.
    #[error("shard {shard}: the projection SQL failed: {message}")]
    Projection {
        /// The shard.
        shard: String,
        /// DataFusion's message.
        message: String,
    },
    /// The projection SQL or key is unusable (found at plan time).
    #[error("projection: {0}")]
    BadProjection(String),
    /// Another attempt of the shard won with different output bytes: replay is not
    /// deterministic for this shard (a bug, or a non-deterministic SQL function).
    #[error("shard {shard}: {detail}")]
    Nondeterministic {
        /// The shard.
        shard: String,
        /// What differs.
        detail: String,
    },
    /// A file replayfleet wrote (plan, lineage) does not parse.
    #[error("`{path}`: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The fleet's pace (`pacing.events_per_second`) could not be read: the
    /// run-state store is unreachable. Worth another attempt.
    #[error("pacing: {message}")]
    Paced {
        /// What went wrong.
        message: String,
    },
    /// Writing Parquet failed.
    #[error("writing `{path}`: {message}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Worth another attempt (a transient storage failure); everything else is final
    /// for this shard.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Archive(e) => e.is_retryable(),
            Error::Storage { source, .. } => replayfleet_archive::is_transient(source),
            Error::Paced { .. } => true,
            _ => false,
        }
    }

    /// The user's to fix, never the machine's: the archive's content (a segment that cannot
    /// be read, a value the mapping cannot convert), the projection or the contracts. No
    /// attempt can succeed.
    pub fn is_input(&self) -> bool {
        match self {
            Error::Archive(e) => e.is_input(),
            Error::Contracts(e) => e.is_input(),
            Error::BadProjection(_) => true,
            _ => false,
        }
    }

    /// The run must halt at once, whatever the attempts left (a `halt` policy fired).
    pub fn is_halt(&self) -> bool {
        matches!(self, Error::Halted { .. })
    }

    pub(crate) fn storage(path: &object_store::path::Path, source: object_store::Error) -> Self {
        Error::Storage {
            path: path.to_string(),
            source,
        }
    }
}
