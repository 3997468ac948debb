//! The target is a Delta Lake table: real Delta readers (PyPI `deltalake`, which is
//! delta-rs, and `polars`) read every version replayfleet commits, on a local folder and
//! on moto S3, with no replayfleet code; a reader polling while versions commit sees only
//! whole versions; a table another writer made is refused before any work.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use replayfleet_testkit::S3Server;
use serde_json::Value;

use crate::{
    replay::{Fixture, SQL, Settings},
    support::{Run, replayfleet, replayfleet_env, repo},
};

/// `python3 tests/it/delta_read.py <args>` with S3 options from `storage`.
fn delta_read(args: &[&str], storage: &BTreeMap<&str, String>) -> Value {
    let out = Command::new("python3")
        .arg(repo().join("tests/it/delta_read.py"))
        .args(args)
        .env(
            "DELTA_STORAGE_OPTIONS",
            serde_json::to_string(storage).unwrap(),
        )
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "delta_read.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// deltalake's storage options for moto.
fn s3_storage(s3: &S3Server) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("AWS_ENDPOINT_URL", s3.endpoint()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ])
}

/// `rows` (from `show --json`) as delta_read.py prints them: sorted canonical JSON.
fn canonical(rows: &Value) -> Vec<String> {
    let mut out: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let sorted: BTreeMap<&String, &Value> = r.as_object().unwrap().iter().collect();
            serde_json::to_string(&sorted).unwrap()
        })
        .collect();
    out.sort();
    out
}

/// Every row of `version` of `target`, as `show --json` prints them.
fn shown(target: &str, version: u64, env: &[(String, String)]) -> Vec<String> {
    let out = replayfleet_env(
        &[
            "show",
            "--target",
            target,
            "--version",
            &version.to_string(),
            "--limit",
            "1000000",
            "--json",
        ],
        env,
    );
    out.expect_code(0);
    canonical(&out.json())
}

/// v1; v2 with another balance and one more column (a new `metaData`); a rollback to 1.
fn three_versions(f: &Fixture, target: &str, env: &[(String, String)], retarget: impl Fn(&str)) {
    let run = |config: String| {
        replayfleet_env(
            &["run", "--config", &config, "--workers", "2", "--json"],
            env,
        )
    };
    let v1 = f.config("v1", &Settings::default());
    retarget(&v1);
    run(v1).expect_code(0);
    let wider = SQL.replace("sum(CASE", "2 * sum(CASE").replace(
        "max(seq) AS last_seq",
        "max(seq) AS last_seq, min(seq) AS first_seq",
    );
    let v2 = f.config(
        "v2",
        &Settings {
            sql: wider,
            ..Settings::default()
        },
    );
    retarget(&v2);
    let out = run(v2);
    out.expect_code(0);
    let diff = &out.json()["report"]["diff"];
    assert_eq!(
        diff["added_columns"],
        serde_json::json!(["first_seq"]),
        "{diff:#}"
    );
    replayfleet_env(
        &[
            "rollback",
            "--target",
            target,
            "--to",
            "1",
            "--reason",
            "v2 doubles the balances",
            "--by",
            "test",
        ],
        env,
    )
    .expect_code(0);
}

