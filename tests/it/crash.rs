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
        "{killed_mid_run} of {KILLS} kills landed before the process ended, {committed_before_kill} of them (or of the runs that ended) after the commit; {versions} versions"
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
