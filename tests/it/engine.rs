//! The replay engine (issue: columnar and on every core inside a shard): a shard's
//! output is the same bytes whatever the threads, the buckets its streams are folded in,
//! and whether its rows spilled to disk; duplicates across buckets, projections that
//! read `events` twice, and projections that are not stream-local.

use std::sync::Arc;

use arrow::{
    array::{
        ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    },
    datatypes::{DataType, Field, Schema, TimeUnit},
};
use serde_json::Value;

use crate::replay::{Fixture, Settings};
use crate::support::replayfleet_env;

/// A run's outcome: the fingerprint and the SHA-256 of every output file (part files,
/// then anomalies files), in shard order, from the lineage manifests.
fn outputs(f: &Fixture, target: &str, run: &crate::support::Run) -> (String, Vec<String>) {
    let json = run.json();
    let run_id = json["run_id"].as_str().unwrap_or_default().to_owned();
    let fingerprint = json["report"]["fingerprint"].as_str().unwrap().to_owned();
    let shards = f.path(&format!("{target}/runs/{run_id}/shards"));
    let mut names: Vec<_> = std::fs::read_dir(&shards)
        .unwrap_or_else(|e| panic!("{}: {e}\n{json:#}", shards.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut digests = Vec::new();
    for shard in names {
        let lineage: Value =
            serde_json::from_slice(&std::fs::read(shard.join("lineage.json")).unwrap()).unwrap();
        for o in lineage["outputs"].as_array().unwrap() {
            digests.push(o["sha256"].as_str().unwrap().to_owned());
        }
        if let Some(a) = lineage["anomalies_file"].as_object() {
            digests.push(a["sha256"].as_str().unwrap().to_owned());
        }
    }
    (fingerprint, digests)
}

/// `replayfleet run` with `--threads` and a bucket size.
fn run(config: &str, threads: &str, bucket_rows: &str) -> crate::support::Run {
    let out = replayfleet_env(
        &[
            "run",
            "--config",
            config,
            "--workers",
            "1",
            "--threads",
            threads,
            "--json",
        ],
        &[("REPLAYFLEET_BUCKET_ROWS".into(), bucket_rows.into())],
    );
    out.expect_code(0);
    out
}

#[test]
fn threads_buckets_and_spilling_do_not_change_a_byte() {
    let f = Fixture::new(12_000, 3, 11, &["--all-edge-cases"]);
    let one_shard = |name: &str, target: &'static str, extra: &str| {
        f.config(
            name,
            &Settings {
                target,
                target_events: 1_000_000,
                extra: extra.to_owned(),
                ..Settings::default()
            },
        )
    };
    // One bucket on one thread: the reference.
    let reference = run(&one_shard("reference", "ref", ""), "1", "1000000000");
    let expected = outputs(&f, "ref", &reference);
    assert!(
        expected.1.len() >= 2,
        "part file and anomalies file: {expected:?}"
    );
    for (threads, target) in [("1", "t1"), ("2", "t2"), ("4", "t4")] {
        let name = format!("threads-{threads}");
        let out = run(&one_shard(&name, target, ""), threads, "700");
        assert_eq!(
            outputs(&f, target, &out),
            expected,
            "{threads} threads, buckets of 700 rows"
        );
    }
}

#[test]
fn a_shard_larger_than_its_memory_spills_and_gives_the_same_bytes() {
    let f = Fixture::new(350_000, 2, 5, &["--all-edge-cases"]);
    let config = |name: &str, target: &'static str, extra: &str| {
        f.config(
            name,
            &Settings {
                target,
                target_events: 10_000_000,
                extra: extra.to_owned(),
                ..Settings::default()
            },
        )
    };
    let roomy = run(&config("roomy", "roomy", ""), "2", "20000");
    // 64 MiB cannot hold this shard's rows: they spill, as they are (the default) and
    // LZ4-compressed (`limits.spill_compression`), and the outputs do not change.
    for (name, compression) in [("tight", "none"), ("tight-lz4", "lz4")] {
        let tight = replayfleet_env(
            &[
                "run",
                "--config",
                &config(
                    name,
                    if compression == "none" {
                        "tight"
                    } else {
                        "tight-lz4"
                    },
                    &format!("[limits]\nmemory = \"64MiB\"\nspill_compression = \"{compression}\""),
                ),
                "--workers",
                "1",
                "--threads",
                "2",
                "--json",
            ],
            &[
                ("REPLAYFLEET_BUCKET_ROWS".into(), "20000".into()),
                ("REPLAYFLEET_LOG".into(), "replayfleet_replay=info".into()),
            ],
        );
        tight.expect_code(0);
        assert!(
            tight.stderr.contains("rows spilled to disk"),
            "64 MiB must not hold this shard's rows: {}",
            tight.stderr
        );
        assert_eq!(outputs(&f, "roomy", &roomy), outputs(&f, name, &tight));
    }

    // The spill folder (`limits.spill_dir`) full: a 1 MiB tmpfs, mounted in a user and
    // mount namespace of the run's own (`unshare -rm`, no privilege needed). Exit 1
    // naming the folder and the limits to raise, nothing committed, no spill file left.
    let spill = f.path("small-tmpfs");
    std::fs::create_dir_all(&spill).unwrap();
    let listing = f.path("small-tmpfs-listing");
    let full = config(
        "full",
        "full",
        &format!(
            "[limits]\nmemory = \"64MiB\"\nspill_dir = \"{}\"",
            spill.display()
        ),
    );
    let script = r#"mount -t tmpfs -o size=1m tmpfs "$SPILL" || exit 99
"$@"; rc=$?
ls -A "$SPILL" > "$LISTING"
exit $rc"#;
    let out = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .arg(crate::support::bin())
        .args(["run", "--config", &full, "--workers", "1", "--threads", "2"])
        .env("SPILL", &spill)
        .env("LISTING", &listing)
        .env("REPLAYFLEET_BUCKET_ROWS", "20000")
        .env_remove("RUST_LOG")
        .output()
        .expect("unshare (util-linux) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "cannot mount a tmpfs in a namespace of our own: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        format!("the spill folder `{}` is full", spill.display()),
        "limits.spill_dir".to_owned(),
        "limits.memory".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "{needle}: {stderr}");
    }
    assert!(
        !f.path("full/_delta_log").exists()
            || std::fs::read_dir(f.path("full/_delta_log"))
                .unwrap()
                .next()
                .is_none(),
        "nothing is committed"
    );
    assert_eq!(
        std::fs::read_to_string(&listing).unwrap(),
        "",
        "spill files are removed when the shard fails"
    );

    // More spilled than `limits.spill_max` allows: exit 1 naming the setting (the spill
    // had no bound but the disk's), nothing committed, the spill folder left empty.
    let capped_dir = f.path("capped-spill");
    std::fs::create_dir_all(&capped_dir).unwrap();
    let capped = replayfleet_env(
        &[
            "run",
            "--config",
            &config(
                "capped",
                "capped",
                &format!(
                    "[limits]\nmemory = \"64MiB\"\nspill_max = \"1MiB\"\nspill_dir = \"{}\"",
                    capped_dir.display()
                ),
            ),
            "--workers",
            "1",
            "--threads",
            "2",
        ],
        &[("REPLAYFLEET_BUCKET_ROWS".into(), "20000".into())],
    );
    capped
        .expect_code(1)
        .stderr_names(&["limits.spill_max", "limits.memory"]);
    assert!(
        !f.path("capped/_delta_log").exists(),
        "nothing is committed"
    );
    assert_eq!(
        std::fs::read_dir(&capped_dir).unwrap().count(),
        0,
        "spill files are removed when the shard fails"
    );
}

