//! The lease queue: how shards get to workers, exactly one holder at a time.

use std::time::Duration;

use crate::Result;

/// One claimed lease: the run and shard it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run the shard belongs to.
    pub run_id: String,
    /// The shard to replay.
    pub shard: String,
    /// 1 for the first delivery; one more each time the lease expired unheartbeated.
    pub delivery: u32,
    /// Opaque, identifies this delivery: heartbeat, ack and release check it,
    /// so a worker that lost its lease cannot ack another worker's delivery.
    pub token: String,
}

/// The queue of shard leases of every run (docs/FLEET.md, "Leases on JetStream"):
/// an in-process queue for `replayfleet run`, a JetStream work queue for a fleet.
///
/// Implementations must pass `conformance::lease_queue_suite` (the `testsuite` feature).
#[async_trait::async_trait]
pub trait LeaseQueue: Send + Sync + std::fmt::Debug {
    /// Publishes one lease for (run, shard). Idempotent: publishing a lease
    /// that is queued or claimed and not yet acked does nothing.
    async fn publish(&self, run_id: &str, shard: &str) -> Result<()>;

    /// Claims the next available lease of any run that is not paused, waiting
    /// up to `wait`; `None` if none came.
    ///
    /// A claimed lease not heartbeated for the queue's TTL becomes available
    /// again (delivery + 1).
    async fn claim(&self, wait: Duration) -> Result<Option<Lease>>;

    /// Whether a [`LeaseQueue::claim`] dropped while it waits loses nothing (no lease is
    /// taken but in one step), so a worker may stop waiting the moment it is told to
    /// stop. A claim over the network is not: a fetched lease could be left unheld.
    fn claim_is_cancel_safe(&self) -> bool {
        false
    }

    /// Extends the lease's TTL. `Err(NotFound)` if the lease is no longer held
    /// by this delivery (expired and redelivered, acked or removed).
    async fn heartbeat(&self, lease: &Lease) -> Result<()>;

    /// The shard is finished: the lease is removed for good. Acking a stale
    /// token is `Err(NotFound)`.
    async fn ack(&self, lease: &Lease) -> Result<()>;

    /// Gives the lease back, available again after `delay` (not counted as an
    /// attempt by the queue: the next delivery keeps the same `delivery` number).
    async fn release(&self, lease: &Lease, delay: Duration) -> Result<()>;

    /// Removes every queued or claimed lease of the run (halt); returns how many
    /// were removed. Held leases of the run then fail heartbeat/ack with `NotFound`.
    async fn remove_run(&self, run_id: &str) -> Result<u64>;

    /// Stop (`true`) / start (`false`) handing out this run's leases (pause /
    /// resume). Leases already claimed stay held and can be heartbeated and acked.
    async fn set_paused(&self, run_id: &str, paused: bool) -> Result<()>;

    /// Leases of the run queued (not claimed, including those released with a
    /// delay) and claimed right now.
    async fn pending(&self, run_id: &str) -> Result<(u64, u64)>;
}
