//! The command line end to end: exit codes and the places error messages name.

use crate::support::{copy_example_contracts, replayfleet, repo};

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn example_catalog_checks_and_its_matrix_passes() {
    let dir = repo().join("examples/accounts/contracts");
    let dir = dir.to_str().unwrap();
    replayfleet(&["contracts", "check", "--dir", dir]).expect_code(0);
    let run = replayfleet(&["contracts", "test", "--dir", dir, "--json"]);
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["failed"], 0, "{report:#}");
    let rows = report["rows"].as_array().unwrap();
    // every (type, from-version): AccountOpened 1..3, Deposited 1..2, Withdrawn 1..2, AccountClosed 1
    assert_eq!(rows.len(), 8, "{report:#}");
    let text = replayfleet(&["contracts", "test", "--dir", dir]);
    text.expect_code(0);
    assert!(
        text.stdout.contains("pass") && !text.stdout.contains("FAIL"),
        "{}",
        text.stdout
    );
}

/// Each bad catalog exits 2 naming the file and the place inside it.
#[test]
fn bad_catalogs_exit_2_naming_the_place() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "bad YAML",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: object\n",
            &["deposited.yaml", "line"],
        ),
        (
            "unknown step",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: object}\n  - version: 2\n    schema: {type: object}\n    upcast:\n      - rename: {a: b}\n      - explode: [a]\n",
            &["deposited.yaml", "version 2", "explode"],
        ),
        (
            "jq syntax error",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: object}\n  - version: 2\n    schema: {type: object}\n    upcast:\n      - jq: '{a: .b'\n",
            &["deposited.yaml", "version 2", "jq"],
        ),
        (
            "schema that does not compile",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: objekt}\n",
            &["deposited.yaml", "version 1", "schema"],
        ),
        (
            "chain with a hole",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: object}\n  - version: 2\n    schema: {type: object}\n",
            &["deposited.yaml", "version 2", "upcast"],
        ),
        (
            "bad SQL expression",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: object, properties: {amount: {type: number}}}\n  - version: 2\n    schema: {type: object}\n    upcast:\n      - sql: {cents: \"amount * * 100\"}\n",
            &["deposited.yaml", "version 2", "cents"],
        ),
        (
            "property named like an envelope column",
            "event_type: Deposited\nversions:\n  - version: 1\n    schema: {type: object, properties: {seq: {type: integer}}}\n",
            &["deposited.yaml", "seq"],
        ),
    ];
    for (name, yaml, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("deposited.yaml"), yaml);
        let run = replayfleet(&["contracts", "check", "--dir", dir.path().to_str().unwrap()]);
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        run.stderr_names(needles);
    }
}

#[test]
fn conflicting_typed_columns_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("a.yaml"),
        "event_type: A\nversions:\n  - version: 1\n    schema: {type: object, properties: {amount: {type: integer}}}\n",
    );
    write(
        &dir.path().join("b.yaml"),
        "event_type: B\nversions:\n  - version: 1\n    schema: {type: object, properties: {amount: {type: string}}}\n",
    );
    replayfleet(&["contracts", "check", "--dir", dir.path().to_str().unwrap()])
        .expect_code(2)
        .stderr_names(&["a.yaml", "b.yaml", "amount"]);
}

#[test]
fn generate_then_inventory_reports_exactly_the_rows_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events");
    let out = out.to_str().unwrap();
    let gen_run = replayfleet(&[
        "generate",
        "--out",
        out,
        "--events",
        "5000",
        "--partitions",
        "4",
        "--streams",
        "200",
        "--seed",
        "11",
        "--all-edge-cases",
        "--json",
    ]);
    gen_run.expect_code(0);
    let summary = gen_run.json();
    let inv = replayfleet(&["inventory", "--source", out, "--json"]);
    inv.expect_code(0);
    let inv = inv.json();
    assert_eq!(inv["totals"]["rows"], summary["events_written"], "{inv:#}");
    assert_eq!(inv["partitions"].as_array().unwrap().len(), 4, "{inv:#}");
    assert!(!inv["event_types"].as_array().unwrap().is_empty());
    // the people's view prints the same totals
    let table = replayfleet(&["inventory", "--source", out]);
    table.expect_code(0);
    assert!(table.stdout.contains("AccountOpened"), "{}", table.stdout);
}

