//! Errors of the config crate: all of them are the user's to fix (exit code 2).

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can be wrong with a run configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file (or a file it names) cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment override does not apply.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A key has a value that is out of range or inconsistent with another key.
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Always [`ErrorKind::Input`](crate::ErrorKind::Input): configuration errors are
    /// the user's to fix.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Input
    }

    /// Always true (see [`Error::kind`]).
    pub fn is_input(&self) -> bool {
        self.kind() == crate::ErrorKind::Input
    }
}
