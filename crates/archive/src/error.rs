//! Errors of the archive crate.

pub use replayfleet_config::ErrorKind;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The location string is not a usable URL or path.
    #[error("invalid location `{location}`: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// Why it is unusable.
        reason: String,
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
    /// An object is not a readable Parquet file (not Parquet, truncated, corrupt).
    #[error("segment `{segment}`: {reason}")]
    BadSegment {
        /// The segment path, relative to the archive location.
        segment: String,
        /// What is wrong (`not a readable Parquet file: ...`).
        reason: String,
    },
    /// A column that `[source.columns]` maps onto the envelope is not in a segment.
    #[error(
        "segment `{segment}`: column `{column}` (mapped to envelope `{envelope_column}`) not found; columns are: {}",
        available.join(", ")
    )]
    MissingColumn {
        /// The segment path, relative to the archive location.
        segment: String,
        /// The archive column looked for.
        column: String,
        /// The envelope column it feeds.
        envelope_column: &'static str,
        /// The segment's top-level columns.
        available: Vec<String>,
    },
    /// A mapped column has a type that cannot feed its envelope column.
    #[error(
        "segment `{segment}`: column `{column}` (mapped to envelope `{envelope_column}`) has type {found}, expected {expected}"
    )]
    WrongType {
        /// The segment path, relative to the archive location.
        segment: String,
        /// The archive column.
        column: String,
        /// The envelope column it feeds.
        envelope_column: &'static str,
        /// What the envelope column accepts.
        expected: &'static str,
        /// The Arrow type found in the segment.
        found: String,
    },
    /// A value does not fit its envelope column (an integer wider than the target).
    #[error(
        "segment `{segment}`: column `{column}` row {row}: value {value} does not fit envelope `{envelope_column}` ({target})"
    )]
    ValueOutOfRange {
        /// The segment path, relative to the archive location.
        segment: String,
        /// The archive column.
        column: String,
        /// The envelope column it feeds.
        envelope_column: &'static str,
        /// Zero-based row number inside the segment.
        row: u64,
        /// The offending value, as text.
        value: String,
        /// The target type.
        target: &'static str,
    },
    /// A `[source.columns]` entry (or `source.key_pattern`) does not apply to a segment: its
    /// path does not match the key pattern, a footer key is absent, a captured value is
    /// not in the entry's map or not an integer...
    #[error("segment `{segment}`: {entry}: {reason}")]
    Mapping {
        /// The segment path, relative to the archive location.
        segment: String,
        /// The entry as written, `source.columns.partition = { key = "partition" }`.
        entry: String,
        /// What does not apply.
        reason: String,
    },
    /// A value cannot become its envelope column's type (text that is not an integer or a
    /// timestamp, bytes that are not UTF-8).
    #[error(
        "segment `{segment}`: column `{column}` row {row}: value `{value}` {reason}, mapped to envelope `{envelope_column}`"
    )]
    BadValue {
        /// The segment path, relative to the archive location.
        segment: String,
        /// The archive column or path.
        column: String,
        /// The envelope column it feeds.
        envelope_column: &'static str,
        /// Zero-based row number inside the segment.
        row: u64,
        /// The offending value, as text (truncated).
        value: String,
        /// Why it does not convert.
        reason: String,
    },
    /// A segment is not the object that was planned: its size or entity tag changed,
    /// or it is gone.
    #[error("segment `{segment}` changed since it was planned: {reason}")]
    Changed {
        /// The segment path, relative to the archive location.
        segment: String,
        /// What differs.
        reason: String,
    },
}

impl Error {
    /// What kind of failure it is: the archive's content and locations are the user's
    /// (input); storage failures that may pass are transient; the rest (a store refusing,
    /// a segment changed since it was planned) internal.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidLocation { .. }
            | Error::BadSegment { .. }
            | Error::MissingColumn { .. }
            | Error::WrongType { .. }
            | Error::ValueOutOfRange { .. }
            | Error::Mapping { .. }
            | Error::BadValue { .. } => ErrorKind::Input,
            Error::Storage { source, .. } => storage_kind(source),
            Error::Changed { .. } => ErrorKind::Internal,
        }
    }

    /// A user-caused problem (exit code 2): [`ErrorKind::Input`].
    pub fn is_input(&self) -> bool {
        self.kind() == ErrorKind::Input
    }

    /// Worth retrying later: [`ErrorKind::Transient`].
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The segment an error is about, when it is about one.
    pub fn segment(&self) -> Option<&str> {
        match self {
            Error::BadSegment { segment, .. }
            | Error::MissingColumn { segment, .. }
            | Error::WrongType { segment, .. }
            | Error::ValueOutOfRange { segment, .. }
            | Error::Mapping { segment, .. }
            | Error::BadValue { segment, .. }
            | Error::Changed { segment, .. } => Some(segment),
            Error::InvalidLocation { .. } | Error::Storage { .. } => None,
        }
    }

    /// Converts a Parquet reader error about `segment`: storage failures stay
    /// [`Error::Storage`] (so they can be retried), everything else is a bad segment.
    pub(crate) fn from_parquet(
        segment: &str,
        full_path: &str,
        err: parquet::errors::ParquetError,
    ) -> Self {
        match err {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<object_store::Error>() {
                    Ok(source) => Error::Storage {
                        path: full_path.to_owned(),
                        source: *source,
                    },
                    Err(other) => Error::BadSegment {
                        segment: segment.to_owned(),
                        reason: format!("not a readable Parquet file: {other}"),
                    },
                }
            }
            other => Error::BadSegment {
                segment: segment.to_owned(),
                reason: format!("not a readable Parquet file: {other}"),
            },
        }
    }
}

/// The kind of an object-store failure: transient when it may succeed when tried again,
/// internal otherwise.
pub fn storage_kind(error: &object_store::Error) -> ErrorKind {
    if is_transient(error) {
        ErrorKind::Transient
    } else {
        ErrorKind::Internal
    }
}

/// Whether an object-store failure may succeed when tried again (throttling, timeouts,
/// server errors) rather than being final (missing, refused, misconfigured).
pub fn is_transient(error: &object_store::Error) -> bool {
    !matches!(
        error,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}