#[test]
fn non_parquet_segment_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("events/partition=0/part-0.parquet"),
        "this is not parquet",
    );
    replayfleet(&[
        "inventory",
        "--source",
        dir.path().join("events").to_str().unwrap(),
    ])
    .expect_code(2)
    .stderr_names(&["part-0.parquet"]);
}

#[test]
fn missing_mapped_column_exits_2_naming_segment_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    replayfleet(&[
        "generate",
        "--out",
        events.to_str().unwrap(),
        "--events",
        "300",
        "--partitions",
        "2",
        "--streams",
        "20",
        "--seed",
        "3",
    ])
    .expect_code(0);
    let contracts = copy_example_contracts(dir.path());
    let config = dir.path().join("backfill.toml");
    write(
        &config,
        &format!(
            "[run]\nname = \"t\"\n[source]\nurl = \"events\"\n[source.columns]\nseq = \"offset\"\n[contracts]\ndir = \"{}\"\n[projection]\nname = \"p\"\nkey = [\"stream_id\"]\nsql = \"SELECT stream_id FROM events GROUP BY stream_id\"\n[target]\nurl = \"out\"\n",
            contracts.display()
        ),
    );
    replayfleet(&["inventory", "--config", config.to_str().unwrap()])
        .expect_code(2)
        .stderr_names(&["part-", ".parquet", "offset", "seq"]);
}

#[test]
fn unknown_config_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backfill.toml");
    write(
        &config,
        "[run]\nname = \"t\"\nnmae = \"typo\"\n[source]\nurl = \"events\"\n[contracts]\ndir = \"c\"\n[projection]\nname = \"p\"\nkey = [\"k\"]\nsql = \"SELECT 1\"\n[target]\nurl = \"out\"\n",
    );
    replayfleet(&["inventory", "--config", config.to_str().unwrap()])
        .expect_code(2)
        .stderr_names(&["backfill.toml", "nmae"]);
}

