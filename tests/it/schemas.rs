//! Every JSON file replayfleet writes validates against its published schema in
//! docs/schemas (issue: the audit trail). Embedded runs — committed, refused, accepted,
//! rolled back and a window run — write into one target; then every file under it is
//! mapped to its schema by path, and a JSON file without a mapping fails the test.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{
    replay::{Fixture, Settings},
    support::{replayfleet, repo},
};

/// The schema of each kind of JSON file under a target, by path. `None`: not JSON.
pub(crate) fn schema_of(relative: &str) -> Option<&'static str> {
    let parts: Vec<&str> = relative.split('/').collect();
    let commit = |name: &str| {
        name.strip_suffix(".json")
            .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    match parts.as_slice() {
        ["_delta_log", name] if commit(name) => Some("delta-action.schema.json"),
        ["runs", _, "plan.json"] => Some("plan.schema.json"),
        ["runs", _, "report.json"] => Some("report.schema.json"),
        ["runs", _, "shards", _, "lineage.json"] => Some("lineage.schema.json"),
        ["runs", _, "openlineage", name] if name.ends_with(".json") => {
            Some("openlineage-2-0-2.schema.json")
        }
        _ => None,
    }
}

/// A compiled validator of `docs/schemas/<name>`, with `format` asserted.
pub(crate) fn validator(name: &str) -> jsonschema::Validator {
    let path = repo().join("docs/schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert!(
        jsonschema::meta::is_valid(&schema),
        "{} is not a valid JSON Schema",
        path.display()
    );
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every error of `instance` against `validator`, one line each.
pub(crate) fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every `replayfleet_*` facet of an OpenLineage event checked against its definition in
/// docs/schemas/openlineage-facets.schema.json (named by the facet's `_schemaURL`).
pub(crate) fn custom_facet_errors(event: &Value) -> Vec<String> {
    const FACETS: &str =
        "https://example.invalid/replayfleet/schemas/openlineage-facets.schema.json#/$defs/";
    let path = repo().join("docs/schemas/openlineage-facets.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut facets = Vec::new();
    collect_facets(event, &mut facets);
    let mut out = Vec::new();
    for (key, facet) in facets {
        let Some(def) = facet["_schemaURL"]
            .as_str()
            .and_then(|u| u.strip_prefix(FACETS))
        else {
            if key.starts_with("replayfleet_") {
                out.push(format!(
                    "facet {key} does not point to openlineage-facets.schema.json"
                ));
            }
            continue;
        };
        let mut one = schema.clone();
        one["$ref"] = Value::from(format!("#/$defs/{def}"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&one)
            .unwrap_or_else(|e| panic!("{def}: {e}"));
        out.extend(
            errors(&validator, facet)
                .into_iter()
                .map(|e| format!("facet {key} ({def}): {e}")),
        );
    }
    out
}

/// Every (key, facet) under a `facets`, `inputFacets` or `outputFacets` object.
fn collect_facets<'a>(value: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if matches!(k.as_str(), "facets" | "inputFacets" | "outputFacets")
                    && let Value::Object(facets) = v
                {
                    out.extend(facets.iter().map(|(k, f)| (k.as_str(), f)));
                }
                collect_facets(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_facets(v, out)),
        _ => {}
    }
}

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Validates every file under `target`; returns how many files each schema validated.
pub(crate) fn validate_target(target: &Path) -> std::collections::BTreeMap<&'static str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    let mut validators = std::collections::HashMap::new();
    for file in files_under(target) {
        let relative = file
            .strip_prefix(target)
            .unwrap()
            .to_str()
            .unwrap()
            .replace('\\', "/");
        let is_json = relative.ends_with(".json");
        let Some(name) = schema_of(&relative) else {
            if is_json {
                problems.push(format!("{relative}: a JSON file with no schema mapping"));
            } else if !relative.ends_with(".parquet") {
                problems.push(format!("{relative}: neither JSON nor Parquet"));
            }
            continue;
        };
        let bytes = std::fs::read(&file).unwrap();
        if name == "delta-action.schema.json" {
            // a Delta commit: one action per line, and replayfleet's commit record in
            // its commitInfo
            for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                let action: Value = match serde_json::from_str(line) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(format!("{relative}:{}: not JSON: {e}", n + 1));
                        continue;
                    }
                };
                let actions = validators.entry(name).or_insert_with(|| validator(name));
                for e in errors(actions, &action) {
                    problems.push(format!("{relative}:{} ({name}): {e}", n + 1));
                }
                if let Some(record) = action["commitInfo"].get("replayfleet") {
                    let commit = "commit.schema.json";
                    let records = validators
                        .entry(commit)
                        .or_insert_with(|| validator(commit));
                    for e in errors(records, record) {
                        problems.push(format!("{relative}:{} ({commit}): {e}", n + 1));
                    }
                    *counts.entry(commit).or_default() += 1;
                }
            }
            *counts.entry(name).or_default() += 1;
            continue;
        }
        let validator = validators.entry(name).or_insert_with(|| validator(name));
        let instance: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{relative}: not JSON: {e}"));
                continue;
            }
        };
        for e in errors(validator, &instance) {
            problems.push(format!("{relative} ({name}): {e}"));
        }
        if name == "openlineage-2-0-2.schema.json" {
            for e in custom_facet_errors(&instance) {
                problems.push(format!("{relative}: {e}"));
            }
        }
        *counts.entry(name).or_default() += 1;
    }
    assert!(problems.is_empty(), "{problems:#?}");
    counts
}

