//! Load errors of a contract catalog. Every message names the file (its path relative to
//! the catalog folder) and, where known, the line, version and step.

use std::path::PathBuf;

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The catalog folder or one of its files could not be read.
    #[error("cannot read contracts at {path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The catalog folder holds no `*.yaml` / `*.yml` file.
    #[error("no contract files (*.yaml, *.yml) in {path}")]
    Empty {
        /// The folder.
        path: PathBuf,
    },
    /// A file is not valid YAML, or does not have the catalog's shape (unknown keys included).
    #[error("{file}{}: {message}", at_line(*line, *column))]
    Yaml {
        /// The file, relative to the catalog folder.
        file: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// The same `event_type` is declared by two files.
    #[error("{file}: event type {event_type} is already declared in {other}")]
    DuplicateEventType {
        /// The second file.
        file: String,
        /// The first file.
        other: String,
        /// The event type.
        event_type: String,
    },
    /// Something wrong with a file as a whole or with one version (no versions, versions out
    /// of order, a chain with a hole, a bad `from_version`...).
    #[error("{file}{}{}: {message}", at_line(*line, 0), at_version(*version))]
    Version {
        /// The file.
        file: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// The version concerned, if any.
        version: Option<i32>,
        /// What is wrong.
        message: String,
    },
    /// A version's JSON Schema does not compile.
    #[error("{file}{}, version {version}: schema does not compile: {message}", at_line(*line, 0))]
    Schema {
        /// The file.
        file: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// The version.
        version: i32,
        /// The compiler's message.
        message: String,
    },
    /// An upcast step is malformed, of an unknown kind, or does not compile (jq syntax, SQL).
    #[error("{file}{}, version {version}, step {step}{}: {message}", at_line(*line, 0), kind_suffix(kind))]
    Step {
        /// The file.
        file: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// The version whose `upcast` holds the step.
        version: i32,
        /// 1-based index of the step in `upcast`.
        step: usize,
        /// The step kind (`sql`, `jq`...), empty when unknown.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// An example does not fit the catalog (its `expect` fails the target schema...).
    #[error("{file}{}, version {version}, example {example}: {message}", at_line(*line, 0))]
    Example {
        /// The file.
        file: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// The version that holds the example.
        version: i32,
        /// 1-based index of the example in the version.
        example: usize,
        /// What is wrong.
        message: String,
    },
    /// A typed column of the `events` table is declared twice with different types, or
    /// clashes with an envelope column.
    #[error("typed column {column}: {message}")]
    TypedColumn {
        /// The property name.
        column: String,
        /// What clashes, naming the files.
        message: String,
    },
    /// A failure that is not the user's doing (a DataFusion internal error...).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the error is caused by the user's input (exit code 2), as opposed to a bug.
    pub fn is_input(&self) -> bool {
        self.kind() == replayfleet_config::ErrorKind::Input
    }

    /// What kind of failure it is: every catalog error is the user's (input) but an
    /// internal one.
    pub fn kind(&self) -> replayfleet_config::ErrorKind {
        match self {
            Error::Internal(_) => replayfleet_config::ErrorKind::Internal,
            _ => replayfleet_config::ErrorKind::Input,
        }
    }
}

/// The result of catalog operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn at_line(line: u64, column: u64) -> String {
    match (line, column) {
        (0, _) => String::new(),
        (l, 0) => format!(":{l}"),
        (l, c) => format!(":{l}:{c}"),
    }
}

fn at_version(version: Option<i32>) -> String {
    version
        .map(|v| format!(", version {v}"))
        .unwrap_or_default()
}

pub(crate) fn kind_suffix(kind: &str) -> String {
    if kind.is_empty() {
        String::new()
    } else {
        format!(" ({kind})")
    }
}
