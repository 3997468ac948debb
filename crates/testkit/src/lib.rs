//! Test helpers: real servers on loopback for integration tests.
//!
//! [`S3Server`] runs moto's S3 server (`pip install 'moto[server]'`) on a free loopback
//! port and stops it when dropped, in the spirit of nats.rs' `nats-server` helper.
//! Nothing here ships in the `replayfleet` binary.

mod s3;

pub use s3::S3Server;
