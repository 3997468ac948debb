//! The embedded fleet: plan, publish, N worker tasks, watch, finalize — in one process,
//! over the in-process lease queue and run-state store (the same traits the NATS fleet
//! implements).

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use replayfleet_archive::{KeptObjects, Location};
use replayfleet_audit::Emitter;
use replayfleet_config::Config;
use replayfleet_finalizer::{FinalizeOptions, Finalized, finalize};
use replayfleet_queue::{
    EmbeddedQueue, EmbeddedStore, LeaseQueue, RunPhase, RunState, RunStore, ShardStatus,
};
use replayfleet_replay::{Created, Lineage, Plan, Target, to_json_bytes};
use replayfleet_worker::{RunContext, Runs, Worker};

use crate::{Error, Estimate, Result, new_run_id, openlineage, plan_run};

/// The most bytes of small segments a coordinator with workers of its own keeps from
/// planning for their replay (at most `limits.memory` / 16).
pub const KEPT_MAX_BYTES: u64 = 64 * 1024 * 1024;

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
    /// The run's plan.
    pub plan: Arc<Plan>,
    /// The estimate, when this process planned the run (not when it resumed one).
    pub estimate: Option<Estimate>,
    /// What the finalizer did.
    pub finalized: Finalized,
    /// Wall time from plan (or resume) to commit.
    pub elapsed: std::time::Duration,
    /// Whether this process resumed a run that an earlier process started.
    pub resumed: bool,
    /// Shards an earlier process of the run had finished (kept, not replayed again).
    pub shards_reused: usize,
}

/// The queue and store a run is coordinated over, and the worker tasks of this process.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Leases.
    pub queue: Arc<dyn LeaseQueue>,
    /// Run state and shard attempts.
    pub store: Arc<dyn RunStore>,
    /// Worker tasks in this process (0 for a coordinator whose workers are elsewhere).
    pub local_workers: usize,
    /// The queue's lease time-to-live.
    pub ttl: std::time::Duration,
}

/// How to coordinate.
#[derive(Debug, Clone, Default)]
pub struct CoordinateOptions {
    /// Who runs it (recorded in the commit).
    pub by: String,
    /// Resume this run instead of the name's unfinished run or a new one.
    pub resume: Option<String>,
}

