//! The embedded fleet: plan, publish, N worker tasks, watch, finalize — in one process,
//! over the in-process lease queue and run-state store (the same traits the NATS fleet
//! implements).

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use replayfleet_config::Config;
use replayfleet_finalizer::{FinalizeOptions, Finalized, finalize};
use replayfleet_queue::{
    EmbeddedQueue, EmbeddedStore, LeaseQueue, RunPhase, RunState, RunStore, ShardStatus,
};
use replayfleet_replay::{Created, Target, to_json_bytes};
use replayfleet_worker::{RunContext, Runs, Worker};

use crate::{Error, Planned, Result, new_run_id, plan_run};

/// Progress of a run, as the watcher sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Shards planned.
    pub shards_total: u64,
    /// Shards finished.
    pub shards_done: u64,
    /// Rows the plan expects to read.
    pub events_total: u64,
    /// Rows read by finished shards.
    pub events_done: u64,
    /// Anomalies in finished shards.
    pub anomalies: u64,
}

/// How to run embedded.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Worker tasks.
    pub workers: usize,
    /// Who runs it (recorded in the commit).
    pub by: String,
}

/// A run's end.
#[derive(Debug)]
pub struct RunResult {
    /// The plan and its estimate.
    pub planned: Planned,
    /// What the finalizer did.
    pub finalized: Finalized,
    /// Wall time from plan to commit.
    pub elapsed: std::time::Duration,
}

/// Plans and runs `config` in this process with `options.workers` worker tasks, then
/// finalizes. `progress` is called as shards finish.
pub async fn run_embedded(
    config: &Config,
    options: &EmbeddedOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<RunResult> {
    let started = Instant::now();
    let run_id = new_run_id(&config.name);
    let planned = plan_run(config, &run_id).await?;
    let target = Target::new(planned.target.clone());
    let plan = Arc::new(planned.plan.clone());
    if target
        .put_if_absent(&Target::plan_path(&run_id), to_json_bytes(&*plan))
        .await?
        == Created::Existed
    {
        return Err(Error::Plan(format!("run {run_id} exists already")));
    }

    let ttl = std::time::Duration::from_millis(plan.lease_ttl_ms.max(100));
    let queue: Arc<dyn LeaseQueue> = Arc::new(EmbeddedQueue::new(ttl));
    let store: Arc<dyn RunStore> = Arc::new(EmbeddedStore::new());
    let mut state = RunState {
        run_id: run_id.clone(),
        name: config.name.clone(),
        phase: RunPhase::Planned,
        reason: None,
        version: None,
        updated_at: Utc::now(),
    };
    let revision = store.create_run(&state).await?;
    for shard in &plan.shards {
        queue.publish(&run_id, &shard.id).await?;
    }
    state.phase = RunPhase::Running;
    store.update_run(&state, revision).await?;

    let runs = Runs::default();
    runs.register(RunContext::new(
        Arc::clone(&plan),
        planned.source.clone(),
        target.clone(),
    )?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..options.workers.max(1) {
        let worker = Worker::new(
            format!("{}/embedded-{i}", hostname()),
            Arc::clone(&queue),
            Arc::clone(&store),
            runs.clone(),
            ttl,
        );
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { worker.run(stop).await }));
    }

    let watched = watch(&*store, &plan, progress).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    watched?;

    let finalized = finalize(
        &target,
        &planned.source,
        &run_id,
        &FinalizeOptions {
            accept: None,
            by: options.by.clone(),
        },
        Some(&*store),
    )
    .await?;
    Ok(RunResult {
        planned,
        finalized,
        elapsed: started.elapsed(),
    })
}

/// Waits until every shard is done; a halted run or a shard out of attempts ends the
/// wait with [`Error::Halted`].
async fn watch(
    store: &dyn RunStore,
    plan: &replayfleet_replay::Plan,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<()> {
    let total = plan.shards.len() as u64;
    let mut last = Progress::default();
    loop {
        let run = store
            .run(&plan.run_id)
            .await?
            .ok_or_else(|| Error::Plan(format!("run {} vanished", plan.run_id)))?;
        if run.value.phase == RunPhase::Halted {
            return Err(Error::Halted {
                run_id: plan.run_id.clone(),
                reason: run.value.reason.unwrap_or_default(),
                by_policy: true,
            });
        }
        let shards = store.shards(&plan.run_id).await?;
        if let Some((shard, state)) = shards.iter().find(|(_, s)| s.status == ShardStatus::Failed) {
            let reason = format!(
                "shard {shard} failed after {} attempts: {}",
                state.failures,
                state.last_error.as_deref().unwrap_or("unknown error")
            );
            let mut next = run.value.clone();
            next.phase = RunPhase::Halted;
            next.reason = Some(reason.clone());
            next.updated_at = Utc::now();
            // A lost compare-and-set means the state moved (a worker halted it): look again.
            if store.update_run(&next, run.revision).await.is_ok() {
                return Err(Error::Halted {
                    run_id: plan.run_id.clone(),
                    reason,
                    by_policy: false,
                });
            }
            continue;
        }
        let done: Vec<_> = shards
            .iter()
            .filter(|(_, s)| s.status == ShardStatus::Done)
            .collect();
        let now = Progress {
            shards_total: total,
            shards_done: done.len() as u64,
            events_total: plan.shards.iter().map(|s| s.rows).sum(),
            events_done: done.iter().map(|(_, s)| s.events).sum(),
            anomalies: done.iter().map(|(_, s)| s.anomalies).sum(),
        };
        if now != last {
            progress(&now);
            last = now;
        }
        if last.shards_done == total {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// This machine's name, for worker ids.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
