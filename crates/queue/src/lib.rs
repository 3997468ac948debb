//! Leases, run state and progress (docs/FLEET.md).
//!
//! This crate owns the two traits the fleet coordinates through, and the
//! implementations behind them:
//!
//! - [`LeaseQueue`]: one lease per shard; a worker claims it, heartbeats it
//!   while it replays, and acks it when the shard is done. A lease that is not
//!   heartbeated for the queue's TTL is handed out again, so a crashed worker
//!   loses nothing. Runs can be paused, resumed and halted (their leases removed).
//! - [`RunStore`]: the run's state ([`RunState`]), written by compare-and-set
//!   so that "halt" and "commit" cannot both win, and each shard's attempts and
//!   progress ([`ShardState`]).
//! - [`EmbeddedQueue`] and [`EmbeddedStore`]: both traits in memory, for one
//!   process.
//! - [`NatsQueue`] and [`NatsStore`]: both traits on NATS JetStream (a
//!   work-queue stream and KV buckets), for a fleet of processes. They take an
//!   [`async_nats::Client`], re-exported here so callers build it with the
//!   same version (TLS, credentials: its `ConnectOptions`).
//! - `conformance`: the one test suite every implementation must pass, compiled only for
//!   tests (this crate's, and others' with the `testsuite` feature), never into the binary.
//!
//! It never knows what a shard contains or how it is replayed: shards and runs
//! are opaque ids here.

#![warn(missing_docs)]

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;
mod embedded;
mod error;
mod lease;
mod nats;
mod store;

pub use async_nats;
pub use embedded::{EmbeddedQueue, EmbeddedStore};
pub use error::{Error, Result};
pub use lease::{Lease, LeaseQueue};
pub use nats::{
    NatsConnect, NatsQueue, NatsQueueOptions, NatsStore, NatsStoreOptions, open as open_nats,
};
pub use store::{RunPhase, RunState, RunStore, ShardState, ShardStatus, Versioned};

#[cfg(test)]
mod tests;
