//! The schema-upgrade test matrix (`contracts test`) and the example check
//! (`contracts check`).
//!
//! One row per (event type, from-version), every declared version including the target.
//! A row's cases:
//!
//! 1. **Examples.** Every example whose `from_version` is the row's version, wherever it is
//!    declared: `input` upcast to the example's own version must equal `expect` exactly
//!    (as `serde_json::Value`, key order ignored), and `input` upcast all the way to the
//!    target must be valid.
//! 2. **Minimal payload** (also "every optional property missing"): the required
//!    properties of the version's schema with generated valid values (respecting `enum`,
//!    `const`, `minLength`/`maxLength`, `minimum`/`maximum`, `format: date-time`, and
//!    `pattern` when one of a few candidates fits). It must upcast to a valid target
//!    payload. When no valid value can be generated, the examples' inputs of that version
//!    stand in for it (and the case is skipped when there are none).
//! 3. **Nulls.** For each optional property, the minimal payload with that property set to
//!    `null`: it must not crash. `Ok` passes, and so does an anomaly (`invalid_payload`,
//!    `upcast_failed`) that carries a message.
//! 4. **Unknown field.** The minimal payload plus a field nobody declared: it must not
//!    crash, and must upcast to `Ok` unless the target schema closes its properties
//!    (`additionalProperties: false` or `unevaluatedProperties: false`).
//!
//! A panic anywhere counts as a failure of its case; it never aborts the matrix.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Map, Value};

use crate::catalog::{Catalog, EventContract};
use crate::upcast::Outcome;

/// The field added by case 4.
const EXTRA_FIELD: &str = "__replayfleet_unknown_field";

/// One row of the matrix: a (type, from-version) and how its cases fared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MatrixRow {
    /// The event type.
    pub event_type: String,
    /// The version the cases start from.
    pub from_version: i32,
    /// Cases run.
    pub cases: usize,
    /// Cases passed.
    pub passed: usize,
    /// One line per failed case.
    pub failures: Vec<String>,
}

impl MatrixRow {
    /// Whether every case passed.
    pub fn is_pass(&self) -> bool {
        self.failures.is_empty() && self.cases == self.passed
    }
}

/// A problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file, relative to the catalog folder.
    pub file: String,
    /// The event type.
    pub event_type: String,
    /// The version that holds the example.
    pub version: i32,
    /// 1-based index of the example in its version.
    pub example: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}, version {}, example {}: {}",
            self.file, self.event_type, self.version, self.example, self.message
        )
    }
}

/// `contracts check` beyond loading: every example's `input` upcasts exactly to `expect`
/// and on to a valid target payload. Empty when all is well.
pub fn check(catalog: &Catalog) -> Vec<Finding> {
    let mut findings = Vec::new();
    for contract in catalog.event_types() {
        for version in contract.versions() {
            for (i, example) in version.examples().iter().enumerate() {
                if let Err(message) = run_example(
                    catalog,
                    contract,
                    version.version(),
                    &example.input,
                    example.from_version,
                    &example.expect,
                ) {
                    findings.push(Finding {
                        file: contract.file().to_owned(),
                        event_type: contract.event_type().to_owned(),
                        version: version.version(),
                        example: i + 1,
                        message,
                    });
                }
            }
        }
    }
    findings
}

