//! Errors of the archive crate.

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
}

impl Error {
    /// A user-caused problem (exit code 2) rather than an operational one.
    pub fn is_input(&self) -> bool {
        matches!(self, Error::InvalidLocation { .. })
    }

    /// Worth retrying later (a transient storage failure).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Storage { source, .. } if !matches!(source,
            object_store::Error::NotFound { .. }
                | object_store::Error::InvalidPath { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::UnknownConfigurationKey { .. }))
    }
}
