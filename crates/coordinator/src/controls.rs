//! Operating a fleet run: halt (the kill switch), pause, resume, and status.
//!
//! Every change of a run's phase is a compare-and-set on the run state, so a halt and a
//! finalizer racing for the same run cannot both win: committing first moves the run
//! from running to finalizing, after which a halt is refused; a halt that gets there
//! first wins for good.

use chrono::Utc;
use replayfleet_queue::{LeaseQueue, RunPhase, RunState, RunStore, ShardStatus};
use serde::Serialize;

use crate::{Error, Result};

/// Moves the run from one of `from` to `to`, retrying lost compare-and-sets; returns the
/// state it found when the phase was not one of `from`.
async fn transition(
    store: &dyn RunStore,
    run_id: &str,
    from: &[RunPhase],
    to: RunPhase,
    reason: Option<String>,
) -> Result<std::result::Result<RunState, RunState>> {
    loop {
        let current = store
            .run(run_id)
            .await?
            .ok_or_else(|| Error::Plan(format!("no run {run_id} in the run-state store")))?;
        if !from.contains(&current.value.phase) {
            return Ok(Err(current.value));
        }
        let mut next = current.value.clone();
        next.phase = to;
        next.reason = reason.clone().or(next.reason);
        next.updated_at = Utc::now();
        match store.update_run(&next, current.revision).await {
            Ok(_) => return Ok(Ok(next)),
            Err(replayfleet_queue::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Halts the run for good and removes its remaining leases; workers holding one lose it
/// at their next heartbeat. Refused once the run is finalizing or finished.
pub async fn halt(
    queue: &dyn LeaseQueue,
    store: &dyn RunStore,
    run_id: &str,
    reason: &str,
) -> Result<u64> {
    let live = [RunPhase::Planned, RunPhase::Running, RunPhase::Paused];
    match transition(
        store,
        run_id,
        &live,
        RunPhase::Halted,
        Some(reason.to_owned()),
    )
    .await?
    {
        Ok(_) => Ok(queue.remove_run(run_id).await?),
        Err(state) if state.phase == RunPhase::Halted => Ok(queue.remove_run(run_id).await?),
        Err(state) => Err(Error::Refused(format!(
            "run {run_id} is {}: a halt can no longer stop it{}",
            state.phase.as_str(),
            match state.phase {
                RunPhase::Finalizing => " (the finalizer claimed it first)",
                RunPhase::Committed => " (roll back with `replayfleet rollback` instead)",
                _ => "",
            }
        ))),
    }
}

/// Pauses the run: its leases are no longer handed out (a lease in hand is finished).
pub async fn pause(queue: &dyn LeaseQueue, store: &dyn RunStore, run_id: &str) -> Result<()> {
    match transition(
        store,
        run_id,
        &[RunPhase::Running, RunPhase::Planned],
        RunPhase::Paused,
        None,
    )
    .await?
    {
        Ok(_) => {}
        Err(state) if state.phase == RunPhase::Paused => {}
        Err(state) => {
            return Err(Error::Refused(format!(
                "run {run_id} is {}: only a running run can be paused",
                state.phase.as_str()
            )));
        }
    }
    queue.set_paused(run_id, true).await?;
    Ok(())
}

/// Resumes a paused run.
pub async fn resume(queue: &dyn LeaseQueue, store: &dyn RunStore, run_id: &str) -> Result<()> {
    match transition(store, run_id, &[RunPhase::Paused], RunPhase::Running, None).await? {
        Ok(_) => {}
        Err(state) if state.phase == RunPhase::Running => {}
        Err(state) => {
            return Err(Error::Refused(format!(
                "run {run_id} is {}: only a paused run can be resumed",
                state.phase.as_str()
            )));
        }
    }
    queue.set_paused(run_id, false).await?;
    Ok(())
}

/// A run's progress as the run-state store and the queue know it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The run's state.
    pub run: RunState,
    /// Shards with a state, by status.
    pub shards: ShardCounts,
    /// Rows read by finished shards.
    pub events_done: u64,
    /// Anomalies in finished shards.
    pub anomalies: u64,
    /// Leases queued and claimed right now.
    pub leases_queued: u64,
    /// Leases held by workers right now.
    pub leases_claimed: u64,
    /// Real failures so far, over all shards.
    pub failures: u64,
}

/// Shards by status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardCounts {
    /// Not started, or given back.
    pub pending: u64,
    /// Being replayed.
    pub running: u64,
    /// Finished.
    pub done: u64,
    /// Out of attempts.
    pub failed: u64,
}

/// The status of one run.
pub async fn status(queue: &dyn LeaseQueue, store: &dyn RunStore, run_id: &str) -> Result<Status> {
    let run = store
        .run(run_id)
        .await?
        .ok_or_else(|| Error::Plan(format!("no run {run_id} in the run-state store")))?
        .value;
    let mut counts = ShardCounts::default();
    let mut events_done = 0;
    let mut anomalies = 0;
    let mut failures = 0;
    for (_, s) in store.shards(run_id).await? {
        failures += u64::from(s.failures);
        match s.status {
            ShardStatus::Pending => counts.pending += 1,
            ShardStatus::Running => counts.running += 1,
            ShardStatus::Done => {
                counts.done += 1;
                events_done += s.events;
                anomalies += s.anomalies;
            }
            ShardStatus::Failed => counts.failed += 1,
        }
    }
    let (queued, claimed) = queue.pending(run_id).await?;
    Ok(Status {
        run,
        shards: counts,
        events_done,
        anomalies,
        leases_queued: queued,
        leases_claimed: claimed,
        failures,
    })
}
