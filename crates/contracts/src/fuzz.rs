//! Property tests of the catalog loader and the upcast (issue 14, hostile input).
//!
//! Whatever a contract file holds, loading it never panics, and an error names the file;
//! whatever a payload holds, upcasting it never panics, and each event gets either a
//! payload valid against its target schema, whose typed columns all hold their values,
//! or a named anomaly, the same whichever events share its batch. The default case
//! counts keep `cargo nextest` short; `PROPTEST_CASES=20000` runs a longer search.

use std::sync::OnceLock;

use arrow::datatypes::DataType;
use proptest::prelude::*;
use replayfleet_config::AnomalyKind;
use serde_json::{Map, Number, Value};

use crate::catalog::tests::example_dir;
use crate::lite::Lite;
use crate::{Catalog, CatalogFile, Outcome};

/// The path every fuzzed file is loaded under; every error must name it.
const PATH: &str = "fuzz/contract.yaml";

/// A contract with every step kind, typed columns of every kind, and jq that loops.
const EVERYTHING: &str = r#"event_type: Fuzzed
versions:
  - version: 1
    schema:
      type: object
      properties:
        amt: {type: string}
        n: {type: integer}
        when: {type: string}
  - version: 2
    schema:
      type: object
      properties:
        amount: {type: number}
        n: {type: integer}
        flag: {type: boolean}
        when: {type: string, format: date-time}
        tags: {type: array}
    upcast:
      - rename: {amt: amount}
      - cast: {amount: number}
      - default: {flag: false, tags: []}
      - sql: {n: "CAST(n AS BIGINT) + 1"}
      - jq: '. + {tags: [.tags[]?, (limit(3; repeat(1)) | tostring)]} | .n |= (if . == null then 0 end)'
    examples:
      - from_version: 1
        input: {amt: "1.5", n: 1}
        expect: {amount: 1.5, n: 2, flag: false, tags: ["1", "1", "1"]}
  - version: 3
    schema:
      type: object
      required: [amount]
      properties:
        amount: {type: number}
        n: {type: [integer, "null"]}
        big: {type: integer}
        flag: {type: boolean}
        when: {type: string, format: date-time}
        tags: {type: array}
        extra: {type: object}
    upcast:
      - jq: 'reduce range(.n // 0 | if . > 50 then 50 elif . < 0 then 0 else . end) as $i (.; .big = $i * 1e17) | .extra = {deep: [[.tags]]}'
      - drop: [nothing]
"#;

fn example_files() -> &'static [String] {
    static FILES: OnceLock<Vec<String>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut texts: Vec<String> = std::fs::read_dir(example_dir())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        texts.sort();
        texts.push(EVERYTHING.to_owned());
        texts
    })
}

fn load(bytes: &[u8]) -> Result<Catalog, crate::Error> {
    Catalog::from_files(vec![CatalogFile {
        path: PATH.to_owned(),
        bytes: bytes.to_vec(),
    }])
}

/// Loads a file: a catalog, or a user error naming the file. A loaded catalog runs its
/// examples (the matrix of `contracts test`).
fn load_or_name_the_file(bytes: &[u8]) -> Result<(), TestCaseError> {
    match load(bytes) {
        Ok(catalog) => {
            let _ = crate::check(&catalog);
            Ok(())
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(e.is_input(), "not a user error: {message}");
            prop_assert!(message.contains(PATH), "does not name the file: {message}");
            Ok(())
        }
    }
}