/// Runs the schema-upgrade matrix (see the module documentation for its cases).
pub fn test_matrix(catalog: &Catalog) -> Vec<MatrixRow> {
    let mut rows = Vec::new();
    for contract in catalog.event_types() {
        let target = contract.target();
        let closed = ["additionalProperties", "unevaluatedProperties"]
            .iter()
            .any(|k| target.schema().get(*k) == Some(&Value::Bool(false)));
        for version in contract.versions() {
            let from = version.version();
            let mut row = MatrixRow {
                event_type: contract.event_type().to_owned(),
                from_version: from,
                cases: 0,
                passed: 0,
                failures: Vec::new(),
            };
            let record = |row: &mut MatrixRow, name: &str, result: Result<(), String>| {
                row.cases += 1;
                match result {
                    Ok(()) => row.passed += 1,
                    Err(e) => row.failures.push(format!("{name}: {e}")),
                }
            };
            // 1. examples starting at this version
            let mut example_inputs = Vec::new();
            for holder in contract.versions() {
                for (i, ex) in holder.examples().iter().enumerate() {
                    if ex.from_version != from {
                        continue;
                    }
                    example_inputs.push(ex.input.clone());
                    let result = run_example(
                        catalog,
                        contract,
                        holder.version(),
                        &ex.input,
                        from,
                        &ex.expect,
                    );
                    let name = format!("example {} of version {}", i + 1, holder.version());
                    record(&mut row, &name, result);
                }
            }
            // 2. minimal payload (every optional property missing)
            let minimal: Vec<Value> = match generate(version.schema(), version.schema(), 0) {
                Some(v) => vec![v],
                None => example_inputs.clone(),
            };
            for payload in &minimal {
                let result = upcast_one(catalog, contract, from, payload).and_then(|o| match o {
                    Outcome::Ok(_) => Ok(()),
                    other => Err(format!("{payload} → {}", describe(&other))),
                });
                record(&mut row, "minimal payload", result);
            }
            let Some(base) = minimal.first().and_then(Value::as_object) else {
                rows.push(row);
                continue;
            };
            // 3. each optional property set to null
            let required = required_of(version.schema());
            for (name, _) in crate::schema::properties(version.schema()) {
                if required.contains(&name.as_str()) {
                    continue;
                }
                let mut payload = base.clone();
                payload.insert(name.clone(), Value::Null);
                let payload = Value::Object(payload);
                let result = upcast_one(catalog, contract, from, &payload).and_then(|o| match o {
                    Outcome::Ok(_) => Ok(()),
                    Outcome::Anomaly { ref message, .. } if !message.is_empty() => Ok(()),
                    other => Err(format!("{payload} → {}", describe(&other))),
                });
                record(&mut row, &format!("{name}: null"), result);
            }
            // 4. an unknown extra field
            let mut payload = base.clone();
            payload.insert(EXTRA_FIELD.to_owned(), Value::String("x".to_owned()));
            let payload = Value::Object(payload);
            let result = upcast_one(catalog, contract, from, &payload).and_then(|o| match o {
                Outcome::Ok(_) => Ok(()),
                Outcome::Anomaly { ref message, .. } if closed && !message.is_empty() => Ok(()),
                other => Err(format!("{payload} → {}", describe(&other))),
            });
            record(&mut row, "unknown extra field", result);
            rows.push(row);
        }
    }
    rows
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(m) => Value::Object(m.clone()).to_string(),
        Outcome::Anomaly {
            kind,
            step,
            message,
        } => match step {
            Some(s) => format!("{kind} at {s}: {message}"),
            None => format!("{kind}: {message}"),
        },
    }
}

/// An example: `input` from `from` to `at` equals `expect`; `input` to the target is valid.
fn run_example(
    catalog: &Catalog,
    contract: &EventContract,
    at: i32,
    input: &Value,
    from: i32,
    expect: &Value,
) -> Result<(), String> {
    let upcaster = catalog.upcaster();
    let event_type = contract.event_type();
    let outcome =
        guarded(|| upcaster.upcast_values(event_type, from, at, std::slice::from_ref(input)))?
            .and_then(|mut o| o.pop())
            .ok_or_else(|| format!("no upcast path from version {from} to version {at}"))?;
    match outcome {
        Outcome::Ok(m) => {
            let got = Value::Object(m);
            if &got != expect {
                return Err(format!("expected {expect}, got {got}"));
            }
        }
        other => return Err(format!("{input} → {}", describe(&other))),
    }
    if at != contract.target().version() {
        match upcast_one(catalog, contract, from, input)? {
            Outcome::Ok(_) => {}
            other => {
                return Err(format!(
                    "{input} upcasts to version {at} but not to the target: {}",
                    describe(&other)
                ));
            }
        }
    }
    Ok(())
}

fn upcast_one(
    catalog: &Catalog,
    contract: &EventContract,
    from: i32,
    payload: &Value,
) -> Result<Outcome, String> {
    let text = payload.to_string();
    guarded(|| {
        catalog
            .upcaster()
            .upcast_batch(contract.event_type(), from, &[text.as_str()])
    })?
    .pop()
    .ok_or_else(|| "no outcome".to_owned())
}

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        format!("panicked: {message}")
    })
}

