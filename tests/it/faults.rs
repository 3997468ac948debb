//! The fleet under faults: workers killed, frozen or stopped mid-shard, NATS restarted
//! mid-run, two coordinators for one run, TLS and nkey authentication, fleet-wide pacing.
//! Every test runs real processes against its own nats-server; shards are slowed down
//! with `pacing.events_per_second` so that "mid-shard" is a window of seconds.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use replayfleet_testkit::NatsServer;

use crate::{
    fleet::{
        WorkerProcess, embedded_fingerprint, fleet_settings, free_port, metric, start_coordinator,
        status,
    },
    replay::{Fixture, Settings},
    support::{bin, replayfleet},
};

/// A fleet config whose shards (about 800 events) each take about `800 / per_second`
/// seconds, the pace being shared by the whole fleet.
fn paced(nats: &NatsServer, target: &'static str, per_second: u64) -> Settings {
    let mut settings = fleet_settings(nats, target);
    settings.extra = format!(
        "{}\n[pacing]\nevents_per_second = {per_second}\n",
        settings.extra
    );
    settings
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Polls `f` every 50 ms until it yields, panicking with `what` after `within`.
fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a background process and asserts it exited 0, showing its stderr if not.
#[track_caller]
fn succeeds(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until a worker holds one of the run's shards.
fn wait_running(f: &Fixture, target: &str, nats: &NatsServer, run: &str) {
    wait_for(Duration::from_secs(30), "a shard to be running", || {
        (status(f, target, nats, run)["shards"]["running"].as_u64() >= Some(1)).then_some(())
    });
}

/// The embedded run's fingerprint and, per shard, its output files' SHA-256.
fn embedded_reference(f: &Fixture) -> (String, BTreeMap<String, Vec<String>>) {
    let fingerprint = embedded_fingerprint(f, "embedded", 800);
    let run = f.history("embedded")[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (
        fingerprint,
        shard_outputs(&f.path(&format!("embedded/runs/{run}"))),
    )
}

/// Shard name → the SHA-256 of each output file its lineage manifest names.
fn shard_outputs(run_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut outputs = BTreeMap::new();
    for entry in std::fs::read_dir(run_dir.join("shards")).unwrap() {
        let entry = entry.unwrap();
        let lineage: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path().join("lineage.json")).unwrap())
                .unwrap();
        let sums = lineage["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["sha256"].as_str().unwrap().to_owned())
            .collect();
        outputs.insert(entry.file_name().to_str().unwrap().to_owned(), sums);
    }
    outputs
}

/// Every file under `dir` and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The text of `GET path` on a local port (status line included), empty if unreachable.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[test]
fn a_worker_killed_mid_shard_loses_nothing_and_the_run_commits_once() {
    let nats = NatsServer::start();
    let f = Fixture::new(3_000, 4, 73, &["--all-edge-cases"]);
    let (fingerprint, expected) = embedded_reference(&f);

    let config = f.config("kill", &paced(&nats, "kill", 500));
    let (coordinator, run) = start_coordinator(&f, &config, "kill");
    let mut doomed = WorkerProcess::start(&nats.url());
    wait_running(&f, "kill", &nats, &run);
    doomed.0.kill().unwrap(); // SIGKILL: no chance to give the lease back
    doomed.0.wait().unwrap();

    let port = free_port();
    let _survivor = WorkerProcess::start_with(
        &nats.url(),
        &["--metrics-addr", &format!("127.0.0.1:{port}")],
    );
    succeeds(coordinator);
    let history = f.history("kill");
    assert_eq!(history.len(), 1, "exactly one commit");
    assert_eq!(history[0]["fingerprint"], fingerprint.as_str());
    // every shard's output, the killed one's included, is byte for byte the embedded run's
    assert_eq!(
        shard_outputs(&f.path(&format!("kill/runs/{run}"))),
        expected
    );
    // the lease came back after its TTL; a lost worker is not a failed attempt
    let metrics = crate::fleet::scrape(port);
    assert!(
        metric(&metrics, "replayfleet_lease_redeliveries_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(status(&f, "kill", &nats, &run)["failures"], 0);
}

#[test]
fn a_frozen_worker_that_wakes_after_its_ttl_changes_no_committed_file() {
    let nats = NatsServer::start();
    let f = Fixture::new(3_000, 4, 79, &[]);
    let config = f.config("zombie", &paced(&nats, "zombie", 500));
    let (coordinator, run) = start_coordinator(&f, &config, "zombie");
    let mut zombie = WorkerProcess::start(&nats.url());
    wait_running(&f, "zombie", &nats, &run);
    let pid = zombie.0.id();
    signal(pid, "-STOP");

    let _survivor = WorkerProcess::start(&nats.url());
    succeeds(coordinator);
    let target = f.path("zombie");
    let committed = files(&target);
    let history = f.history("zombie");
    assert_eq!(history.len(), 1);

    // the zombie wakes: its heartbeat is refused (or its late manifest loses the race)
    signal(pid, "-CONT");
    std::thread::sleep(Duration::from_secs(4));
    let after = files(&target);
    for (path, bytes) in &committed {
        assert!(
            after.get(path) == Some(bytes),
            "{path} changed or vanished after the zombie woke"
        );
    }
    assert_eq!(
        f.history("zombie"),
        history,
        "the zombie changed the history"
    );
    assert!(
        zombie.0.try_wait().unwrap().is_none(),
        "the woken worker should carry on serving"
    );
}

#[test]
fn a_nats_restart_mid_run_does_not_stop_the_run() {
    let mut nats = NatsServer::start();
    let f = Fixture::new(3_000, 4, 83, &["--all-edge-cases"]);
    let (fingerprint, _) = embedded_reference(&f);
    let config = f.config("restart", &paced(&nats, "restart", 800));
    let (coordinator, run) = start_coordinator(&f, &config, "restart");
    let url = nats.url();
    let _workers = [WorkerProcess::start(&url), WorkerProcess::start(&url)];
    wait_for(Duration::from_secs(30), "a first shard done", || {
        (status(&f, "restart", &nats, &run)["shards"]["done"].as_u64() >= Some(1)).then_some(())
    });
    nats.restart(); // same port, same store folder
    succeeds(coordinator);
    let history = f.history("restart");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["fingerprint"], fingerprint.as_str());
}

#[test]
fn a_second_coordinator_for_the_same_run_publishes_no_extra_lease() {
    let nats = NatsServer::start();
    let f = Fixture::new(2_000, 4, 89, &[]);
    let config = f.config("twice", &fleet_settings(&nats, "twice"));
    let (first, run) = start_coordinator(&f, &config, "twice");
    let plan: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.path(&format!("twice/runs/{run}/plan.json"))).unwrap(),
    )
    .unwrap();
    let shards = plan["shards"].as_array().unwrap().len() as u64;
    assert!(shards > 1);
    assert_eq!(status(&f, "twice", &nats, &run)["leases_queued"], shards);

    // a second coordinator of the same config resumes the same run and publishes again
    let second = Command::new(bin())
        .args(["coordinator", "--config", &config])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::read_dir(f.path("twice/runs")).unwrap().count(),
        1,
        "the second coordinator planned another run"
    );
    assert_eq!(
        status(&f, "twice", &nats, &run)["leases_queued"],
        shards,
        "one lease per shard, however many coordinators published"
    );

    let _worker = WorkerProcess::start(&nats.url());
    for coordinator in [first, second] {
        succeeds(coordinator);
    }
    let history = f.history("twice");
    assert_eq!(history.len(), 1, "exactly one commit");
    assert_eq!(history[0]["run_id"], run.as_str());
}

