//! `replayfleet coordinator` and `replayfleet worker`: the fleet roles over NATS.

use std::io::IsTerminal;
use std::sync::Arc;

use replayfleet_config::Config;
use replayfleet_coordinator::{CoordinateOptions, Fleet, coordinate, hostname};
use replayfleet_queue::{LeaseQueue, NatsConnect, NatsQueueOptions, RunStore};
use replayfleet_worker::{Runs, Worker};

use crate::{
    cli::{CoordinatorArgs, WorkerArgs},
    commands::finalize::{report_outcome, who},
    exit::Coded,
};

async fn open(
    connect: &NatsConnect,
    ttl: std::time::Duration,
) -> anyhow::Result<(Arc<dyn LeaseQueue>, Arc<dyn RunStore>)> {
    Ok(replayfleet_queue::open_nats(connect.connect().await?, ttl).await?)
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<u8> {
    let health = crate::serve::serve(args.metrics_addr)?;
    let config = Config::load(&args.config)?;
    let url = args
        .nats
        .clone()
        .or_else(|| config.fleet.nats_url.clone())
        .ok_or_else(|| {
            Coded::input(format!(
                "{}: no NATS server: set `fleet.nats_url` or pass --nats (or use `replayfleet run` for an embedded run)",
                args.config.display()
            ))
        })?;
    let connect = NatsConnect {
        url,
        creds: config.fleet.nats_creds.clone(),
        nkey: config.fleet.nats_nkey.clone(),
        tls_ca: config.fleet.nats_tls_ca.clone(),
        tls_cert: config.fleet.nats_tls_cert.clone(),
        tls_key: config.fleet.nats_tls_key.clone(),
    };
    let ttl = config.fleet.lease_ttl;
    let (queue, store) = open(&connect, ttl).await?;
    health.ready();
    let fleet = Fleet {
        queue,
        store,
        local_workers: 0,
        ttl,
    };
    let options = CoordinateOptions {
        by: who(),
        resume: args.run.clone(),
    };
    let progress = |p: &replayfleet_coordinator::Progress| {
        if !args.json {
            eprintln!(
                "shards {}/{}, events {}/{}, anomalies {}",
                p.shards_done, p.shards_total, p.events_done, p.events_total, p.anomalies
            );
        }
    };
    let result = coordinate(&config, &fleet, &options, &progress).await;
    if args.metrics_addr.is_some() && !args.metrics_linger.is_zero() {
        // Halted or refused runs are exactly the ones an alert must see.
        tracing::info!(linger = ?args.metrics_linger, "serving the final metrics before exiting");
        health.draining();
        tokio::time::sleep(args.metrics_linger).await;
    }
    let result = result?;
    if args.json {
        crate::output::print_json(&serde_json::json!({ "run_id": result.plan.run_id }))?;
    } else {
        println!("run {}", result.plan.run_id);
    }
    report_outcome(&result.finalized, args.json, &result.plan.target)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let health = crate::serve::serve(args.metrics_addr)?;
    let connect = NatsConnect {
        tls_cert: args.nats_tls_cert.clone(),
        tls_key: args.nats_tls_key.clone(),
        ..connect_of(&args.nats)
    };
    let (queue, store) = open(&connect, args.lease_ttl).await?;
    let runs = Runs::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (abandon_tx, abandon_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.workers.max(1) {
        let worker = Worker::new(
            format!("{}/{}-{i}", hostname(), std::process::id()),
            Arc::clone(&queue),
            Arc::clone(&store),
            runs.clone(),
            args.lease_ttl,
        )
        .abandon_on(abandon_rx.clone());
        let stop = stop_rx.clone();
        tasks.spawn(async move { worker.run(stop).await });
    }
    tracing::info!(nats = %replayfleet_config::redact_url(&args.nats.nats), workers = args.workers, "worker started");
    health.ready();
    shutdown_signal().await;
    health.draining();
    tracing::info!(drain_timeout = ?args.drain_timeout, "stopping: finishing the leases in hand, claiming no more");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(args.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout: abandoning the shards in hand and releasing their leases");
        let _ = abandon_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
    Ok(crate::exit::SUCCESS)
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn connect_of(nats: &crate::cli::NatsArgs) -> NatsConnect {
    NatsConnect {
        url: nats.nats.clone(),
        creds: nats.nats_creds.clone(),
        nkey: nats.nats_nkey.clone(),
        tls_ca: nats.nats_tls_ca.clone(),
        ..NatsConnect::default()
    }
}

/// Opens the fleet's queue and store for an operator command, adopting the lease TTL
/// the fleet's consumer was created with (an operator command must not change it).
async fn open_existing(
    nats: &crate::cli::NatsArgs,
) -> anyhow::Result<(Arc<dyn LeaseQueue>, Arc<dyn RunStore>)> {
    let connect = connect_of(nats);
    let client = connect.connect().await?;
    let defaults = NatsQueueOptions::default();
    let js = replayfleet_queue::async_nats::jetstream::new(client);
    let ttl = match js.get_stream(&defaults.stream).await {
        Ok(stream) => match stream.consumer_info(&defaults.consumer).await {
            Ok(info) => info.config.ack_wait,
            Err(_) => defaults.ttl,
        },
        Err(_) => defaults.ttl,
    };
    open(&connect, ttl).await
}

pub async fn halt(args: crate::cli::HaltArgs) -> anyhow::Result<u8> {
    let (queue, store) = open_existing(&args.control.nats).await?;
    let removed =
        replayfleet_coordinator::halt(&*queue, &*store, &args.control.run, &args.reason).await?;
    println!(
        "run {} halted: {removed} leases removed; workers holding one stop at their next heartbeat; it will never commit",
        args.control.run
    );
    Ok(crate::exit::SUCCESS)
}

pub async fn pause(args: crate::cli::ControlArgs) -> anyhow::Result<u8> {
    let (queue, store) = open_existing(&args.nats).await?;
    replayfleet_coordinator::pause(&*queue, &*store, &args.run).await?;
    println!(
        "run {} paused: no lease of it is claimed until `replayfleet resume`",
        args.run
    );
    Ok(crate::exit::SUCCESS)
}

pub async fn resume(args: crate::cli::ControlArgs) -> anyhow::Result<u8> {
    let (queue, store) = open_existing(&args.nats).await?;
    replayfleet_coordinator::resume(&*queue, &*store, &args.run).await?;
    println!("run {} resumed", args.run);
    Ok(crate::exit::SUCCESS)
}

pub async fn status(args: crate::cli::StatusArgs) -> anyhow::Result<u8> {
    use replayfleet_archive::Location;
    use replayfleet_replay::{Plan, Target};
    let target = Target::new(Location::parse(
        &args.target,
        None,
        &replayfleet_config::store_options_from_env("target"),
    )?);
    let run_id = match &args.run {
        Some(id) => id.clone(),
        None => target
            .latest_run()
            .await?
            .ok_or_else(|| Coded::input(format!("no run in {}", args.target)))?,
    };
    let plan_path = Target::plan_path(&run_id);
    let plan_bytes = target
        .get(&plan_path)
        .await?
        .ok_or_else(|| Coded::input(format!("no run `{run_id}` in `{}`", args.target)))?;
    let plan = Plan::from_json(&plan_path, &plan_bytes)?;
    let nats = match &args.nats {
        Some(url) => Some(
            open_existing(&crate::cli::NatsArgs {
                nats: url.clone(),
                nats_creds: args.nats_creds.clone(),
                nats_nkey: args.nats_nkey.clone(),
                nats_tls_ca: args.nats_tls_ca.clone(),
            })
            .await?,
        ),
        None => None,
    };
    let events_total = plan.shards.iter().map(|x| x.rows).sum::<u64>();
    if let Some((queue, store)) = &nats
        && args.watch
        && !args.json
        && std::io::stderr().is_terminal()
    {
        return watch_bars(
            &**queue,
            &**store,
            &run_id,
            plan.shards.len() as u64,
            events_total,
        )
        .await;
    }
    loop {
        let line = match &nats {
            Some((queue, store)) => {
                let s = replayfleet_coordinator::status(&**queue, &**store, &run_id).await?;
                if args.json {
                    serde_json::to_string(&s)?
                } else {
                    status_line(&run_id, &s, plan.shards.len() as u64, events_total)
                }
            }
            None => {
                let mut done = 0;
                for shard in &plan.shards {
                    if target
                        .exists(&Target::lineage_path(&run_id, &shard.id))
                        .await?
                    {
                        done += 1;
                    }
                }
                let report: Option<serde_json::Value> =
                    target.get_json(&Target::report_path(&run_id)).await?;
                let outcome = report
                    .as_ref()
                    .and_then(|r| r["outcome"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "not finalized".into());
                if args.json {
                    serde_json::json!({"run_id": run_id, "shards": plan.shards.len(), "shards_done": done, "outcome": outcome}).to_string()
                } else {
                    format!(
                        "run {run_id}: shards {done}/{} with a lineage manifest · {outcome}",
                        plan.shards.len()
                    )
                }
            }
        };
        println!("{line}");
        let finished = match &nats {
            Some((_, store)) => store
                .run(&run_id)
                .await?
                .is_none_or(|r| r.value.phase.is_finished()),
            None => true,
        };
        if !args.watch || finished {
            return Ok(crate::exit::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn status_line(
    run_id: &str,
    s: &replayfleet_coordinator::Status,
    shards_total: u64,
    events_total: u64,
) -> String {
    format!(
        "run {run_id}: {} · shards {}/{shards_total} done, {} running, {} failed · events {}/{events_total} · anomalies {} · leases {} queued, {} claimed{}",
        s.run.phase.as_str(),
        s.shards.done,
        s.shards.running,
        s.shards.failed,
        s.events_done,
        s.anomalies,
        s.leases_queued,
        s.leases_claimed,
        s.run
            .reason
            .as_deref()
            .map(|r| format!(" · {r}"))
            .unwrap_or_default()
    )
}

/// `status --watch` on a terminal: a bar of shards and a bar of events (rate, ETA),
/// refreshed every second until the run ends; then the final status line.
async fn watch_bars(
    queue: &dyn LeaseQueue,
    store: &dyn RunStore,
    run_id: &str,
    shards_total: u64,
    events_total: u64,
) -> anyhow::Result<u8> {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let bars = MultiProgress::new();
    let shards = bars.add(ProgressBar::new(shards_total));
    shards.set_style(
        ProgressStyle::with_template("shards {bar:30.cyan/blue} {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let events = bars.add(ProgressBar::new(events_total));
    events.set_style(
        ProgressStyle::with_template(
            "events {bar:30.green/blue} {human_pos}/{human_len} {per_sec} ETA {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    loop {
        let s = replayfleet_coordinator::status(queue, store, run_id).await?;
        shards.set_position(s.shards.done);
        shards.set_message(format!(
            "{} · {} running, {} failed · leases {} queued, {} claimed",
            s.run.phase.as_str(),
            s.shards.running,
            s.shards.failed,
            s.leases_queued,
            s.leases_claimed
        ));
        events.set_position(s.events_done);
        events.set_message(format!("· anomalies {}", s.anomalies));
        if s.run.phase.is_finished() {
            shards.finish();
            events.finish();
            println!("{}", status_line(run_id, &s, shards_total, events_total));
            return Ok(crate::exit::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
