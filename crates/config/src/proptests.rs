//! Property tests of the loader (issue 14, hostile input): whatever the file or the
//! environment holds, loading never panics, and every error names the file, the key or
//! the variable. `PROPTEST_CASES` runs more cases than the bounded default.

use std::path::Path;

use proptest::prelude::*;

use crate::{Config, Error, KeyPattern, SegmentGlob};

/// A file using every section, every value valid.
const FULL: &str = r#"
[run]
name = "balances"
[source]
url = "s3://bucket/archive"
key_pattern = ["{topic}+{partition:int}+{start:int}.parquet", "**/x-{topic}-{partition:int}-{start:int}.parquet"]
segments = "**/*.parquet"
contiguous_seq = true
[source.columns]
partition = { key = "partition" }
seq = { key = "start", plus_row = true }
event_id = { template = "{topic}-{partition}-{seq}" }
payload = { remaining = true, exclude = ["meta"] }
metadata = "meta"
[source.options]
region = "eu-west-1"
[contracts]
dir = "contracts"
[projection]
name = "account_balances"
key = ["account_id"]
sql = "SELECT stream_id AS account_id, count(*) AS n FROM events GROUP BY stream_id"
[target]
url = "s3://bucket/projections"
[shards]
target_events = 1000
[window]
partitions = [0, "2-4"]
until_seq = 100
until_time = 2024-01-01T00:00:00Z
[checks]
invariants = ["SELECT * FROM projection WHERE n < 0"]
[checks.anomalies]
unknown_type = "quarantine"
gap = "allow"
max_quarantined_ratio = 0.5
[checks.baseline]
max_changed_ratio = 0.25
[pacing]
events_per_second = 5000
[fleet]
nats_url = "nats://127.0.0.1:4222"
lease_ttl = "10s"
max_attempts = 4
[lineage]
url = "http://marquez:5000"
namespace = "tests"
[limits]
memory = "512MiB"
"#;

/// Every leaf key of [`FULL`] (and a few it leaves out), as `section.key`.
const KEYS: &[&str] = &[
    "run.name",
    "source.url",
    "source.key_pattern",
    "source.segments",
    "source.contiguous_seq",
    "source.columns.partition",
    "source.columns.seq",
    "source.columns.event_id",
    "source.columns.payload",
    "source.columns.occurred_at",
    "source.options.region",
    "contracts.dir",
    "projection.name",
    "projection.key",
    "projection.sql",
    "target.url",
    "shards.target_events",
    "window.partitions",
    "window.until_seq",
    "window.until_time",
    "checks.invariants",
    "checks.anomalies.unknown_type",
    "checks.anomalies.max_quarantined_ratio",
    "checks.baseline.max_changed_ratio",
    "pacing.events_per_second",
    "fleet.nats_url",
    "fleet.lease_ttl",
    "fleet.max_attempts",
    "lineage.url",
    "lineage.namespace",
    "limits.memory",
];

const FILE: &str = "/etc/rf/backfill.toml";

fn parse(text: &str, env: Vec<(String, String)>) -> crate::Result<Config> {
    Config::parse(text, Path::new(FILE), env)
}

/// The error names where the problem is: the file (and so, for a parse error, its line),
/// a file the config names, or the environment variable.
fn assert_names_its_place(err: &Error) {
    let text = err.to_string();
    match err {
        Error::Parse { .. } => assert!(text.contains(FILE), "{text}"),
        Error::Invalid { key, .. } => {
            assert!(text.contains(FILE), "{text}");
            assert!(!key.is_empty(), "{text}");
        }
        Error::Read { path, .. } => assert!(text.contains(&path.display().to_string()), "{text}"),
        Error::Env { var, .. } => assert!(var.starts_with("REPLAYFLEET_"), "{text}"),
    }
}

/// TOML values of every type, some of them hostile (huge, negative, NaN, odd text).
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}").to_lowercase()),
        Just("nan".to_owned()),
        Just("-inf".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        ".{0,40}".prop_map(|s| toml::Value::String(s).to_string()),
        "[-0-9a-z{}:*/.]{0,20}".prop_map(|s| toml::Value::String(s).to_string()),
        Just("\"0-2147483647\"".to_owned()),
        Just("1979-05-27".to_owned()),
        Just("{ key = \"partition\", column = \"x\" }".to_owned()),
        Just("{}".to_owned()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(", ")))
    })
}