#[test]
fn bad_flags_exit_2() {
    let run = replayfleet(&["generate", "--events", "ten"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// The same commands against a real S3 server (moto), credentials from the environment.
#[test]
fn generate_and_inventory_on_s3() {
    let s3 = replayfleet_testkit::S3Server::start();
    let bucket = s3.create_bucket();
    let url = format!("s3://{bucket}/archive/events");
    let env = s3.env();
    let gen_run = crate::support::replayfleet_env(
        &[
            "generate",
            "--out",
            &url,
            "--events",
            "2000",
            "--partitions",
            "3",
            "--streams",
            "50",
            "--seed",
            "5",
            "--duplicates",
            "--json",
        ],
        &env,
    );
    gen_run.expect_code(0);
    let written = gen_run.json()["events_written"].clone();
    let inv = crate::support::replayfleet_env(&["inventory", "--source", &url, "--json"], &env);
    inv.expect_code(0);
    let inv = inv.json();
    assert_eq!(inv["totals"]["rows"], written, "{inv:#}");
    assert_eq!(inv["totals"]["segments"], 9, "{inv:#}");
    assert!(
        inv["segments"][0]["etag"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "S3 segments carry etags: {inv:#}"
    );
    // a bucket that does not exist is an operational failure, not an input error
    let missing = crate::support::replayfleet_env(
        &["inventory", "--source", "s3://no-such-bucket-here/x"],
        &env,
    );
    assert_eq!(missing.code, 1, "{}", missing.stderr);
}

#[test]
fn bench_upcast_prints_every_measurement() {
    let run = crate::support::replayfleet_bench(&["upcast", "--events", "2000", "--json"]);
    run.expect_code(0);
    let report = run.json();
    let names: Vec<String> = report["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    for m in report["measurements"].as_array().unwrap() {
        assert!(m["events_per_sec"].as_f64().unwrap() > 0.0, "{m}");
    }
}

#[test]
fn generate_into_a_non_empty_folder_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("events/other.txt"), "already here");
    replayfleet(&[
        "generate",
        "--out",
        dir.path().join("events").to_str().unwrap(),
        "--events",
        "10",
    ])
    .expect_code(2)
    .stderr_names(&["other.txt"]);
}

/// Read-only commands find what they read and create nothing: a folder that does not
/// exist is exit 2 naming it (`history` and `inventory` exited 0, and every one of them
/// created the folder), and `plan` creates no target. A missing config file is named once.
#[test]
fn read_only_commands_on_a_missing_folder_exit_2_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["history", "--target", m],
        vec!["show", "--target", m],
        vec!["verify", "--target", m],
        vec!["explain", "--target", m, "--key", "account_id=a"],
        vec!["rollback", "--target", m, "--to", "1", "--reason", "r"],
        vec!["inventory", "--source", m],
    ] {
        replayfleet(&args)
            .expect_code(2)
            .stderr_names(&["there is no folder", m]);
        assert!(!missing.exists(), "{args:?} created {m}");
    }

    // `plan` reads the target's history: a target that does not exist yet is empty, and
    // stays absent.
    let f = crate::replay::Fixture::new(300, 1, 3, &[]);
    let config = f.config(
        "plan",
        &crate::replay::Settings {
            target: "not-yet",
            ..Default::default()
        },
    );
    replayfleet(&["plan", "--config", &config]).expect_code(0);
    assert!(!f.path("not-yet").exists(), "plan created the target");

    let absent = dir.path().join("absent.toml");
    let out = replayfleet(&["plan", "--config", absent.to_str().unwrap()]);
    out.expect_code(2);
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        out.stderr
    );
}

/// The run's summary says when workers had nothing to do (more workers than shards).
#[test]
fn the_summary_says_when_workers_idled_for_want_of_shards() {
    let f = crate::replay::Fixture::new(300, 1, 3, &[]);
    let config = f.config("idle", &crate::replay::Settings::default());
    let out = replayfleet(&["run", "--config", &config, "--workers", "3"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("2 idle: the plan has 1 shard"),
        "{}",
        out.stdout
    );
}

/// `plan` says before any work when a projection's keys can collide across shards (a
/// `GROUP BY` on a payload field committed with one shard and was refused with several),
/// and says nothing for a projection keyed by stream.
#[test]
fn plan_warns_when_shards_folded_apart_can_give_one_key_twice() {
    let f = crate::replay::Fixture::new(2_000, 4, 3, &[]);
    let by_type = f.config(
        "by-type",
        &crate::replay::Settings {
            sql: "SELECT event_type, count(*) AS n FROM events GROUP BY event_type".into(),
            key: r#"["event_type"]"#,
            target_events: 500,
            ..Default::default()
        },
    );
    let out = replayfleet(&["plan", "--config", &by_type, "--json"]);
    out.expect_code(0);
    let shards = out.json()["plan"]["shards"].as_array().unwrap().len();
    assert!(shards > 1, "{shards} shards");
    out.stderr_names(&[
        "warning: projection.sql",
        "not known to fold each stream on its own",
        &format!("the plan has {shards} shards"),
        "unique_keys",
    ]);
    assert_eq!(out.json()["warnings"].as_array().unwrap().len(), 1);
    // what the warning foretells
    f.run(&by_type, "2").expect_code(3);

    let by_stream = f.config("by-stream", &crate::replay::Settings::default());
    let out = replayfleet(&["plan", "--config", &by_stream, "--json"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(out.json()["warnings"].as_array().unwrap().is_empty());
}
