//! The fleet: a coordinator and worker processes over a real NATS server (nats-server
//! 2.15 from PyPI, started per test on a free loopback port).

use std::process::{Child, Command, Stdio};

use replayfleet_testkit::NatsServer;

use crate::{
    replay::{Fixture, Settings},
    support::{bin, replayfleet},
};

/// A `replayfleet worker` process, killed when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(nats: &str) -> Self {
        let child = Command::new(bin())
            .args(["worker", "--nats", nats, "--lease-ttl", "2s"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a worker");
        WorkerProcess(child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fleet_settings(nats: &NatsServer, target: &'static str) -> Settings {
    Settings {
        target,
        target_events: 800,
        extra: format!(
            "[fleet]\nnats_url = \"{}\"\nlease_ttl = \"2s\"\n",
            nats.url()
        ),
        ..Settings::default()
    }
}

#[test]
fn a_coordinator_and_two_workers_commit_the_embedded_fingerprint() {
    let nats = NatsServer::start();
    let f = Fixture::new(4_000, 6, 47, &["--all-edge-cases"]);
    let embedded = f.run(
        &f.config(
            "embedded",
            &Settings {
                target: "embedded",
                ..Settings::default()
            },
        ),
        "2",
    );
    embedded.expect_code(0);
    let expected = embedded.json()["report"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    let _workers = [
        WorkerProcess::start(&nats.url()),
        WorkerProcess::start(&nats.url()),
    ];
    let config = f.config("fleet", &fleet_settings(&nats, "fleet"));
    let out = replayfleet(&["coordinator", "--config", &config, "--json"]);
    out.expect_code(0);
    let history = f.history("fleet");
    assert_eq!(history.len(), 1, "{}", out.stdout);
    assert_eq!(history[0]["fingerprint"], expected.as_str());
    assert!(history[0]["totals"]["shards"].as_u64().unwrap() > 1);
    // the shards were replayed by the worker processes, not the coordinator
    let run_id = history[0]["run_id"].as_str().unwrap();
    let lineage = std::fs::read_to_string(f.path(&format!(
        "fleet/runs/{run_id}/shards/shard-00000/lineage.json"
    )))
    .unwrap();
    assert!(!lineage.contains("embedded-"), "{lineage}");
}

#[test]
fn a_coordinator_without_nats_says_so_and_a_restarted_one_resumes_its_run() {
    let f = Fixture::new(1_000, 2, 53, &[]);
    let config = f.config("no-nats", &Settings::default());
    replayfleet(&["coordinator", "--config", &config])
        .expect_code(2)
        .stderr_names(&["fleet.nats_url", "--nats"]);

    // no worker yet: the first coordinator publishes and waits; it is stopped, a second
    // one resumes the same run (no second plan), and workers then finish it
    let nats = NatsServer::start();
    let config = f.config("resume", &fleet_settings(&nats, "resume"));
    let mut first = Command::new(bin())
        .args(["coordinator", "--config", &config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runs_dir = f.path("resume/runs");
    for _ in 0..100 {
        if runs_dir.is_dir() && std::fs::read_dir(&runs_dir).unwrap().count() > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    first.kill().unwrap();
    first.wait().unwrap();
    let _worker = WorkerProcess::start(&nats.url());
    let out = replayfleet(&["coordinator", "--config", &config, "--json"]);
    out.expect_code(0);
    assert_eq!(
        std::fs::read_dir(&runs_dir).unwrap().count(),
        1,
        "the restarted coordinator resumed the run instead of planning another"
    );
    assert_eq!(f.history("resume").len(), 1);
}
