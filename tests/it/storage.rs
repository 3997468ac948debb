//! The run against an S3 server that misbehaves: testkit's fault-injecting proxy stands
//! between replayfleet and moto and injects 503 SlowDown, 500s, resets before a request
//! lands, resets and 500s *after a write landed*, truncated bodies and stalls. Whatever
//! it injects, a run commits exactly once with the fault-free fingerprint, or fails
//! naming the endpoint with nothing committed, and the next run completes.

use replayfleet_testkit::{Fault, FaultProxy, Faults, NatsServer, S3Server};
use serde_json::Value;

use crate::{
    fleet::WorkerProcess,
    replay::{Fixture, Settings},
    support::{Run, replayfleet_env},
};

const EVENTS: &str = "3000";
const PARTITIONS: &str = "4";
const SEED: &str = "83";

/// An archive on moto, a proxy in front of it and the fixture's catalog and configs.
struct S3Setup {
    s3: S3Server,
    bucket: String,
    proxy: FaultProxy,
    fixture: Fixture,
}

impl S3Setup {
    fn new() -> Self {
        Self::with(&[])
    }

    /// An archive generated with `generate`'s arguments `extra` besides the usual ones.
    fn with(extra: &[&str]) -> Self {
        let s3 = S3Server::start();
        let bucket = s3.create_bucket();
        // a tiny local archive only for the fixture's catalog; the real one is on S3
        let fixture = Fixture::new(10, 1, 1, &[]);
        let source = format!("s3://{bucket}/archive/events");
        replayfleet_env(
            &[
                "generate",
                "--out",
                &source,
                "--events",
                EVENTS,
                "--partitions",
                PARTITIONS,
                "--streams",
                "60",
                "--seed",
                SEED,
                "--all-edge-cases",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
            &s3.env(),
        )
        .expect_code(0);
        let proxy = FaultProxy::start(s3.addr(), Faults::none());
        S3Setup {
            s3,
            bucket,
            proxy,
            fixture,
        }
    }

    fn target(&self, name: &str) -> String {
        format!("s3://{}/projections/{name}", self.bucket)
    }

    /// A config reading the archive and writing `name` through the proxy, with a short
    /// request timeout (stalls end quickly) and the given retry budget.
    fn config(&self, name: &str, retry_timeout: &str, extra: &str) -> String {
        let path = self.fixture.config(
            name,
            &Settings {
                target: "unused",
                target_events: 800,
                extra: extra.to_owned(),
                ..Settings::default()
            },
        );
        let options =
            format!("[source.options]\ntimeout = \"2s\"\nretry_timeout = \"{retry_timeout}\"\n");
        let target_options =
            format!("[target.options]\ntimeout = \"2s\"\nretry_timeout = \"{retry_timeout}\"\n");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "url = \"events\"",
                &format!("url = \"s3://{}/archive/events\"", self.bucket),
            )
            .replace(
                "url = \"unused\"",
                &format!("url = \"{}\"", self.target(name)),
            )
            .replace("[shards]", &format!("{target_options}\n[shards]"))
            .replace("[contracts]", &format!("{options}\n[contracts]"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The environment pointing replayfleet at the proxy.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.s3.env();
        for (k, v) in &mut env {
            if k == "AWS_ENDPOINT_URL" {
                *v = self.proxy.endpoint();
            }
        }
        env
    }

    fn run(&self, config: &str) -> Run {
        replayfleet_env(
            &["run", "--config", config, "--workers", "2", "--json"],
            &self.env(),
        )
    }

    /// The target's history read straight from moto (no faults).
    fn history(&self, name: &str) -> Vec<Value> {
        let out = replayfleet_env(
            &["history", "--target", &self.target(name), "--json"],
            &self.s3.env(),
        );
        out.expect_code(0);
        out.json().as_array().unwrap().clone()
    }

    /// The fingerprint of a fault-free run into `reference`.
    fn reference(&self) -> String {
        self.reference_report()["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The report of a fault-free run.
    fn reference_report(&self) -> serde_json::Value {
        self.proxy.heal();
        let out = self.run(&self.config("reference", "60s", ""));
        out.expect_code(0);
        out.json()["report"].clone()
    }

    /// Asserts `name` holds exactly one version, with `fingerprint`.
    #[track_caller]
    fn committed_once(&self, name: &str, fingerprint: &str) {
        let history = self.history(name);
        assert_eq!(history.len(), 1, "{history:#?}");
        assert_eq!(history[0]["fingerprint"], fingerprint, "{history:#?}");
    }
}

#[track_caller]
fn succeeded(out: &Run, proxy: &FaultProxy) {
    assert_eq!(
        out.code,
        0,
        "exit {}\nstderr:\n{}\nproxy log (faults only):\n{}",
        out.code,
        out.stderr,
        proxy
            .log()
            .iter()
            .filter(|l| !l.ends_with(" -"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_write_that_landed_but_whose_answer_was_lost_is_read_back_not_guessed() {
    let setup = S3Setup::new();
    let expected = setup.reference();
    // (fault, aimed at, how many times): the commit, a lineage manifest, the plan and a
    // report, each reset or answered 500 after the write landed
    let cases = [
        (
            Fault::ResetAfterWrite,
            "/_delta_log/00000000000000000001.json",
            1,
        ),
        (
            Fault::ErrorAfterWrite,
            "/_delta_log/00000000000000000001.json",
            1,
        ),
        (Fault::ResetAfterWrite, "/lineage.json", 2),
        (Fault::ErrorAfterWrite, "/lineage.json", 1),
        (Fault::ResetAfterWrite, "/plan.json", 1),
        (Fault::ResetAfterWrite, "/report.json", 1),
    ];
    for (i, (fault, path, limit)) in cases.into_iter().enumerate() {
        let name = format!("aimed{i}");
        let config = setup.config(&name, "30s", "");
        setup.proxy.set(Faults::aimed(fault, path, "PUT", limit));
        let out = setup.run(&config);
        let injected = setup.proxy.injected();
        eprintln!("injected {fault:?} at {path}: {injected:?}");
        setup.proxy.heal();
        succeeded(&out, &setup.proxy);
        assert!(
            injected.of(fault) >= 1,
            "{fault:?} at {path} was never injected: {injected:?}"
        );
        assert_eq!(
            out.json()["report"]["outcome"],
            "committed",
            "{fault:?} {path}"
        );
        setup.committed_once(&name, &expected);
    }
}

#[test]
fn every_fault_class_at_once_the_embedded_run_commits_once_with_the_fault_free_fingerprint() {
    let setup = S3Setup::new();
    let expected = setup.reference();
    let mut injected = 0;
    for seed in [1, 2, 3] {
        let name = format!("chaos{seed}");
        let config = setup.config(&name, "60s", "");
        setup.proxy.set(Faults::all(seed));
        let out = setup.run(&config);
        eprintln!("seed {seed}: injected {:?}", setup.proxy.injected());
        injected += setup.proxy.injected().total();
        setup.proxy.heal();
        succeeded(&out, &setup.proxy);
        setup.committed_once(&name, &expected);
    }
    let counts = setup.proxy.injected().counts;
    for fault in [
        Fault::ResetBefore,
        Fault::SlowDown,
        Fault::ServerError,
        Fault::ErrorAfterWrite,
        Fault::ResetAfterWrite,
        Fault::TruncatedBody,
    ] {
        assert!(
            counts.contains_key(&fault),
            "{fault:?} never injected: {counts:?}"
        );
    }
    assert!(injected >= 20, "{injected} injections");
}

#[test]
fn truncated_part_file_reads_while_finalizing_are_retried() {
    // The finalizer re-reads every part file (hash, fingerprint) and its checks read them
    // again through DataFusion: truncated bodies on both are retried.
    let setup = S3Setup::new();
    let expected = setup.reference();
    let config = setup.config("truncated-parts", "30s", "");
    setup
        .proxy
        .set(Faults::aimed(Fault::TruncatedBody, "/part-", "GET", 8));
    let out = setup.run(&config);
    let injected = setup.proxy.injected().of(Fault::TruncatedBody);
    setup.proxy.heal();
    succeeded(&out, &setup.proxy);
    assert_eq!(injected, 8);
    setup.committed_once("truncated-parts", &expected);
}

#[test]
fn truncated_segment_reads_are_detected_and_retried_never_replayed_short() {
    let setup = S3Setup::new();
    let reference = setup.reference_report();
    let expected = reference["fingerprint"].as_str().unwrap().to_owned();
    let config = setup.config("truncated", "30s", "");
    setup
        .proxy
        .set(Faults::aimed(Fault::TruncatedBody, "/archive/", "GET", 6));
    let out = setup.run(&config);
    let injected = setup.proxy.injected().of(Fault::TruncatedBody);
    setup.proxy.heal();
    succeeded(&out, &setup.proxy);
    assert_eq!(injected, 6);
    setup.committed_once("truncated", &expected);
    let report = out.json();
    // Every event read once (duplicates in the archive included), as without faults.
    assert_eq!(
        report["report"]["totals"], reference["totals"],
        "{report:#}"
    );
    assert!(reference["totals"]["events_read"].as_u64().unwrap() >= EVENTS.parse::<u64>().unwrap());
}

/// object_store retries a listing page's request but not the reading of its answer: a
/// page cut short failed the run with exit 1 (found when a seeded fault landed on the
/// `_delta_log` listing). Every listing (the archive's, the target's commit log and run
/// folders, the finalizer's) is now listed again.
#[test]
fn listings_cut_short_are_listed_again() {
    let setup = S3Setup::new();
    let expected = setup.reference();
    // the archive's listing at planning, the target's run folders, its commit log
    for (i, aimed) in ["prefix=archive", "delimiter=", "_delta_log%2F"]
        .into_iter()
        .enumerate()
    {
        let name = format!("cut-listings-{i}");
        let config = setup.config(&name, "30s", "");
        let before = setup.proxy.injected().of(Fault::TruncatedBody);
        setup
            .proxy
            .set(Faults::aimed(Fault::TruncatedBody, aimed, "GET", 2));
        let out = setup.run(&config);
        let injected = setup.proxy.injected().of(Fault::TruncatedBody) - before;
        setup.proxy.heal();
        succeeded(&out, &setup.proxy);
        assert_eq!(injected, 2, "listings matching {aimed}");
        setup.committed_once(&name, &expected);
    }
}

#[test]
fn s3_unreachable_past_the_retry_budget_fails_naming_the_endpoint_and_the_next_run_commits() {
    let setup = S3Setup::new();
    let expected = setup.reference();
    let endpoint = setup.proxy.addr().to_string();

    // down from the start: planning cannot list the archive
    let config = setup.config("down", "2s", "");
    setup.proxy.set(Faults::down());
    let out = setup.run(&config);
    out.expect_code(1);
    assert!(out.stderr.contains(&endpoint), "{}", out.stderr);
    setup.proxy.heal();
    assert!(setup.history("down").is_empty());

    // the commit can never be written nor read back: the run gives up within its budget
    setup.proxy.set(Faults {
        reset_before: 1.0,
        only_path: Some("/_delta_log/0".into()),
        ..Faults::none()
    });
    let out = setup.run(&config);
    setup.proxy.heal();
    out.expect_code(1);
    assert!(
        out.stderr.contains(&endpoint) && out.stderr.contains("retry_timeout"),
        "{}",
        out.stderr
    );
    assert!(setup.history("down").is_empty(), "nothing committed");

    // S3 is back: a plain rerun commits once
    let out = setup.run(&config);
    succeeded(&out, &setup.proxy);
    setup.committed_once("down", &expected);
}

#[test]
fn the_fleet_with_every_fault_class_commits_once_with_the_fault_free_fingerprint() {
    let setup = S3Setup::new();
    let expected = setup.reference();
    let nats = NatsServer::start();
    let mut env = setup.env();
    for (k, v) in [
        ("REPLAYFLEET_SOURCE_TIMEOUT", "2s"),
        ("REPLAYFLEET_TARGET_TIMEOUT", "2s"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|_| WorkerProcess::start_in(&nats.url(), &[], &env))
        .collect();
    let config = setup.config(
        "fleet",
        "60s",
        &format!(
            "[fleet]\nnats_url = \"{}\"\nlease_ttl = \"2s\"\n",
            nats.url()
        ),
    );
    setup.proxy.set(Faults::all(11));
    let out = replayfleet_env(&["coordinator", "--config", &config, "--json"], &env);
    let injected = setup.proxy.injected();
    eprintln!("fleet: injected {injected:?}");
    setup.proxy.heal();
    succeeded(&out, &setup.proxy);
    assert!(injected.total() >= 5, "{injected:?}");
    setup.committed_once("fleet", &expected);
    drop(workers);
}

/// An embedded run reads each small segment once: the planner's footer read of a segment
/// of at most 64 KiB is the whole object, kept for the replay of the same process, where
/// it used to be fetched a second time (a request per file is what an archive of small
/// files costs on object storage).
#[test]
fn an_embedded_run_fetches_each_small_segment_once() {
    let setup = S3Setup::with(&["--segment-rows", "100"]);
    let out = setup.run(&setup.config("once", "60s", ""));
    succeeded(&out, &setup.proxy);
    let report = &out.json()["report"];
    let mut gets: std::collections::BTreeMap<String, u32> = Default::default();
    for line in setup.proxy.log() {
        let mut words = line.split(' ');
        let (Some("GET"), Some(path)) = (words.next(), words.next()) else {
            continue;
        };
        let path = path.split('?').next().unwrap();
        if path.contains("/archive/events/") && path.ends_with(".parquet") {
            *gets.entry(path.to_owned()).or_default() += 1;
        }
    }
    // 3,000 events and their duplicates in segments of 100 rows: every one was read
    // (the run commits only with every planned segment replayed).
    assert!(gets.len() >= 30, "{gets:#?}");
    let twice: Vec<_> = gets.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "segments not fetched once: {twice:#?}");
    setup.committed_once("once", report["fingerprint"].as_str().unwrap());
}
