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
        let message = first_line(&e.without_snippet().to_string());
        Error::Yaml {
            file: file.to_owned(),
            line,
            column,
            message: format!("{message}{}", snippet(text, line, column)),
        }
    })
}

/// The lines around a parser error, the column marked: the reported line and the one
/// before it, since a parser reports an unclosed bracket or quote, or a bad indentation,
/// where it gives up — often the line after the mistake.
fn snippet(text: &str, line: u64, column: u64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = (line as usize).checked_sub(1).filter(|i| *i < lines.len()) else {
        return String::new();
    };
    let mut out = String::new();
    let first = at.saturating_sub(1);
    for (n, text) in lines[first..=at].iter().enumerate() {
        out.push_str(&format!("\n{:>5} | {text}", first + n + 1));
    }
    if column > 0 {
        out.push_str(&format!(
            "\n      | {}^",
            " ".repeat(column.saturating_sub(1) as usize)
        ));
    }
    if at > 0 {
        out.push_str("\n      (the mistake may be on the line before: an unclosed bracket or quote, or an indentation)");
    }
    out
}

/// serde-saphyr renders a location header and snippets; keep the message itself.
fn first_line(rendered: &str) -> String {
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let line = line.trim();
    // "error: line 3 column 5: unknown field ..." → the part after the position; the
    // position the message repeats at its end is said once, by the caller.
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.rfind(" at line ") {
        Some(at) if line[at..].contains(", column ") => &line[..at],
        _ => line,
    };
    line.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_syntax_error_shows_its_line_and_the_one_before() {
        let text =
            "event_type: A\nversions:\n  - version: 1\n    schema: {type: [object\n    x: 1\n";
        let err = super::parse("a.yaml", text.as_bytes())
            .expect_err("an unclosed bracket does not parse")
            .to_string();
        assert!(err.starts_with("a.yaml:"), "{err}");
        assert!(err.contains("    schema: {type: [object"), "{err}");
        assert!(err.contains("the line before"), "{err}");
        assert_eq!(
            err.matches(" at line ").count(),
            0,
            "the position is said once: {err}"
        );
    }
}