/// What Delta readers see of every version equals what `show` returns for it.
fn readers_see_every_version(
    target: &str,
    env: &[(String, String)],
    storage: &BTreeMap<&str, String>,
) {
    let read = delta_read(&["versions", target], storage);
    assert_eq!(read["current"], 3, "{read:#}");
    let versions = read["versions"].as_object().unwrap();
    assert_eq!(versions.len(), 4, "versions 0 (the empty table) to 3");
    assert_eq!(versions["0"]["deltalake"], serde_json::json!([]));
    for v in 1..=3u64 {
        let expected = shown(target, v, env);
        assert!(!expected.is_empty());
        let seen = &versions[&v.to_string()];
        let as_strings = |reader: &str| -> Vec<String> {
            seen[reader]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(as_strings("deltalake"), expected, "deltalake, version {v}");
        assert_eq!(as_strings("polars"), expected, "polars, version {v}");
        if !seen["duckdb"].is_null() {
            assert_eq!(as_strings("duckdb"), expected, "DuckDB, version {v}");
        }
    }
    // deltalake's history() is each version's commitInfo: replayfleet's record included
    let history = read["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "{history:#?}");
    assert_eq!(history[0][1], "RESTORE");
    assert_eq!(history[3][1], "CREATE TABLE");
    let runs = replayfleet_env(&["history", "--target", target, "--json"], env).json();
    assert_eq!(history[1][2], runs[1]["run_id"], "{history:#?}");
    assert_eq!(read["current_rows"], versions["3"]["deltalake"]);
    assert_eq!(
        read["current_rows"], versions["1"]["deltalake"],
        "3 rolls back to 1"
    );
    assert!(
        versions["2"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "first_seq"),
        "version 2's metaData has its new column: {:#}",
        versions["2"]
    );
    assert!(
        !versions["3"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "first_seq"),
        "the rollback restores version 1's schema: {:#}",
        versions["3"]
    );
    for v in 1..=3 {
        let out = replayfleet_env(
            &[
                "verify",
                "--target",
                target,
                "--version",
                &v.to_string(),
                "--sample",
                "0",
                "--json",
            ],
            env,
        );
        out.expect_code(0);
        assert_eq!(out.json()["holds"], true, "version {v}: {:#}", out.json());
    }
}

#[test]
fn delta_readers_read_every_version_after_run_run_rollback_on_a_local_folder() {
    let f = Fixture::new(1_500, 2, 29, &[]);
    let target = f.path("target");
    let target = target.to_str().unwrap();
    three_versions(&f, target, &[], |_| {});
    readers_see_every_version(target, &[], &BTreeMap::new());

    // every add carries its key column's statistics; the rollback re-adds version 1's
    // files with the statistics they were first added with
    let adds = |v: u64| -> BTreeMap<String, Value> {
        let log = f.path(&format!("target/_delta_log/{v:020}.json"));
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap()
                    .get("add")
                    .cloned()
            })
            .map(|a| {
                let stats = serde_json::from_str(a["stats"].as_str().unwrap()).unwrap();
                (a["path"].as_str().unwrap().to_owned(), stats)
            })
            .collect()
    };
    let first = adds(1);
    assert!(!first.is_empty());
    for stats in first.values() {
        assert_eq!(stats["nullCount"]["account_id"], 0, "{stats}");
        let (lo, hi) = (
            &stats["minValues"]["account_id"],
            &stats["maxValues"]["account_id"],
        );
        assert!(lo.as_str().unwrap() <= hi.as_str().unwrap(), "{stats}");
    }
    assert_eq!(adds(3), first);

    // a rollback to the version already current: the files are added again, never also
    // removed in the same version, so readers still read them all
    replayfleet(&[
        "rollback", "--target", target, "--to", "3", "--reason", "again", "--by", "test",
    ])
    .expect_code(0);
    let log =
        std::fs::read_to_string(f.path("target/_delta_log/00000000000000000004.json")).unwrap();
    assert!(!log.contains("\"remove\""), "{log}");
    let read = delta_read(&["versions", target], &BTreeMap::new());
    assert_eq!(read["current_rows"], read["versions"]["1"]["deltalake"]);
    assert_eq!(read["current"], 4);

    // a log whose version 1 lost an `add` no longer holds the commit's segments: verify
    // names the segment Delta readers would not read
    let log = f.path("target/_delta_log/00000000000000000001.json");
    let text = std::fs::read_to_string(&log).unwrap();
    let dropped = text
        .lines()
        .find(|l| l.starts_with("{\"add\""))
        .unwrap()
        .to_owned();
    let path: Value = serde_json::from_str(&dropped).unwrap();
    let path = path["add"]["path"].as_str().unwrap().to_owned();
    std::fs::write(&log, text.replace(&format!("{dropped}\n"), "")).unwrap();
    let out = replayfleet(&[
        "verify",
        "--target",
        target,
        "--version",
        "1",
        "--sample",
        "0",
        "--json",
    ]);
    out.expect_code(3);
    let mismatches = out.json()["verification"]["mismatches"].clone();
    assert!(
        mismatches
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["check"] == "table" && m["path"] == path.as_str()),
        "{mismatches:#}"
    );
}

