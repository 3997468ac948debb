//! The embedded run end to end (issue: deterministic shard replay, SQL projections and
//! the verified commit): real processes on local folders.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};
use serde_json::Value;

use crate::support::{copy_example_contracts, finalize, replayfleet};

pub(crate) const SQL: &str = r#"
SELECT stream_id AS account_id,
       sum(CASE WHEN event_type = 'Deposited' THEN amount_cents
                WHEN event_type = 'Withdrawn' THEN -amount_cents ELSE 0 END) AS balance_cents,
       count(*) AS events,
       max(seq) AS last_seq
FROM events
GROUP BY stream_id
"#;

/// A generated archive, the example catalog and a config, in a temporary folder.
pub(crate) struct Fixture {
    dir: tempfile::TempDir,
}

/// The parts of backfill.toml a test changes.
pub(crate) struct Settings {
    pub(crate) target: &'static str,
    pub(crate) target_events: u64,
    pub(crate) sql: String,
    pub(crate) key: &'static str,
    pub(crate) invariants: &'static str,
    pub(crate) anomalies: &'static str,
    pub(crate) max_changed_ratio: f64,
    pub(crate) window: &'static str,
    /// Raw TOML appended to the file (e.g. a `[fleet]` table).
    pub(crate) extra: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target: "target",
            target_events: 1_000,
            sql: SQL.into(),
            key: r#"["account_id"]"#,
            invariants: "[]",
            anomalies: r#"invalid_payload = "quarantine"
unknown_type = "quarantine"
upcast_failed = "quarantine"
max_quarantined_ratio = 0.2"#,
            max_changed_ratio: 1.0,
            window: "",
            extra: String::new(),
        }
    }
}

