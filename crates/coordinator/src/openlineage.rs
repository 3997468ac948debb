//! The run's OpenLineage events, emitted by the coordinator: START once the run state
//! exists, the shards' child runs and the run's closing event once the run ends.

use replayfleet_audit::{Emitter, RunEnd};
use replayfleet_finalizer::Finalized;
use replayfleet_queue::{RunStore, ShardStatus};

use crate::Error;

/// Emits the shards' child runs and the run's closing event for how the run ended:
/// finalized (or the finalizer's error), or stopped while watching.
pub(crate) async fn ended(
    emitter: &Emitter,
    store: &dyn RunStore,
    run_id: &str,
    outcome: Result<&Finalized, &Error>,
) {
    let failed: Vec<(String, String)> = match store.shards(run_id).await {
        Ok(shards) => shards
            .into_iter()
            .filter(|(_, s)| s.status == ShardStatus::Failed)
            .map(|(id, s)| (id, s.last_error.unwrap_or_default()))
            .collect(),
        Err(e) => {
            tracing::warn!(run = run_id, error = %e, "shard states unknown to OpenLineage events");
            Vec::new()
        }
    };
    let reason = outcome.err().map(|e| match e {
        Error::Halted { reason, .. } => reason.clone(),
        other => other.to_string(),
    });
    let end = match (outcome, &reason) {
        (Ok(finalized), _) => RunEnd::Finalized(finalized),
        (
            Err(Error::Halted {
                by_policy: true, ..
            }),
            Some(reason),
        ) => RunEnd::Halted(reason),
        (Err(_), reason) => RunEnd::Failed(reason.as_deref().unwrap_or_default()),
    };
    emitter.run_ended(end, &failed).await;
}