#[test]
fn delta_readers_read_every_version_after_run_run_rollback_on_s3() {
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let target = format!("s3://{bucket}/projections/balances");
    let f = Fixture::new(1_500, 2, 31, &[]);
    let env = s3.env();
    let retarget = |config: &str| {
        let text = std::fs::read_to_string(config)
            .unwrap()
            .replace("url = \"target\"", &format!("url = \"{target}\""));
        std::fs::write(config, text).unwrap();
    };
    three_versions(&f, &target, &env, retarget);
    readers_see_every_version(&target, &env, &s3_storage(&s3));
}

/// A reader polling the current version while two versions commit sees the empty table,
/// version 1 or version 2, each whole: never a mix of their files.
#[test]
fn a_reader_polling_while_versions_commit_sees_only_whole_versions() {
    let f = Fixture::new(2_000, 4, 37, &[]);
    let target = f.path("target");
    let stop = f.path("stop");
    let mut reader = Command::new("python3")
        .arg(repo().join("tests/it/delta_read.py"))
        .args(["loop", target.to_str().unwrap(), stop.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "ready",
        "the reader started"
    );
    // v1, v2 (balances doubled), v1's SQL again, v2's again: four versions, each
    // committed while the reader reads. Each next version waits until the reader has
    // read the last one (it goes on reading meanwhile), so every version is read
    // however fast the runs are next to the reader.
    let doubled = SQL.replace("sum(CASE", "2 * sum(CASE");
    let mut reads: Vec<String> = Vec::new();
    for v in 1..=4 {
        let sql = if v % 2 == 0 {
            doubled.clone()
        } else {
            SQL.to_owned()
        };
        let settings = Settings {
            sql,
            ..Settings::default()
        };
        f.run(&f.config(&format!("v{v}"), &settings), "2")
            .expect_code(0);
        loop {
            let line = lines
                .next()
                .expect("the reader stopped before the stop file")
                .unwrap();
            let read: Value = serde_json::from_str(&line).unwrap();
            let version = read["version"].as_u64();
            reads.push(line);
            if version == Some(v) {
                break;
            }
        }
    }
    std::fs::write(&stop, b"").unwrap();
    reads.extend(lines.map(Result::unwrap));
    let out = reader.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = target.to_str().unwrap();
    let mut whole: BTreeMap<u64, Vec<String>> = BTreeMap::from([(0, Vec::new())]);
    for v in 1..=4 {
        whole.insert(v, shown(target, v, &[]));
    }
    assert_ne!(whole[&1], whole[&2]);
    let mut seen = BTreeMap::<u64, usize>::new();
    for line in &reads {
        let read: Value = serde_json::from_str(line).unwrap();
        let version = read["version"].as_u64().unwrap();
        let rows: Vec<String> = read["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            Some(&rows),
            whole.get(&version),
            "a read of version {version} is not that version whole"
        );
        *seen.entry(version).or_default() += 1;
    }
    assert!(
        (1..=4).all(|v| seen.contains_key(&v)),
        "the reader read every version: {seen:?}"
    );
    eprintln!("reads per version: {seen:?}");
}

/// Two finalizers racing on S3 for the first versions of a table: exactly one Delta commit
/// per version, the loser's run committed nowhere.
#[test]
fn two_finalizers_racing_on_s3_make_exactly_one_delta_commit() {
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let target_url = format!("s3://{bucket}/race");
    let f = Fixture::new(1_200, 2, 43, &[]);
    let env = s3.env();
    let refused = Settings {
        invariants: r#"["SELECT * FROM projection WHERE events > 0"]"#,
        ..Settings::default()
    };
    let target = replayfleet_replay::Target::new(
        replayfleet_archive::Location::parse(&target_url, None, &s3.options()).unwrap(),
    );
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lost = None;
    let mut won = 0;
    for attempt in 0..4 {
        let ids: Vec<String> = ["x", "y"]
            .iter()
            .map(|side| {
                let config = f.config(&format!("race-{attempt}-{side}"), &refused);
                let text = std::fs::read_to_string(&config)
                    .unwrap()
                    .replace("url = \"target\"", &format!("url = \"{target_url}\""));
                std::fs::write(&config, text).unwrap();
                let run = replayfleet_env(
                    &["run", "--config", &config, "--workers", "2", "--json"],
                    &env,
                );
                run.expect_code(3);
                run.json()["run_id"].as_str().unwrap().to_owned()
            })
            .collect();
        let (one, two) = runtime.block_on(async {
            tokio::join!(
                replayfleet_finalizer::finalize(&target, &source, &ids[0], &options, None),
                replayfleet_finalizer::finalize(&target, &source, &ids[1], &options, None),
            )
        });
        won += usize::from(one.is_ok()) + usize::from(two.is_ok());
        match (&one, &two) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                assert!(e.to_string().contains("lost the commit race"), "{e}");
                lost = Some(ids[usize::from(one.is_ok())].clone());
                break;
            }
            (Ok(_), Ok(_)) => continue,
            other => panic!("at least one finalizer must win: {other:?}"),
        }
    }
    let loser = lost.expect("no race was lost in four tries");
    let log = runtime
        .block_on(target.list("_delta_log"))
        .unwrap()
        .into_iter()
        .map(|(path, _)| path)
        .collect::<Vec<_>>();
    assert_eq!(
        log.len(),
        won + 1,
        "one Delta commit per won finalize, and version 0: {log:#?}"
    );
    let history = replayfleet_env(&["history", "--target", &target_url, "--json"], &env);
    history.expect_code(0);
    let history = history.json();
    assert_eq!(history.as_array().unwrap().len(), won);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["run_id"] != loser.as_str())
    );
    let read = delta_read(&["versions", &target_url], &s3_storage(&s3));
    assert_eq!(read["current"], won as u64);
}

