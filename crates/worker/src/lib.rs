//! The worker role: stateless. It claims a lease, finds the run's plan, replays the shard
//! (on threads of the replay's own, `replay_runtime`) while a task on the process's
//! runtime heartbeats the lease, then records the outcome in the run-state
//! store and acks — or releases the lease for another attempt.
//!
//! Attempts are counted in the store, never by the queue: a lease given back on shutdown
//! or pause is not an attempt. A `halt` policy halts the whole run at once; any other
//! failure is retried (transient storage errors) up to the plan's `max_attempts`, or
//! fails the shard at once when trying again cannot help.

use replayfleet_config::ErrorKind;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use replayfleet_archive::Location;
use replayfleet_config::store_options_from_env;
use replayfleet_contracts::Catalog;
use replayfleet_queue::{Lease, LeaseQueue, RunPhase, RunStore, ShardStatus};
use replayfleet_replay::{Build, Pacer, Plan, ShardJob, Target, replay_shard};

/// The runtime every shard of this process replays on, started at the first shard with
/// as many threads as the runtime that asks (the process's, sized by `--workers`): apart
/// from it, so that a projection keeping every replay thread busy (a query that does not
/// yield for long) never delays what runs on the process's runtime: the lease
/// heartbeats, the queue's connection, the metrics endpoint and the shutdown signal.
fn replay_runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: Mutex<Option<&'static tokio::runtime::Runtime>> = Mutex::new(None);
    let mut runtime = RUNTIME.lock().expect("replay runtime lock");
    if let Some(runtime) = *runtime {
        return Ok(runtime);
    }
    let threads = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1)
        .max(1);
    // Lives as long as the process.
    let started = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("replayfleet-replay")
            .enable_all()
            .build()?,
    ));
    *runtime = Some(started);
    Ok(started)
}

/// Everything a worker needs to replay shards of one run.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run's plan.
    pub plan: Arc<Plan>,
    /// Its catalog, loaded from the plan's snapshot.
    pub catalog: Catalog,
    /// The archive, with this process's credentials.
    pub source: Location,
    /// The projection's home.
    pub target: Target,
}

impl RunContext {
    /// Loads the plan's catalog.
    pub fn new(
        plan: Arc<Plan>,
        source: Location,
        target: Target,
    ) -> replayfleet_replay::Result<Self> {
        let catalog = plan.contracts.catalog()?;
        Ok(RunContext {
            plan,
            catalog,
            source,
            target,
        })
    }
}

/// The runs a worker can serve, by run id.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    inner: Arc<Mutex<HashMap<String, Arc<RunContext>>>>,
}

impl Runs {
    /// Makes a run known.
    pub fn register(&self, context: RunContext) {
        let id = context.plan.run_id.clone();
        self.inner
            .lock()
            .expect("runs lock")
            .insert(id, Arc::new(context));
    }

    /// The run, if known.
    pub fn get(&self, run_id: &str) -> Option<Arc<RunContext>> {
        self.inner.lock().expect("runs lock").get(run_id).cloned()
    }
}

/// The Prometheus figures of a finished shard.
fn record_shard(lineage: &replayfleet_replay::Lineage, took: Duration) {
    let a = &lineage.applied;
    metrics::counter!("replayfleet_events_replayed_total").increment(a.events_read);
    metrics::counter!("replayfleet_events_projected_total").increment(a.events_projected);
    metrics::counter!("replayfleet_duplicates_dropped_total").increment(a.duplicates_dropped);
    metrics::counter!("replayfleet_events_quarantined_total").increment(a.quarantined);
    for (kind, n) in &a.anomalies {
        metrics::counter!("replayfleet_anomalies_total", "kind" => kind.clone()).increment(*n);
    }
    metrics::counter!("replayfleet_shards_completed_total").increment(1);
    metrics::histogram!("replayfleet_shard_duration_seconds").record(took.as_secs_f64());
}

/// How a replay in progress ended.
enum Ended {
    Replayed(replayfleet_replay::Result<replayfleet_replay::ShardOutcome>),
    /// The heartbeat was refused: another worker or nobody owns the shard now.
    Lost,
    /// The process is shutting down.
    Abandoned,
}

/// How long a shard that failed `failures` times (a transient error) waits before its
/// next attempt: exponential from 250 ms, at most 30 s, with jitter so that shards
/// failing together (a storage outage) do not retry together.
fn retry_delay(failures: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(failures.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(30))
}