/// Runs `name` with an invariant every row violates (refused, exit 3); returns its run id.
pub(crate) fn refused_run(f: &Fixture, name: &str) -> String {
    refused_run_with(f, name, Settings::default())
}

/// [`refused_run`] with other settings besides.
pub(crate) fn refused_run_with(f: &Fixture, name: &str, base: Settings) -> String {
    let settings = Settings {
        invariants: r#"["SELECT * FROM projection WHERE events > 0"]"#,
        ..base
    };
    let run = f.run(&f.config(name, &settings), "2");
    run.expect_code(3);
    run.json()["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn every_json_file_a_run_writes_validates_against_its_schema() {
    let f = Fixture::new(2_500, 3, 47, &["--all-edge-cases"]);
    let target = f.path("target");
    // a committed first version, with quarantined events (an anomalies file)
    f.run(&f.config("v1", &Settings::default()), "2")
        .expect_code(0);
    // refused by an invariant, then committed with --accept
    let run_id = refused_run(&f, "accepted");
    crate::support::finalize(&target, &run_id, &["--accept", "schema test"]).expect_code(0);
    // refused for good: a baseline diff over the limit
    let doubled = crate::replay::SQL.replace("sum(CASE", "2 * sum(CASE");
    f.run(
        &f.config(
            "refused",
            &Settings {
                sql: doubled,
                max_changed_ratio: 0.01,
                ..Settings::default()
            },
        ),
        "2",
    )
    .expect_code(3);
    // a rollback and a window run (verified, never committed)
    replayfleet(&[
        "rollback",
        "--target",
        target.to_str().unwrap(),
        "--to",
        "1",
        "--reason",
        "schema test",
        "--by",
        "auditor",
    ])
    .expect_code(0);
    f.run(
        &f.config(
            "canary",
            &Settings {
                window: "[window]\npartitions = [0]",
                ..Settings::default()
            },
        ),
        "2",
    )
    .expect_code(0);
    // `plan --out` writes the same format
    let plan_out = f.path("plan-out.json");
    replayfleet(&[
        "plan",
        "--config",
        &f.config("planned", &Settings::default()),
        "--out",
        plan_out.to_str().unwrap(),
    ])
    .expect_code(0);
    let instance: Value = serde_json::from_slice(&std::fs::read(&plan_out).unwrap()).unwrap();
    let plan_errors = errors(&validator("plan.schema.json"), &instance);
    assert!(plan_errors.is_empty(), "plan --out: {plan_errors:#?}");

    let counts = validate_target(&target);
    assert_eq!(counts.get("commit.schema.json"), Some(&3), "{counts:?}");
    // versions 0 (the table) to 3
    assert_eq!(
        counts.get("delta-action.schema.json"),
        Some(&4),
        "{counts:?}"
    );
    assert_eq!(counts.get("plan.schema.json"), Some(&4), "{counts:?}");
    assert_eq!(counts.get("report.schema.json"), Some(&4), "{counts:?}");
    assert!(
        counts.get("lineage.schema.json").copied().unwrap_or(0) >= 4,
        "{counts:?}"
    );
}

/// The schemas are strict: a field the Rust types do not write, a missing field or a
/// wrong `format_version` fails.
#[test]
fn the_schemas_refuse_what_the_formats_do_not_allow() {
    let commit = validator("commit.schema.json");
    let minimal = serde_json::json!({
        "format_version": 1, "version": 1, "parent": null, "kind": "replay",
        "run_id": "r-01J0000000000000000000000A", "committed_at": "2026-01-01T00:00:00Z",
        "committed_by": "a@b", "projection": "p", "key": ["k"], "schema": [],
        "sql_sha256": "0".repeat(64), "catalog_sha256": "0".repeat(64),
        "build": {"name": "replayfleet", "version": "0.1.0"}, "segments": [],
        "totals": {"rows": 0, "bytes": 0, "segments": 0, "shards": 0, "events_read": 0,
                   "duplicates_dropped": 0, "events_projected": 0, "quarantined": 0, "anomalies": {}},
        "fingerprint": "0".repeat(64), "report": null
    });
    assert!(
        errors(&commit, &minimal).is_empty(),
        "{:?}",
        errors(&commit, &minimal)
    );
    type Change = Box<dyn Fn(&mut Value)>;
    let broken: [(&str, Change); 5] = [
        ("an unknown field", Box::new(|v| v["extra"] = 1.into())),
        (
            "format_version 2",
            Box::new(|v| v["format_version"] = 2.into()),
        ),
        (
            "no fingerprint",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("fingerprint");
            }),
        ),
        ("a bad digest", Box::new(|v| v["sql_sha256"] = "abc".into())),
        (
            "a bad time",
            Box::new(|v| v["committed_at"] = "yesterday".into()),
        ),
    ];
    for (what, change) in broken {
        let mut v = minimal.clone();
        change(&mut v);
        assert!(!errors(&commit, &v).is_empty(), "{what} passed");
    }
}
