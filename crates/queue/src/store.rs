//! The run-state store: each run's phase, and each shard's attempts and progress.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Result;

/// Where a run is in its life. Moves forward only; the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Planned, leases not yet (all) published.
    Planned,
    /// Workers are replaying shards.
    Running,
    /// No new leases are handed out until resumed.
    Paused,
    /// Stopped by an operator or an anomaly policy; never commits.
    Halted,
    /// The finalizer won the compare-and-set against halt and is verifying and committing.
    Finalizing,
    /// A version was committed.
    Committed,
    /// The checks refused the commit.
    Refused,
}

impl RunPhase {
    /// Every phase, in life order.
    pub const ALL: [RunPhase; 7] = [
        RunPhase::Planned,
        RunPhase::Running,
        RunPhase::Paused,
        RunPhase::Halted,
        RunPhase::Finalizing,
        RunPhase::Committed,
        RunPhase::Refused,
    ];

    /// Whether the run is over for good: halted, committed or refused.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::Halted | RunPhase::Committed | RunPhase::Refused
        )
    }

    /// The phase as stored and shown (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Planned => "planned",
            RunPhase::Running => "running",
            RunPhase::Paused => "paused",
            RunPhase::Halted => "halted",
            RunPhase::Finalizing => "finalizing",
            RunPhase::Committed => "committed",
            RunPhase::Refused => "refused",
        }
    }
}

impl fmt::Display for RunPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's unique id.
    pub run_id: String,
    /// The run's name (from its config): at most one unfinished run per name.
    pub name: String,
    /// Where the run is.
    pub phase: RunPhase,
    /// Why it halted / was refused.
    pub reason: Option<String>,
    /// Version committed.
    pub version: Option<u64>,
    /// When this state was written.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The projection's home (URL), where the run's `plan.json` is: a worker that claims
    /// one of the run's leases finds everything else there.
    #[serde(default)]
    pub target: Option<String>,
}

/// Where one shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Not started (or given back).
    #[default]
    Pending,
    /// A worker is replaying it.
    Running,
    /// Replayed and written.
    Done,
    /// Out of attempts.
    Failed,
}

/// Attempts and progress of one shard of a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ShardState {
    /// Where the shard is.
    pub status: ShardStatus,
    /// Real failures so far (a released or expired lease is not one).
    pub failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Worker holding it / that finished it.
    pub worker: Option<String>,
    /// Events read so far (progress).
    pub events: u64,
    /// Anomalies so far (progress).
    pub anomalies: u64,
    /// The last failure was the input's to fix (a segment that cannot be read, a value
    /// the source mapping cannot convert): no attempt can succeed, and the run exits 2.
    #[serde(default)]
    pub input_error: bool,
}

/// A stored value and its revision, for compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision: 1 when created, one more per write.
    pub revision: u64,
}

/// Run state and shard attempts (docs/FLEET.md, "Leases on JetStream"): in
/// memory for `replayfleet run`, a JetStream KV bucket for a fleet.
///
/// Implementations must pass `conformance::run_store_suite` (the `testsuite` feature).
#[async_trait::async_trait]
pub trait RunStore: Send + Sync + std::fmt::Debug {
    /// Creates the run's state; `Err(AlreadyExists)` if the run id exists. Also
    /// records `run.name -> run_id` as the name's unfinished run (unless the
    /// phase is already finished). Returns the revision.
    async fn create_run(&self, state: &RunState) -> Result<u64>;

    /// The run's state and revision, if the run exists.
    async fn run(&self, run_id: &str) -> Result<Option<Versioned<RunState>>>;

    /// Compare-and-set: writes `state` only if the stored revision is
    /// `expected`; `Err(Conflict)` otherwise, `Err(NotFound)` if the run does
    /// not exist. When the new phase is finished, the name no longer maps to
    /// this run. Returns the new revision.
    async fn update_run(&self, state: &RunState, expected: u64) -> Result<u64>;

    /// The unfinished run of this name, if any.
    async fn unfinished_run(&self, name: &str) -> Result<Option<String>>;

    /// Reads, then writes the shard's state with `f` applied, retrying on CAS
    /// conflicts (so `f` may run more than once); returns the new state. A
    /// missing shard starts from `ShardState::default()`.
    // `for<'s>` spelled out: `async_trait` would turn the elided lifetime of
    // `Fn(&mut ShardState)` into one fixed lifetime, and `f` could then not be
    // called on a short-lived borrow. It is the same type as the elided form.
    async fn update_shard(
        &self,
        run_id: &str,
        shard: &str,
        f: &(dyn for<'s> Fn(&'s mut ShardState) + Send + Sync),
    ) -> Result<ShardState>;

    /// The shard's state, if it has one.
    async fn shard(&self, run_id: &str, shard: &str) -> Result<Option<ShardState>>;

    /// Every shard of the run with a state, sorted by shard name.
    async fn shards(&self, run_id: &str) -> Result<Vec<(String, ShardState)>>;

    /// Reserves `events` of the run's fleet-wide pace of `per_second` events a
    /// second (`pacing.events_per_second`) and returns how long the caller must
    /// wait before handling them: zero while the fleet is behind the pace.
    ///
    /// Reservations queue behind one another (a virtual schedule shared by every
    /// worker of the run: each one starts where the previous one ends), so the
    /// whole fleet never runs ahead of the pace by more than one reservation.
    /// `per_second` of 0 means unlimited.
    async fn pace(&self, run_id: &str, events: u64, per_second: u64) -> Result<Duration>;

    /// Waits until a run or shard state may have changed, or `at_most` has passed: a
    /// watcher's poll. The in-process store wakes the watcher on its next write; a
    /// remote store just waits.
    async fn changed(&self, at_most: Duration) {
        tokio::time::sleep(at_most).await;
    }
}

/// The pace schedule both stores keep, in Unix microseconds: a reservation of
/// `events` starts when the previous one ends (or now, if that is past) and
/// lasts `events / per_second`. Returns (start, end).
pub(crate) fn pace_slot(
    previous_end_us: u64,
    now_us: u64,
    events: u64,
    per_second: u64,
) -> (u64, u64) {
    let start = previous_end_us.max(now_us);
    let length = u64::try_from(u128::from(events) * 1_000_000 / u128::from(per_second.max(1)))
        .unwrap_or(u64::MAX);
    (start, start.saturating_add(length))
}

/// Now, in Unix microseconds.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
