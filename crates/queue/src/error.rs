//! The crate's one error type. Only transport failures are worth retrying;
//! the others mean the caller's view of a lease or run is out of date, or
//! that the server holds something this crate cannot use.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the lease queue or the run-state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Compare-and-set lost: the stored revision is not the expected one.
    #[error("run state {key} changed concurrently (expected revision {expected}, found {found})")]
    Conflict {
        /// The key written (a run id for run state).
        key: String,
        /// The revision the writer had read.
        expected: u64,
        /// The revision stored now.
        found: u64,
    },
    /// Nothing is stored under the key, or a lease is no longer held by this
    /// delivery (expired and redelivered, acked, released or removed).
    #[error("{key} not found")]
    NotFound {
        /// The key looked up (a run id, or `run/shard` for a lease).
        key: String,
    },
    /// The key is already taken.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The key (a run id).
        key: String,
    },
    /// What the queue or store holds is not what this crate wrote or expects:
    /// an unreadable stored value, or a stream or bucket set up differently.
    /// Retrying does not help.
    #[error("{key} is invalid: {message}")]
    Invalid {
        /// The stream, bucket or key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The queue or store cannot be reached (a NATS error); worth retrying.
    #[error("queue or store unavailable: {message}")]
    Unavailable {
        /// The transport's message.
        message: String,
    },
}

impl Error {
    /// Whether trying again later may succeed: only [`Error::Unavailable`].
    /// A conflict or a lost lease needs the caller to re-read, not to retry blindly.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// What kind of failure it is: an unreachable server is transient, a value the
    /// server or a file refuses (credentials, a seed) the user's, the rest internal.
    pub fn kind(&self) -> replayfleet_config::ErrorKind {
        use replayfleet_config::ErrorKind;
        match self {
            Error::Unavailable { .. } => ErrorKind::Transient,
            Error::Invalid { .. } => ErrorKind::Input,
            _ => ErrorKind::Internal,
        }
    }
}