/// Plans and runs `config` in this process with `options.workers` worker tasks over the
/// in-process queue and store, then finalizes. `progress` is called as shards finish.
pub async fn run_embedded(
    config: &Config,
    options: &EmbeddedOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<RunResult> {
    let ttl = config
        .fleet
        .lease_ttl
        .max(std::time::Duration::from_millis(100));
    let fleet = Fleet {
        queue: Arc::new(EmbeddedQueue::new(ttl)),
        store: Arc::new(EmbeddedStore::new()),
        local_workers: options.workers.max(1),
        ttl,
    };
    let options = CoordinateOptions {
        by: options.by.clone(),
        resume: None,
    };
    coordinate(config, &fleet, &options, progress).await
}

/// The coordinator: resumes the run `options.resume`, or the config name's unfinished
/// run, or plans a new one; publishes a lease for every shard without a lineage manifest
/// (publishing is idempotent, so a restarted coordinator never doubles a lease); runs
/// `fleet.local_workers` worker tasks; watches the shards; and finalizes.
pub async fn coordinate(
    config: &Config,
    fleet: &Fleet,
    options: &CoordinateOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<RunResult> {
    let started = Instant::now();
    let store = &fleet.store;
    let target = Target::new(Location::parse(
        &config.target.url,
        None,
        &config.target.options,
    )?);
    // A foreign or legacy commit log refuses the run before it writes anything.
    replayfleet_finalizer::check_target(&target, &config.projection.name).await?;
    let resume = match &options.resume {
        Some(id) => Some(id.clone()),
        None => unfinished_uncommitted(&**store, &target, &config.name).await?,
    };
    let mut resumed = resume.is_some();
    // Workers in this process replay what it plans: the small segments the planner
    // reads whole are kept for them, so each costs one request, not two.
    let kept = (fleet.local_workers > 0).then(|| {
        Arc::new(KeptObjects::new(
            (config.memory_limit_bytes / 16).min(KEPT_MAX_BYTES),
        ))
    });
    let (plan, estimate) = match resume {
        Some(run_id) => {
            let path = Target::plan_path(&run_id);
            let bytes = target.get(&path).await?.ok_or_else(|| {
                Error::Plan(format!(
                    "cannot resume run {run_id}: {}/{path} does not exist",
                    replayfleet_config::redact_url(&config.target.url)
                ))
            })?;
            tracing::info!(run = %run_id, "resuming the run");
            (Plan::from_json(&path, &bytes)?, None)
        }
        None => {
            let run_id = new_run_id(&config.name);
            let planned = plan_run(config, &run_id, kept.clone()).await?;
            for warning in &planned.warnings {
                tracing::warn!("{warning}");
            }
            // A run of this name that stopped before its end (a killed process; an
            // embedded run's store dies with it) and plans the same work: resumed, so
            // its finished shards are kept.
            if let Some(earlier) = unfinished_same_work(&**store, &target, &planned.plan).await? {
                tracing::info!(run = %earlier.run_id, "resuming the unfinished run of the same plan: its finished shards are kept");
                resumed = true;
                (earlier, Some(planned.estimate))
            } else {
                if target
                    .put_if_absent(&Target::plan_path(&run_id), to_json_bytes(&planned.plan))
                    .await?
                    == Created::Existed
                {
                    return Err(Error::Plan(format!("run {run_id} exists already")));
                }
                (planned.plan, Some(planned.estimate))
            }
        }
    };
    let plan = Arc::new(plan);
    let run_id = plan.run_id.clone();
    tracing::debug!(run = %run_id, seconds = started.elapsed().as_secs_f64(), "planned");
    let mut source = Location::parse(&plan.source.url, None, &config.source.options)?;
    if let Some(kept) = &kept {
        source = source.keeping(Arc::clone(kept));
    }

    if store.run(&run_id).await?.is_none() {
        store
            .create_run(&RunState {
                run_id: run_id.clone(),
                name: plan.name.clone(),
                phase: RunPhase::Planned,
                reason: None,
                version: None,
                updated_at: Utc::now(),
                target: Some(plan.target.clone()),
            })
            .await?;
    }
    let shard_ids: Vec<&str> = plan.shards.iter().map(|s| s.id.as_str()).collect();
    if resumed {
        record_finished(&**store, &target, &plan).await?;
    }
    let pending = publish_leases(&*fleet.queue, &target, &run_id, &shard_ids).await?;
    let shards_reused = shard_ids.len() - pending;
    tracing::info!(run = %run_id, shards = plan.shards.len(), published = pending, "leases published");
    loop {
        let current = store
            .run(&run_id)
            .await?
            .ok_or_else(|| Error::Plan(format!("run {run_id} vanished")))?;
        if current.value.phase != RunPhase::Planned {
            break;
        }
        let mut next = current.value.clone();
        next.phase = RunPhase::Running;
        next.updated_at = Utc::now();
        match store.update_run(&next, current.revision).await {
            Err(replayfleet_queue::Error::Conflict { .. }) => continue,
            other => {
                other?;
                break;
            }
        }
    }

    // The config's URL, credentials included (the plan keeps it redacted).
    let lineage = Emitter::new(
        Arc::clone(&plan),
        target.clone(),
        &config.lineage_namespace,
        config.lineage_url.as_deref(),
    );
    lineage.run_started().await;

    let runs = Runs::default();
    runs.register(RunContext::new(
        Arc::clone(&plan),
        source.clone(),
        target.clone(),
    )?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..fleet.local_workers {
        let worker = Worker::new(
            format!("{}/embedded-{i}", hostname()),
            Arc::clone(&fleet.queue),
            Arc::clone(store),
            runs.clone(),
            fleet.ttl,
        );
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { worker.run(stop).await }));
    }

    let watched = watch(&**store, &plan, progress).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    if let Err(e) = &watched {
        // Halted: no lease of the run may be claimed again.
        let _ = fleet.queue.remove_run(&run_id).await;
        openlineage::ended(&lineage, &**store, &run_id, Err(e)).await;
    }
    if let Some(kept) = &kept {
        let (read, taken) = kept.counts();
        tracing::debug!(run = %run_id, read, taken, "small segments read whole at planning, and of them taken by the replay");
        kept.clear();
    }
    watched?;
    tracing::debug!(run = %run_id, seconds = started.elapsed().as_secs_f64(), "shards done");

    let finalized = finalize(
        &target,
        &source,
        &run_id,
        &FinalizeOptions {
            accept: None,
            by: options.by.clone(),
        },
        Some(&**store),
    )
    .await
    .map_err(Error::from);
    openlineage::ended(&lineage, &**store, &run_id, finalized.as_ref()).await;
    let finalized = finalized?;
    tracing::debug!(run = %run_id, seconds = started.elapsed().as_secs_f64(), "finalized");
    if let Ok(Some(state)) = store.run(&run_id).await {
        record_phase(&run_id, state.value.phase);
    }
    Ok(RunResult {
        plan,
        estimate,
        finalized,
        elapsed: started.elapsed(),
        resumed,
        shards_reused,
    })
}

/// On resuming a run: the shards an earlier process finished (their lineage manifest
/// exists) that the store does not know as done (an embedded run's store died with its
/// process; a fleet's store was emptied) are recorded as done, with their manifest's
/// counts, so that the run can end without them being replayed again.
async fn record_finished(store: &dyn RunStore, target: &Target, plan: &Plan) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let done: std::collections::HashSet<String> = store
        .shards(&plan.run_id)
        .await?
        .into_iter()
        .filter(|(_, s)| s.status == ShardStatus::Done)
        .map(|(id, _)| id)
        .collect();
    futures::stream::iter(plan.shards.iter().filter(|s| !done.contains(&s.id)))
        .map(|shard| async move {
            let path = Target::lineage_path(&plan.run_id, &shard.id);
            let Some(lineage) = target.get_json::<Lineage>(&path).await? else {
                return Ok::<_, Error>(());
            };
            let applied = lineage.applied;
            store
                .update_shard(&plan.run_id, &shard.id, &move |s| {
                    s.status = ShardStatus::Done;
                    s.events = applied.events_read;
                    s.anomalies = applied.anomalies.values().sum();
                })
                .await?;
            Ok(())
        })
        .buffer_unordered(PUBLISH_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// The newest run of `plan`'s name in the target when it has not ended (no report, and
/// not halted, committed or refused for the run-state store: an operator's halt is for
/// good) and plans the same work as `plan` ([`Plan::same_work`]).
async fn unfinished_same_work(
    store: &dyn RunStore,
    target: &Target,
    plan: &Plan,
) -> Result<Option<Plan>> {
    let Some(run_id) = target.unfinished_run(&plan.name).await? else {
        return Ok(None);
    };
    if let Some(state) = store.run(&run_id).await?
        && state.value.phase.is_finished()
    {
        return Ok(None);
    }
    let path = Target::plan_path(&run_id);
    let Some(bytes) = target.get(&path).await? else {
        return Ok(None);
    };
    // A plan this build cannot read is another build's: plan anew.
    let Ok(earlier) = Plan::from_json(&path, &bytes) else {
        return Ok(None);
    };
    Ok(earlier.same_work(plan).then_some(earlier))
}

/// The run-state store's unfinished run of `name`, unless the commit log names it: a
/// coordinator killed between its commit and recording it leaves the store behind the
/// log. Such a run is recorded as committed (the log is the truth) and is not resumed,
/// so the restart plans a new run.
async fn unfinished_uncommitted(
    store: &dyn RunStore,
    target: &Target,
    name: &str,
) -> Result<Option<String>> {
    let Some(run_id) = store.unfinished_run(name).await? else {
        return Ok(None);
    };
    let Some(version) = replayfleet_finalizer::committed_version(target, &run_id).await? else {
        return Ok(Some(run_id));
    };
    tracing::info!(run = %run_id, version, "the unfinished run had committed before its coordinator stopped; planning a new run");
    loop {
        let Some(current) = store.run(&run_id).await? else {
            return Ok(None);
        };
        if current.value.phase.is_finished() {
            return Ok(None);
        }
        let mut next = current.value.clone();
        next.phase = RunPhase::Committed;
        next.reason = None;
        next.version = Some(version);
        next.updated_at = Utc::now();
        match store.update_run(&next, current.revision).await {
            Err(replayfleet_queue::Error::Conflict { .. }) => continue,
            other => {
                other?;
                return Ok(None);
            }
        }
    }
}

/// `replayfleet_run_phase{run, phase}`: 1 for the run's phase, 0 for the others, so
/// alerts can fire on `phase="halted"` or `phase="refused"`.
fn record_phase(run_id: &str, phase: RunPhase) {
    for p in RunPhase::ALL {
        metrics::gauge!("replayfleet_run_phase", "run" => run_id.to_owned(), "phase" => p.as_str())
            .set(if p == phase { 1.0 } else { 0.0 });
    }
}

/// How many lineage checks and publishes are in flight at once.
const PUBLISH_CONCURRENCY: usize = 64;

/// Publishes a lease for every shard of the run that has no lineage manifest yet, many
/// at a time; returns how many it published. Publishing is idempotent (a queued or
/// claimed lease is not doubled), so a restarted or second coordinator may call it again.
///
/// # Errors
///
/// The first storage or queue error.
pub async fn publish_leases(
    queue: &dyn replayfleet_queue::LeaseQueue,
    target: &Target,
    run_id: &str,
    shards: &[&str],
) -> Result<usize> {
    use futures::{StreamExt, TryStreamExt};
    let published = futures::stream::iter(shards.iter().copied())
        .map(|shard| async move {
            if target.exists(&Target::lineage_path(run_id, shard)).await? {
                return Ok::<_, Error>(0);
            }
            queue.publish(run_id, shard).await?;
            Ok(1)
        })
        .buffer_unordered(PUBLISH_CONCURRENCY)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await?;
    Ok(published)
}

/// How often the coordinator looks at the shards' states: each look lists every shard
/// key of the run in the store, work for the server and the coordinator that would
/// otherwise compete with the replay for the same cores.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long the coordinator keeps trying while the run-state store is unreachable (a
/// NATS restart or failover) before it gives up with exit 1; the run itself is not
/// harmed, and a restarted coordinator resumes it.
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// `op`, tried again with backoff while it fails with a retryable error (the store is
/// unreachable), for up to [`STORE_PATIENCE`].
pub(crate) async fn patiently<T, F, Fut>(what: &str, op: F) -> replayfleet_queue::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = replayfleet_queue::Result<T>>,
{
    use backon::Retryable;
    op.retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(5))
            .with_total_delay(Some(STORE_PATIENCE))
            .without_max_times()
            .with_jitter(),
    )
    .when(replayfleet_queue::Error::is_retryable)
    .notify(|e, after| tracing::warn!(error = %e, ?after, "cannot {what}; trying again"))
    .await
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
        let run = patiently("read the run state", || store.run(&plan.run_id))
            .await?
            .ok_or_else(|| Error::Plan(format!("run {} vanished", plan.run_id)))?;
        record_phase(&plan.run_id, run.value.phase);
        if run.value.phase == RunPhase::Halted {
            return Err(Error::Halted {
                run_id: plan.run_id.clone(),
                reason: run.value.reason.unwrap_or_default(),
                by_policy: true,
                input: false,
            });
        }
        let shards = patiently("read the shard states", || store.shards(&plan.run_id)).await?;
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
                record_phase(&plan.run_id, RunPhase::Halted);
                return Err(Error::Halted {
                    run_id: plan.run_id.clone(),
                    reason,
                    by_policy: false,
                    input: state.input_error,
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
            let ratio = if total == 0 {
                1.0
            } else {
                now.shards_done as f64 / total as f64
            };
            metrics::gauge!("replayfleet_run_progress_ratio", "run" => plan.run_id.clone())
                .set(ratio);
            metrics::gauge!("replayfleet_run_shards_done", "run" => plan.run_id.clone())
                .set(now.shards_done as f64);
            metrics::gauge!("replayfleet_run_shards_total", "run" => plan.run_id.clone())
                .set(total as f64);
            metrics::gauge!("replayfleet_run_events_done", "run" => plan.run_id.clone())
                .set(now.events_done as f64);
            metrics::gauge!("replayfleet_run_anomalies", "run" => plan.run_id.clone())
                .set(now.anomalies as f64);
            progress(&now);
            last = now;
        }
        if last.shards_done == total {
            return Ok(());
        }
        store.changed(WATCH_EVERY).await;
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
