//! Errors of a shard replay, and whether trying again can help.

use replayfleet_config::{AnomalyKind, ErrorKind};

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
    /// Every earlier delivery of the shard's lease expired with its worker gone, more
    /// often than the plan's attempts allow (a fleet worker's check before it replays).
    #[error(
        "shard {shard}: its lease expired {expired} times with no worker finishing or failing it (`fleet.max_attempts` is {max_attempts}): each worker that took it ended while replaying it (killed, out of memory, or ended by a jq step past `limits.step_time`); their logs say which"
    )]
    WorkersEnded {
        /// The shard.
        shard: String,
        /// How many deliveries expired.
        expired: u32,
        /// The plan's `fleet.max_attempts`.
        max_attempts: u32,
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
    /// run-state store failed; its kind says whether another attempt may help.
    #[error("pacing: {}", .0.message)]
    Paced(crate::PaceError),
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
        self.kind().is_retryable()
    }

    /// What kind of failure it is: the archive's content, the projection and the
    /// contracts are the user's (input: no attempt can succeed); a `halt` policy refuses
    /// the run at once; storage and pacing failures that may pass are transient.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Archive(e) => e.kind(),
            Error::Contracts(e) => e.kind(),
            Error::BadProjection(_) => ErrorKind::Input,
            Error::Halted { .. } => ErrorKind::Refused,
            Error::Storage { source, .. } => replayfleet_archive::storage_kind(source),
            Error::Paced(e) => e.kind,
            _ => ErrorKind::Internal,
        }
    }

    /// The user's to fix: [`ErrorKind::Input`].
    pub fn is_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }

    /// The run must halt at once, whatever the attempts left (a `halt` policy fired):
    /// [`ErrorKind::Refused`].
    pub fn is_halt(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }

    pub(crate) fn storage(path: &object_store::path::Path, source: object_store::Error) -> Self {
        Error::Storage {
            path: path.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_error_itself_not_its_variant_alone() {
        let paced = |kind| {
            Error::Paced(crate::PaceError {
                message: "the store said no".into(),
                kind,
            })
        };
        assert!(paced(ErrorKind::Transient).is_retryable());
        assert!(
            !paced(ErrorKind::Input).is_retryable(),
            "pacing keeps its kind"
        );
        assert_eq!(Error::BadProjection("x".into()).kind(), ErrorKind::Input);
        let bad_segment = Error::Archive(replayfleet_archive::Error::BadSegment {
            segment: "s".into(),
            reason: "corrupt".into(),
        });
        assert!(bad_segment.is_input() && !bad_segment.is_retryable());
    }
}
