//! `replayfleet coordinator` and `replayfleet worker`: the fleet roles over NATS.

use std::sync::Arc;

use replayfleet_config::Config;
use replayfleet_coordinator::{CoordinateOptions, Fleet, coordinate, hostname};
use replayfleet_queue::{
    LeaseQueue, NatsConnect, NatsQueue, NatsQueueOptions, NatsStore, NatsStoreOptions, RunStore,
};
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
    let client = connect.connect().await?;
    let queue = NatsQueue::connect(
        client.clone(),
        NatsQueueOptions {
            ttl,
            ..NatsQueueOptions::default()
        },
    )
    .await?;
    let store = NatsStore::connect(client, NatsStoreOptions::default()).await?;
    Ok((Arc::new(queue), Arc::new(store)))
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<u8> {
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
        tls_ca: config.fleet.nats_tls_ca.clone(),
        tls_cert: config.fleet.nats_tls_cert.clone(),
        tls_key: config.fleet.nats_tls_key.clone(),
    };
    let ttl = config.fleet.lease_ttl;
    let (queue, store) = open(&connect, ttl).await?;
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
    let result = coordinate(&config, &fleet, &options, &progress).await?;
    if args.json {
        crate::output::print_json(&serde_json::json!({ "run_id": result.plan.run_id }))?;
    } else {
        println!("run {}", result.plan.run_id);
    }
    report_outcome(&result.finalized, args.json)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let connect = NatsConnect {
        url: args.nats.clone(),
        creds: args.nats_creds.clone(),
        tls_ca: args.nats_tls_ca.clone(),
        tls_cert: args.nats_tls_cert.clone(),
        tls_key: args.nats_tls_key.clone(),
    };
    let (queue, store) = open(&connect, args.lease_ttl).await?;
    let runs = Runs::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..args.workers.max(1) {
        let worker = Worker::new(
            format!("{}/{}-{i}", hostname(), std::process::id()),
            Arc::clone(&queue),
            Arc::clone(&store),
            runs.clone(),
            args.lease_ttl,
        );
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { worker.run(stop).await }));
    }
    tracing::info!(nats = %args.nats, workers = args.workers, "worker started");
    shutdown_signal().await;
    tracing::info!("stopping: finishing the leases in hand, claiming no more");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
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