/// Pieces of YAML, jq and SQL that change a contract's meaning, shape or syntax.
const SNIPPETS: &[&str] = &[
    "\n",
    "  ",
    "    ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "\\",
    "#",
    "\t",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!str ",
    "? ",
    "|\n",
    ">\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "~",
    "null",
    "true",
    "0",
    "-1",
    "2147483648",
    "9223372036854775808",
    "1e400",
    ".nan",
    "version: 3",
    "version: 1",
    "from_version: 2",
    "upcast: []",
    "upcast:\n      - ",
    "schema: {}",
    "schema: {type: 12}",
    "examples: []",
    "event_type: Deposited",
    "jq: '.'",
    "jq: 'env'",
    "jq: '$ENV'",
    "jq: 'now'",
    "jq: 'def f: f; f'",
    "jq: 'until(false; .)'",
    "jq: '[range(1e9)]'",
    "jq: '{a: .b'",
    "jq: 12",
    "sql: {x: \"1/0\"}",
    "sql: {x: \"random()\"}",
    "sql: {x: \"sum(a)\"}",
    "sql: {x: \"a +\"}",
    "cast: {a: integer}",
    "cast: {a: money}",
    "rename: {a: b}",
    "drop: [a]",
    "default: {a: 1}",
    "frobnicate: {}",
    "type: integer",
    "format: date-time",
    "properties: {seq: {type: integer}}",
    "required: [zz]",
    "$schema: 'http://json-schema.org/draft-07/schema#'",
    "$ref: '#/nope'",
    "pattern: '('",
    "env",
    "now",
    "recurse",
    "é",
    "\u{0}",
    "\u{feff}",
    "😀",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(prop::sample::Index, &'static str),
    Delete(prop::sample::Index, usize),
    Replace(prop::sample::Index, usize, &'static str),
    Truncate(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippet = || prop::sample::select(SNIPPETS);
    prop_oneof![
        4 => (any::<prop::sample::Index>(), snippet()).prop_map(|(at, s)| Edit::Insert(at, s)),
        2 => (any::<prop::sample::Index>(), 1..20usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        3 => (any::<prop::sample::Index>(), 1..12usize, snippet())
            .prop_map(|(at, n, s)| Edit::Replace(at, n, s)),
        1 => any::<prop::sample::Index>().prop_map(Edit::Truncate),
        1 => any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
    ]
}

/// The char boundary nearest below the index's place in `text`.
fn boundary(text: &str, at: &prop::sample::Index) -> usize {
    let mut i = at.index(text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, edit: &Edit) {
    let end = |text: &str, from: usize, n: usize| {
        let mut to = (from + n).min(text.len());
        while !text.is_char_boundary(to) {
            to += 1;
        }
        to
    };
    match edit {
        Edit::Insert(at, s) => {
            let i = boundary(text, at);
            text.insert_str(i, s);
        }
        Edit::Delete(at, n) => {
            let i = boundary(text, at);
            let to = end(text, i, *n);
            text.replace_range(i..to, "");
        }
        Edit::Replace(at, n, s) => {
            let i = boundary(text, at);
            let to = end(text, i, *n);
            text.replace_range(i..to, s);
        }
        Edit::Truncate(at) => {
            let i = boundary(text, at);
            text.truncate(i);
        }
        Edit::DuplicateLine(at) => {
            let i = boundary(text, at);
            let start = text[..i].rfind('\n').map_or(0, |p| p + 1);
            let stop = text[i..].find('\n').map_or(text.len(), |p| i + p + 1);
            let line = text[start..stop].to_owned();
            text.insert_str(stop, &line);
        }
    }
}

/// The catalog the payloads run through: the example catalog and [`EVERYTHING`].
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut files: Vec<CatalogFile> = std::fs::read_dir(example_dir())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                CatalogFile {
                    path: path.file_name().unwrap().to_string_lossy().into_owned(),
                    bytes: std::fs::read(&path).unwrap(),
                }
            })
            .collect();
        files.push(CatalogFile {
            path: "fuzzed.yaml".to_owned(),
            bytes: EVERYTHING.as_bytes().to_vec(),
        });
        Catalog::from_files(files).expect("the fuzzing catalog loads")
    })
}

/// Field names the contracts use, so that generated payloads reach their steps.
const FIELDS: &[&str] = &[
    "amount",
    "amt",
    "amount_cents",
    "currency",
    "memo",
    "owner",
    "owner_name",
    "opened_at",
    "holder",
    "name",
    "kind",
    "reason",
    "n",
    "big",
    "flag",
    "when",
    "tags",
    "extra",
    "",
];

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(
            &[
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551616",
                "1e300",
                "-1e19",
                "9.2e18",
                "12.0",
                "0.1",
                "1.5",
                "-0",
                "5e-324",
            ][..]
        )
        .prop_map(|t| serde_json::from_str(t).unwrap()),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[0-9]{1,20}(\\.[0-9]{1,4})?",
        // Timestamps, well and badly formed.
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
        prop::sample::select(&["EUR", "USD", "person", "company", "fraud", "Acme Ltd"][..])
            .prop_map(str::to_owned),
    ]
}

