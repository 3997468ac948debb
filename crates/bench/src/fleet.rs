//! `replayfleet-bench fleet`: the lease path over a real NATS server, measured side by
//! side in one run — publishing leases, the claim-to-ack overhead of one lease, and
//! worker processes two versus one.

use std::{
    process::{Child, Command as Process, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use replayfleet_config::Config;
use replayfleet_coordinator::{CoordinateOptions, Fleet, coordinate, publish_leases};
use replayfleet_finalizer::Finalized;
use replayfleet_generate::{GenerateSpec, generate};
use replayfleet_queue::{LeaseQueue, NatsConnect, NatsQueueOptions, RunStore, ShardStatus};
use replayfleet_replay::Target;
use serde::Serialize;

use replayfleet_cli::{
    exit::{self, Coded},
    output::{Table, print_json, thousands},
};

use crate::{
    FleetArgs,
    run::{BACKFILL, Scratch, local, write_example},
};

#[derive(Debug, Serialize)]
struct FleetReport {
    build: &'static str,
    nats_url: String,
    publish: PublishFigures,
    overhead: OverheadFigures,
    scaling: Option<ScalingFigures>,
}

#[derive(Debug, Serialize)]
struct PublishFigures {
    leases: usize,
    seconds: f64,
    leases_per_second: f64,
}

#[derive(Debug, Serialize)]
struct OverheadFigures {
    leases: usize,
    /// Mean time from claim to ack of one lease whose shard needs no work: claim, shard
    /// state "running", one heartbeat, shard state "done", ack.
    mean_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct ScalingFigures {
    events: u64,
    shards: usize,
    /// Seconds from the first look at the published shards to the last shard done.
    one_worker_seconds: f64,
    two_workers_seconds: f64,
    speedup: f64,
    fingerprints_equal: bool,
}

pub async fn fleet(args: FleetArgs) -> anyhow::Result<u8> {
    let scratch = Scratch::new("bench-fleet", false)?;
    let dir = scratch.path.canonicalize()?;
    let ttl = Duration::from_secs(30);
    let connect = NatsConnect {
        url: args.nats.clone(),
        ..NatsConnect::default()
    };
    let client = connect.connect().await?;
    // The bench uses the fleet's own stream and consumer (its worker processes do):
    // it refuses a server that holds leases of real runs.
    let defaults = NatsQueueOptions::default();
    if let Ok(mut stream) = replayfleet_queue::async_nats::jetstream::new(client.clone())
        .get_stream(&defaults.stream)
        .await
        && let Ok(info) = stream.info().await
        && info.state.messages > 0
    {
        return Err(Coded::input(format!(
            "{}: stream {} holds {} leases: run the bench against a NATS server of its own (scripts/bench-fleet.sh starts one)",
            args.nats, defaults.stream, info.state.messages
        )));
    }
    let (queue, store) = replayfleet_queue::open_nats(client, ttl).await?;
    let tag = ulid::Ulid::new().to_string().to_lowercase();

    // (1) Publishing, apart from planning: the coordinator's own publish path (a
    // lineage check in an empty target, then a conditional publish), many in flight.
    eprintln!("publishing {} leases ...", thousands(args.leases as u64));
    let target = Target::new(local(&dir.join("empty-target"))?);
    let shard_ids: Vec<String> = (0..args.leases).map(|i| format!("shard-{i:05}")).collect();
    let ids: Vec<&str> = shard_ids.iter().map(String::as_str).collect();
    let run = format!("bench-publish-{tag}");
    let started = Instant::now();
    let published = publish_leases(&*queue, &target, &run, &ids).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(published == args.leases, "published {published} leases");
    let (queued, _) = queue.pending(&run).await?;
    anyhow::ensure!(
        queued == args.leases as u64,
        "{queued} leases queued after publishing {}",
        args.leases
    );
    queue.remove_run(&run).await?;
    let publish = PublishFigures {
        leases: args.leases,
        seconds,
        leases_per_second: args.leases as f64 / seconds.max(1e-9),
    };

    // (2) Claim-to-ack of leases whose shard needs no work: the bookkeeping a worker
    // adds to every shard.
    eprintln!(
        "claiming and acking {} leases one at a time ...",
        args.overhead_leases
    );
    let run = format!("bench-overhead-{tag}");
    let shard_ids: Vec<String> = (0..args.overhead_leases)
        .map(|i| format!("shard-{i:05}"))
        .collect();
    let ids: Vec<&str> = shard_ids.iter().map(String::as_str).collect();
    publish_leases(&*queue, &target, &run, &ids).await?;
    let mut took = Vec::with_capacity(args.overhead_leases);
    for _ in 0..args.overhead_leases {
        let started = Instant::now();
        let lease = queue
            .claim(Duration::from_secs(5))
            .await?
            .context("a published lease did not come")?;
        store
            .update_shard(&lease.run_id, &lease.shard, &|s| {
                s.status = ShardStatus::Running;
            })
            .await?;
        queue.heartbeat(&lease).await?;
        store
            .update_shard(&lease.run_id, &lease.shard, &|s| {
                s.status = ShardStatus::Done;
            })
            .await?;
        queue.ack(&lease).await?;
        took.push(started.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    let overhead = OverheadFigures {
        leases: args.overhead_leases,
        mean_ms: took.iter().sum::<f64>() / took.len().max(1) as f64,
        p99_ms: took
            .get((took.len() * 99 / 100).min(took.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0),
    };

    // (3) Worker processes of one replay task each, two versus one, on a local-folder
    // archive (no S3 server shares the cores).
    let scaling = if args.events > 0 {
        Some(scaling(&args, &dir, &queue, &store, ttl, &tag).await?)
    } else {
        None
    };

    let report = FleetReport {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        nats_url: replayfleet_config::redact_url(&args.nats),
        publish,
        overhead,
        scaling,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    drop(scratch);
    Ok(exit::SUCCESS)
}

/// Worker processes, killed on drop.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn scaling(
    args: &FleetArgs,
    dir: &std::path::Path,
    queue: &Arc<dyn LeaseQueue>,
    store: &Arc<dyn RunStore>,
    ttl: Duration,
    tag: &str,
) -> anyhow::Result<ScalingFigures> {
    let source_dir = dir.join("data/events");
    std::fs::create_dir_all(&source_dir)?;
    eprintln!(
        "generating {} events over {} partitions ...",
        thousands(args.events),
        args.partitions
    );
    let spec = GenerateSpec::new(args.events, args.partitions, (args.events / 100).max(1), 42);
    generate(&local(&source_dir)?, &spec).await?;
    let config_path = write_example(dir)?;
    // The worker processes are the product's binary, built beside this one.
    let exe = std::env::current_exe()
        .context("finding this executable")?
        .with_file_name(format!("replayfleet{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        exe.exists(),
        "{} is missing: the fleet bench starts `replayfleet worker` processes from beside its own binary (build both: cargo build --release --bin replayfleet --bin replayfleet-bench)",
        exe.display()
    );

    let mut rounds = Vec::new();
    // Alternating rounds (1, 2, 1, 2, ...), the best of each kept: a disturbance of
    // the machine during one round does not decide the ratio.
    let plan: Vec<usize> = (0..args.repeat.max(1)).flat_map(|_| [1usize, 2]).collect();
    for (round, workers) in plan.into_iter().enumerate() {
        let target_dir = dir.join(format!("data/projections/{round}-{workers}-workers"));
        let config = Config::parse(
            BACKFILL,
            &config_path,
            vec![
                (
                    "REPLAYFLEET_RUN__NAME".to_owned(),
                    format!("bench-{round}-{workers}-workers-{tag}"),
                ),
                (
                    "REPLAYFLEET_SOURCE__URL".to_owned(),
                    source_dir.display().to_string(),
                ),
                (
                    "REPLAYFLEET_TARGET__URL".to_owned(),
                    target_dir.display().to_string(),
                ),
                (
                    "REPLAYFLEET_SHARDS__TARGET_EVENTS".to_owned(),
                    args.shard_events.to_string(),
                ),
                (
                    "REPLAYFLEET_FLEET__LEASE_TTL".to_owned(),
                    format!("{}s", ttl.as_secs()),
                ),
            ],
        )?;
        let children = (0..workers)
            .map(|_| {
                Process::new(&exe)
                    .args([
                        "worker",
                        "--nats",
                        &args.nats,
                        "--workers",
                        "1",
                        "--threads",
                        "1",
                        "--lease-ttl",
                        &format!("{}s", ttl.as_secs()),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {}", exe.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let _workers = Workers(children);
        eprintln!("replaying with {workers} worker process(es) ...");
        let fleet = Fleet {
            queue: Arc::clone(queue),
            store: Arc::clone(store),
            local_workers: 0,
            ttl,
        };
        // The replay phase: from the first look at the published shards to the last
        // shard done (planning before and finalizing after do not scale with workers).
        let window: std::sync::Mutex<(Option<Instant>, Option<Instant>)> = Default::default();
        let result = coordinate(
            &config,
            &fleet,
            &CoordinateOptions {
                by: "replayfleet-bench fleet".into(),
                resume: None,
            },
            &|p| {
                let mut w = window.lock().expect("window lock");
                w.0.get_or_insert_with(Instant::now);
                if p.shards_done == p.shards_total {
                    w.1.get_or_insert_with(Instant::now);
                }
            },
        )
        .await?;
        let (Some(first), Some(last)) = *window.lock().expect("window lock") else {
            anyhow::bail!("the run reported no progress");
        };
        let fingerprint = match &result.finalized {
            Finalized::Committed { report, .. } | Finalized::Refused { report } => {
                report.fingerprint.clone()
            }
            Finalized::Verified { report } => report.fingerprint.clone(),
            Finalized::AlreadyCommitted { .. } => {
                anyhow::bail!("the bench's run was committed already: a fresh target was expected")
            }
        };
        rounds.push((
            workers,
            (last - first).as_secs_f64(),
            fingerprint,
            result.plan.shards.len(),
        ));
    }
    let best = |workers: usize| {
        rounds
            .iter()
            .filter(|r| r.0 == workers)
            .map(|r| r.1)
            .fold(f64::INFINITY, f64::min)
    };
    Ok(ScalingFigures {
        events: args.events,
        shards: rounds[0].3,
        one_worker_seconds: best(1),
        two_workers_seconds: best(2),
        speedup: best(1) / best(2).max(1e-9),
        fingerprints_equal: rounds.iter().all(|r| r.2 == rounds[0].2),
    })
}

fn render(r: &FleetReport) -> String {
    let mut t = Table::new(&["measurement", "figure"]);
    t.row(vec![
        format!("publish {} leases", thousands(r.publish.leases as u64)),
        format!(
            "{:.2} s ({} leases/s)",
            r.publish.seconds,
            thousands(r.publish.leases_per_second as u64)
        ),
    ]);
    t.row(vec![
        format!("claim-to-ack, empty shard ({} leases)", r.overhead.leases),
        format!(
            "mean {:.2} ms, p99 {:.2} ms",
            r.overhead.mean_ms, r.overhead.p99_ms
        ),
    ]);
    if let Some(s) = &r.scaling {
        t.row(vec![
            format!(
                "replay phase, 1 worker process, {} events, {} shards",
                thousands(s.events),
                s.shards
            ),
            format!("{:.2} s", s.one_worker_seconds),
        ]);
        t.row(vec![
            "2 worker processes".to_owned(),
            format!("{:.2} s", s.two_workers_seconds),
        ]);
        t.row(vec![
            "speedup (2 vs 1)".to_owned(),
            format!(
                "{:.2}x{}",
                s.speedup,
                if s.fingerprints_equal {
                    ", same fingerprint"
                } else {
                    ", FINGERPRINTS DIFFER"
                }
            ),
        ]);
    }
    format!("{} build, NATS {}\n{}", r.build, r.nats_url, t.render())
}