fn expect_refused(run: &Run, needles: &[&str], target: &Path) {
    run.expect_code(2).stderr_names(needles);
    assert!(
        !target.join("runs").exists(),
        "nothing is written: {}",
        run.stderr
    );
}

/// A target that is a Delta table another writer made, or of a protocol newer than
/// replayfleet supports, is refused before any work, naming the log file.
#[test]
fn a_foreign_delta_table_or_a_newer_protocol_is_refused_naming_the_file() {
    let f = Fixture::new(300, 1, 3, &[]);
    let foreign = f.path("foreign");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sys, pyarrow as pa; from deltalake import write_deltalake; \
             write_deltalake(sys.argv[1], pa.table({'id': [1, 2], 'name': ['a', 'b']}))",
            foreign.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let run_into = |target: &'static str| {
        f.run(
            &f.config(
                target,
                &Settings {
                    target,
                    ..Settings::default()
                },
            ),
            "1",
        )
    };
    expect_refused(
        &run_into("foreign"),
        &["_delta_log/00000000000000000000.json", "did not create"],
        &foreign,
    );

    let newer = f.path("newer");
    std::fs::create_dir_all(newer.join("_delta_log")).unwrap();
    std::fs::write(
        newer.join("_delta_log/00000000000000000000.json"),
        concat!(
            r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}}"#,
            "\n",
            r#"{"metaData":{"id":"0b5c","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[]}","partitionColumns":[],"configuration":{"replayfleet.projection":"account_balances","replayfleet.key":"[\"account_id\"]"},"createdTime":0}}"#,
            "\n"
        ),
    )
    .unwrap();
    expect_refused(
        &run_into("newer"),
        &[
            "_delta_log/00000000000000000000.json",
            "deletionVectors",
            "newer than replayfleet supports",
        ],
        &newer,
    );
    replayfleet(&["history", "--target", newer.to_str().unwrap()])
        .expect_code(2)
        .stderr_names(&["deletionVectors"]);

    // a replayfleet table of another projection: the two would replace each other's rows
    f.run(&f.config("mine", &Settings::default()), "1")
        .expect_code(0);
    let other = f.config("other", &Settings::default());
    let text = std::fs::read_to_string(&other)
        .unwrap()
        .replace("name = \"account_balances\"", "name = \"orders\"");
    std::fs::write(&other, text).unwrap();
    let runs_before = std::fs::read_dir(f.path("target/runs")).unwrap().count();
    f.run(&other, "1").expect_code(2).stderr_names(&[
        "_delta_log/00000000000000000000.json",
        "`account_balances`, not `orders`",
    ]);
    assert_eq!(
        std::fs::read_dir(f.path("target/runs")).unwrap().count(),
        runs_before,
        "nothing is written"
    );
}

