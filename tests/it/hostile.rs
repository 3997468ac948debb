//! Hostile input (issue 14): SQL that cannot replay the same way twice, credentials in
//! URLs, names too long for a path, the commit race's report — each refused (exit 2)
//! naming its key, or kept out of every file and message.

use std::net::TcpListener;

use serde_json::Value;

use crate::replay::{Fixture, Settings};
use crate::support::{replayfleet, replayfleet_env};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Flips 64 bytes of `bytes` (the segment `victim`'s) from `at` on, writes them back and
/// returns the segment's path relative to `events`.
fn damage(
    victim: &std::path::Path,
    events: &std::path::Path,
    mut bytes: Vec<u8>,
    at: usize,
) -> String {
    for b in &mut bytes[at..at + 64] {
        *b ^= 0xA5;
    }
    std::fs::write(victim, &bytes).unwrap();
    victim
        .strip_prefix(events)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// `plan` and `run` both refuse a projection or invariant calling `random()`, `now()` or
/// `uuid()` (exit 2, naming the key and the function), and nothing is committed.
#[test]
fn non_deterministic_sql_is_refused_at_plan_and_run() {
    let f = Fixture::new(600, 2, 5, &[]);
    let projection = |expr: &str| {
        format!(
            "SELECT stream_id AS account_id, count(*) AS events, max({expr}) AS x FROM events GROUP BY stream_id"
        )
    };
    let cases: Vec<(&str, Settings, &[&str])> = vec![
        (
            "random",
            Settings {
                sql: projection("random()"),
                ..Settings::default()
            },
            &["projection.sql", "`random()`", "volatile"],
        ),
        (
            "now",
            Settings {
                sql: projection("now()"),
                ..Settings::default()
            },
            &["projection.sql", "`now()`", "stable"],
        ),
        (
            "uuid",
            Settings {
                // in a subquery: the plan is walked with its subqueries
                sql: "SELECT stream_id AS account_id, count(*) AS events FROM events WHERE event_id IN (SELECT event_id FROM events WHERE uuid() <> '') GROUP BY stream_id".into(),
                ..Settings::default()
            },
            &["projection.sql", "`uuid()`", "volatile"],
        ),
        (
            "invariant",
            Settings {
                invariants: r#"["SELECT * FROM projection WHERE events < 0", "SELECT * FROM projection WHERE events > random() * 1000"]"#,
                ..Settings::default()
            },
            &["checks.invariants[1]", "`random()`"],
        ),
        (
            "recursive",
            Settings {
                // never ends, and its rows live outside the memory pool
                sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT e.stream_id AS account_id, count(*) AS events FROM events e CROSS JOIN r GROUP BY e.stream_id".into(),
                ..Settings::default()
            },
            &["projection.sql", "recursive query", "WITH RECURSIVE"],
        ),
    ];
    for (name, settings, needles) in cases {
        let config = f.config(&format!("volatile-{name}"), &settings);
        replayfleet(&["plan", "--config", &config])
            .expect_code(2)
            .stderr_names(needles);
        f.run(&config, "1").expect_code(2).stderr_names(needles);
    }
    assert!(f.history("target").is_empty());
    // The same projection without the function runs.
    f.run(&f.config("steady", &Settings::default()), "1")
        .expect_code(0);
}

/// A projection reading `events` twice (a subquery over the shard's events) commits over
/// several shards, and `verify` replays every shard to the same bytes.
#[test]
fn a_projection_reading_events_twice_commits_and_verifies() {
    let f = Fixture::new(3_000, 3, 9, &["--all-edge-cases"]);
    let config = f.config(
        "twice",
        &Settings {
            sql: "SELECT e.event_id, e.stream_id, e.seq FROM events e WHERE e.seq IN (SELECT max(seq) FROM events GROUP BY stream_id)".into(),
            key: r#"["event_id"]"#,
            target_events: 1_000,
            ..Settings::default()
        },
    );
    let run = f.run(&config, "2");
    run.expect_code(0);
    let report = &run.json()["report"];
    assert_eq!(run.json()["outcome"], "committed", "{report:#}");
    assert!(
        report["totals"]["shards"].as_u64().unwrap() > 1,
        "{report:#}"
    );
    assert!(report["totals"]["rows"].as_u64().unwrap() > 0, "{report:#}");
    let verify = replayfleet(&[
        "verify",
        "--target",
        f.path("target").to_str().unwrap(),
        "--sample",
        "1",
        "--json",
    ]);
    verify.expect_code(0);
    let verified = verify.json();
    assert_eq!(verified["holds"], true, "{verified:#}");
    assert!(
        verified["verification"]["mismatches"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{verified:#}"
    );
}

/// `lineage.url` with credentials: posting fails (nothing listens), and neither the plan,
/// the run folder nor stderr (the WARN lines) ever holds the password or the user.
#[test]
fn lineage_credentials_never_reach_the_plan_or_stderr() {
    let f = Fixture::new(600, 2, 7, &[]);
    let port = closed_port();
    let config = f.config(
        "lineage-secret",
        &Settings {
            extra: format!(
                "[lineage]\nurl = \"http://lineage-user:hunter2pw@127.0.0.1:{port}/\"\n"
            ),
            ..Settings::default()
        },
    );
    let run = replayfleet_env(
        &["run", "--config", &config, "--workers", "1", "--json"],
        &[("REPLAYFLEET_LOG".into(), "warn".into())],
    );
    run.expect_code(0);
    for secret in ["hunter2pw", "lineage-user"] {
        assert!(
            !run.stderr.contains(secret),
            "stderr shows `{secret}`:\n{}",
            run.stderr
        );
        assert!(!run.stdout.contains(secret), "stdout shows `{secret}`");
    }
    // The post was tried (and failed) and said so without the credentials.
    run.stderr_names(&[
        "OpenLineage",
        &format!("http://***@127.0.0.1:{port}/api/v1/lineage"),
    ]);
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    let plan: Value = serde_json::from_slice(
        &std::fs::read(f.path(&format!("target/runs/{run_id}/plan.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        plan["lineage_url"],
        format!("http://***@127.0.0.1:{port}/"),
        "the plan keeps the URL without its credentials"
    );
    let files = files_under(&f.path("target"));
    assert!(files.len() > 3);
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("hunter2pw"),
            "{} holds the password",
            file.display()
        );
    }
    // `plan` shows the same redacted URL.
    let planned = replayfleet(&["plan", "--config", &config, "--json"]);
    planned.expect_code(0);
    assert!(!planned.stdout.contains("hunter2pw"));
    assert_eq!(
        planned.json()["plan"]["lineage_url"],
        format!("http://***@127.0.0.1:{port}/")
    );
}

/// A coordinator that cannot reach `fleet.nats_url` names the server without its
/// credentials (exit 1: an operational failure).
#[test]
fn nats_credentials_never_reach_the_coordinators_error() {
    let f = Fixture::new(200, 1, 3, &[]);
    let port = closed_port();
    let config = f.config(
        "nats-secret",
        &Settings {
            extra: format!(
                "[fleet]\nnats_url = \"nats://fleet-user:hunter2pw@127.0.0.1:{port}\"\n"
            ),
            ..Settings::default()
        },
    );
    let run = replayfleet(&["coordinator", "--config", &config]);
    run.expect_code(1)
        .stderr_names(&[&format!("nats://***@127.0.0.1:{port}")]);
    assert!(!run.stderr.contains("hunter2pw"), "{}", run.stderr);
    assert!(!run.stderr.contains("fleet-user"), "{}", run.stderr);
}

/// A 300-byte `run.name` (the run folder would be too long a file name) is refused
/// before any work, naming the key (exit 2, not "File name too long", exit 1).
#[test]
fn a_run_name_too_long_for_a_path_exits_2_naming_the_key() {
    let f = Fixture::new(200, 1, 3, &[]);
    let config = f.config("long", &Settings::default());
    let text = std::fs::read_to_string(&config).unwrap();
    let long = "n".repeat(300);
    std::fs::write(
        &config,
        text.replace("name = \"long\"", &format!("name = \"{long}\"")),
    )
    .unwrap();
    for command in ["plan", "run"] {
        let run = replayfleet(&[command, "--config", &config]);
        run.expect_code(2)
            .stderr_names(&["run.name", "long.toml", "300 bytes", "128"]);
        assert!(!run.stderr.contains("File name too long"), "{}", run.stderr);
    }
    assert!(!f.path("target/runs").exists());
}

/// Of two finalizers racing for one version, the loser's `report.json` says `refused`,
/// with no version and a failed `commit` check naming the race (docs/FORMATS.md §5).
#[test]
fn the_commit_race_losers_report_reads_refused() {
    let f = Fixture::new(1_500, 2, 41, &[]);
    let refused = Settings {
        invariants: r#"["SELECT * FROM projection WHERE events > 0"]"#,
        ..Settings::default()
    };
    let location = |path: &std::path::Path| {
        replayfleet_archive::Location::parse(path.to_str().unwrap(), None, &Default::default())
            .unwrap()
    };
    let target = replayfleet_replay::Target::new(location(&f.path("target")));
    let source = location(&f.path("events"));
    let options = replayfleet_finalizer::FinalizeOptions {
        accept: Some("race".into()),
        by: "test".into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Two finalizers started together nearly always race for one version; when the
    // first happened to commit before the second read the log, both commit: race again.
    let mut loser = None;
    for attempt in 0..4 {
        let ids: Vec<String> = ["x", "y"]
            .iter()
            .map(|side| {
                let run = f.run(&f.config(&format!("race-{attempt}-{side}"), &refused), "2");
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
        match (&one, &two) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                assert!(e.to_string().contains("lost the commit race"), "{e}");
                loser = Some(if one.is_err() {
                    ids[0].clone()
                } else {
                    ids[1].clone()
                });
                break;
            }
            (Ok(_), Ok(_)) => continue,
            other => panic!("at least one finalizer must win: {other:?}"),
        }
    }
    let loser = loser.expect("no race was lost in four tries");
    let report: Value = serde_json::from_slice(
        &std::fs::read(f.path(&format!("target/runs/{loser}/report.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(report["outcome"], "refused", "{report:#}");
    assert_eq!(report["version"], Value::Null, "{report:#}");
    let commit = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "commit")
        .unwrap_or_else(|| panic!("no commit check: {report:#}"));
    assert_eq!(commit["passed"], false);
    assert_eq!(commit["class"], "integrity");
    assert!(
        commit["detail"]
            .as_str()
            .unwrap()
            .contains("lost the commit race"),
        "{commit:#}"
    );
    let history = f.history("target");
    assert!(
        history.iter().all(|c| c["run_id"] != loser.as_str()),
        "the loser committed nothing"
    );
}

/// A receiver that answers 201 to every request and keeps each one's `Authorization`
/// header (empty when there is none).
fn authorization_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let keep = std::sync::Arc::clone(&keep);
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut length, mut authorization) = (0, String::new());
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            } else if name.eq_ignore_ascii_case("authorization") {
                                authorization = value.trim().to_owned();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    keep.lock().unwrap().push(authorization);
                    writer
                        .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (port, seen)
}

/// The credentials of `lineage.url` are still what the coordinator posts with (as
/// HTTP basic authentication), though no file or message shows them.
#[test]
fn lineage_credentials_are_still_used_to_post() {
    let (port, seen) = authorization_receiver();
    let f = Fixture::new(400, 1, 13, &[]);
    let config = f.config(
        "lineage-auth",
        &Settings {
            extra: format!("[lineage]\nurl = \"http://lineage-user:hunter2pw@127.0.0.1:{port}\"\n"),
            ..Settings::default()
        },
    );
    let run = f.run(&config, "1");
    run.expect_code(0);
    assert!(!run.stderr.contains("hunter2pw"), "{}", run.stderr);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    // base64("lineage-user:hunter2pw")
    assert!(
        seen.iter()
            .all(|a| a == "Basic bGluZWFnZS11c2VyOmh1bnRlcjJwdw=="),
        "{seen:?}"
    );
}

/// A projection that runs too long (it counts a series of 10^12 rows) is stopped at
/// `limits.projection_time`: the shard fails naming the setting, nothing is committed,
/// and the run ends well before the query would.
#[test]
fn a_projection_past_its_time_budget_fails_its_shard_naming_the_setting() {
    let f = Fixture::new(600, 2, 5, &[]);
    let slow = f.config(
        "slow",
        &Settings {
            // counts a series of 10^12 rows before it can filter a single event
            sql: "SELECT stream_id AS account_id, count(*) AS events FROM events WHERE seq < (SELECT count(*) FROM generate_series(1, 1000000000000)) GROUP BY stream_id".into(),
            extra: "[limits]\nprojection_time = \"2s\"\n[fleet]\nmax_attempts = 1\n".into(),
            ..Settings::default()
        },
    );
    let out = f.run(&slow, "1");
    assert_ne!(out.code, 0, "{}", out.stderr);
    out.stderr_names(&["limits.projection_time", "time budget of 2s"]);
    assert!(f.history("target").is_empty());
    let bad = f.config(
        "bad-budget",
        &Settings {
            extra: "[limits]\nprojection_time = \"soon\"\n".into(),
            ..Settings::default()
        },
    );
    replayfleet(&["plan", "--config", &bad])
        .expect_code(2)
        .stderr_names(&["limits.projection_time", "`soon`"]);
}

/// Puts `prefix` before the jq program of `AccountOpened` version 3 (every generated
/// archive has older versions of it); returns the file and its text before.
fn prefix_opened_jq(f: &Fixture, prefix: &str) -> (std::path::PathBuf, String) {
    let opened = f.path("contracts/account_opened.yaml");
    let fixed = std::fs::read_to_string(&opened).unwrap();
    let changed = fixed.replace("- jq: '{holder:", &format!("- jq: '{prefix}{{holder:"));
    assert_ne!(changed, fixed);
    std::fs::write(&opened, changed).unwrap();
    (opened, fixed)
}

/// A jq step that builds a gigabyte for one event (a string repeated 10^8 times: one
/// operation, no iteration) ends the process with exit 2 naming the step before the
/// allocation; nothing is committed. On the code before, the run allocated it.
#[test]
fn a_jq_step_building_past_its_memory_ends_the_run_with_exit_2_naming_the_step() {
    let f = Fixture::new(300, 2, 5, &[]);
    prefix_opened_jq(&f, "(.owner_name * 100000000 | length) as $n | ");
    let config = f.config("hungry-jq", &Settings::default());
    let out = f.run(&config, "2");
    assert_eq!(out.code, 2, "{}", out.stderr);
    out.stderr_names(&[
        "account_opened.yaml",
        "version 3, step 1 (jq)",
        "built more than 256 MiB for one event",
        "nothing is committed",
    ]);
    assert!(f.history("target").is_empty(), "nothing is committed");
}

/// A jq step whose nested traversals (`.[]`, which the iteration budget does not meter)
/// would run on one event for hours: past `limits.step_time` the watchdog ends the process
/// with exit 2 naming the step and the setting; nothing is committed, and the run with the
/// program fixed commits. On the code before the watchdog this run did not end.
#[test]
fn a_jq_step_past_its_time_budget_ends_the_run_with_exit_2_naming_the_step() {
    let f = Fixture::new(300, 2, 5, &[]);
    // A thousand values iterated three levels deep: 10^9 values from 1,000 iterations.
    let (opened, fixed) = prefix_opened_jq(
        &f,
        "([range(1000)] as $a | [$a[] as $x | $a[] as $y | $a[]] | length) as $n | ",
    );
    let config = f.config(
        "endless",
        &Settings {
            extra: "[limits]\nstep_time = \"1s\"\n".into(),
            ..Settings::default()
        },
    );
    let started = std::time::Instant::now();
    let out = f.run(&config, "2");
    eprintln!("exit {} after {:?}", out.code, started.elapsed());
    assert_eq!(out.code, 2, "{}", out.stderr);
    out.stderr_names(&[
        "account_opened.yaml",
        "version 3, step 1 (jq)",
        "more than 1s (`limits.step_time`)",
        "nothing is committed",
    ]);
    assert!(f.history("target").is_empty(), "nothing is committed");
    std::fs::write(&opened, &fixed).unwrap();
    f.run(&config, "2").expect_code(0);
    assert_eq!(f.history("target").len(), 1);
    let bad = f.config(
        "bad-step-time",
        &Settings {
            extra: "[limits]\nstep_time = \"10ms\"\n".into(),
            ..Settings::default()
        },
    );
    replayfleet(&["plan", "--config", &bad])
        .expect_code(2)
        .stderr_names(&["limits.step_time", "at least 1s"]);
}

/// A projection whose state outgrows its memory pool (an ungrouped `array_agg` of every
/// event 400 times: state that DataFusion cannot spill) fails its shard with exit 1
/// naming `limits.memory`, on the first attempt (retrying cannot help); nothing is
/// committed, and no spill file is left in `limits.spill_dir`.
#[test]
fn a_projection_larger_than_its_memory_pool_fails_naming_the_limit() {
    let f = Fixture::new(5_000, 1, 5, &[]);
    let spill = f.path("spill");
    std::fs::create_dir_all(&spill).unwrap();
    let hungry = f.config(
        "hungry",
        &Settings {
            sql: "SELECT 'all' AS account_id, cardinality(array_agg(e.payload)) AS events FROM events e CROSS JOIN (SELECT * FROM unnest(range(0, 400))) v".into(),
            extra: format!(
                "[limits]\nmemory = \"64MiB\"\nspill_dir = \"{}\"\n[fleet]\nmax_attempts = 3\n",
                spill.display()
            ),
            ..Settings::default()
        },
    );
    let out = f.run(&hungry, "1");
    assert_eq!(out.code, 1, "{}", out.stderr);
    out.stderr_names(&[
        "Resources exhausted",
        "raise `limits.memory`",
        "after 1 attempts",
    ]);
    assert!(f.history("target").is_empty(), "nothing is committed");
    assert_eq!(files_under(&spill), Vec::<std::path::PathBuf>::new());
}

/// A projection that asks a function to build more than a value may (`repeat` of every
/// stream id ten million times: ~110 MB per row, gigabytes per batch, none of it in the
/// memory pool's accounts) fails its shard naming the function and the bound, on its
/// first attempt; nothing is committed. Without the guard the shard allocated until the
/// machine ran out.
#[test]
fn a_projection_building_a_value_too_large_fails_naming_the_function() {
    let f = Fixture::new(400, 1, 5, &[]);
    let greedy = f.config(
        "greedy",
        &Settings {
            sql: "SELECT stream_id AS account_id, max(length(repeat(stream_id, 10000000))) AS events FROM events GROUP BY stream_id".into(),
            extra: "[fleet]\nmax_attempts = 3\n".into(),
            ..Settings::default()
        },
    );
    let out = f.run(&greedy, "1");
    assert_eq!(out.code, 1, "{}", out.stderr);
    out.stderr_names(&[
        "repeat would build a value of up to",
        "more than the 16.0 MiB one call may build",
        "after 1 attempts",
    ]);
    assert!(f.history("target").is_empty(), "nothing is committed");
}

/// A data page corrupted behind an intact footer: `inventory` (footers only) passes;
/// `inventory --verify` reads every page and exits 2 naming the segment, and a clean
/// archive verifies with exit 0.
#[test]
fn inventory_verify_reads_every_page_and_names_a_corrupt_segment() {
    let f = Fixture::new(2_000, 2, 5, &[]);
    let events = f.path("events");
    let source = events.to_str().unwrap();
    let clean = replayfleet(&["inventory", "--source", source, "--sample", "0", "--verify"]);
    clean
        .expect_code(0)
        .stderr_names(&["verified: every page of", "2,000 rows decoded"]);

    let mut segments: Vec<_> = files_under(&events)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    segments.sort();
    let victim = &segments[0];
    let bytes = std::fs::read(victim).unwrap();
    // Flip 64 bytes in the middle of the `payload` column's pages; the footer stays as
    // it was. (Flipped bytes in a column of fixed-width values, stored raw, would read
    // as other values: Parquet pages carry no checksum unless the writer adds one.)
    let (start, size) = {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
        let row_group = reader.metadata().row_group(0);
        let column = (0..row_group.num_columns())
            .map(|c| row_group.column(c))
            .find(|c| c.column_path().string() == "payload")
            .unwrap();
        let start = column
            .dictionary_page_offset()
            .unwrap_or(column.data_page_offset()) as usize;
        (start, column.compressed_size() as usize)
    };
    let name = damage(victim, &events, bytes, start + size / 2);

    replayfleet(&["inventory", "--source", source, "--sample", "0"]).expect_code(0);
    replayfleet(&["inventory", "--source", source, "--sample", "0", "--verify"])
        .expect_code(2)
        .stderr_names(&[&name]);

    // A run meets it when its plan samples the segment's first rows: exit 2 naming it.
    let config = f.config("corrupt", &Settings::default());
    f.run(&config, "2").expect_code(2).stderr_names(&[&name]);
    assert!(
        files_under(&f.path("target/_delta_log")).is_empty(),
        "nothing is committed"
    );
}

/// A corrupt page past the rows the plan samples is met by the shard that reads it: the
/// shard fails on its first attempt (no retry can help) and the run exits 2 naming the
/// segment — it exited 1, "a shard out of attempts", as for a machine's failure.
#[test]
fn a_corrupt_page_met_by_a_shard_fails_the_run_with_exit_2_naming_the_segment() {
    // One segment of 30,000 rows: its payload column spans several pages.
    let f = Fixture::new(30_000, 1, 5, &["--segment-rows", "30000"]);
    let events = f.path("events");
    let victim = files_under(&events)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    // Where the payload's last page is, from the offset index.
    let (at, size, pages) = {
        use parquet::file::{
            reader::{FileReader, SerializedFileReader},
            serialized_reader::ReadOptionsBuilder,
        };
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let reader =
            SerializedFileReader::new_with_options(bytes::Bytes::from(bytes.clone()), options)
                .unwrap();
        let row_group = reader.metadata().row_group(0);
        let c = (0..row_group.num_columns())
            .find(|c| row_group.column(*c).column_path().string() == "payload")
            .unwrap();
        let index = reader.metadata().offset_index().expect("an offset index");
        let pages = index[0][c].page_locations();
        let last = pages.last().unwrap();
        (
            last.offset as usize,
            last.compressed_page_size as usize,
            pages.len(),
        )
    };
    assert!(pages >= 2, "the payload has {pages} pages");
    // Flip bytes in the middle of the last page, far from the rows the plan samples.
    let name = damage(&victim, &events, bytes, at + size / 2);
    let config = f.config("corrupt", &Settings::default());
    f.run(&config, "2")
        .expect_code(2)
        .stderr_names(&[&name, "failed after 1 attempts"]);
    assert!(
        files_under(&f.path("target/_delta_log")).is_empty(),
        "nothing is committed"
    );
}

/// Rewrites segment `victim` uncompressed, without dictionaries or payload statistics,
/// and with the payloads of `rows` replaced by markers that are then patched into bytes
/// that are not UTF-8 (an 0xFF inside the JSON text). With `drop_rows`, the rows are
/// removed instead (the same archive without them, to compare with).
fn rewrite_with_bad_payloads(victim: &std::path::Path, rows: &[usize], drop_rows: bool) {
    use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
    use parquet::{
        arrow::ArrowWriter,
        basic::Compression,
        file::properties::{EnabledStatistics, WriterProperties},
        schema::types::ColumnPath,
    };
    let batch = crate::support::read_parquet_batch(victim);
    let schema = batch.schema();
    let payload_at = schema.index_of("payload").unwrap();
    let batch = if drop_rows {
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(!rows.contains(&i)))
            .collect();
        arrow::compute::filter_record_batch(&batch, &keep).unwrap()
    } else {
        let old = batch.column(payload_at).as_string::<i32>();
        let new: StringArray = (0..batch.num_rows())
            .map(|i| {
                if let Some(k) = rows.iter().position(|r| *r == i) {
                    Some(format!("{{\"note\":\"@@BAD{k}@@\"}}"))
                } else {
                    (!old.is_null(i)).then(|| old.value(i).to_owned())
                }
            })
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[payload_at] = std::sync::Arc::new(new);
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_column_statistics_enabled(ColumnPath::from("payload"), EnabledStatistics::None)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    if !drop_rows {
        for k in 0..rows.len() {
            let marker = format!("@@BAD{k}@@");
            let at = bytes
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
                .expect("the marker is in the file");
            bytes[at] = 0xFF;
            bytes[at + 1] = 0xFE;
        }
    }
    std::fs::write(victim, bytes).unwrap();
}

/// A payload whose bytes are not UTF-8 used to stop the whole run (exit 1) while
/// `inventory` called the file fine. Now the row is an `undecodable` anomaly with its
/// policy: `halt` (the default) stops the run naming the segment, row and column (exit 3,
/// nothing committed); `quarantine` sets the rows aside with their raw bytes and
/// commits what a run over the archive without them commits; `inventory --verify`
/// counts them.
#[test]
fn a_payload_that_is_not_utf8_is_an_undecodable_anomaly_with_its_policy() {
    let bad_rows = [3usize, 17];
    let victim_of = |f: &Fixture| {
        let mut segments: Vec<_> = files_under(&f.path("events"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        segments.sort();
        segments.remove(0)
    };
    let f = Fixture::new(1_200, 2, 9, &[]);
    let victim = victim_of(&f);
    rewrite_with_bad_payloads(&victim, &bad_rows, false);
    let name = victim
        .strip_prefix(f.path("events"))
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();

    // The default policy halts, naming the kind, the segment, the column and the row.
    let halt = f.config("halt", &Settings::default());
    f.run(&halt, "2").expect_code(3).stderr_names(&[
        "undecodable",
        &name,
        "column `payload` row 3",
        "not UTF-8",
    ]);
    assert!(
        !f.path("target/_delta_log").exists()
            || files_under(&f.path("target/_delta_log")).is_empty(),
        "nothing is committed"
    );

    // inventory --verify reads the segment and counts the values.
    replayfleet(&[
        "inventory",
        "--source",
        f.path("events").to_str().unwrap(),
        "--sample",
        "0",
        "--verify",
    ])
    .expect_code(0)
    .stderr_names(&["2 values are not UTF-8", &name, "row 17"]);

    // Quarantined: set aside with their raw bytes, the rest committed.
    let quarantine = f.config(
        "quarantine",
        &Settings {
            target: "target-q",
            anomalies: r#"invalid_payload = "quarantine"
unknown_type = "quarantine"
upcast_failed = "quarantine"
undecodable = "quarantine"
max_quarantined_ratio = 0.2"#,
            ..Settings::default()
        },
    );
    let run = f.run(&quarantine, "2");
    run.expect_code(0);
    let json = run.json();
    assert_eq!(json["outcome"], "committed", "{json:#}");
    let totals = &json["report"]["totals"];
    assert_eq!(totals["anomalies"]["undecodable"], 2, "{json:#}");
    let run_id = json["run_id"].as_str().unwrap();
    let mut raw = Vec::new();
    for file in files_under(&f.path(&format!("target-q/runs/{run_id}/anomalies"))) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            use arrow::array::{Array, AsArray};
            let batch = batch.unwrap();
            let kind = batch.column_by_name("kind").unwrap().as_string::<i32>();
            let bytes = batch.column_by_name("raw").unwrap().as_binary::<i32>();
            let segment = batch.column_by_name("segment").unwrap().as_string::<i32>();
            for i in 0..batch.num_rows() {
                if kind.value(i) == "undecodable" {
                    assert_eq!(segment.value(i), name);
                    assert!(!bytes.is_null(i));
                    raw.push(bytes.value(i).to_vec());
                }
            }
        }
    }
    raw.sort();
    assert_eq!(
        raw,
        vec![
            b"{\"note\":\"\xff\xfeBAD0@@\"}".to_vec(),
            b"{\"note\":\"\xff\xfeBAD1@@\"}".to_vec()
        ]
    );

    // The same archive without those rows commits the same projection.
    let g = Fixture::new(1_200, 2, 9, &[]);
    rewrite_with_bad_payloads(&victim_of(&g), &bad_rows, true);
    let without = g.config("quarantine", &Settings::default());
    let clean = g.run(&without, "2");
    clean.expect_code(0);
    assert_eq!(
        clean.json()["report"]["fingerprint"],
        json["report"]["fingerprint"],
        "the undecodable rows are the only difference"
    );
}
