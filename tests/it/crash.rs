//! Crashes anywhere: `kill -9` of an embedded run at seeded moments from planning to
//! after the commit, each followed by a plain rerun. Never a partial commit, readers
//! see the old version until the new one is whole, exactly one new version per
//! completed run, and every version holds the fault-free fingerprint. The same for the
//! fleet's coordinator: killed anywhere, its restart commits the run exactly once.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use replayfleet_testkit::NatsServer;

use crate::{
    fleet::{WorkerProcess, embedded_fingerprint, fleet_settings},
    replay::{Fixture, Settings},
    support::{bin, replayfleet},
};

/// Kills to try; their moments come from a seeded random source.
const KILLS: usize = 20;

#[test]
fn kill_9_of_the_embedded_run_at_seeded_moments_never_leaves_a_partial_commit() {
    let f = Fixture::new(3_000, 4, 97, &["--all-edge-cases"]);
    let settings = |target| Settings {
        target,
        target_events: 300,
        ..Settings::default()
    };
    // the fault-free run: its fingerprint and how long it takes
    let started = Instant::now();
    let reference = f.run(&f.config("reference", &settings("reference")), "2");
    let took = started.elapsed();
    reference.expect_code(0);
    let fingerprint = reference.json()["report"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    let config = f.config("crashed", &settings("target"));
    let mut rng = ChaCha8Rng::seed_from_u64(20261205);
    let mut versions = 0;
    let mut killed_mid_run = 0;
    let mut committed_before_kill = 0;
    // shards the reruns kept from the killed runs (a_rerun_after_a_kill_… asserts it)
    let mut reused = 0;
    for kill in 0..KILLS {
        // a moment between the start and a little after a clean run would have ended
        let at = took.mul_f64(rng.random_range(0.0..1.3));
        let mut child = Command::new(bin())
            .args(["run", "--config", &config, "--workers", "2", "--json"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            let _ = child.kill(); // SIGKILL
            killed_mid_run += 1;
        }
        child.wait().unwrap();

        // what a reader sees now: the old versions, or one more that is whole
        let history = f.history("target");
        assert!(
            history.len() == versions || history.len() == versions + 1,
            "kill {kill} at {at:?}: {} versions after {versions}",
            history.len()
        );
        for commit in &history {
            assert_eq!(commit["fingerprint"], fingerprint.as_str(), "kill {kill}");
        }
        if history.len() > versions {
            committed_before_kill += 1;
        }
        versions = history.len();

        // a plain rerun completes and adds exactly one version
        let rerun = f.run(&config, "2");
        rerun.expect_code(0);
        reused += rerun.json()["shards_reused"].as_u64().unwrap();
        let history = f.history("target");
        assert_eq!(history.len(), versions + 1, "kill {kill} at {at:?}");
        assert_eq!(
            history.last().unwrap()["fingerprint"],
            fingerprint.as_str(),
            "kill {kill}"
        );
        versions = history.len();
    }
    eprintln!(
        "{killed_mid_run} of {KILLS} kills landed before the process ended, {committed_before_kill} of them (or of the runs that ended) after the commit; {versions} versions; the reruns kept {reused} shards of the killed runs"
    );
    assert!(killed_mid_run >= KILLS / 2, "{killed_mid_run} kills landed");

    // what the last commit names is whole: verify replays a shard and re-checks every file
    let out = replayfleet(&[
        "verify",
        "--target",
        f.path("target").to_str().unwrap(),
        "--sample",
        "1",
    ]);
    out.expect_code(0);
}

/// Coordinator kills to try, at seeded moments of a fleet run.
const COORDINATOR_KILLS: usize = 4;

#[test]
fn kill_9_of_the_fleet_coordinator_then_a_restart_commits_each_run_exactly_once() {
    let nats = NatsServer::start();
    let f = Fixture::new(3_000, 4, 101, &["--all-edge-cases"]);
    let expected = embedded_fingerprint(&f, "reference", 800);
    let _workers: Vec<WorkerProcess> = (0..2).map(|_| WorkerProcess::start(&nats.url())).collect();
    let config = f.config("fleetcrash", &fleet_settings(&nats, "target"));
    let coordinator = || {
        Command::new(bin())
            .args(["coordinator", "--config", &config])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // how long a clean fleet run takes
    let started = Instant::now();
    let status = coordinator().wait().unwrap();
    assert!(status.success());
    let took = started.elapsed();
    let mut versions = f.history("target").len();
    assert_eq!(versions, 1);

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for kill in 0..COORDINATOR_KILLS {
        let at = took.mul_f64(rng.random_range(0.1..1.1));
        let mut child = coordinator();
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        let after_kill = f.history("target").len();
        assert!(
            after_kill == versions || after_kill == versions + 1,
            "kill {kill} at {at:?}: {after_kill} versions after {versions}"
        );
        // the restart resumes the killed run (or, when it had committed, plans a new one)
        let restart = Command::new(bin())
            .args(["coordinator", "--config", &config])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            restart.status.success(),
            "kill {kill}: {}",
            String::from_utf8_lossy(&restart.stderr)
        );
        let history = f.history("target");
        assert_eq!(history.len(), after_kill + 1, "kill {kill} at {at:?}");
        for commit in &history {
            assert_eq!(commit["fingerprint"], expected.as_str(), "kill {kill}");
        }
        let runs: std::collections::BTreeSet<_> =
            history.iter().map(|c| c["run_id"].to_string()).collect();
        assert_eq!(
            runs.len(),
            history.len(),
            "one version per run: {history:#?}"
        );
        versions = history.len();
    }
}

/// Starts `replayfleet run` of `config` paced to 1,500 events a second, waits until the
/// run has a plan and at least one shard's lineage manifest in `target`, and kills it
/// (`kill -9`); returns the killed run's id.
fn kill_after_a_shard(f: &Fixture, config: &str, target: &str) -> String {
    let mut child = Command::new(bin())
        .args(["run", "--config", config, "--workers", "1"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runs = f.path(&format!("{target}/runs"));
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let run_id = loop {
        assert!(Instant::now() < deadline, "no shard finished in 60 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a kill"
        );
        let unfinished = std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .find_map(|e| {
                let run = e.unwrap().path();
                let has_shard = std::fs::read_dir(run.join("shards"))
                    .into_iter()
                    .flatten()
                    .any(|s| s.unwrap().path().join("lineage.json").exists());
                (has_shard && !run.join("report.json").exists())
                    .then(|| run.file_name().unwrap().to_string_lossy().into_owned())
            });
        if let Some(id) = unfinished {
            break id;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    child.wait().unwrap();
    run_id
}

/// A plain rerun after a kill resumes the killed run when it plans the same work: the
/// shards the killed process finished are kept (not replayed), the run commits once with
/// the fault-free fingerprint. A rerun whose config changed the work (another
/// projection) plans a run of its own instead.
#[test]
fn a_rerun_after_a_kill_keeps_the_finished_shards_of_the_same_plan() {
    let f = Fixture::new(3_000, 4, 97, &["--all-edge-cases"]);
    let settings = |target, sql: &str| Settings {
        target,
        target_events: 300,
        sql: sql.to_owned(),
        extra: "[pacing]\nevents_per_second = 1500\n".into(),
        ..Settings::default()
    };
    let default_sql = Settings::default().sql;
    let reference = f.run(
        &f.config("reference", &settings("reference", &default_sql)),
        "1",
    );
    reference.expect_code(0);
    let fingerprint = reference.json()["report"]["fingerprint"].clone();

    let config = f.config("resumed", &settings("target", &default_sql));
    let killed = kill_after_a_shard(&f, &config, "target");
    assert!(
        f.history("target").is_empty(),
        "nothing committed by the kill"
    );
    let rerun = f.run(&config, "2");
    rerun.expect_code(0);
    let json = rerun.json();
    assert_eq!(json["run_id"], killed.as_str(), "the killed run is resumed");
    assert_eq!(json["resumed"], true);
    let reused = json["shards_reused"].as_u64().unwrap();
    assert!(reused >= 1, "{json:#}");
    assert_eq!(json["report"]["fingerprint"], fingerprint);
    let history = f.history("target");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["run_id"], killed.as_str());

    // The same name, another projection: the killed run's plan is not this work.
    let other_sql = default_sql.replace("count(*) AS events", "count(*) + 0 AS events");
    assert_ne!(other_sql, default_sql);
    let killed = kill_after_a_shard(&f, &config, "target");
    let changed = f.config("resumed", &settings("target", &other_sql));
    assert_eq!(changed, config, "the same config file, rewritten");
    let rerun = f.run(&changed, "2");
    rerun.expect_code(0);
    let json = rerun.json();
    assert_ne!(json["run_id"], killed.as_str(), "{json:#}");
    assert_eq!(json["resumed"], false);
    assert_eq!(json["shards_reused"], 0);
    assert_eq!(f.history("target").len(), 2);
}
