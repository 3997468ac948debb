//! Errors of the generator.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong generating an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`GenerateSpec`](crate::GenerateSpec) is unusable (zero partitions, a rate outside 0..=1, ...).
    #[error("invalid generate spec: {0}")]
    InvalidSpec(String),
    /// The output location already holds objects; mixing two histories would corrupt both.
    #[error(
        "output location `{location}` is not empty (found `{found}`); generate into an empty location"
    )]
    NotEmpty {
        /// The output URL.
        location: String,
        /// One object found there.
        found: String,
    },
    /// Object storage failed (after object_store's own retries).
    #[error("storage error at `{path}`: {source}")]
    Storage {
        /// The object or prefix.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Encoding a segment as Parquet failed.
    #[error("cannot encode segment `{path}`: {source}")]
    Encode {
        /// The segment's path relative to the output location.
        path: String,
        /// The writer's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
}

use replayfleet_config::ErrorKind;

impl Error {
    /// A user-caused problem (exit code 2) rather than an operational one.
    pub fn is_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }

    /// Worth retrying later (a transient storage failure).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSpec(_) | Error::NotEmpty { .. } => ErrorKind::Input,
            Error::Storage { source, .. } => replayfleet_archive::storage_kind(source),
            _ => ErrorKind::Internal,
        }
    }
}
