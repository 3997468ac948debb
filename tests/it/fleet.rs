//! The fleet: a coordinator and worker processes over a real NATS server (nats-server
//! 2.15 from PyPI, started per test on a free loopback port).

use std::process::{Child, Command, Stdio};

use replayfleet_testkit::NatsServer;

use crate::{
    replay::{Fixture, Settings},
    support::{bin, replayfleet},
};

/// A `replayfleet worker` process, killed when dropped.
pub(crate) struct WorkerProcess(pub(crate) Child);

impl WorkerProcess {
    pub(crate) fn start(nats: &str) -> Self {
        Self::start_with(nats, &[])
    }

    /// A worker with more flags after `--nats URL --lease-ttl 2s`.
    pub(crate) fn start_with(nats: &str, extra: &[&str]) -> Self {
        Self::start_in(nats, extra, &[])
    }

    /// A worker with more flags and environment variables (store credentials).
    pub(crate) fn start_in(nats: &str, extra: &[&str], env: &[(String, String)]) -> Self {
        let child = Command::new(bin())
            .args(["worker", "--nats", nats, "--lease-ttl", "2s"])
            .args(extra)
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
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

/// The fingerprint an embedded run (2 workers) of the fixture commits into `target`.
pub(crate) fn embedded_fingerprint(
    f: &Fixture,
    target: &'static str,
    target_events: u64,
) -> String {
    let embedded = f.run(
        &f.config(
            target,
            &Settings {
                target,
                target_events,
                ..Settings::default()
            },
        ),
        "2",
    );
    embedded.expect_code(0);
    embedded.json()["report"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn fleet_settings(nats: &NatsServer, target: &'static str) -> Settings {
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
    let expected = embedded_fingerprint(&f, "embedded", Settings::default().target_events);

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
fn a_hot_partition_split_over_two_workers_commits_the_unsplit_fingerprint() {
    let nats = NatsServer::start();
    // One partition of ~4,000 events: unsplit, one shard; at 800 events a shard, five
    // sub-shards that the two worker processes share.
    let f = Fixture::new(4_000, 1, 59, &["--all-edge-cases"]);
    let expected = embedded_fingerprint(&f, "whole", 1_000_000);
    let _workers = [
        WorkerProcess::start(&nats.url()),
        WorkerProcess::start(&nats.url()),
    ];
    let config = f.config("split", &fleet_settings(&nats, "split"));
    let out = replayfleet(&["coordinator", "--config", &config, "--json"]);
    out.expect_code(0);
    let history = f.history("split");
    assert_eq!(
        history[0]["fingerprint"],
        expected.as_str(),
        "{}",
        out.stdout
    );
    let shards = history[0]["totals"]["shards"].as_u64().unwrap();
    assert!(shards >= 5, "{:#}", history[0]);
    let run_id = history[0]["run_id"].as_str().unwrap();
    let mut workers = std::collections::BTreeSet::new();
    for i in 0..shards {
        let lineage: serde_json::Value = serde_json::from_slice(
            &std::fs::read(f.path(&format!(
                "split/runs/{run_id}/shards/shard-{i:05}/lineage.json"
            )))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(lineage["partitions"], serde_json::json!([0]));
        assert_eq!(lineage["split"]["bucket"], i, "{lineage:#}");
        assert_eq!(lineage["split"]["of"], shards, "{lineage:#}");
        workers.insert(lineage["worker"].as_str().unwrap().to_owned());
    }
    assert!(
        workers.iter().all(|w| !w.contains("embedded-")),
        "{workers:?}"
    );
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

/// Starts `replayfleet coordinator` in the background and waits for its plan; returns the
/// process and the run id.
pub(crate) fn start_coordinator(f: &Fixture, config: &str, target: &str) -> (Child, String) {
    let mut child = Command::new(bin())
        .args(["coordinator", "--config", config])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs = f.path(&format!("{target}/runs"));
    for _ in 0..200 {
        if let Ok(mut entries) = std::fs::read_dir(&runs)
            && let Some(Ok(entry)) = entries.next()
            && entry.path().join("plan.json").is_file()
        {
            // the run state is created right after the plan
            std::thread::sleep(std::time::Duration::from_millis(300));
            return (child, entry.file_name().to_str().unwrap().to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the coordinator wrote no plan");
}

pub(crate) fn status(f: &Fixture, target: &str, nats: &NatsServer, run: &str) -> serde_json::Value {
    let out = replayfleet(&[
        "status",
        "--target",
        f.path(target).to_str().unwrap(),
        "--nats",
        &nats.url(),
        "--run",
        run,
        "--json",
    ]);
    out.expect_code(0);
    out.json()
}

#[test]
fn pause_holds_every_lease_and_resume_lets_the_run_complete() {
    let nats = NatsServer::start();
    let f = Fixture::new(2_000, 4, 59, &[]);
    let config = f.config("pause", &fleet_settings(&nats, "pause"));
    let (mut coordinator, run) = start_coordinator(&f, &config, "pause");
    replayfleet(&["pause", "--nats", &nats.url(), "--run", &run]).expect_code(0);
    assert_eq!(status(&f, "pause", &nats, &run)["run"]["phase"], "paused");
    let _worker = WorkerProcess::start(&nats.url());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let shards = f.path(&format!("pause/runs/{run}/shards"));
    assert!(
        !shards.exists(),
        "a lease was claimed while the run was paused"
    );
    replayfleet(&["resume", "--nats", &nats.url(), "--run", &run]).expect_code(0);
    let code = coordinator.wait().unwrap().code();
    assert_eq!(code, Some(0));
    assert_eq!(f.history("pause").len(), 1);
    assert_eq!(
        status(&f, "pause", &nats, &run)["run"]["phase"],
        "committed"
    );
}

#[test]
fn halt_stops_the_run_for_good_and_a_committed_run_cannot_be_halted() {
    let nats = NatsServer::start();
    let f = Fixture::new(2_000, 4, 61, &[]);
    let config = f.config("halt", &fleet_settings(&nats, "halt"));
    let (coordinator, run) = start_coordinator(&f, &config, "halt");
    replayfleet(&[
        "halt",
        "--nats",
        &nats.url(),
        "--run",
        &run,
        "--reason",
        "wrong SQL",
    ])
    .expect_code(0);
    let out = coordinator.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong SQL"));
    let s = status(&f, "halt", &nats, &run);
    assert_eq!(s["run"]["phase"], "halted");
    assert_eq!(s["leases_queued"], 0, "{s:#}");
    // a worker started now finds nothing to do, and nothing is ever committed
    let _worker = WorkerProcess::start(&nats.url());
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(f.history("halt").is_empty());
    // the name's next run is a new one, not the halted run
    let out = replayfleet(&["coordinator", "--config", &config, "--json"]);
    out.expect_code(0);
    let committed = f.history("halt");
    assert_eq!(committed.len(), 1);
    assert_ne!(committed[0]["run_id"], run.as_str());
    let done = committed[0]["run_id"].as_str().unwrap();
    replayfleet(&["halt", "--nats", &nats.url(), "--run", done])
        .expect_code(3)
        .stderr_names(&["committed", "rollback"]);
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Prometheus text a process serves, or an empty string while it is not up.
pub(crate) fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ =
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The value of a metric line starting with `name` (summed over its label sets).
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_worker_serves_metrics_that_move_with_the_run() {
    let nats = NatsServer::start();
    let f = Fixture::new(2_000, 4, 67, &["--all-edge-cases"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin())
        .args([
            "worker",
            "--nats",
            &nats.url(),
            "--lease-ttl",
            "2s",
            "--metrics-addr",
            &addr,
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _worker = WorkerProcess(child);
    let mut before = String::new();
    for _ in 0..100 {
        before = scrape(port);
        if !before.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        before.contains("HTTP/1.1 200"),
        "no metrics endpoint: {before}"
    );
    assert_eq!(metric(&before, "replayfleet_shards_completed_total"), 0.0);
    let config = f.config("metrics", &fleet_settings(&nats, "metrics"));
    replayfleet(&["coordinator", "--config", &config]).expect_code(0);
    let after = scrape(port);
    let shards = f.history("metrics")[0]["totals"]["shards"]
        .as_f64()
        .unwrap();
    assert_eq!(
        metric(&after, "replayfleet_shards_completed_total"),
        shards,
        "{after}"
    );
    assert!(
        metric(&after, "replayfleet_events_replayed_total") >= 2_000.0,
        "{after}"
    );
    assert!(
        after.contains("replayfleet_anomalies_total{kind="),
        "{after}"
    );
    assert!(
        after.contains("replayfleet_shard_duration_seconds_bucket{le="),
        "{after}"
    );
}

#[test]
fn the_fleet_on_s3_commits_the_embedded_fingerprint_of_a_local_copy() {
    let s3 = replayfleet_testkit::S3Server::start();
    let bucket = s3.create_bucket();
    let env = s3.env();
    let nats = NatsServer::start();
    // the same archive on a local folder (for the embedded run) and on S3 (for the fleet)
    let f = Fixture::new(3_000, 4, 71, &["--all-edge-cases"]);
    let expected = embedded_fingerprint(&f, "local", Settings::default().target_events);
    let source = format!("s3://{bucket}/archive/events");
    crate::support::replayfleet_env(
        &[
            "generate",
            "--out",
            &source,
            "--events",
            "3000",
            "--partitions",
            "4",
            "--streams",
            "60",
            "--seed",
            "71",
            "--all-edge-cases",
        ],
        &env,
    )
    .expect_code(0);

    let workers: Vec<WorkerProcess> = (0..2)
        .map(|_| WorkerProcess::start_in(&nats.url(), &[], &env))
        .collect();
    let target = format!("s3://{bucket}/projections/balances");
    let config = f.config(
        "s3",
        &Settings {
            target: "unused",
            target_events: 800,
            extra: format!(
                "[fleet]\nnats_url = \"{}\"\nlease_ttl = \"2s\"\n",
                nats.url()
            ),
            ..Settings::default()
        },
    );
    // point source and target at the bucket (relative paths in the fixture's template)
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("url = \"events\"", &format!("url = \"{source}\""))
        .replace("url = \"unused\"", &format!("url = \"{target}\""));
    std::fs::write(&config, text).unwrap();
    let out =
        crate::support::replayfleet_env(&["coordinator", "--config", &config, "--json"], &env);
    out.expect_code(0);
    let history =
        crate::support::replayfleet_env(&["history", "--target", &target, "--json"], &env);
    history.expect_code(0);
    let history = history.json();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history:#}");
    assert_eq!(history[0]["fingerprint"], expected.as_str());
    assert!(history[0]["totals"]["shards"].as_u64().unwrap() > 1);
    drop(workers);
}

/// A worker refuses a plan of another build (another digest of the sources): it releases
/// the lease, says why, and replays nothing; the plan as its build wrote it replays.
#[test]
fn a_worker_refuses_a_plan_of_another_build() {
    let nats = NatsServer::start();
    let f = Fixture::new(600, 2, 7, &[]);
    let config = f.config("other", &fleet_settings(&nats, "other"));
    let (coordinator, run) = start_coordinator(&f, &config, "other");
    let plan_path = f.path(&format!("other/runs/{run}/plan.json"));
    let ours = std::fs::read(&plan_path).unwrap();
    let mut plan: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    let sources = plan["build"]["sources"].as_str().unwrap().to_owned();
    assert_eq!(sources.len(), 16, "{:#}", plan["build"]);
    plan["build"]["sources"] = "0123456789abcdef".into();
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();

    let log = f.path("worker.log");
    let mut worker = Command::new(bin())
        .args(["worker", "--nats", &nats.url(), "--lease-ttl", "2s"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let _ = worker.kill();
    let _ = worker.wait();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("was planned by another build")
            && said.contains("sources 0123456789abcdef")
            && said.contains(&format!("sources {sources}")),
        "{said}"
    );
    assert!(
        !f.path(&format!("other/runs/{run}/shards")).exists(),
        "a shard was replayed"
    );

    // The plan as this build wrote it: the run completes.
    std::fs::write(&plan_path, &ours).unwrap();
    let _worker = WorkerProcess::start(&nats.url());
    let out = coordinator.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.history("other").len(), 1);
}