/// A target written before the Delta log (`_commits/`): read as before, refused for a new
/// version with the way out named, and converted by `migrate` into a Delta table that
/// readers read version by version and runs commit to.
#[test]
fn a_commits_target_is_read_then_migrated_to_a_delta_table() {
    let f = Fixture::new(1_500, 2, 53, &[]);
    let target = f.path("target");
    let url = target.to_str().unwrap();
    f.run(&f.config("v1", &Settings::default()), "2")
        .expect_code(0);
    let doubled = SQL.replace("sum(CASE", "2 * sum(CASE");
    let v2 = Settings {
        sql: doubled,
        ..Settings::default()
    };
    f.run(&f.config("v2", &v2), "2").expect_code(0);
    let history = f.history("target");
    let rows = [shown(url, 1, &[]), shown(url, 2, &[])];

    // the layout before the Delta log: one commit record per version in `_commits/`
    std::fs::create_dir_all(target.join("_commits")).unwrap();
    for commit in &history {
        let name = format!("{:020}.json", commit["version"].as_u64().unwrap());
        std::fs::write(
            target.join("_commits").join(name),
            serde_json::to_vec_pretty(commit).unwrap(),
        )
        .unwrap();
    }
    std::fs::remove_dir_all(target.join("_delta_log")).unwrap();

    assert_eq!(f.history("target"), history, "history reads `_commits/`");
    assert_eq!(shown(url, 1, &[]), rows[0]);
    let verified = replayfleet(&["verify", "--target", url, "--sample", "0", "--json"]);
    verified.expect_code(0);
    assert_eq!(verified.json()["holds"], true, "{:#}", verified.json());
    f.run(&f.config("v3", &Settings::default()), "2")
        .expect_code(2)
        .stderr_names(&["_commits/", "replayfleet migrate --target"]);
    assert!(!target.join("_delta_log").exists(), "nothing is committed");

    let migrated = replayfleet(&["migrate", "--target", url, "--json"]);
    migrated.expect_code(0);
    assert_eq!(
        migrated.json(),
        serde_json::json!({"versions": [1, 2], "already": false})
    );
    assert_eq!(
        f.history("target"),
        history,
        "the same versions, now Delta's"
    );
    let read = delta_read(&["versions", url], &BTreeMap::new());
    assert_eq!(read["current"], 2);
    for (v, expected) in [(1, &rows[0]), (2, &rows[1])] {
        let seen: Vec<String> = read["versions"][v.to_string()]["deltalake"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&seen, expected, "version {v}");
    }
    let again = replayfleet(&["migrate", "--target", url, "--json"]);
    again.expect_code(0);
    assert_eq!(again.json()["already"], true);
    let out = f.run(&f.config("v3", &Settings::default()), "2");
    out.expect_code(0);
    assert_eq!(out.json()["report"]["version"], 3);
    assert_eq!(shown(url, 3, &[]), rows[0], "v3 is v1's projection again");
}