#[test]
fn sigterm_drains_a_worker_that_releases_its_lease_when_the_drain_runs_out() {
    let nats = NatsServer::start();
    let f = Fixture::new(3_000, 4, 97, &[]);
    let config = f.config("term", &paced(&nats, "term", 300));
    let port = free_port();
    let mut draining = WorkerProcess::start_with(
        &nats.url(),
        &[
            "--drain-timeout",
            "1s",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let ready = wait_for(Duration::from_secs(20), "the worker's /readyz", || {
        let r = http_get(port, "/readyz");
        r.contains(" 200 ").then_some(r)
    });
    assert!(ready.contains("ready"), "{ready}");
    assert!(http_get(port, "/healthz").contains(" 200 "));
    assert!(http_get(port, "/metrics").contains(" 200 "));
    assert!(http_get(port, "/nope").contains(" 404 "));

    let (coordinator, run) = start_coordinator(&f, &config, "term");
    wait_running(&f, "term", &nats, &run);
    let pid = draining.0.id();
    signal(pid, "-TERM");
    let started = Instant::now();
    let code = wait_for(Duration::from_secs(15), "the worker to exit", || {
        draining.0.try_wait().unwrap()
    });
    assert_eq!(code.code(), Some(0), "a drained worker exits 0");
    let took = started.elapsed();

    // its shard was released (not counted as an attempt) and another worker finishes
    let _next = WorkerProcess::start(&nats.url());
    succeeds(coordinator);
    assert_eq!(f.history("term").len(), 1);
    assert_eq!(status(&f, "term", &nats, &run)["failures"], 0);
    assert!(
        took < Duration::from_secs(15),
        "the worker left within its drain timeout plus a release: {took:?}"
    );
}

#[test]
fn pacing_holds_the_whole_fleet_to_the_configured_rate() {
    let nats = NatsServer::start();
    let f = Fixture::new(3_000, 4, 101, &[]);
    let per_second = 1_000;
    let config = f.config("paced", &paced(&nats, "paced", per_second));
    let _workers = [
        WorkerProcess::start(&nats.url()),
        WorkerProcess::start(&nats.url()),
    ];
    let started = Instant::now();
    replayfleet(&["coordinator", "--config", &config]).expect_code(0);
    let took = started.elapsed();
    // 3,000 events at 1,000 a second across both workers: the schedule's last
    // reservation (at most one segment's batch) starts no earlier than ~2 s in.
    let plan_events: u64 = f.history("paced")[0]["totals"]["events_read"]
        .as_u64()
        .unwrap_or(3_000);
    let floor = Duration::from_millis((plan_events.saturating_sub(1_000)) * 1_000 / per_second);
    assert!(
        took >= floor,
        "two workers read {plan_events} events in {took:?}, faster than {per_second}/s allows"
    );
}

/// Runs `openssl` with `args` in `dir`, panicking with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certificates(dir: &Path) {
    let key = |name: &str| {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=replayfleet test CA",
                "-keyout",
                name,
                "-out",
                "ca.pem",
            ],
        )
    };
    key("ca-key.pem");
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    for who in ["server", "client"] {
        let (k, csr, pem) = (
            format!("{who}-key.pem"),
            format!("{who}.csr"),
            format!("{who}.pem"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &k,
                "-out",
                &csr,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &pem,
            ],
        );
    }
}