fn json() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            object(inner),
        ]
    })
}

fn object(value: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => ".{0,6}",
    ];
    prop::collection::vec((key, value), 0..8)
        .prop_map(|members| Value::Object(members.into_iter().collect::<Map<String, Value>>()))
}

/// A valid payload of each (type, version) of [`FROM`], for edits to start from.
fn seed(event_type: &str, version: i32) -> Value {
    let text = match (event_type, version) {
        ("AccountOpened", 1) => r#"{"owner": "Ada", "currency": "USD"}"#,
        ("AccountOpened", 2) => {
            r#"{"owner_name": "Acme Ltd", "currency": "GBP", "opened_at": "2021-03-04T05:06:07Z"}"#
        }
        ("AccountOpened", 3) => r#"{"holder": {"name": "x", "kind": "person"}, "currency": "EUR"}"#,
        ("Deposited", 1) => r#"{"amount": 12.5, "memo": "m"}"#,
        ("Deposited", 2) | ("Withdrawn", 2) => r#"{"amount_cents": 5, "currency": "USD"}"#,
        ("Withdrawn", 1) => r#"{"amt": "7.25"}"#,
        ("AccountClosed", 1) => r#"{"reason": "fraud"}"#,
        ("Fuzzed", 1) => r#"{"amt": "1.5", "n": 1, "when": "2021-03-04T05:06:07Z"}"#,
        ("Fuzzed", 2) => {
            r#"{"amount": 1.5, "n": 3, "flag": true, "when": "2021-03-04T05:06:07Z", "tags": []}"#
        }
        ("Fuzzed", 3) => r#"{"amount": 1, "big": 5}"#,
        _ => "{}",
    };
    serde_json::from_str(text).unwrap()
}