/// `text` with `key` (dotted) set to `value` (a TOML expression), through a table edit.
fn with_value(text: &str, key: &str, value: &str) -> Option<String> {
    let mut table: toml::Table = toml::from_str(text).ok()?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()?
        .remove("v")?;
    let keys: Vec<&str> = key.split('.').collect();
    let (last, parents) = keys.split_last()?;
    let mut current = &mut table;
    for k in parents {
        current = current
            .entry((*k).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()?;
    }
    current.insert((*last).to_owned(), value);
    toml::to_string(&table).ok()
}

/// One edit of the text: delete, insert or replace a few characters.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, usize, String),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let text = prop_oneof![
        "[\\[\\]{}=\"'#.,:\n ]{1,3}",
        ".{1,8}",
        "[a-z_]{1,12}",
        Just("\n[run]\n".to_owned()),
        Just("\"\"\"".to_owned()),
    ];
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), text.clone()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1..10usize, text).prop_map(|(at, n, s)| Edit::Replace(at, n, s)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// The char boundary at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, edit: &Edit) {
    match edit {
        Edit::Delete(at, n) | Edit::Replace(at, n, _) => {
            let from = boundary(text, *at);
            let to = boundary(text, from.saturating_add(*n).min(text.len()));
            let with = match edit {
                Edit::Replace(.., s) => s.as_str(),
                _ => "",
            };
            text.replace_range(from..to.max(from), with);
        }
        Edit::Insert(at, s) => {
            let at = boundary(text, *at);
            text.insert_str(at, s);
        }
        Edit::Truncate(at) => {
            let at = boundary(text, *at);
            text.truncate(at);
        }
    }
}

#[test]
fn the_full_file_loads() {
    let c = parse(FULL, Vec::new()).unwrap();
    assert_eq!(c.window.partitions, Some(vec![0, 2, 3, 4]));
    assert_eq!(c.lineage_url.as_deref(), Some("http://marquez:5000"));
}

#[test]
fn a_window_range_too_wide_to_expand_is_refused() {
    let text = FULL.replace(
        "partitions = [0, \"2-4\"]",
        "partitions = [\"0-2147483647\"]",
    );
    let err = parse(&text, Vec::new()).unwrap_err().to_string();
    assert!(
        err.contains("window.partitions") && err.contains("at most"),
        "{err}"
    );
}

proptest! {
    #[test]
    fn any_text_loads_or_names_its_place(text in ".{0,400}") {
        if let Err(e) = parse(&text, Vec::new()) {
            assert_names_its_place(&e);
        }
    }

    #[test]
    fn edited_files_load_or_name_their_place(edits in prop::collection::vec(edit(), 1..6)) {
        let mut text = FULL.to_owned();
        for e in &edits {
            apply(&mut text, e);
        }
        if let Err(e) = parse(&text, Vec::new()) {
            assert_names_its_place(&e);
        }
    }

    #[test]
    fn any_value_of_any_key_loads_or_names_the_key(
        key in prop::sample::select(KEYS),
        value in toml_value(),
    ) {
        let Some(text) = with_value(FULL, key, &value) else { return Ok(()) };
        if let Err(e) = parse(&text, Vec::new()) {
            assert_names_its_place(&e);
            let message = e.to_string();
            let leaf = key.rsplit('.').next().unwrap();
            // The value's own key, or (a mapping entry whose capture went away, a
            // window the partitions no longer fit) the key that depends on it.
            prop_assert!(
                message.contains(leaf) || matches!(e, Error::Invalid { .. }),
                "{key} = {value}: {message}"
            );
        }
    }

    #[test]
    fn any_environment_override_loads_or_names_the_variable(
        key in prop::sample::select(KEYS),
        extra in "(__[A-Z_]{1,8})?",
        value in prop_oneof![toml_value(), ".{0,30}"],
    ) {
        let var = format!("REPLAYFLEET_{}{extra}", key.replace('.', "__").to_ascii_uppercase());
        if let Err(e) = parse(FULL, vec![(var.clone(), value.clone())]) {
            assert_names_its_place(&e);
            let message = e.to_string();
            let leaf = key.rsplit('.').next().unwrap();
            prop_assert!(
                message.contains(&var) || message.contains(leaf) || matches!(e, Error::Invalid { .. }),
                "{var}={value}: {message}"
            );
        }
    }

    #[test]
    fn key_patterns_compile_or_say_why_and_never_panic_matching(
        pattern in prop_oneof![
            ".{0,40}",
            "[a-z{}:*/+=._-]{0,30}",
            "(\\{[a-z_]{0,4}(:int|:[a-z]{0,3})?\\}|\\*\\*?/?|[a-z.=+-]{1,4}|\\{\\{|\\}\\}){0,8}",
        ],
        paths in prop::collection::vec(prop_oneof![".{0,40}", "[a-z0-9/=+._-]{0,40}"], 0..8),
    ) {
        match KeyPattern::parse(&pattern) {
            Ok(p) => {
                prop_assert_eq!(p.as_str(), pattern.as_str());
                for path in &paths {
                    let matched = p.is_match(path);
                    let captures = p.captures(path);
                    prop_assert_eq!(matched, captures.is_some(), "{} on {}", pattern, path);
                    if let Some(c) = captures {
                        prop_assert_eq!(c.len(), p.capture_names().len());
                        for (name, value) in c {
                            prop_assert!(!value.contains('/'), "{}: {} = {}", pattern, name, value);
                        }
                    }
                }
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
        if let Ok(glob) = SegmentGlob::parse(&pattern) {
            for path in &paths {
                let _ = glob.is_match(path);
            }
        }
    }
}