/// Writes a segment of a few accounts into partition 0 whose event ids repeat across
/// streams (`dup-*`) and inside one stream.
fn write_shared_ids(f: &Fixture) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("schema_version", DataType::Int32, false),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("payload", DataType::Utf8, false),
    ]));
    let opened = r#"{"holder": {"name": "Shared Ltd", "kind": "company"}, "currency": "EUR"}"#;
    let deposit = |cents: i64| format!(r#"{{"amount_cents": {cents}, "currency": "EUR"}}"#);
    let mut rows: Vec<(String, String, i64, &str, i32, String)> = Vec::new();
    for s in 0..40 {
        let stream = format!("shared-{s:02}");
        let base = 8_000_000 + s * 10;
        rows.push((
            format!("{stream}-open"),
            stream.clone(),
            base,
            "AccountOpened",
            3,
            opened.into(),
        ));
        rows.push((
            format!("{stream}-d1"),
            stream.clone(),
            base + 1,
            "Deposited",
            2,
            deposit(100 + s),
        ));
    }
    // The same id in two streams: the copy with the lower seq stays, the other conflicts.
    rows.push((
        "dup-a".into(),
        "shared-03".into(),
        8_000_035,
        "Deposited",
        2,
        deposit(7),
    ));
    rows.push((
        "dup-a".into(),
        "shared-17".into(),
        8_000_005,
        "Deposited",
        2,
        deposit(9),
    ));
    // The same id three times: twice in one stream (an exact resend), once in another.
    rows.push((
        "dup-b".into(),
        "shared-21".into(),
        8_000_215,
        "Deposited",
        2,
        deposit(5),
    ));
    rows.push((
        "dup-b".into(),
        "shared-21".into(),
        8_000_395,
        "Deposited",
        2,
        r#"{"currency": "EUR", "amount_cents": 5}"#.into(),
    ));
    rows.push((
        "dup-b".into(),
        "shared-30".into(),
        8_000_305,
        "Deposited",
        2,
        deposit(5),
    ));
    let n = rows.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
        Arc::new(Int32Array::from(vec![0; n])),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.4))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| 1_700_000_000_000_000 + r.2),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.5))),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    let path = f.path("events/partition=0/shared.parquet");
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn copies_of_an_event_id_in_different_streams_conflict_in_any_bucket() {
    let f = Fixture::new(3_000, 1, 21, &[]);
    write_shared_ids(&f);
    let config = |name: &str, target: &'static str| {
        f.config(
            name,
            &Settings {
                target,
                target_events: 1_000_000,
                anomalies: r#"invalid_payload = "quarantine"
unknown_type = "quarantine"
upcast_failed = "quarantine"
conflicting_duplicate = "quarantine"
max_quarantined_ratio = 0.2"#,
                ..Settings::default()
            },
        )
    };
    let whole = run(&config("whole", "whole"), "1", "1000000000");
    let split = run(&config("split", "split"), "2", "50");
    assert_eq!(outputs(&f, "whole", &whole), outputs(&f, "split", &split));
    let totals = &split.json()["report"]["totals"];
    assert_eq!(
        totals["anomalies"]["conflicting_duplicate"], 2,
        "{totals:#}"
    );
    assert_eq!(totals["duplicates_dropped"], 1, "{totals:#}");
    // The kept copies: dup-a in shared-17 (seq 8,000,005), dup-b in shared-21.
    let rows = crate::support::replayfleet(&[
        "show",
        "--target",
        f.path("split").to_str().unwrap(),
        "--limit",
        "100000",
        "--json",
    ]);
    rows.expect_code(0);
    let rows = rows.json();
    let balance = |account: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["account_id"] == account)
            .map(|r| r["balance_cents"].as_i64().unwrap())
    };
    assert_eq!(balance("shared-17"), Some(100 + 17 + 9));
    assert_eq!(balance("shared-03"), Some(100 + 3));
    assert_eq!(balance("shared-21"), Some(100 + 21 + 5));
    assert_eq!(balance("shared-30"), Some(100 + 30));
}