impl Fixture {
    pub(crate) fn new(events: u64, partitions: u32, seed: u64, edge: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("events");
        let (e, p, s) = (events.to_string(), partitions.to_string(), seed.to_string());
        let mut args = vec![
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--events",
            &e,
            "--partitions",
            &p,
            "--streams",
            "60",
            "--seed",
            &s,
        ];
        args.extend_from_slice(edge);
        replayfleet(&args).expect_code(0);
        copy_example_contracts(dir.path());
        Fixture { dir }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `name.toml` and returns its path.
    pub(crate) fn config(&self, name: &str, s: &Settings) -> String {
        let text = format!(
            r#"[run]
name = "{name}"

[source]
url = "events"

[contracts]
dir = "contracts"

[projection]
name = "account_balances"
key = {key}
sql = """{sql}"""

[target]
url = "{target}"

[shards]
target_events = {target_events}

{window}

[checks]
invariants = {invariants}

[checks.anomalies]
{anomalies}

[checks.baseline]
max_changed_ratio = {max_changed_ratio}

{extra}
"#,
            key = s.key,
            sql = s.sql,
            target = s.target,
            target_events = s.target_events,
            window = s.window,
            invariants = s.invariants,
            anomalies = s.anomalies,
            max_changed_ratio = s.max_changed_ratio,
            extra = s.extra,
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    pub(crate) fn run(&self, config: &str, workers: &str) -> crate::support::Run {
        replayfleet(&["run", "--config", config, "--workers", workers, "--json"])
    }

    /// The target's versions (none when the target folder was never created: `history`
    /// refuses a folder that does not exist).
    pub(crate) fn history(&self, target: &str) -> Vec<Value> {
        if !self.path(target).exists() {
            return Vec::new();
        }
        let out = replayfleet(&[
            "history",
            "--target",
            self.path(target).to_str().unwrap(),
            "--json",
        ]);
        out.expect_code(0);
        out.json().as_array().unwrap().clone()
    }

    /// The committed projection of `version` as rows keyed by account.
    fn projection(&self, target: &str, version: usize) -> BTreeMap<String, (i64, i64)> {
        let history = self.history(target);
        let commit = &history[version - 1];
        let mut rows = BTreeMap::new();
        for seg in commit["segments"].as_array().unwrap() {
            let path = self.path(target).join(seg["path"].as_str().unwrap());
            let file = std::fs::File::open(path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let ids = batch
                    .column_by_name("account_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let bal = batch
                    .column_by_name("balance_cents")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone();
                let n = batch
                    .column_by_name("events")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .clone();
                for i in 0..batch.num_rows() {
                    rows.insert(ids.value(i).to_owned(), (bal.value(i), n.value(i)));
                }
            }
        }
        rows
    }
}

fn fingerprint(run: &crate::support::Run) -> String {
    let json = run.json();
    assert_eq!(json["outcome"], "committed", "{json:#}");
    json["report"]["fingerprint"].as_str().unwrap().to_owned()
}

#[test]
fn worker_count_and_shard_size_do_not_change_the_fingerprint() {
    let f = Fixture::new(4_000, 6, 7, &["--all-edge-cases"]);
    let one = f.run(
        &f.config(
            "one",
            &Settings {
                target: "t1",
                ..Settings::default()
            },
        ),
        "1",
    );
    one.expect_code(0);
    let four = f.run(
        &f.config(
            "four",
            &Settings {
                target: "t4",
                ..Settings::default()
            },
        ),
        "4",
    );
    four.expect_code(0);
    let big = f.run(
        &f.config(
            "big",
            &Settings {
                target: "tb",
                target_events: 1_000_000,
                ..Settings::default()
            },
        ),
        "2",
    );
    big.expect_code(0);
    let shards = |r: &crate::support::Run| r.json()["report"]["totals"]["shards"].as_u64().unwrap();
    assert!(shards(&one) > 1, "small shards: {}", one.stdout);
    assert_eq!(shards(&big), 1);
    assert_eq!(fingerprint(&one), fingerprint(&four));
    assert_eq!(fingerprint(&one), fingerprint(&big));
    assert_eq!(f.projection("t1", 1), f.projection("tb", 1));
}

/// What the example projection must hold, computed from the archive's rows without the
/// replay code: dedupe by event id (lowest partition, seq), upcast by hand, drop what
/// fails the target schema or has no contract, fold.
fn expected_balances(archive: &Path) -> BTreeMap<String, (i64, i64)> {
    struct Row {
        id: String,
        stream: String,
        partition: i32,
        seq: i64,
        event_type: String,
        version: i32,
        payload: String,
    }
    let mut rows = Vec::new();
    for entry in walk(archive) {
        let file = std::fs::File::open(&entry).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let s = |n: &str| b.column_by_name(n).unwrap().clone();
            let (ids, streams, parts, seqs, types, versions, payloads) = (
                s("event_id"),
                s("stream_id"),
                s("partition"),
                s("seq"),
                s("event_type"),
                s("schema_version"),
                s("payload"),
            );
            for i in 0..b.num_rows() {
                rows.push(Row {
                    id: ids.as_string::<i32>().value(i).to_owned(),
                    stream: streams.as_string::<i32>().value(i).to_owned(),
                    partition: parts.as_primitive::<Int32Type>().value(i),
                    seq: seqs.as_primitive::<Int64Type>().value(i),
                    event_type: types.as_string::<i32>().value(i).to_owned(),
                    version: versions.as_primitive::<Int32Type>().value(i),
                    payload: payloads.as_string::<i32>().value(i).to_owned(),
                });
            }
        }
    }
    rows.sort_by_key(|r| (r.partition, r.seq));
    let mut seen = HashMap::new();
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in rows {
        if seen.insert(r.id.clone(), ()).is_some() {
            continue;
        }
        let Ok(Value::Object(p)) = serde_json::from_str::<Value>(&r.payload) else {
            continue;
        };
        let Some(delta) = apply(&r.event_type, r.version, &p) else {
            continue;
        };
        let e = out.entry(r.stream).or_default();
        e.0 += delta;
        e.1 += 1;
    }
    out
}

/// The balance change of a valid event; `None` when the event fails its contract.
fn apply(event_type: &str, version: i32, p: &serde_json::Map<String, Value>) -> Option<i64> {
    let str3 = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true, // defaulted to EUR
        Some(Value::String(s)) => s.chars().count() == 3,
        _ => false,
    };
    let memo_ok = matches!(p.get("memo"), None | Some(Value::String(_)));
    let cents = |x: f64| (x * 100.0).round() as i64;
    match (event_type, version) {
        ("AccountOpened", 1 | 2) => {
            let owner = p.get(if version == 1 { "owner" } else { "owner_name" });
            let owner_ok = matches!(owner, Some(Value::String(s)) if !s.is_empty());
            let opened_ok = match p.get("opened_at") {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                _ => false,
            };
            (owner_ok && str3(p.get("currency")) && opened_ok).then_some(0)
        }
        ("AccountOpened", 3) => {
            let holder = p.get("holder")?.as_object()?;
            let name_ok = matches!(holder.get("name"), Some(Value::String(s)) if !s.is_empty());
            let kind_ok = matches!(
                holder.get("kind").and_then(Value::as_str),
                Some("person" | "company")
            );
            let cur_ok =
                matches!(p.get("currency"), Some(Value::String(s)) if s.chars().count() == 3);
            (name_ok && kind_ok && cur_ok).then_some(0)
        }
        ("AccountClosed", 1) => matches!(
            p.get("reason").and_then(Value::as_str),
            Some("customer_request" | "fraud" | "dormant")
        )
        .then_some(0),
        ("Deposited" | "Withdrawn", 2) => {
            let c = p.get("amount_cents")?.as_i64()?;
            let cur_ok =
                matches!(p.get("currency"), Some(Value::String(s)) if s.chars().count() == 3);
            (c >= 0 && cur_ok && memo_ok).then_some(if event_type == "Deposited" { c } else { -c })
        }
        ("Deposited", 1) => {
            let c = cents(p.get("amount")?.as_f64()?);
            (c >= 0 && str3(p.get("currency")) && memo_ok).then_some(c)
        }
        ("Withdrawn", 1) => {
            let amt = p.get("amt")?.as_str()?;
            let c = cents(amt.parse::<f64>().ok()?);
            (c >= 0 && str3(p.get("currency")) && memo_ok).then_some(-c)
        }
        _ => None,
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn the_projection_equals_an_independent_computation_with_every_edge_case() {
    let f = Fixture::new(3_000, 4, 21, &["--all-edge-cases"]);
    let run = f.run(&f.config("edge", &Settings::default()), "2");
    run.expect_code(0);
    let json = run.json();
    let totals = &json["report"]["totals"];
    assert!(
        totals["duplicates_dropped"].as_u64().unwrap() > 0,
        "{json:#}"
    );
    assert!(totals["quarantined"].as_u64().unwrap() > 0, "{json:#}");
    let expected = expected_balances(&f.path("events"));
    let got = f.projection("target", 1);
    let differing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(5)
        .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", got.get(k)))
        .collect();
    assert!(differing.is_empty(), "{differing:#?}");
    assert_eq!(expected.len(), got.len());
}

#[test]
fn a_conflicting_duplicate_with_policy_halt_exits_3_and_commits_nothing() {
    let f = Fixture::new(2_000, 2, 5, &["--conflicting-duplicates", "0.01"]);
    let run = f.run(&f.config("conflict", &Settings::default()), "2");
    run.expect_code(3)
        .stderr_names(&["conflicting_duplicate", "halt", "segment"]);
    assert!(f.history("target").is_empty());
}

#[test]
fn an_invariant_violation_exits_3_with_the_rows_in_the_report() {
    let f = Fixture::new(1_500, 2, 9, &[]);
    let run = f.run(
        &f.config(
            "inv",
            &Settings {
                invariants: r#"["SELECT * FROM projection WHERE events > 1"]"#,
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(3);
    let report = &run.json()["report"];
    let failed: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["name"], "invariant[0]");
    let samples = failed[0]["samples"].as_array().unwrap();
    assert!(!samples.is_empty() && samples.len() <= 20);
    assert!(samples[0]["account_id"].is_string(), "{samples:?}");
    assert!(f.history("target").is_empty());

    // --accept commits the refused run, recording the reason
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    let target = f.path("target");
    let accepted = finalize(
        &target,
        &run_id,
        &["--accept", "known legacy accounts", "--json"],
    );
    accepted.expect_code(0);
    let history = f.history("target");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["accepted"]["reason"], "known legacy accounts");
    assert_eq!(history[0]["accepted"]["overridden"][0], "invariant[0]");
    // finalize is idempotent
    let again = finalize(&target, &run_id, &["--json"]);
    again.expect_code(0);
    assert_eq!(again.json()["outcome"], "already_committed");
}

#[test]
fn a_baseline_diff_over_the_limit_exits_3() {
    let f = Fixture::new(1_500, 2, 13, &[]);
    f.run(&f.config("first", &Settings::default()), "2")
        .expect_code(0);
    // the same archive with another SQL: every balance doubles
    let doubled = SQL.replace("sum(CASE", "2 * sum(CASE");
    let run = f.run(
        &f.config(
            "second",
            &Settings {
                sql: doubled,
                max_changed_ratio: 0.1,
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(3);
    let diff = &run.json()["report"]["diff"];
    assert_eq!(diff["baseline"], 1);
    assert!(diff["changed"].as_u64().unwrap() > 0, "{diff:#}");
    assert!(diff["changed_ratio"].as_f64().unwrap() > 0.1);
    assert!(!diff["samples"]["changed"].as_array().unwrap().is_empty());
    assert_eq!(f.history("target").len(), 1);
}

#[test]
fn a_key_that_is_not_unique_across_shards_exits_3() {
    let f = Fixture::new(2_000, 4, 17, &[]);
    let run = f.run(
        &f.config(
            "rollup",
            &Settings {
                sql: "SELECT event_type, count(*) AS n FROM events GROUP BY event_type".into(),
                key: r#"["event_type"]"#,
                target_events: 100,
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(3);
    assert!(run.stderr.contains("unique_keys"), "{}", run.stderr);
    assert!(f.history("target").is_empty());
}

#[test]
fn a_window_run_reports_and_commits_nothing() {
    let f = Fixture::new(1_500, 4, 19, &[]);
    let run = f.run(
        &f.config(
            "canary",
            &Settings {
                window: "[window]\npartitions = [\"0-1\"]",
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(0);
    assert_eq!(run.json()["outcome"], "verified");
    assert!(f.history("target").is_empty());
    assert!(f.path("target/runs").is_dir());
}

#[test]
fn an_input_segment_changed_before_finalize_is_refused_without_override() {
    let f = Fixture::new(1_500, 2, 23, &[]);
    let run = f.run(
        &f.config(
            "changed",
            &Settings {
                invariants: r#"["SELECT * FROM projection WHERE events > 0"]"#,
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(3);
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    // an input segment is rewritten after the plan
    let segment = walk(&f.path("events")).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&segment, bytes).unwrap();
    let name = segment.file_name().unwrap().to_str().unwrap().to_owned();
    let target = f.path("target");
    let out = finalize(&target, &run_id, &["--accept", "try anyway"]);
    out.expect_code(3)
        .stderr_names(&["inputs_unchanged", &name]);
    assert!(f.history("target").is_empty());
}

#[test]
fn rollback_commits_an_older_version_and_history_shows_both() {
    let f = Fixture::new(1_500, 2, 29, &[]);
    let first = f.run(&f.config("v1", &Settings::default()), "2");
    first.expect_code(0);
    let doubled = SQL.replace("sum(CASE", "2 * sum(CASE");
    f.run(
        &f.config(
            "v2",
            &Settings {
                sql: doubled,
                ..Settings::default()
            },
        ),
        "2",
    )
    .expect_code(0);
    let target = f.path("target");
    crate::support::replayfleet_env(
        &[
            "rollback",
            "--target",
            target.to_str().unwrap(),
            "--to",
            "1",
            "--reason",
            "version 2 doubles the balances",
        ],
        &[("REPLAYFLEET_BY".into(), "release-pipeline".into())],
    )
    .expect_code(0);
    let history = f.history("target");
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["kind"], "rollback");
    assert_eq!(
        history[2]["rollback_reason"],
        "version 2 doubles the balances"
    );
    assert_eq!(history[2]["committed_by"], "release-pipeline");
    assert_eq!(history[2]["rollback_of"], 1);
    assert_eq!(history[2]["parent"], 2);
    assert_eq!(history[2]["fingerprint"], history[0]["fingerprint"]);
    assert_eq!(f.projection("target", 3), f.projection("target", 1));
    let table = replayfleet(&["history", "--target", target.to_str().unwrap()]);
    table.expect_code(0);
    assert!(
        table.stdout.contains("rollback to version 1") && table.stdout.contains(" UTC"),
        "{}",
        table.stdout
    );
    let shown = replayfleet(&[
        "show",
        "--target",
        target.to_str().unwrap(),
        "--version",
        "2",
        "--limit",
        "2",
        "--json",
    ]);
    shown.expect_code(0);
    let rows = shown.json();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows:#}");
    let first = f.projection("target", 1).into_iter().next().unwrap();
    assert_eq!(rows[0]["account_id"], first.0.as_str());
    assert_eq!(
        rows[0]["balance_cents"],
        2 * first.1.0,
        "version 2 doubled the balances"
    );
    replayfleet(&[
        "rollback",
        "--target",
        target.to_str().unwrap(),
        "--to",
        "9",
        "--reason",
        "none",
    ])
    .expect_code(2)
    .stderr_names(&["version 9"]);
}

#[test]
fn plan_is_a_dry_run_and_coverage_failures_exit_2() {
    let f = Fixture::new(1_000, 3, 31, &["--unknown-types", "0.05"]);
    let config = f.config("plan", &Settings::default());
    let out = replayfleet(&["plan", "--config", &config, "--json"]);
    out.expect_code(0);
    let json = out.json();
    assert!(!json["plan"]["shards"].as_array().unwrap().is_empty());
    assert!(!f.path("target/runs").exists(), "plan writes nothing");
    // unknown types with policy halt: no path, exit 2 before any work
    let strict = f.config(
        "strict",
        &Settings {
            anomalies: "unknown_type = \"halt\"",
            ..Settings::default()
        },
    );
    replayfleet(&["plan", "--config", &strict])
        .expect_code(2)
        .stderr_names(&["unknown_type", "halt"]);
    replayfleet(&["run", "--config", &strict])
        .expect_code(2)
        .stderr_names(&["unknown_type"]);
    assert!(!f.path("target/runs").exists());
    // a bad SQL is exit 2 naming the problem
    let bad = f.config(
        "bad",
        &Settings {
            sql: "SELECT nope FROM events".into(),
            ..Settings::default()
        },
    );
    replayfleet(&["plan", "--config", &bad])
        .expect_code(2)
        .stderr_names(&["nope"]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn target_of(path: &Path) -> replayfleet_replay::Target {
    replayfleet_replay::Target::new(
        replayfleet_archive::Location::parse(path.to_str().unwrap(), None, &Default::default())
            .unwrap(),
    )
}

#[test]
fn a_zombie_attempt_after_the_lineage_changes_no_committed_file_and_matches_byte_for_byte() {
    let f = Fixture::new(2_000, 3, 37, &["--all-edge-cases"]);
    let run = f.run(
        &f.config(
            "zombie",
            &Settings {
                target_events: 500,
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(0);
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    let target = target_of(&f.path("target"));
    let rt = runtime();
    let plan_bytes = std::fs::read(f.path(&format!("target/runs/{run_id}/plan.json"))).unwrap();
    let plan = replayfleet_replay::Plan::from_json("plan.json", &plan_bytes).unwrap();
    let committed: Vec<(PathBuf, Vec<u8>)> = f.history("target")[0]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let p = f.path("target").join(s["path"].as_str().unwrap());
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let shard = plan.shards[0].id.clone();
    let source =
        replayfleet_archive::Location::parse(&plan.source.url, None, &Default::default()).unwrap();
    let job = replayfleet_replay::ShardJob {
        catalog: plan.contracts.catalog().unwrap(),
        plan: std::sync::Arc::new(plan),
        shard: shard.clone(),
        source,
        target,
        attempt: "zombie-attempt".into(),
        worker: "test".into(),
        pacer: None,
    };
    let outcome = rt.block_on(replayfleet_replay::replay_shard(&job)).unwrap();
    assert!(
        !outcome.won,
        "the first attempt's manifest stays the winner"
    );
    assert_ne!(outcome.lineage.attempt, "zombie-attempt");
    // the zombie wrote its own folder, byte-identical to the winner's files
    for out in &outcome.lineage.outputs {
        let winner = std::fs::read(f.path("target").join(&out.path)).unwrap();
        let zombie_path = out.path.replace(&outcome.lineage.attempt, "zombie-attempt");
        let zombie = std::fs::read(f.path("target").join(&zombie_path)).unwrap();
        assert_eq!(winner, zombie, "{zombie_path} differs from {}", out.path);
    }
    // every Parquet file replayfleet writes names its format version in the footer
    let footer = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(
        committed[0].1.clone(),
    ))
    .unwrap();
    use parquet::file::reader::FileReader;
    let kv = footer
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    assert!(
        kv.iter()
            .any(|k| k.key == "replayfleet.format_version" && k.value.as_deref() == Some("1")),
        "{kv:?}"
    );
    for (path, bytes) in committed {
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
    // and verification of the commit still holds: finalize reports it committed
    finalize(&f.path("target"), &run_id, &[]).expect_code(0);
}

#[test]
fn two_finalizers_racing_for_the_same_version_commit_exactly_once() {
    let f = Fixture::new(1_500, 2, 41, &[]);
    let refused = Settings {
        invariants: r#"["SELECT * FROM projection WHERE events > 0"]"#,
        ..Settings::default()
    };
    let a = f.run(&f.config("race-a", &refused), "2");
    a.expect_code(3)
        .stderr_names(&["replayfleet finalize --target", "--accept"]);
    let b = f.run(&f.config("race-b", &refused), "2");
    b.expect_code(3);
    let ids: Vec<String> = [a, b]
        .iter()
        .map(|r| r.json()["run_id"].as_str().unwrap().to_owned())
        .collect();
    let target = target_of(&f.path("target"));
    let source = replayfleet_archive::Location::parse(
        f.path("events").to_str().unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let options = replayfleet_finalizer::FinalizeOptions {
        accept: Some("race".into()),
        by: "test".into(),
    };
    let rt = runtime();
    let (one, two) = rt.block_on(async {
        tokio::join!(
            replayfleet_finalizer::finalize(&target, &source, &ids[0], &options, None),
            replayfleet_finalizer::finalize(&target, &source, &ids[1], &options, None),
        )
    });
    let results = [one, two];
    let committed = results
        .iter()
        .filter(|r| matches!(r, Ok(replayfleet_finalizer::Finalized::Committed { .. })))
        .count();
    let lost: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .collect();
    // Both read the same current version and one loses the race (the usual case); or,
    // on a loaded machine, one commits before the other reads the current version and
    // the second commits the next version. Never two commits of one version.
    assert_eq!(committed + lost.len(), 2, "{results:?}");
    assert!(committed >= 1, "{lost:?}");
    for e in &lost {
        assert!(e.contains("lost the commit race"), "{e}");
    }
    let versions: Vec<u64> = f
        .history("target")
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        (1..=committed as u64).collect::<Vec<_>>(),
        "{results:?}"
    );
}

#[test]
fn a_shard_that_fails_halts_the_run_naming_the_shard_and_its_error() {
    let f = Fixture::new(1_000, 2, 43, &[]);
    let run = f.run(
        &f.config(
            "divzero",
            &Settings {
                sql: "SELECT stream_id AS account_id, sum(seq) / 0 AS x FROM events GROUP BY stream_id"
                    .into(),
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(1)
        .stderr_names(&["shard-00000", "failed after 1 attempts", "Divide by zero"]);
    assert!(f.history("target").is_empty());
}