#[test]
fn the_fleet_runs_over_mutual_tls_with_nkey_authentication() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let user = nkeys::KeyPair::new_user();
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let nats = NatsServer::start_with(&format!(
        r#"
tls {{
  cert_file: "{}"
  key_file: "{}"
  ca_file: "{}"
  verify: true
  timeout: 5
}}
authorization {{
  users = [ {{ nkey: "{}" }} ]
}}
"#,
        p("server.pem"),
        p("server-key.pem"),
        p("ca.pem"),
        user.public_key()
    ));
    assert!(nats.url().starts_with("tls://"), "{}", nats.url());

    let f = Fixture::new(1_500, 2, 103, &[]);
    let mut settings = fleet_settings(&nats, "tls");
    settings.extra = format!(
        "[fleet]\nnats_url = \"{}\"\nlease_ttl = \"2s\"\nnats_nkey = \"{}\"\nnats_tls_ca = \"{}\"\nnats_tls_cert = \"{}\"\nnats_tls_key = \"{}\"\n",
        nats.url(),
        p("user.nk"),
        p("ca.pem"),
        p("client.pem"),
        p("client-key.pem"),
    );
    let config = f.config("tls", &settings);
    let (nkey, ca, cert, key) = (
        p("user.nk"),
        p("ca.pem"),
        p("client.pem"),
        p("client-key.pem"),
    );
    let _worker = WorkerProcess::start_with(
        &nats.url(),
        &[
            "--nats-nkey",
            &nkey,
            "--nats-tls-ca",
            &ca,
            "--nats-tls-cert",
            &cert,
            "--nats-tls-key",
            &key,
        ],
    );
    replayfleet(&["coordinator", "--config", &config]).expect_code(0);
    assert_eq!(f.history("tls").len(), 1);

    // without the nkey the server refuses the worker, which says where and why
    replayfleet(&[
        "worker",
        "--nats",
        &nats.url(),
        "--nats-tls-ca",
        &ca,
        "--nats-tls-cert",
        &cert,
        "--nats-tls-key",
        &key,
    ])
    .expect_code(1)
    .stderr_names(&[&nats.url()]);
    // a seed file that holds no user seed is named
    std::fs::write(dir.path().join("bad.nk"), "not a seed").unwrap();
    replayfleet(&["worker", "--nats", &nats.url(), "--nats-nkey", &p("bad.nk")])
        .expect_code(2)
        .stderr_names(&["bad.nk", "SU"]);
}