/// The run's pace, shared through the run-state store by every worker of the fleet; it
/// also counts the events read as they are read (`replayfleet_events_read_total`), so
/// progress shows within a long shard.
#[derive(Debug)]
struct StorePacer {
    store: Arc<dyn RunStore>,
    run_id: String,
    per_second: u64,
}

#[async_trait::async_trait]
impl Pacer for StorePacer {
    async fn pace(&self, events: u64) -> Result<(), replayfleet_replay::PaceError> {
        metrics::counter!("replayfleet_events_read_total").increment(events);
        if self.per_second == 0 {
            return Ok(());
        }
        let wait = self
            .store
            .pace(&self.run_id, events, self.per_second)
            .await
            .map_err(|e| replayfleet_replay::PaceError {
                message: e.to_string(),
                kind: e.kind(),
            })?;
        if !wait.is_zero() {
            metrics::histogram!("replayfleet_pacing_wait_seconds").record(wait.as_secs_f64());
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// A lease removed meanwhile (the run halted) needs no ack.
fn ignore_gone(
    result: Result<(), replayfleet_queue::Error>,
) -> Result<(), replayfleet_queue::Error> {
    match result {
        Err(replayfleet_queue::Error::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// One worker: a loop over leases.
#[derive(Debug, Clone)]
pub struct Worker {
    id: String,
    queue: Arc<dyn LeaseQueue>,
    store: Arc<dyn RunStore>,
    runs: Runs,
    ttl: Duration,
    /// Turns true when the process must go now: a replay in progress is abandoned
    /// and its lease released for another worker, not counted as an attempt.
    abandon: tokio::sync::watch::Receiver<bool>,
}

/// How long a worker waits for a lease before checking whether it should stop.
const CLAIM_WAIT: Duration = Duration::from_millis(200);

impl Worker {
    /// A worker named `id` (host and task) whose leases expire after `ttl` without a
    /// heartbeat.
    pub fn new(
        id: impl Into<String>,
        queue: Arc<dyn LeaseQueue>,
        store: Arc<dyn RunStore>,
        runs: Runs,
        ttl: Duration,
    ) -> Self {
        Worker {
            id: id.into(),
            queue,
            store,
            runs,
            ttl,
            abandon: tokio::sync::watch::channel(false).1,
        }
    }

    /// When `abandon` turns true (a shutdown's grace period is running out), the
    /// replay in hand stops and its lease is released at once for another worker;
    /// that delivery is not an attempt.
    pub fn abandon_on(mut self, abandon: tokio::sync::watch::Receiver<bool>) -> Self {
        self.abandon = abandon;
        self
    }

    /// Claims and replays leases until `stop` turns true; a lease in hand is finished first.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            // Raced against `stop` only where that is safe: over the network a claim
            // cancelled midway could leave a fetched lease unheld until its TTL. It
            // returns within CLAIM_WAIT anyway.
            let claimed = if self.queue.claim_is_cancel_safe() {
                tokio::select! {
                    claimed = self.queue.claim(CLAIM_WAIT) => claimed,
                    _ = stop.changed() => return,
                }
            } else {
                self.queue.claim(CLAIM_WAIT).await
            };
            match claimed {
                Ok(Some(lease)) => self.handle(lease).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "claiming a lease failed");
                    tokio::time::sleep(CLAIM_WAIT).await;
                }
            }
        }
    }

    async fn handle(&self, lease: Lease) {
        if let Err(e) = self.try_handle(&lease).await {
            tracing::warn!(worker = %self.id, run = %lease.run_id, shard = %lease.shard, error = %e, "lease bookkeeping failed; giving the lease back");
            let _ = self.queue.release(&lease, Duration::from_secs(1)).await;
        }
    }

    async fn try_handle(&self, lease: &Lease) -> Result<(), replayfleet_queue::Error> {
        let run = match self.runs.get(&lease.run_id) {
            Some(run) => run,
            None => match self.load(&lease.run_id).await {
                Ok(run) => run,
                Err(why) => {
                    // Not ours to serve: released, not counted as an attempt.
                    tracing::warn!(worker = %self.id, run = %lease.run_id, shard = %lease.shard, "{why}; releasing the lease");
                    return self.queue.release(lease, Duration::from_secs(2)).await;
                }
            },
        };
        match self.store.run(&lease.run_id).await?.map(|r| r.value.phase) {
            Some(RunPhase::Paused) => {
                return self.queue.release(lease, Duration::from_millis(500)).await;
            }
            Some(phase) if phase.is_finished() => return self.queue.ack(lease).await,
            _ => {}
        }
        let lineage_path = Target::lineage_path(&lease.run_id, &lease.shard);
        if matches!(run.target.exists(&lineage_path).await, Ok(true)) {
            // Another attempt won this shard already.
            self.store
                .update_shard(&lease.run_id, &lease.shard, &|s| {
                    s.status = ShardStatus::Done
                })
                .await?;
            return self.queue.ack(lease).await;
        }
        // A lease delivered again expired with its worker gone (a release keeps the
        // number). A shard whose workers all end on it (out of memory, or a jq step past
        // `limits.step_time`, which ends the process) would take every worker down in
        // turn: past the plan's attempts, it fails instead.
        let max_attempts = run.plan.max_attempts.max(1);
        if lease.delivery > max_attempts {
            let error = replayfleet_replay::Error::WorkersEnded {
                shard: lease.shard.clone(),
                expired: lease.delivery - 1,
                max_attempts,
            };
            return self.failed(lease, &run, error).await;
        }
        let worker = self.id.clone();
        self.store
            .update_shard(&lease.run_id, &lease.shard, &move |s| {
                s.status = ShardStatus::Running;
                s.worker = Some(worker.clone());
            })
            .await?;

        // The heartbeat runs apart from the replay; when the queue refuses it (the lease
        // expired and went to another worker, or a halt removed it), the replay is
        // abandoned: another attempt or nobody owns the shard now.
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
        let heartbeat = self.heartbeat(lease, run.plan.lease_ttl_ms, lost_tx);
        if lease.delivery > 1 {
            metrics::counter!("replayfleet_lease_redeliveries_total").increment(1);
        }
        let started = std::time::Instant::now();
        let job = ShardJob {
            plan: Arc::clone(&run.plan),
            shard: lease.shard.clone(),
            source: run.source.clone(),
            target: run.target.clone(),
            catalog: run.catalog.clone(),
            attempt: ulid::Ulid::new().to_string(),
            worker: self.id.clone(),
            pacer: Some(Arc::new(StorePacer {
                store: Arc::clone(&self.store),
                run_id: lease.run_id.clone(),
                per_second: run.plan.pacing_events_per_second,
            })),
        };
        // Replay is CPU-bound: it runs on a runtime of its own, so that however long its
        // work keeps every replay thread busy, the heartbeat (on this runtime) goes on.
        let shard = lease.shard.clone();
        let mut abandon = self.abandon.clone();
        let replayed = replay_runtime().map(|runtime| {
            runtime.spawn(async move {
                tokio::select! {
                    result = replay_shard(&job) => Ended::Replayed(result),
                    Ok(()) = lost_rx => Ended::Lost,
                    Ok(_) = abandon.wait_for(|go| *go) => Ended::Abandoned,
                }
            })
        });
        let result = match replayed {
            Ok(task) => task.await.unwrap_or_else(|e| {
                Ended::Replayed(Err(replayfleet_replay::Error::Projection {
                    shard,
                    message: format!("the replay task failed: {e}"),
                }))
            }),
            Err(e) => Ended::Replayed(Err(replayfleet_replay::Error::Projection {
                shard,
                message: format!("cannot start the replay's threads: {e}"),
            })),
        };
        heartbeat.abort();
        let result = match result {
            Ended::Replayed(result) => result,
            Ended::Lost => {
                tracing::warn!(worker = %self.id, run = %lease.run_id, shard = %lease.shard, "replay abandoned: the lease was lost");
                return Ok(());
            }
            Ended::Abandoned => {
                tracing::warn!(worker = %self.id, run = %lease.run_id, shard = %lease.shard, "shutting down: replay abandoned, lease released for another worker");
                self.store
                    .update_shard(&lease.run_id, &lease.shard, &|s| {
                        s.status = ShardStatus::Pending;
                        s.worker = None;
                    })
                    .await?;
                return ignore_gone(self.queue.release(lease, Duration::ZERO).await);
            }
        };

        match result {
            Ok(outcome) => {
                let applied = outcome.lineage.applied.clone();
                let worker = self.id.clone();
                self.store
                    .update_shard(&lease.run_id, &lease.shard, &move |s| {
                        s.status = ShardStatus::Done;
                        s.events = applied.events_read;
                        s.anomalies = applied.anomalies.values().sum();
                        s.worker = Some(worker.clone());
                    })
                    .await?;
                tracing::info!(worker = %self.id, run = %lease.run_id, shard = %lease.shard, won = outcome.won, events = outcome.lineage.applied.events_read, "shard replayed");
                record_shard(&outcome.lineage, started.elapsed());
                ignore_gone(self.queue.ack(lease).await)
            }
            Err(error) => self.failed(lease, &run, error).await,
        }
    }

    /// Records a failed attempt and decides, from the error's kind alone, what becomes of
    /// the shard: refused (a `halt` policy) halts the run; transient is tried again up to
    /// `fleet.max_attempts`; input and internal fail the shard at once (the same inputs
    /// fail the same way).
    async fn failed(
        &self,
        lease: &Lease,
        run: &RunContext,
        error: replayfleet_replay::Error,
    ) -> Result<(), replayfleet_queue::Error> {
        let message = error.to_string();
        let max = run.plan.max_attempts.max(1);
        let kind = error.kind();
        let halt = kind == ErrorKind::Refused;
        let final_now = halt || !kind.is_retryable();
        if halt {
            // The run halts first (by policy), so that a watcher that sees the
            // shard failed finds the run already halted, for its reason.
            self.halt_run(&lease.run_id, &message).await?;
        }
        let recorded = message.clone();
        let input = kind == ErrorKind::Input;
        let state = self
            .store
            .update_shard(&lease.run_id, &lease.shard, &move |s| {
                s.failures += 1;
                s.last_error = Some(recorded.clone());
                s.input_error = input;
                s.status = if final_now || s.failures >= max {
                    ShardStatus::Failed
                } else {
                    ShardStatus::Pending
                };
            })
            .await?;
        tracing::warn!(worker = %self.id, run = %lease.run_id, shard = %lease.shard, attempt = state.failures, error = %message, "shard failed");
        metrics::counter!("replayfleet_shard_failures_total").increment(1);
        if halt {
            // Halting removed the run's leases, this one included.
            return Ok(());
        }
        if state.status == ShardStatus::Failed {
            ignore_gone(self.queue.ack(lease).await)
        } else {
            self.queue.release(lease, retry_delay(state.failures)).await
        }
    }

    /// Keeps `lease` alive while its shard replays, on a task of its own; says on `lost`
    /// when the queue refuses it (the lease expired and went to another worker, or a halt
    /// removed it). A server unreachable for less than the TTL is not a lost lease.
    fn heartbeat(
        &self,
        lease: &Lease,
        lease_ttl_ms: u64,
        lost_tx: tokio::sync::oneshot::Sender<()>,
    ) -> tokio::task::JoinHandle<()> {
        let queue = Arc::clone(&self.queue);
        let lease = lease.clone();
        let ttl = Duration::from_millis(lease_ttl_ms).min(self.ttl.max(Duration::from_millis(100)));
        let every = (ttl / 3).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut last_ok = std::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match queue.heartbeat(&lease).await {
                    Ok(()) => last_ok = std::time::Instant::now(),
                    // The server is unreachable (a restart, a failover): the lease
                    // may still be ours, so keep trying until its TTL has run out.
                    Err(e) if e.is_retryable() && last_ok.elapsed() < ttl => {
                        tracing::warn!(shard = %lease.shard, error = %e, "heartbeat failed; trying again");
                    }
                    Err(e) => {
                        tracing::warn!(shard = %lease.shard, error = %e, "heartbeat refused: the lease was lost");
                        let _ = lost_tx.send(());
                        return;
                    }
                }
            }
        })
    }

    /// Finds a run this worker has not seen: its target from the run state, its plan from
    /// the target. A plan of another build is refused (its shards would not replay
    /// byte-identically).
    async fn load(&self, run_id: &str) -> Result<Arc<RunContext>, String> {
        let state = self
            .store
            .run(run_id)
            .await
            .map_err(|e| format!("reading run {run_id}: {e}"))?
            .ok_or_else(|| format!("run {run_id} is unknown to the run-state store"))?;
        let target_url = state
            .value
            .target
            .ok_or_else(|| format!("run {run_id} names no target"))?;
        let target = Target::new(
            Location::parse(&target_url, None, &store_options_from_env("target"))
                .map_err(|e| e.to_string())?,
        );
        let path = Target::plan_path(run_id);
        let bytes = target
            .get(&path)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{target_url}/{path} does not exist"))?;
        let plan = Plan::from_json(&path, &bytes).map_err(|e| e.to_string())?;
        if plan.build != Build::current() {
            return Err(format!(
                "run {run_id} was planned by another build, {}; this worker is {}",
                plan.build,
                Build::current()
            ));
        }
        let source = Location::parse(&plan.source.url, None, &store_options_from_env("source"))
            .map_err(|e| e.to_string())?;
        let context = RunContext::new(Arc::new(plan), source, target).map_err(|e| e.to_string())?;
        self.runs.register(context);
        self.runs
            .get(run_id)
            .ok_or_else(|| format!("run {run_id} vanished"))
    }

    /// A `halt` policy fired: the run halts for good (compare-and-set, so a run already
    /// finalizing is left alone).
    async fn halt_run(&self, run_id: &str, reason: &str) -> Result<(), replayfleet_queue::Error> {
        loop {
            let Some(current) = self.store.run(run_id).await? else {
                return Ok(());
            };
            if current.value.phase.is_finished() || current.value.phase == RunPhase::Finalizing {
                return Ok(());
            }
            let mut next = current.value.clone();
            next.phase = RunPhase::Halted;
            next.reason = Some(reason.to_owned());
            next.updated_at = Utc::now();
            match self.store.update_run(&next, current.revision).await {
                Ok(_) => {
                    self.queue.remove_run(run_id).await?;
                    return Ok(());
                }
                Err(replayfleet_queue::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use replayfleet_queue::{EmbeddedQueue, EmbeddedStore};

    use super::*;

    /// Work that keeps every replay thread busy without yielding does not stop what runs
    /// on the process's runtime (where the heartbeats are).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_threads_kept_busy_do_not_stop_the_process_runtime() {
        let runtime = replay_runtime().unwrap();
        let threads = runtime.metrics().num_workers();
        let blocked: Vec<_> = (0..threads * 2)
            .map(|_| runtime.spawn(async { std::thread::sleep(Duration::from_millis(800)) }))
            .collect();
        let started = std::time::Instant::now();
        let mut ticks = 0;
        while started.elapsed() < Duration::from_millis(600) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ticks += 1;
        }
        assert!(
            ticks >= 4,
            "the process's runtime ticked {ticks} times in 600 ms while the replay's threads were busy"
        );
        for task in blocked {
            task.await.unwrap();
        }
        let here = std::thread::current().id();
        let there = runtime
            .spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        assert_ne!(here, there, "the replay runs on threads of its own");
    }

    /// A lease of a run this worker cannot serve (the run-state store does not know it) is
    /// given back for another worker, and the delivery is not counted as an attempt.
    #[tokio::test]
    async fn a_lease_of_a_run_it_cannot_serve_goes_back_without_counting_an_attempt() {
        let ttl = Duration::from_secs(5);
        let queue = Arc::new(EmbeddedQueue::new(ttl));
        let store = Arc::new(EmbeddedStore::new());
        queue.publish("r-1", "shard-00000").await.unwrap();
        let worker = Worker::new(
            "w-1",
            Arc::clone(&queue) as Arc<dyn LeaseQueue>,
            Arc::clone(&store) as Arc<dyn RunStore>,
            Runs::default(),
            ttl,
        );
        let lease = queue
            .claim(Duration::ZERO)
            .await
            .unwrap()
            .expect("published");
        worker.handle(lease.clone()).await;

        assert_eq!(store.shard("r-1", "shard-00000").await.unwrap(), None);
        assert!(
            queue.claim(Duration::ZERO).await.unwrap().is_none(),
            "released with a delay, not at once"
        );
        let again = queue
            .claim(Duration::from_secs(4))
            .await
            .unwrap()
            .expect("the lease comes back");
        assert_eq!(
            (again.run_id.as_str(), again.shard.as_str()),
            ("r-1", "shard-00000")
        );
        assert_eq!(again.delivery, lease.delivery, "a release is not an expiry");
    }
}
