//! OpenLineage run events (issue: the audit trail): what a run writes under its folder and
//! POSTs to `[lineage] url`, checked against a local HTTP receiver and the schemas.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

use serde_json::Value;

use crate::{
    replay::{Fixture, Settings},
    schemas::{custom_facet_errors, errors, files_under, refused_run_with, validator},
};

/// A local HTTP server that answers 201 to every request and keeps (path, JSON body).
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || serve(stream, &keep));
            }
        });
        Receiver { port, received }
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }
}

/// Requests on one connection (keep-alive), until it closes.
fn serve(stream: std::net::TcpStream, keep: &Mutex<Vec<(String, Value)>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        keep.lock().unwrap().push((path, body));
        writer
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    }
}

/// The events a run wrote under its folder, by file name.
fn written(f: &Fixture, run_id: &str) -> Vec<(String, Value)> {
    let dir = f.path(&format!("target/runs/{run_id}/openlineage"));
    files_under(&dir)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (
                name,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

fn check_schema(events: &[Value]) {
    let v = validator("openlineage-2-0-2.schema.json");
    for event in events {
        let mut problems = errors(&v, event);
        problems.extend(custom_facet_errors(event));
        assert!(problems.is_empty(), "{problems:#?}\n{event:#}");
    }
}

fn lineage_settings(url: &str) -> Settings {
    Settings {
        target_events: 700,
        extra: format!("[lineage]\nurl = \"{url}\"\nnamespace = \"audit-tests\"\n"),
        ..Settings::default()
    }
}

#[test]
fn a_committed_run_posts_and_writes_its_openlineage_events() {
    let receiver = Receiver::start();
    let f = Fixture::new(2_000, 3, 73, &["--all-edge-cases"]);
    let run = f.run(
        &f.config(
            "lineaged",
            &lineage_settings(&format!("http://127.0.0.1:{}", receiver.port)),
        ),
        "2",
    );
    run.expect_code(0);
    let run_id = run.json()["run_id"].as_str().unwrap().to_owned();
    let commit = &f.history("target")[0];
    let shards = commit["totals"]["shards"].as_u64().unwrap() as usize;
    assert!(shards > 1);

    let posted = receiver.events();
    assert_eq!(posted.len(), 2 + 2 * shards, "{posted:#?}");
    assert!(posted.iter().all(|(path, _)| path == "/api/v1/lineage"));
    let posted: Vec<Value> = posted.into_iter().map(|(_, e)| e).collect();
    check_schema(&posted);
    // the same events are in the run folder
    let files = written(&f, &run_id);
    let mut on_disk: Vec<String> = files.iter().map(|(_, e)| e.to_string()).collect();
    let mut sent: Vec<String> = posted.iter().map(Value::to_string).collect();
    on_disk.sort();
    sent.sort();
    assert_eq!(on_disk, sent);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"run-START.json") && names.contains(&"run-COMPLETE.json"),
        "{names:?}"
    );

    let by_name = |n: &str| &files.iter().find(|(name, _)| name == n).unwrap().1;
    let start = by_name("run-START.json");
    assert_eq!(posted[0], *start, "START is posted first");
    assert_eq!(start["eventType"], "START");
    assert_eq!(start["job"]["namespace"], "audit-tests");
    assert_eq!(start["job"]["name"], "lineaged");
    assert_eq!(start["job"]["facets"]["jobType"]["processingType"], "BATCH");
    assert!(!start["inputs"].as_array().unwrap().is_empty());
    let parent_id = start["run"]["runId"].as_str().unwrap();
    // the schemas catch what the spec and the facets forbid
    let mut broken = start.clone();
    broken["run"]["facets"]["replayfleet_run"]["shards"] = "many".into();
    assert!(!custom_facet_errors(&broken).is_empty());
    broken["run"].as_object_mut().unwrap().remove("runId");
    broken["job"]["facets"]["jobType"]
        .as_object_mut()
        .unwrap()
        .remove("_producer");
    let ol = validator("openlineage-2-0-2.schema.json");
    assert!(
        errors(&ol, &broken).len() >= 2,
        "{:?}",
        errors(&ol, &broken)
    );
    assert_eq!(
        start["run"]["facets"]["replayfleet_run"]["runId"],
        run_id.as_str()
    );

    let complete = by_name("run-COMPLETE.json");
    assert_eq!(
        *posted.last().unwrap(),
        *complete,
        "COMPLETE is posted last"
    );
    assert_eq!(complete["run"]["runId"], parent_id);
    let all = complete["outputs"].as_array().unwrap();
    // the segments, then the Delta table at the version committed
    let (table, outputs) = all.split_last().unwrap();
    assert_eq!(outputs.len(), commit["segments"].as_array().unwrap().len());
    assert_eq!(
        table["facets"]["version"]["datasetVersion"], "1",
        "{table:#}"
    );
    assert_eq!(
        table["facets"]["storage"]["storageLayer"], "delta",
        "{table:#}"
    );
    assert_eq!(
        table["outputFacets"]["outputStatistics"]["rowCount"],
        commit["totals"]["rows"]
    );
    assert!(!table["name"].as_str().unwrap().ends_with('/'), "{table:#}");
    let discrepancy = &complete["run"]["facets"]["replayfleet_discrepancy"];
    assert_eq!(discrepancy["outcome"], "committed");
    assert_eq!(discrepancy["version"], 1);
    let rows: u64 = outputs
        .iter()
        .map(|o| {
            o["outputFacets"]["outputStatistics"]["rowCount"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, commit["totals"]["rows"].as_u64().unwrap());

    // one child run per shard, linked to the run
    let shard_complete = by_name("shard-00000-COMPLETE.json");
    assert_eq!(shard_complete["eventType"], "COMPLETE");
    assert_eq!(shard_complete["job"]["name"], "lineaged.shard-00000");
    let parent = &shard_complete["run"]["facets"]["parent"];
    assert_eq!(parent["run"]["runId"], parent_id);
    assert_eq!(parent["job"]["name"], "lineaged");
    assert_ne!(shard_complete["run"]["runId"], parent_id);
    assert_eq!(
        by_name("shard-00000-START.json")["run"]["runId"],
        shard_complete["run"]["runId"]
    );
    let input = &shard_complete["inputs"][0];
    assert!(
        input["facets"]["replayfleet_seqRange"]["seqMin"].is_i64(),
        "{input:#}"
    );
    assert_eq!(
        input["facets"]["replayfleet_checksum"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(
        !shard_complete["run"]["facets"]["replayfleet_upcasters"]["versions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let output = &shard_complete["outputs"][0];
    assert_eq!(output["namespace"], "file");
    assert!(
        output["name"]
            .as_str()
            .unwrap()
            .ends_with(commit["segments"][0]["path"].as_str().unwrap()),
        "{output:#}"
    );
    assert!(
        !output["facets"]["schema"]["fields"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn refused_and_halted_runs_end_with_fail_and_abort() {
    let f = Fixture::new(1_500, 2, 79, &["--conflicting-duplicates", "0.01"]);
    // halted by the conflicting_duplicate policy (halt): ABORT, naming it
    let halted = f.run(&f.config("halted", &Settings::default()), "2");
    halted.expect_code(3);
    let run_dir = files_under(&f.path("target/runs"))
        .into_iter()
        .find(|p| p.ends_with("plan.json"))
        .unwrap();
    let halted_id = run_dir
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let events = written(&f, &halted_id);
    check_schema(&events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    let abort = &events
        .iter()
        .find(|(n, _)| n == "run-ABORT.json")
        .unwrap_or_else(|| panic!("{events:#?}"))
        .1;
    let message = abort["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("conflicting_duplicate"), "{message}");
    assert!(abort["outputs"].as_array().unwrap().is_empty());

    // refused by an invariant: FAIL, with the verdict; a receiver that is down does not
    // fail the run
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = down.local_addr().unwrap().port();
    drop(down);
    let g = Fixture::new(1_500, 2, 83, &[]);
    let refused = refused_run_with(
        &g,
        "refused",
        lineage_settings(&format!("http://127.0.0.1:{port}")),
    );
    let events = written(&g, &refused);
    check_schema(&events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    let fail = &events.iter().find(|(n, _)| n == "run-FAIL.json").unwrap().1;
    let facets = &fail["run"]["facets"];
    assert!(
        facets["errorMessage"]["message"]
            .as_str()
            .unwrap()
            .contains("invariant[0]"),
        "{facets:#}"
    );
    assert_eq!(facets["replayfleet_discrepancy"]["outcome"], "refused");
    assert_eq!(
        facets["replayfleet_discrepancy"]["failedChecks"][0]["name"],
        "invariant[0]"
    );
}