#[test]
fn projections_reading_events_twice_or_across_streams_replay_the_same_in_any_bucket() {
    let f = Fixture::new(6_000, 2, 3, &["--all-edge-cases"]);
    let cases: [(&str, &'static str, &'static str, &'static str); 3] = [
        // Not stream-local: the IN list holds other streams' seqs (one bucket).
        (
            "SELECT e.event_id, e.stream_id, e.seq FROM events e WHERE e.seq IN (SELECT max(seq) FROM events GROUP BY stream_id)",
            r#"["event_id"]"#,
            "q0-whole",
            "q0-split",
        ),
        // Stream-local: the subquery is correlated on the stream (many buckets).
        (
            "SELECT e.stream_id AS account_id, e.seq FROM events e WHERE e.seq = (SELECT max(s.seq) FROM events s WHERE s.stream_id = e.stream_id)",
            r#"["account_id"]"#,
            "q1-whole",
            "q1-split",
        ),
        // A rollup across streams (one bucket).
        (
            "SELECT currency, count(*) AS n FROM events WHERE currency IS NOT NULL GROUP BY currency",
            r#"["currency"]"#,
            "q2-whole",
            "q2-split",
        ),
    ];
    for (sql, key, whole_t, split_t) in cases {
        let config = |name: &str, target: &'static str| {
            f.config(
                name,
                &Settings {
                    target,
                    target_events: 1_000_000,
                    sql: sql.to_owned(),
                    key,
                    ..Settings::default()
                },
            )
        };
        let whole = run(&config(whole_t, whole_t), "1", "1000000000");
        let split = run(&config(split_t, split_t), "2", "100");
        let rows = whole.json()["report"]["totals"]["rows"].as_u64().unwrap();
        assert!(rows > 0, "{sql}: {}", whole.stdout);
        assert_eq!(
            outputs(&f, whole_t, &whole),
            outputs(&f, split_t, &split),
            "{sql}"
        );
    }
}

