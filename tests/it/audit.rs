//! The audit commands end to end (issue: the audit trail): `verify` re-checks a commit
//! from the target and the archive alone.

use crate::{
    replay::{Fixture, Settings},
    schemas::files_under,
    support::{finalize, replayfleet},
};

/// A fixture with one committed version in `target`; returns the fixture and the target
/// path as a string.
fn committed(events: u64, partitions: u32, seed: u64) -> (Fixture, String) {
    let f = Fixture::new(events, partitions, seed, &["--all-edge-cases"]);
    f.run(
        &f.config(
            "audited",
            &Settings {
                target_events: 700,
                ..Settings::default()
            },
        ),
        "2",
    )
    .expect_code(0);
    let target = f.path("target").to_str().unwrap().to_owned();
    (f, target)
}

fn verify(target: &str, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["verify", "--target", target];
    args.extend_from_slice(extra);
    replayfleet(&args)
}

#[test]
fn verify_holds_for_a_clean_commit_replaying_every_shard() {
    let (f, target) = committed(2_000, 3, 51);
    let out = verify(&target, &["--sample", "1", "--json"]);
    out.expect_code(0);
    let json = out.json();
    assert_eq!(json["holds"], true, "{json:#}");
    let v = &json["verification"];
    let commit = &f.history("target")[0];
    let shards = commit["totals"]["shards"].as_u64().unwrap();
    assert!(shards > 1, "{commit:#}");
    assert_eq!(v["rerun"].as_array().unwrap().len() as u64, shards, "{v:#}");
    assert_eq!(v["segments"], commit["totals"]["segments"]);
    assert_eq!(v["manifests"].as_u64(), Some(shards));
    assert!(v["inputs"].as_u64().unwrap() > 0);
    // the re-runs wrote nothing into the target
    let stray: Vec<_> = files_under(&f.path("target"))
        .into_iter()
        .filter(|p| p.to_str().unwrap().contains("verify-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // the table for people
    let text = verify(&target, &["--sample", "0"]);
    text.expect_code(0);
    assert!(text.stdout.contains("version 1 holds"), "{}", text.stdout);
}

#[test]
fn verify_samples_shards_deterministically_and_at_least_one() {
    let (_f, target) = committed(2_000, 4, 53);
    let rerun = |extra: &[&str]| {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = verify(&target, &args);
        out.expect_code(0);
        out.json()["verification"]["rerun"].clone()
    };
    let tiny = rerun(&["--sample", "0.01"]);
    assert_eq!(tiny.as_array().unwrap().len(), 1, "{tiny}");
    assert_eq!(
        rerun(&["--sample", "0.01"]),
        tiny,
        "the default seed is fixed"
    );
    let half = rerun(&["--sample", "0.5", "--seed", "7"]);
    assert_eq!(rerun(&["--sample", "0.5", "--seed", "7"]), half);
    assert!(rerun(&["--sample", "0"]).as_array().unwrap().is_empty());
}

#[test]
fn verify_names_a_committed_segment_with_one_byte_changed() {
    let (f, target) = committed(1_500, 2, 57);
    let commit = &f.history("target")[0];
    let path = commit["segments"][0]["path"].as_str().unwrap().to_owned();
    let file = f.path("target").join(&path);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let out = verify(&target, &["--sample", "0"]);
    out.expect_code(3).stderr_names(&[
        "mismatch: segment",
        &path,
        commit["segments"][0]["sha256"].as_str().unwrap(),
    ]);
    let json = verify(&target, &["--sample", "0", "--json"]);
    json.expect_code(3);
    let mismatches = json.json()["verification"]["mismatches"].clone();
    assert_eq!(mismatches.as_array().unwrap().len(), 1, "{mismatches:#}");
    assert_eq!(mismatches[0]["check"], "segment");
    assert_eq!(mismatches[0]["path"], path.as_str());
}

#[test]
fn verify_names_an_input_segment_replaced_after_the_commit() {
    let (f, target) = committed(1_500, 2, 59);
    let segments = files_under(&f.path("events"));
    assert!(segments.len() > 1);
    // the first segment replaced by the bytes of another one
    std::fs::copy(&segments[1], &segments[0]).unwrap();
    let name = segments[0]
        .strip_prefix(f.path("events"))
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let out = verify(&target, &["--sample", "1"]);
    out.expect_code(3)
        .stderr_names(&["mismatch: input", &name, "expected sha256"]);
}

#[test]
fn verify_refuses_bad_requests_with_exit_2() {
    let (_f, target) = committed(1_000, 2, 61);
    verify(&target, &["--sample", "1.5"])
        .expect_code(2)
        .stderr_names(&["1.5", "fraction"]);
    verify(&target, &["--version", "9"])
        .expect_code(2)
        .stderr_names(&["version 9"]);
    let empty = tempfile::tempdir().unwrap();
    verify(empty.path().to_str().unwrap(), &[])
        .expect_code(2)
        .stderr_names(&["no version committed"]);
}

fn gc(target: &str, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["gc", "--target", target];
    args.extend_from_slice(extra);
    replayfleet(&args)
}

/// Every file under `dir`, relative to it.
fn relative_files(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn gc_deletes_only_what_no_commit_references_and_the_commits_still_verify() {
    let (f, target) = committed(1_500, 2, 63);
    let root = f.path("target");
    // a refused run (unreferenced), then a rollback commit of version 1
    let refused_run = crate::schemas::refused_run(&f, "refused");
    replayfleet(&[
        "rollback",
        "--target",
        &target,
        "--to",
        "1",
        "--reason",
        "audit test",
    ])
    .expect_code(0);
    // a losing attempt inside the committed run: a copy of the winner's folder
    let history = f.history("target");
    let segment = history[0]["segments"][0]["path"].as_str().unwrap();
    let winner_dir = root.join(segment).parent().unwrap().to_path_buf();
    let loser_dir = winner_dir.with_file_name("01ZOMBIEATTEMPT0000000000");
    std::fs::create_dir_all(&loser_dir).unwrap();
    for file in files_under(&winner_dir) {
        std::fs::copy(&file, loser_dir.join(file.file_name().unwrap())).unwrap();
    }
    let loser = format!(
        "{}/",
        loser_dir.strip_prefix(&root).unwrap().to_str().unwrap()
    );
    let before = relative_files(&root);

    // too recent: nothing goes
    let recent = gc(&target, &["--older-than", "1h", "--json"]);
    recent.expect_code(0);
    assert!(recent.json()["removed"].as_array().unwrap().is_empty());
    assert_eq!(relative_files(&root), before);

    // a dry run lists the refused run and the losing attempt, and deletes nothing
    let dry = gc(&target, &["--older-than", "0s", "--dry-run", "--json"]);
    dry.expect_code(0);
    let listed: Vec<String> = dry.json()["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        [loser.clone(), format!("runs/{refused_run}/")],
        "{}",
        dry.stdout
    );
    assert_eq!(relative_files(&root), before);
    let table = gc(&target, &["--older-than", "0s", "--dry-run"]);
    table.expect_code(0);
    assert!(
        table.stdout.contains("would delete 2 folders"),
        "{}",
        table.stdout
    );

    // the real thing
    gc(&target, &["--older-than", "0s"]).expect_code(0);
    let after = relative_files(&root);
    let gone: Vec<&String> = before.difference(&after).collect();
    assert!(!gone.is_empty());
    assert!(
        gone.iter()
            .all(|p| p.starts_with(&loser) || p.starts_with(&format!("runs/{refused_run}/"))),
        "{gone:#?}"
    );
    // every file a commit names is still there, and so is the committed run's record
    for commit in f.history("target") {
        for s in commit["segments"].as_array().unwrap() {
            assert!(after.contains(s["path"].as_str().unwrap()), "{s}");
        }
        assert!(after.contains(commit["report"].as_str().unwrap()));
        let run = commit["run_id"].as_str().unwrap();
        assert!(after.contains(&format!("runs/{run}/plan.json")));
    }
    assert_eq!(f.history("target").len(), 2);
    replayfleet(&["show", "--target", &target, "--limit", "3"]).expect_code(0);
    verify(&target, &["--sample", "1"]).expect_code(0);
    verify(&target, &["--version", "1", "--sample", "1"]).expect_code(0);
    crate::schemas::validate_target(&root);
    // and a second gc has nothing left to do
    let again = gc(&target, &["--older-than", "0s"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("nothing to delete"),
        "{}",
        again.stdout
    );
}

#[test]
fn gc_refuses_a_bad_duration_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    gc(dir.path().to_str().unwrap(), &["--older-than", "soon"])
        .expect_code(2)
        .stderr_names(&["soon"]);
    // an empty target has nothing to collect
    gc(dir.path().to_str().unwrap(), &["--older-than", "0s"]).expect_code(0);
}

/// The shell blocks of docs/AUDITING.md, in order, as one script.
fn auditing_steps() -> String {
    let doc = std::fs::read_to_string(crate::support::repo().join("docs/AUDITING.md")).unwrap();
    let mut script = String::new();
    let mut inside = false;
    for line in doc.lines() {
        match (inside, line.trim_end()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(script.lines().count() > 40, "{script}");
    script
}

/// A folder for PATH holding a `jq` command when the machine has no jq executable: a
/// few lines over PyPI's `jq` package, covering the flags AUDITING.md uses.
fn jq_on_path(dir: &std::path::Path) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    if std::process::Command::new("jq")
        .arg("--version")
        .output()
        .is_ok()
    {
        return path;
    }
    let shim = dir.join("jq");
    std::fs::write(
        &shim,
        r#"#!/usr/bin/env python3
import json, sys, jq
args, named, raw, join, exit_status, compact, slurp, files, program = sys.argv[1:], {}, False, False, False, False, False, [], None
while args:
    a = args.pop(0)
    if a in ("-r", "--raw-output"): raw = True
    elif a in ("-j", "--join-output"): raw = join = True
    elif a in ("-e", "--exit-status"): exit_status = True
    elif a in ("-c", "--compact-output"): compact = True
    elif a in ("-s", "--slurp"): slurp = True
    elif a == "--arg": k = args.pop(0); named[k] = args.pop(0)
    elif a == "--argjson": k = args.pop(0); named[k] = json.loads(args.pop(0))
    elif program is None: program = a
    else: files.append(a)
texts = [open(f).read() for f in files] or [sys.stdin.read()]
outputs = []
for text in texts:
    outputs += jq.compile(program, args=named).input_text(text, slurp=slurp).all()
for v in outputs:
    s = v if raw and isinstance(v, str) else json.dumps(v, separators=(",", ":") if compact else None)
    sys.stdout.write(s if join else s + "\n")
if exit_status:
    sys.exit(4 if not outputs else (1 if outputs[-1] in (None, False) else 0))
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{path}", dir.display())
}

fn run_steps(
    script: &std::path::Path,
    target: &std::path::Path,
    path: &str,
) -> crate::support::Run {
    let out = std::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg(script)
        .env("TARGET", target)
        .env("PATH", path)
        .env_remove("VERSION")
        .output()
        .expect("bash");
    crate::support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn auditing_md_steps_verify_a_committed_example() {
    assert!(
        std::process::Command::new("python3")
            .args(["-c", "import duckdb"])
            .status()
            .is_ok_and(|s| s.success()),
        "DuckDB's Python package is missing: run scripts/setup.sh"
    );
    let (f, _) = committed(2_000, 3, 71);
    let script = f.path("auditing.sh");
    std::fs::write(&script, auditing_steps()).unwrap();
    let bin = f.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = jq_on_path(&bin);
    let history = f.history("target");
    assert!(history[0]["totals"]["quarantined"].as_u64().unwrap() > 0);

    let ok = run_steps(&script, &f.path("target"), &path);
    ok.expect_code(0);
    assert!(
        ok.stdout.contains(&format!(
            "version 1 of account_balances verified: {} segments, {} rows",
            history[0]["segments"].as_array().unwrap().len(),
            history[0]["totals"]["rows"]
        )),
        "{}",
        ok.stdout
    );

    // the same steps reject a copy with one byte changed in a segment
    let copy = f.path("tampered");
    for file in files_under(&f.path("target")) {
        let to = copy.join(file.strip_prefix(f.path("target")).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let segment = history[0]["segments"][0]["path"].as_str().unwrap();
    let mut bytes = std::fs::read(copy.join(segment)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(copy.join(segment), bytes).unwrap();
    let bad = run_steps(&script, &copy, &path);
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    assert!(
        bad.stdout.contains(segment) || bad.stderr.contains(segment),
        "{bad:?}"
    );

    // and a Delta log whose version lost an `add` (readers would miss a segment the
    // commit record names): step 2b's diff names the segment
    std::fs::write(
        copy.join(segment),
        std::fs::read(f.path("target").join(segment)).unwrap(),
    )
    .unwrap();
    let log = copy.join("_delta_log/00000000000000000001.json");
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with("{\"add\"") && l.contains(segment)))
        .collect();
    assert_eq!(kept.len() + 1, text.lines().count(), "one add dropped");
    std::fs::write(&log, kept.join("\n") + "\n").unwrap();
    let bad = run_steps(&script, &copy, &path);
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    assert!(bad.stdout.contains(segment), "{bad:?}");
}

/// Writes `events/partition=0/audit.parquet`: the stream `acc-audit` between two filler
/// streams, each in its own row group (so `explain` can skip two of them by statistics).
/// `acc-audit` holds AccountOpened events of versions 1, 2 and 3, a Deposited of
/// versions 1 and 2 (the latter sent twice), a Withdrawn of version 1 and a Deposited
/// whose payload fails its schema.
fn write_audit_segment(f: &Fixture) {
    use std::sync::Arc;

    use arrow::{
        array::{ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray},
        record_batch::RecordBatch,
    };
    let schema = replayfleet_archive::envelope_schema();
    type Row = (String, &'static str, i64, &'static str, i32, &'static str);
    let batch = |rows: &[Row]| {
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
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
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.5))),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
        ];
        RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()
    };
    let filler = |stream: &'static str, base: i64| -> Vec<Row> {
        (0..4)
            .map(|i| {
                let payload = r#"{"amount_cents": 100, "currency": "EUR"}"#;
                (
                    format!("{stream}-e{i}"),
                    stream,
                    base + i,
                    "Deposited",
                    2,
                    payload,
                )
            })
            .collect()
    };
    let audit: Vec<Row> = [
        (
            "audit-1",
            9_000_101,
            "AccountOpened",
            1,
            r#"{"owner": "Ada Audit"}"#,
        ),
        ("audit-2", 9_000_102, "Deposited", 1, r#"{"amount": 12.5}"#),
        (
            "audit-3",
            9_000_103,
            "Deposited",
            2,
            r#"{"amount_cents": 300, "currency": "EUR"}"#,
        ),
        (
            "audit-4",
            9_000_104,
            "AccountOpened",
            2,
            r#"{"owner_name": "Ada Audit", "currency": "GBP"}"#,
        ),
        ("audit-5", 9_000_105, "Withdrawn", 1, r#"{"amt": "2.50"}"#),
        (
            "audit-3",
            9_000_106,
            "Deposited",
            2,
            r#"{"currency": "EUR", "amount_cents": 300}"#,
        ),
        (
            "audit-6",
            9_000_107,
            "AccountOpened",
            3,
            r#"{"holder": {"name": "Audit Ltd", "kind": "company"}, "currency": "USD"}"#,
        ),
        (
            "audit-7",
            9_000_108,
            "Deposited",
            2,
            r#"{"amount_cents": -5, "currency": "EUR"}"#,
        ),
    ]
    .into_iter()
    .map(|(id, seq, t, v, p)| (id.to_owned(), "acc-audit", seq, t, v, p))
    .collect();
    let path = f.path("events/partition=0/audit.parquet");
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None).unwrap();
    for rows in [
        filler("acc-aaaa", 9_000_001),
        audit,
        filler("acc-zzzz", 9_000_201),
    ] {
        writer.write(&batch(&rows)).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn explain_shows_every_event_of_a_row_with_each_upcast_step() {
    let f = Fixture::new(1_500, 2, 67, &["--all-edge-cases"]);
    write_audit_segment(&f);
    f.run(&f.config("explained", &Settings::default()), "2")
        .expect_code(0);
    let target = f.path("target");
    let target = target.to_str().unwrap();
    let out = replayfleet(&[
        "explain",
        "--target",
        target,
        "--key",
        "account_id=acc-audit",
        "--json",
    ]);
    out.expect_code(0);
    let e = out.json();
    assert_eq!(e["row"]["account_id"], "acc-audit", "{e:#}");
    assert_eq!(e["row"]["balance_cents"], 1250 + 300 - 250, "{e:#}");
    assert_eq!(e["row"]["events"], 6, "{e:#}");
    assert!(e["row_groups_skipped"].as_u64().unwrap() >= 2, "{e:#}");
    let events = e["events"].as_array().unwrap();
    let ids: Vec<&str> = events
        .iter()
        .map(|ev| ev["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "audit-1", "audit-2", "audit-3", "audit-4", "audit-5", "audit-3", "audit-6", "audit-7"
        ]
    );
    let steps = |i: usize| -> Vec<(u64, Vec<String>)> {
        events[i]["upcast"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let kinds = s["steps"].as_array().unwrap();
                (
                    s["version"].as_u64().unwrap(),
                    kinds
                        .iter()
                        .map(|k| k.as_str().unwrap().to_owned())
                        .collect(),
                )
            })
            .collect()
    };
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // AccountOpened: version 1 goes through 2 and 3, version 2 through 3, version 3 is there
    assert_eq!(
        steps(0),
        [(2, owned(&["rename", "default"])), (3, owned(&["jq"]))]
    );
    assert_eq!(events[0]["schema_version"], 1);
    assert_eq!(
        events[0]["upcast"][0]["payload"],
        serde_json::json!({"owner_name": "Ada Audit", "currency": "EUR"})
    );
    assert_eq!(
        events[0]["payload_after"],
        serde_json::json!({"holder": {"name": "Ada Audit", "kind": "person"}, "currency": "EUR"})
    );
    assert_eq!(
        events[0]["payload_before"],
        serde_json::json!({"owner": "Ada Audit"})
    );
    assert_eq!(steps(3), [(3, owned(&["jq"]))]);
    assert_eq!(events[3]["schema_version"], 2);
    assert!(steps(6).is_empty());
    assert_eq!(events[6]["schema_version"], 3);
    assert_eq!(events[6]["status"], "projected");
    // Deposited and Withdrawn version 1
    assert_eq!(steps(1), [(2, owned(&["sql", "drop", "default"]))]);
    assert_eq!(
        events[1]["payload_after"],
        serde_json::json!({"amount_cents": 1250, "currency": "EUR"})
    );
    assert_eq!(
        steps(4),
        [(2, owned(&["rename", "cast", "sql", "drop", "default"]))]
    );
    // the resend is an exact duplicate; the negative amount is quarantined
    assert_eq!(events[2]["status"], "projected");
    assert_eq!(events[5]["status"], "duplicate");
    assert_eq!(events[7]["status"], "anomaly");
    assert_eq!(events[7]["anomaly"]["kind"], "invalid_payload");
    assert_eq!(events[7]["anomaly"]["policy"], "quarantine");
    assert!(events[7]["payload_after"].is_null());
    for ev in events {
        assert_eq!(ev["segment"], "partition=0/audit.parquet");
    }

    // for people
    let text = replayfleet(&[
        "explain",
        "--target",
        target,
        "--key",
        "account_id=acc-audit",
    ]);
    text.expect_code(0);
    for needle in [
        "upcast to version 2 (rename, default)",
        "upcast to version 3 (jq)",
        "upcast to version 2 (sql, drop, default)",
        "audit-3 seq 9000106",
        "duplicate",
        "anomaly invalid_payload (policy quarantine)",
        "8 events of its stream read: ",
        "projected (what the projection saw), 1 exact duplicates dropped, anomalies: ",
        "invalid_payload 1 (policy quarantine)",
    ] {
        assert!(
            text.stdout.contains(needle),
            "`{needle}` missing:\n{}",
            text.stdout
        );
    }
    // a key with many events: the first ones in full, the rest counted
    let short = replayfleet(&[
        "explain",
        "--target",
        target,
        "--key",
        "account_id=acc-audit",
        "--events",
        "3",
    ]);
    short.expect_code(0);
    assert!(
        short.stdout.contains("8 events of its stream read")
            && short.stdout.contains("… and 5 more events")
            && !short.stdout.contains("audit-3 seq 9000106"),
        "{}",
        short.stdout
    );

    // with every edge case of the generator, the events explain found and judged
    // projected are exactly the events each row counts
    for n in 1..=12 {
        let key = format!("account_id=acc-{n:06}");
        let out = replayfleet(&["explain", "--target", target, "--key", &key, "--json"]);
        out.expect_code(0);
        let e = out.json();
        let projected = e["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|ev| ev["status"] == "projected")
            .count();
        assert_eq!(e["row"]["events"], projected, "{key}: {e:#}");
    }

    // what the user gets wrong
    replayfleet(&["explain", "--target", target, "--key", "owner=acc-audit"])
        .expect_code(2)
        .stderr_names(&["owner", "not a key column", "account_id"]);
    replayfleet(&[
        "explain",
        "--target",
        target,
        "--key",
        "account_id=acc-nobody",
    ])
    .expect_code(2)
    .stderr_names(&["no row with account_id=acc-nobody"]);
    replayfleet(&[
        "explain",
        "--target",
        target,
        "--key",
        "account_id=acc-audit",
        "--version",
        "4",
    ])
    .expect_code(2)
    .stderr_names(&["version 4"]);
}

/// The finalizer sums the part files' fingerprints the workers wrote in their manifests
/// (after re-hashing each file), so one it cannot read refuses the run, and one that
/// does not describe its file's rows is caught by `verify`, which recomputes it.
#[test]
fn the_workers_fingerprints_are_summed_by_the_finalizer_and_recomputed_by_verify() {
    let f = Fixture::new(2_000, 3, 57, &[]);
    let run = f.run(
        &f.config(
            "partials",
            &Settings {
                invariants: r#"["SELECT * FROM projection WHERE events > 0"]"#,
                target_events: 700,
                ..Settings::default()
            },
        ),
        "2",
    );
    run.expect_code(3);
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    let honest = run.json()["report"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = f.path("target");
    let manifests: Vec<_> = files_under(&target.join(format!("runs/{run_id}/shards")))
        .into_iter()
        .filter(|p| p.ends_with("lineage.json"))
        .collect();
    assert!(manifests.len() > 1, "{manifests:?}");
    let manifest = &manifests[0];
    let original = std::fs::read_to_string(manifest).unwrap();
    let mut lineage: serde_json::Value = serde_json::from_str(&original).unwrap();
    let output = &mut lineage["outputs"][0];
    let part = output["path"].as_str().unwrap().to_owned();
    assert_eq!(
        output["fingerprint"].as_str().map(str::len),
        Some(64),
        "{output:#}"
    );
    assert_eq!(output["stats"]["numRecords"], output["rows"], "{output:#}");
    let finalize = || finalize(&target, &run_id, &["--accept", "audit test", "--json"]);

    // not a fingerprint: an integrity failure naming the file, which --accept cannot pass
    output["fingerprint"] = "not hex".into();
    std::fs::write(manifest, lineage.to_string()).unwrap();
    let refused = finalize();
    refused.expect_code(3);
    let json = refused.json();
    let checks = json.get("report").unwrap_or(&json)["checks"].clone();
    let failed: Vec<_> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false && c["name"] == "output_checksums")
        .collect();
    assert_eq!(failed.len(), 1, "{checks:#}");
    assert!(
        failed[0]["detail"].as_str().unwrap().contains(&part),
        "{checks:#}"
    );
    assert!(f.history("target").is_empty());

    // a well-formed fingerprint that is not the file's rows' is committed (the file's
    // bytes are the manifest's), and `verify` finds the sum is not the rows'
    lineage["outputs"][0]["fingerprint"] = "0".repeat(64).into();
    std::fs::write(manifest, lineage.to_string()).unwrap();
    finalize().expect_code(0);
    let committed = &f.history("target")[0];
    assert_ne!(committed["fingerprint"].as_str(), Some(honest.as_str()));
    let out = verify(target.to_str().unwrap(), &["--sample", "0", "--json"]);
    out.expect_code(3);
    let mismatches = out.json()["verification"]["mismatches"].clone();
    let sum = mismatches
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["check"] == "fingerprint");
    assert!(
        sum.is_some_and(|m| m["actual"].as_str().unwrap().contains(&honest)),
        "the rows' own fingerprint: {mismatches:#}"
    );
}