#[test]
fn a_halted_coordinator_keeps_its_final_phase_scrapable_while_it_lingers() {
    let nats = NatsServer::start();
    let f = Fixture::new(1_000, 2, 107, &[]);
    let config = f.config("linger", &fleet_settings(&nats, "linger"));
    let port = free_port();
    let mut coordinator = Command::new(bin())
        .args([
            "coordinator",
            "--config",
            &config,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-linger",
            "20s",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_for(Duration::from_secs(30), "the run's plan", || {
        let mut entries = std::fs::read_dir(f.path("linger/runs")).ok()?;
        let entry = entries.next()?.ok()?;
        entry
            .path()
            .join("plan.json")
            .is_file()
            .then(|| entry.file_name().to_str().unwrap().to_owned())
    });
    wait_for(Duration::from_secs(10), "the run state", || {
        (status(&f, "linger", &nats, &run)["run"]["phase"] == "running").then_some(())
    });
    replayfleet(&["halt", "--nats", &nats.url(), "--run", &run]).expect_code(0);
    let halted = format!("replayfleet_run_phase{{run=\"{run}\",phase=\"halted\"}} 1");
    let text = wait_for(
        Duration::from_secs(15),
        "the halted phase on /metrics",
        || {
            let text = crate::fleet::scrape(port);
            text.contains(&halted).then_some(text)
        },
    );
    assert!(
        text.contains(&format!(
            "replayfleet_run_phase{{run=\"{run}\",phase=\"running\"}} 0"
        )),
        "{text}"
    );
    assert!(
        coordinator.try_wait().unwrap().is_none(),
        "the coordinator should still be serving its final metrics"
    );
    let _ = coordinator.kill();
    let _ = coordinator.wait();
}

/// A shard whose every worker ends while replaying it (here a jq step nested into 10^9
/// values, past `limits.step_time`, which ends the worker's process with exit 2) fails
/// once its lease has expired `fleet.max_attempts` times, instead of taking the workers
/// down one after another for ever: the run halts naming the shard, nothing is committed,
/// and the worker that found it so is still serving. On the code before, the first worker
/// heartbeated its lease for ever and the run never ended.
#[test]
fn a_shard_that_ends_every_worker_fails_after_its_attempts() {
    let nats = NatsServer::start();
    let f = Fixture::new(300, 1, 5, &[]);
    let opened = f.path("contracts/account_opened.yaml");
    let fixed = std::fs::read_to_string(&opened).unwrap();
    let endless = fixed.replace(
        "- jq: '{holder:",
        "- jq: '([range(1000)] as $a | [$a[] as $x | $a[] as $y | $a[]] | length) as $n | {holder:",
    );
    assert_ne!(endless, fixed);
    std::fs::write(&opened, endless).unwrap();
    let mut settings = fleet_settings(&nats, "poison");
    settings.extra = format!(
        "{}max_attempts = 1\n[limits]\nstep_time = \"1s\"\n",
        settings.extra
    );
    let config = f.config("poison", &settings);
    let (coordinator, _run) = start_coordinator(&f, &config, "poison");
    let mut first = WorkerProcess::start(&nats.url());
    let code = wait_for(Duration::from_secs(60), "the first worker to end", || {
        first.0.try_wait().unwrap()
    })
    .code();
    assert_eq!(code, Some(2), "the watchdog ends the worker with exit 2");
    // The lease comes back after its TTL (2s), expired once: past `max_attempts = 1`.
    let mut second = WorkerProcess::start(&nats.url());
    let out = coordinator.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "its lease expired 1 times with no worker finishing or failing it",
        "limits.step_time",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(f.history("poison").is_empty(), "nothing is committed");
    assert!(
        second.0.try_wait().unwrap().is_none(),
        "the worker that failed the shard is still serving"
    );
}