/// `run --json` of `config` with 2 threads, buckets of `bucket_rows` rows and more
/// environment variables.
fn run_with(config: &str, bucket_rows: &str, env: &[(&str, &str)]) -> crate::support::Run {
    let mut vars = vec![("REPLAYFLEET_BUCKET_ROWS".to_owned(), bucket_rows.to_owned())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let out = replayfleet_env(
        &[
            "run",
            "--config",
            config,
            "--workers",
            "2",
            "--threads",
            "2",
            "--json",
        ],
        &vars,
    );
    out.expect_code(0);
    out
}

#[test]
fn a_partition_split_into_sub_shards_gives_the_unsplit_answer() {
    // One partition: ~6,000 generated events with every edge case, plus ids shared by
    // streams (which land in different sub-shards) and seqs with holes between them.
    let f = Fixture::new(6_000, 1, 23, &["--all-edge-cases"]);
    write_shared_ids(&f);
    let config = |name: &str, target: &'static str, target_events: u64, window: &'static str| {
        f.config(
            name,
            &Settings {
                target,
                target_events,
                window,
                anomalies: r#"invalid_payload = "quarantine"
unknown_type = "quarantine"
unknown_version = "quarantine"
no_upcast_path = "quarantine"
upcast_failed = "quarantine"
conflicting_duplicate = "quarantine"
gap = "quarantine"
max_quarantined_ratio = 0.5"#,
                ..Settings::default()
            },
        )
    };
    let totals = |run: &crate::support::Run| {
        // Shards, and the part files they write, are what splitting changes.
        let mut t = run.json()["report"]["totals"].clone();
        for field in ["shards", "segments", "bytes"] {
            t.as_object_mut().unwrap().remove(field);
        }
        t
    };
    // (case, `source.contiguous_seq`, window)
    let cases = [
        ("plain", false, ""),
        ("gaps", true, ""),
        ("window", false, "[window]\nuntil_seq = 8000200"),
    ];
    for (case, contiguous, window) in cases {
        let (whole_target, split_target): (&'static str, &'static str) = match case {
            "plain" => ("plain-whole", "plain-split"),
            "gaps" => ("gaps-whole", "gaps-split"),
            _ => ("window-whole", "window-split"),
        };
        let env: &[(&str, &str)] = if contiguous {
            &[("REPLAYFLEET_SOURCE__CONTIGUOUS_SEQ", "true")]
        } else {
            &[]
        };
        let whole = run_with(
            &config(whole_target, whole_target, 1_000_000, window),
            "1000000000",
            env,
        );
        let split = run_with(
            &config(split_target, split_target, 1_500, window),
            "300",
            env,
        );
        let (w, s) = (whole.json(), split.json());
        assert_eq!(
            w["report"]["fingerprint"], s["report"]["fingerprint"],
            "{case}: {:#}\n{:#}",
            w["report"]["totals"], s["report"]["totals"]
        );
        assert_eq!(totals(&whole), totals(&split), "{case}");
        assert_eq!(w["report"]["totals"]["shards"], 1, "{case}");
        let shards = s["report"]["totals"]["shards"].as_u64().unwrap();
        assert!(shards >= 4, "{case}: {:#}", s["report"]["totals"]);
        let t = totals(&split);
        // dup-a and dup-b conflict across streams; the window ends before dup-b's copies.
        let conflicts = if case == "window" { 1 } else { 2 };
        assert_eq!(
            t["anomalies"]["conflicting_duplicate"], conflicts,
            "{case}: {t:#}"
        );
        if case == "gaps" {
            assert!(t["anomalies"]["gap"].as_u64().unwrap() > 40, "{t:#}");
        }
        // Every sub-shard's manifest names its share; the shares cover the partition.
        let run_id = s["run_id"].as_str().unwrap();
        let plan: Value = serde_json::from_slice(
            &std::fs::read(f.path(&format!("{split_target}/runs/{run_id}/plan.json"))).unwrap(),
        )
        .unwrap();
        let mut read = 0;
        for (i, shard) in plan["shards"].as_array().unwrap().iter().enumerate() {
            assert_eq!(shard["split"]["bucket"], i, "{shard:#}");
            assert_eq!(shard["split"]["of"], shards, "{shard:#}");
            let lineage: Value = serde_json::from_slice(
                &std::fs::read(f.path(&format!(
                    "{split_target}/runs/{run_id}/shards/{}/lineage.json",
                    shard["id"].as_str().unwrap()
                )))
                .unwrap(),
            )
            .unwrap();
            assert_eq!(lineage["split"], shard["split"]);
            read += lineage["applied"]["events_read"].as_u64().unwrap();
            // The shard's OpenLineage child run names its share too.
            let event: Value = serde_json::from_slice(
                &std::fs::read(f.path(&format!(
                    "{split_target}/runs/{run_id}/openlineage/{}-COMPLETE.json",
                    shard["id"].as_str().unwrap()
                )))
                .unwrap(),
            )
            .unwrap();
            let applied = &event["run"]["facets"]["replayfleet_applied"];
            assert_eq!(applied["split"], shard["split"], "{applied:#}");
            assert_eq!(applied["partitions"], serde_json::json!([0]));
        }
        assert_eq!(read, t["events_read"].as_u64().unwrap(), "{case}");
    }
    // `explain` finds a row's events in its sub-shard: shared-17 kept dup-a (seq
    // 8,000,005), whose other copy is in shared-03's share.
    let explained = crate::support::replayfleet(&[
        "explain",
        "--target",
        f.path("plain-split").to_str().unwrap(),
        "--key",
        "account_id=shared-17",
        "--json",
    ]);
    explained.expect_code(0);
    let e = explained.json();
    assert_eq!(e["row"]["balance_cents"], 100 + 17 + 9, "{e:#}");
    let ids: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| ev["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dup-a", "shared-17-open", "shared-17-d1"], "{e:#}");
    // The committed split run verifies, sub-shards replayed again included.
    let verify = crate::support::replayfleet(&[
        "verify",
        "--target",
        f.path("plain-split").to_str().unwrap(),
        "--sample",
        "1.0",
        "--json",
    ]);
    verify.expect_code(0);
}