/// Every kind of column a projection makes is read by deltalake and polars: timestamps
/// with and without a time zone (the latter needs the `timestampNtz` table feature),
/// decimals, doubles, booleans, dates, lists, structs, and unsigned integers, which
/// Delta does not have and which are stored widened (polars refused a `UInt32` column
/// declared `integer` before). A type Delta has none for is refused at plan time.
#[test]
fn every_kind_of_column_reads_back_in_deltalake_and_polars() {
    let f = Fixture::new(1_200, 2, 59, &[]);
    let sql = r#"
SELECT stream_id AS account_id,
       count(*) AS events,
       max(occurred_at) AS last_at,
       CAST(max(occurred_at) AS TIMESTAMP) AS last_local,
       CAST(max(occurred_at) AS DATE) AS last_day,
       CAST(sum(amount_cents) AS DECIMAL(18, 2)) AS total,
       avg(amount_cents) AS mean,
       bool_or(event_type = 'Withdrawn') AS withdrew,
       array_agg(DISTINCT event_type ORDER BY event_type) AS types,
       named_struct('first', min(seq), 'last', max(seq)) AS seqs,
       CAST(count(*) AS TINYINT UNSIGNED) AS n_u8,
       CAST(count(*) AS INT UNSIGNED) AS n_u32,
       CAST(count(*) AS BIGINT UNSIGNED) AS n_u64
FROM events
GROUP BY stream_id
"#;
    let settings = |sql: &str| Settings {
        sql: sql.to_owned(),
        ..Settings::default()
    };
    f.run(&f.config("types", &settings(sql)), "2")
        .expect_code(0);
    let target = f.path("target");
    let read = delta_read(&["types", target.to_str().unwrap()], &BTreeMap::new());
    assert_eq!(
        read["protocol"],
        serde_json::json!([3, 7]),
        "timestampNtz: {read:#}"
    );
    let delta = &read["delta"];
    for (column, ty) in [
        ("last_at", "PrimitiveType(\"timestamp\")"),
        ("last_local", "PrimitiveType(\"timestamp_ntz\")"),
        ("n_u8", "PrimitiveType(\"short\")"),
        ("n_u32", "PrimitiveType(\"long\")"),
        ("n_u64", "PrimitiveType(\"decimal(20,0)\")"),
    ] {
        assert_eq!(delta[column], ty, "{column}: {read:#}");
    }
    assert_eq!(read["polars"]["n_u32"], "Int64", "{read:#}");
    assert_eq!(read["rows"], serde_json::json!([60, 60]));
    let shown = replayfleet(&[
        "show",
        "--target",
        target.to_str().unwrap(),
        "--limit",
        "100",
        "--json",
    ]);
    shown.expect_code(0);
    let polars: Value = serde_json::from_str(read["first"][0].as_str().unwrap()).unwrap();
    let shown = shown.json();
    let first = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account_id"] == polars["account_id"])
        .unwrap();
    for column in ["account_id", "events", "n_u8", "n_u32", "withdrew", "mean"] {
        assert_eq!(polars[column], first[column], "{column}");
    }

    let span = sql.replace(
        "max(occurred_at) AS last_at",
        "max(occurred_at) - min(occurred_at) AS span",
    );
    f.run(&f.config("span", &settings(&span)), "1")
        .expect_code(2)
        .stderr_names(&["`span`", "Duration", "Delta Lake"]);
}