/// A change to one field of a payload.
#[derive(Debug, Clone)]
enum FieldEdit {
    Set(&'static str, Value),
    Remove(&'static str),
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    let field = || prop::sample::select(FIELDS);
    let value = prop_oneof![
        3 => number(),
        3 => string().prop_map(Value::String),
        2 => json(),
    ];
    prop_oneof![
        4 => (field(), value).prop_map(|(f, v)| FieldEdit::Set(f, v)),
        1 => field().prop_map(FieldEdit::Remove),
    ]
}

/// Payload text for a (type, version): its seed with a few fields changed, mostly;
/// sometimes any object or value, sometimes broken JSON.
fn payload(event_type: &'static str, version: i32) -> impl Strategy<Value = String> {
    let seeded = prop::collection::vec(field_edit(), 0..4).prop_map(move |edits| {
        let mut v = seed(event_type, version);
        let map = v.as_object_mut().unwrap();
        for e in edits {
            match e {
                FieldEdit::Set(f, value) => {
                    map.insert(f.to_owned(), value);
                }
                FieldEdit::Remove(f) => {
                    map.remove(f);
                }
            }
        }
        v.to_string()
    });
    prop_oneof![
        8 => seeded,
        2 => object(json()).prop_map(|v| v.to_string()),
        1 => json().prop_map(|v| v.to_string()),
        1 => (object(json()), any::<prop::sample::Index>(), ".{0,3}").prop_map(|(v, at, junk)| {
            let mut text = v.to_string();
            let i = boundary(&text, &at);
            text.insert_str(i, &junk);
            text
        }),
        1 => ".{0,40}",
    ]
}

/// A (type, version) of [`FROM`] and a batch of its payloads.
fn batch() -> impl Strategy<Value = ((&'static str, i32), Vec<String>)> {
    prop::sample::select(FROM)
        .prop_flat_map(|(t, v)| (Just((t, v)), prop::collection::vec(payload(t, v), 1..6)))
}

/// The (type, version) pairs payloads are upcast from: every declared one, and some
/// that are not.
const FROM: &[(&str, i32)] = &[
    ("AccountOpened", 1),
    ("AccountOpened", 2),
    ("AccountOpened", 3),
    ("Deposited", 1),
    ("Deposited", 2),
    ("Withdrawn", 1),
    ("Withdrawn", 2),
    ("AccountClosed", 1),
    ("Fuzzed", 1),
    ("Fuzzed", 2),
    ("Fuzzed", 3),
    ("Fuzzed", 0),
    ("Fuzzed", 4),
    ("Nope", 1),
];

/// Whether a typed column holds a value (as the replay builds the `events` columns).
fn column_holds(data_type: &DataType, v: &Lite<'_>) -> bool {
    match data_type {
        DataType::Int64 => v.as_int64().is_some(),
        DataType::Float64 => v.as_f64().is_some(),
        DataType::Boolean => v.as_bool().is_some(),
        DataType::Timestamp(..) => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        _ => true,
    }
}

fn check_outcome(
    catalog: &Catalog,
    event_type: &str,
    outcome: &Outcome,
) -> Result<(), TestCaseError> {
    match outcome {
        Outcome::Ok(map) => {
            let contract = catalog.get(event_type).expect("only known types upcast");
            let value = Lite::from_value(Value::Object(map.clone()));
            let error = crate::schema::first_error(&contract.target().validator, &value);
            prop_assert!(error.is_none(), "upcast payload is invalid: {error:?}");
            for column in catalog.typed_columns() {
                if !column.event_types.iter().any(|t| t == event_type) {
                    continue;
                }
                if let Some(v) = map.get(&column.name).filter(|v| !v.is_null()) {
                    let v = Lite::from_value(v.clone());
                    prop_assert!(
                        column_holds(&column.data_type, &v),
                        "column {} ({}) would be null for {v}",
                        column.name,
                        column.data_type
                    );
                }
            }
        }
        Outcome::Anomaly {
            kind,
            step,
            message,
        } => {
            prop_assert!(!message.is_empty());
            match kind {
                AnomalyKind::UpcastFailed => {
                    let step = step.as_deref().unwrap_or_default();
                    prop_assert!(
                        step.starts_with("version ") && step.contains(", step "),
                        "upcast_failed without its step: {step:?} {message}"
                    );
                }
                AnomalyKind::InvalidPayload
                | AnomalyKind::UnknownType
                | AnomalyKind::UnknownVersion
                | AnomalyKind::NoUpcastPath => prop_assert!(step.is_none()),
                other => prop_assert!(false, "unexpected anomaly {other:?}: {message}"),
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_text_loads_or_names_its_file(text in ".{0,300}") {
        load_or_name_the_file(text.as_bytes())?;
    }

    #[test]
    fn any_bytes_load_or_name_their_file(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        load_or_name_the_file(&bytes)?;
    }

    #[test]
    fn yaml_like_text_loads_or_names_its_file(
        text in "(event_type: [A-Za-z]{0,4}\n)?(versions:\n)?([ \\-a-z_:{}\\[\\],'\"0-9\n#&*!|>$.]{0,200})",
    ) {
        load_or_name_the_file(text.as_bytes())?;
    }

    #[test]
    fn edited_contracts_load_or_name_their_file(
        base in 0..5usize,
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut text = example_files()[base].clone();
        for e in &edits {
            apply(&mut text, e);
        }
        load_or_name_the_file(text.as_bytes())?;
    }

    #[test]
    fn any_payload_upcasts_or_is_a_named_anomaly((from, payloads) in batch()) {
        let catalog = catalog();
        let (event_type, version) = from;
        let texts: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let outcomes = catalog.upcaster().upcast_batch(event_type, version, &texts);
        prop_assert_eq!(outcomes.len(), texts.len());
        for (text, outcome) in texts.iter().zip(&outcomes) {
            check_outcome(catalog, event_type, outcome)?;
            // The same alone as in its batch.
            let alone = catalog.upcaster().upcast_batch(event_type, version, &[text]);
            prop_assert_eq!(alone.first(), Some(outcome));
        }
    }
}

#[test]
fn the_unedited_files_load() {
    for text in example_files() {
        assert!(load(text.as_bytes()).is_ok());
    }
    assert!(
        crate::check(catalog()).is_empty(),
        "{:?}",
        crate::check(catalog())
    );
}
