//! The catalog file as written (docs/CONTRACTS.md, "The file format"): serde structs,
//! unknown keys rejected.
//! Steps stay raw JSON here so that a bad step is reported with its version and index.

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::{Error, Result};

/// One `contracts/*.yaml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    /// The event type, e.g. `Deposited`.
    pub event_type: String,
    /// Versions, strictly increasing.
    pub versions: Vec<Spanned<RawVersion>>,
}

/// One version of an event type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVersion {
    /// The `schema_version` of events of this contract.
    pub version: i32,
    /// JSON Schema 2020-12 of the payload.
    pub schema: Value,
    /// Steps turning a payload of the previous version into one of this version.
    #[serde(default)]
    pub upcast: Option<Vec<Spanned<Value>>>,
    /// Input payloads and the target payloads they must upcast to.
    #[serde(default)]
    pub examples: Vec<Spanned<RawExample>>,
}

/// One example of the schema-upgrade test matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExample {
    /// The version of `input`.
    pub from_version: i32,
    /// A payload of `from_version`.
    pub input: Value,
    /// The payload `input` must upcast to (at the catalog's target version).
    pub expect: Value,
}

/// Parses one file, mapping serde-saphyr's error onto [`Error::Yaml`] with line and column.
pub(crate) fn parse(file: &str, bytes: &[u8]) -> Result<RawFile> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Yaml {
        file: file.to_owned(),
        line: 0,
        column: 0,
        message: format!("not UTF-8: {e}"),
    })?;
    serde_saphyr::from_str::<RawFile>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        Error::Yaml {
            file: file.to_owned(),
            line,
            column,
            message: first_line(&e.without_snippet().to_string()),
        }
    })
}

/// serde-saphyr renders a location header and snippets; keep the message itself.
fn first_line(rendered: &str) -> String {
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let line = line.trim();
    // "error: line 3 column 5: unknown field ..." → the part after the position.
    let line = line.strip_prefix("error: ").unwrap_or(line);
    line.trim_end_matches('.').to_owned()
}