fn required_of(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A minimal valid value of `schema` (validated against it), or `None`. `root` resolves
/// nothing yet; it is kept for `$ref` support.
fn generate(schema: &Value, root: &Value, depth: usize) -> Option<Value> {
    if depth > 8 {
        return None;
    }
    let candidates = candidates(schema, root, depth);
    let validator = crate::schema::compile(schema).ok()?;
    candidates
        .into_iter()
        .find(|c| validator.is_valid(&crate::lite::Lite::from_value(c.clone())))
}

fn candidates(schema: &Value, root: &Value, depth: usize) -> Vec<Value> {
    if let Some(c) = schema.get("const") {
        return vec![c.clone()];
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => {
            if schema.get("properties").is_some() {
                "object"
            } else {
                "string"
            }
        }
    };
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    match ty {
        "object" => {
            let mut map = Map::new();
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in required_of(schema) {
                let sub = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                let sub = if sub.is_object() {
                    sub
                } else {
                    &Value::Bool(true)
                };
                let value = if sub == &Value::Bool(true) {
                    Some(Value::String("x".to_owned()))
                } else {
                    generate(sub, root, depth + 1)
                };
                match value {
                    Some(v) => {
                        map.insert(name.to_owned(), v);
                    }
                    None => return Vec::new(),
                }
            }
            vec![Value::Object(map)]
        }
        "array" => vec![Value::Array(Vec::new())],
        "boolean" => vec![Value::Bool(false), Value::Bool(true)],
        "null" => vec![Value::Null],
        "integer" | "number" => {
            let mut out = Vec::new();
            if let Some(min) = num("minimum") {
                out.push(min.ceil());
            }
            if let Some(min) = num("exclusiveMinimum") {
                out.push(min.floor() + 1.0);
            }
            if let Some(max) = num("maximum") {
                out.push(max.floor());
            }
            if let Some(max) = num("exclusiveMaximum") {
                out.push(max.ceil() - 1.0);
            }
            out.extend([0.0, 1.0, 10.0, 100.0, -1.0]);
            out.into_iter()
                .filter(|f| f.is_finite() && f.abs() < 9.0e15)
                .map(|f| Value::from(f as i64))
                .collect()
        }
        _ => {
            if schema.get("format").and_then(Value::as_str) == Some("date-time") {
                return vec![Value::String("2020-01-01T00:00:00Z".to_owned())];
            }
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut out: Vec<String> = vec![
                "EUR".to_owned(),
                "x".repeat(min.max(1)),
                "0".repeat(min.max(1)),
                "A".repeat(min.max(1)),
            ];
            out.extend(
                [
                    "1",
                    "1.00",
                    "a1",
                    "abc",
                    "2020-01-01",
                    "2020-01-01T00:00:00Z",
                    "00:00:00Z",
                    "user@example.com",
                    "https://example.com",
                    "00000000-0000-0000-0000-000000000000",
                    "",
                ]
                .map(str::to_owned),
            );
            out.into_iter().map(Value::String).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generates_valid_minimal_values() {
        let schema = json!({"type": "object", "required": ["a", "b", "c", "d", "e"], "properties": {
            "a": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,2})?$"},
            "b": {"type": "integer", "minimum": 5},
            "c": {"type": "string", "enum": ["p", "q"]},
            "d": {"type": "string", "format": "date-time"},
            "e": {"type": "object", "required": ["f"], "properties": {"f": {"type": "string", "minLength": 3, "maxLength": 3}}},
            "g": {"type": "string"}
        }});
        let v = generate(&schema, &schema, 0).unwrap();
        assert_eq!(
            v,
            json!({"a": "0", "b": 5, "c": "p", "d": "2020-01-01T00:00:00Z", "e": {"f": "EUR"}})
        );
        assert_eq!(
            generate(
                &json!({"type": "string", "pattern": "^Z{9}$"}),
                &json!({}),
                0
            ),
            None
        );
    }

    #[test]
    fn the_example_catalog_passes_its_matrix() {
        let catalog = crate::catalog::tests::example_catalog();
        assert_eq!(check(&catalog), Vec::<Finding>::new());
        let rows = test_matrix(&catalog);
        let keys: Vec<(&str, i32)> = rows
            .iter()
            .map(|r| (r.event_type.as_str(), r.from_version))
            .collect();
        assert_eq!(
            keys,
            [
                ("AccountClosed", 1),
                ("AccountOpened", 1),
                ("AccountOpened", 2),
                ("AccountOpened", 3),
                ("Deposited", 1),
                ("Deposited", 2),
                ("Withdrawn", 1),
                ("Withdrawn", 2),
            ]
        );
        for row in &rows {
            assert!(row.is_pass(), "{row:?}");
            assert!(row.cases >= 2, "{row:?}");
        }
    }

    #[test]
    fn a_wrong_example_is_a_finding_and_a_failure() {
        let text = "event_type: T\nversions:\n  - version: 1\n    schema: {type: object}\n  - version: 2\n    schema: {type: object}\n    upcast:\n      - rename: {a: b}\n    examples:\n      - from_version: 1\n        input: {a: 1}\n        expect: {a: 1}\n";
        let catalog = Catalog::from_files(vec![crate::CatalogFile {
            path: "t.yaml".into(),
            bytes: text.into(),
        }])
        .unwrap();
        let findings = check(&catalog);
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0]
                .to_string()
                .starts_with("t.yaml: T, version 2, example 1: expected"),
            "{}",
            findings[0]
        );
        let rows = test_matrix(&catalog);
        assert!(!rows[0].is_pass());
        assert!(rows[1].is_pass());
    }
}
